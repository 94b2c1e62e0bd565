#include "daemon/control_frame.h"

#include <cerrno>
#include <exception>

#include "daemon/protocol.h"

namespace spark::daemon {

using json = nlohmann::json;

int json_nesting_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char ch : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (ch == '\\')
        escaped = true;
      else if (ch == '"')
        in_string = false;
      continue;
    }
    switch (ch) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > limit) return deepest;
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return deepest;
}

std::string encode_reply(const json& reply) {
  try {
    return reply.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  } catch (const std::exception& e) {
    // Nothing the agent builds should get here; a reply that cannot be written is still a reply.
    json fallback{{"id", nullptr},
                  {"error", {{"message", "the agent could not encode its reply"}, {"code", EIO}, {"reason", "EIO"}}}};
    return fallback.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  }
}

namespace {

// A handler's call: what it throws becomes the method's error reply, never the agent's end.
template <typename T, typename Call>
Result<T> call_handler(const std::string& method, Call&& call) {
  try {
    return call();
  } catch (const std::exception& e) {
    return sys_error(EIO, method + " failed: " + e.what());
  } catch (...) {
    return sys_error(EIO, method + " failed");
  }
}

}  // namespace

json dispatch_request(const std::map<std::string, Handler>& handlers, const json& request, const Peer& peer) {
  json id = request.is_object() && request.contains("id") ? request["id"] : json();
  if (!request.is_object() || !request.contains("method") || !request["method"].is_string())
    return {{"id", id}, {"error", error_to_json(input_error("a request needs a \"method\""))}};
  std::string method = request["method"];
  auto it = handlers.find(method);
  if (it == handlers.end())
    return {{"id", id}, {"error", error_to_json(sys_error(ENOSYS, "unknown method " + method))}};
  Result<json> r =
      call_handler<json>(method, [&] { return it->second(request.value("params", json::object()), peer); });
  if (!r) return {{"id", id}, {"error", error_to_json(r.error())}};
  return {{"id", id}, {"result", std::move(*r)}};
}

std::optional<std::variant<RawReply, json>> dispatch_raw(const std::map<std::string, RawHandler>& handlers,
                                                         const json& request, const json& id, const Peer& peer) {
  if (handlers.empty() || !request.is_object()) return std::nullopt;
  auto m = request.find("method");
  if (m == request.end() || !m->is_string()) return std::nullopt;
  const auto& method = m->get_ref<const std::string&>();
  auto it = handlers.find(method);
  if (it == handlers.end()) return std::nullopt;
  Result<SharedJson> r =
      call_handler<SharedJson>(method, [&] { return it->second(request.value("params", json::object()), peer); });
  if (r && !*r) r = sys_error(EIO, method + " failed: no answer");
  if (!r) return json{{"id", id}, {"error", error_to_json(r.error())}};
  return RawReply{"{\"id\":" + id.dump(-1, ' ', false, json::error_handler_t::replace) + ",\"result\":", std::move(*r)};
}

std::string raw_reply_line(const RawReply& r) {
  std::string line;
  line.reserve(r.head.size() + r.body->size() + k_raw_tail.size());
  line += r.head;
  line += *r.body;
  line += k_raw_tail;
  return line;
}

namespace {

json refuse(const std::string& why) { return {{"id", nullptr}, {"error", error_to_json(input_error(why))}}; }

}  // namespace

std::optional<json> handle_frame(
    std::string_view line, const std::function<std::optional<json>(const json& request, const json& id)>& dispatch) {
  try {
    if (line.size() > k_max_frame_bytes)
      return refuse("request of " + std::to_string(line.size()) + " bytes: the limit is " +
                    std::to_string(k_max_frame_bytes) + " bytes a line");
    if (json_nesting_depth(line, k_max_json_depth) > k_max_json_depth)
      return refuse("request nests arrays/objects more than " + std::to_string(k_max_json_depth) +
                    " levels deep: the limit is " + std::to_string(k_max_json_depth));
    json request = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (request.is_discarded()) return refuse("request is not JSON (one JSON object per line, UTF-8): see docs/cli.md");
    if (!request.is_object()) return refuse("a request is a JSON object with \"method\", \"params\" and \"id\"");
    json id;
    if (auto it = request.find("id"); it != request.end()) {
      if (!it->is_string() && !it->is_number() && !it->is_null())
        return refuse("a request's id is a string, a number or null");
      id = *it;
    }
    return dispatch(request, id);
  } catch (const std::exception& e) {
    return refuse(std::string("request refused: ") + e.what());
  }
}

std::optional<std::string> next_frame(const std::string& in, size_t& start, bool eof, bool& overflow,
                                      size_t max_frame) {
  if (start >= in.size()) return std::nullopt;
  size_t nl = in.find('\n', start);
  size_t end = nl == std::string::npos ? in.size() : nl;
  if (end - start > max_frame) {
    overflow = true;
    return std::nullopt;
  }
  if (nl == std::string::npos && !eof) return std::nullopt;
  std::string line = in.substr(start, end - start);
  start = nl == std::string::npos ? in.size() : nl + 1;
  return line;
}

std::vector<std::string> take_frames(std::string& in, bool& overflow, size_t max_frame) {
  std::vector<std::string> out;
  size_t start = 0;
  while (auto line = next_frame(in, start, false, overflow, max_frame)) out.push_back(std::move(*line));
  in.erase(0, start);
  return out;
}

std::optional<std::string> RateLimitedLog::admit(const std::string& message,
                                                 std::chrono::steady_clock::time_point now) {
  if (last_ && now - *last_ < interval_) {
    ++suppressed_;
    return std::nullopt;
  }
  std::string out = message;
  if (suppressed_ > 0)
    out += " (" + std::to_string(suppressed_) + " more like it suppressed in the last " +
           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(interval_).count()) + " s)";
  suppressed_ = 0;
  last_ = now;
  return out;
}

}  // namespace spark::daemon
