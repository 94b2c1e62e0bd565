// The control socket's framing and request handling, apart from any socket: one JSON object per
// line in, one per line out (daemon/protocol.h). The agent runs every line through handle_frame();
// the control_fuzz target (tests/fuzz) runs the same code on arbitrary bytes.
//
// Limits (docs/cli.md, "Limits"): a request line is at most k_max_frame_bytes, its JSON nests at
// most k_max_json_depth arrays/objects deep, its id is a string, a number or null (JSON-RPC). A
// reply never throws and never carries invalid UTF-8 (invalid bytes are replaced by U+FFFD).
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/result.h"
#include "daemon/service.h"

namespace spark::daemon {

// One request line (without its newline).
inline constexpr size_t k_max_frame_bytes = 1u << 20;
// Arrays and objects inside one another in a request.
inline constexpr int k_max_json_depth = 64;
// Replies waiting for a client that does not read them: past this the client is dropped.
inline constexpr size_t k_max_reply_backlog = 8u << 20;
// A client's requests are read no further while this much of its replies waits unsent (the rest
// waits in the socket: one client that pipelines without reading costs no more than this).
inline constexpr size_t k_reply_backpressure = 64u << 10;
// Concurrent control connections; one more is answered with an error and closed.
inline constexpr size_t k_max_control_clients = 512;
// A connection that sends nothing (and waits for no deferred answer) for this long is closed.
inline constexpr std::chrono::seconds k_control_idle_timeout{300};
// A client whose replies wait and that reads none of them for this long is dropped.
inline constexpr std::chrono::seconds k_control_send_deadline{5};
// Warnings about refused peers: at most one per interval (then a count of those suppressed).
inline constexpr std::chrono::seconds k_refusal_log_interval{60};

// Deepest nesting of arrays/objects in `text`, brackets inside strings not counted; stops
// counting (and returns) as soon as `limit` is exceeded.
int json_nesting_depth(std::string_view text, int limit);

// The reply as one line on the wire ("...\n"); invalid UTF-8 in strings is replaced, never thrown.
std::string encode_reply(const nlohmann::json& reply);

// The request's method looked up and called (what the agent's dispatch does): an unknown method,
// a handler's error or a handler's exception become an error reply.
nlohmann::json dispatch_request(const std::map<std::string, Handler>& handlers, const nlohmann::json& request,
                                const Peer& peer);

// A raw handler's answer (service.h, RawHandler) as its reply line: head + *body + k_raw_tail is
// the line encode_reply writes for {"id": id, "result": <body>} -- the body's bytes are shared,
// never copied or serialised per request.
struct RawReply {
  std::string head;  // {"id":<id>,"result":
  SharedJson body;
};
inline constexpr std::string_view k_raw_tail = "}\n";
// The request's method looked up among the raw handlers and called. nullopt: no raw handler has
// that name (dispatch_request handles it); a RawReply; or an error reply (the handler's error or
// exception, as dispatch_request would answer it).
std::optional<std::variant<RawReply, nlohmann::json>> dispatch_raw(const std::map<std::string, RawHandler>& handlers,
                                                                   const nlohmann::json& request,
                                                                   const nlohmann::json& id, const Peer& peer);
// The three parts as one line (tests, and the fallback where bytes cannot be sent as they are).
std::string raw_reply_line(const RawReply& r);

// One request line: parsed within the limits, then given to `dispatch` (request, its id).
// Returns the reply, or nullopt when `dispatch` returned nullopt (the reply comes later: defer()).
// Never throws: a line that is not JSON, nests too deep, or carries a bad id gets an error reply
// with id null.
std::optional<nlohmann::json> handle_frame(
    std::string_view line,
    const std::function<std::optional<nlohmann::json>(const nlohmann::json& request, const nlohmann::json& id)>&
        dispatch);

// The next line of a connection's input from `start` (advanced past it), or nullopt when no
// complete line is there. `eof`: the peer has closed its side, so a last line without a newline
// counts. A line longer than `max_frame` (or input that has gone that far without a newline) sets
// `overflow`: the connection is then closed after an error reply.
std::optional<std::string> next_frame(const std::string& in, size_t& start, bool eof, bool& overflow,
                                      size_t max_frame = k_max_frame_bytes);
// Every complete line off the front of `in` (what the agent does while its client reads replies).
std::vector<std::string> take_frames(std::string& in, bool& overflow, size_t max_frame = k_max_frame_bytes);

// At most one message per interval; the next one says how many were suppressed meanwhile.
class RateLimitedLog {
 public:
  explicit RateLimitedLog(std::chrono::steady_clock::duration interval) : interval_(interval) {}
  // The text to log now (with " (N more suppressed in the last ...)" appended), or nullopt.
  std::optional<std::string> admit(const std::string& message, std::chrono::steady_clock::time_point now);
  uint64_t suppressed() const { return suppressed_; }

 private:
  std::chrono::steady_clock::duration interval_;
  std::optional<std::chrono::steady_clock::time_point> last_;
  uint64_t suppressed_ = 0;
};

}  // namespace spark::daemon
