// libFuzzer target for the control socket: arbitrary bytes as they arrive on a connection, cut
// into lines by the agent's framing (take_frames) and each line through the agent's request
// handling (handle_frame + dispatch_request) with a fake service context: handlers like the
// agent's (a ping, one that reads its params, one that throws, one that defers). Nothing touches
// the kernel. Every reply must encode (encode_reply) to one line of valid UTF-8 JSON.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "daemon/control_frame.h"

namespace {

using json = nlohmann::json;
using spark::daemon::Handler;
using spark::daemon::Peer;

const std::map<std::string, Handler>& handlers() {
  static const std::map<std::string, Handler> h = {
      {"agent.ping",
       [](const json&, const Peer&) -> spark::Result<json> {
         return json{{"pid", 1}};
       }},
      {"window.begin",
       [](const json& p, const Peer&) -> spark::Result<json> {
         // What the window service reads: typed fields, each may be missing or of the wrong type.
         std::string files = p.value("files", json::array()).dump();
         int ttl = p.value("ttl_ms", 0);
         if (ttl < 0) return spark::input_error("ttl");
         return json{{"id", "w1"}, {"files", files}, {"echo", p}};
       }},
      {"events.list",
       [](const json& p, const Peer&) -> spark::Result<json> {
         return json{{"after", p.at("after").get<uint64_t>()}};  // throws when absent
       }},
      {"telemetry.deep", [](const json&, const Peer&) -> spark::Result<json> { return json(); }},
  };
  return h;
}

void check_reply(const json& reply) {
  std::string wire = spark::daemon::encode_reply(reply);
  if (wire.empty() || wire.back() != '\n' || wire.find('\n') != wire.size() - 1) std::abort();
  json back = json::parse(wire.substr(0, wire.size() - 1));  // throws (a crash) when not valid UTF-8 JSON
  if (!back.contains("id") || (!back.contains("result") && !back.contains("error"))) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in;
  bool overflow = false;
  // Two arrivals, as recv() may cut a stream anywhere.
  size_t cut = size ? data[0] % (size + 1) : 0;
  for (auto part : {std::string(reinterpret_cast<const char*>(data), cut),
                    std::string(reinterpret_cast<const char*>(data) + cut, size - cut)}) {
    in += part;
    for (const auto& line : spark::daemon::take_frames(in, overflow)) {
      auto reply = spark::daemon::handle_frame(line, [](const json& request, const json&) -> std::optional<json> {
        if (request.value("method", json()).is_string() && request["method"] == "telemetry.deep") return std::nullopt;
        return spark::daemon::dispatch_request(handlers(), request, Peer{});
      });
      if (reply) check_reply(*reply);
    }
    if (overflow) break;
  }
  return 0;
}
