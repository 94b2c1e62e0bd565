// How parts of the agent plug in. The agent (daemon/agent.h) is one single-threaded poll loop that
// owns the control socket; everything else is a Service, a LoopPart (core/loop.h: the one loop
// contract of the agent's parts) with a start, requests and a stop:
//
//   class GuardService : public spark::daemon::Service {
//     std::string name() const override { return "guard"; }
//     Result<void> on_start(ServiceContext& ctx) override {      // before READY=1
//       recover from the journal (ctx.tuner(), ctx.paths());
//       ctx.add_handler("guard.list", [this](const json& params, const Peer& peer) -> Result<json> {...});
//       return {};
//     }
//     std::vector<pollfd> poll_fds() override { return {{pressure_fd_, POLLPRI, 0}}; }  // before every poll
//     void on_ready(int fd, Clock::time_point now) override {...}     // fd ready (its events, HUP, ERR)
//     std::optional<Clock::time_point> next_timer() override {...}    // asked before every poll
//     void on_timer(Clock::time_point now) override {...}             // called when it is due
//     void on_stop() override {...}                                   // SIGTERM/SIGINT: put things back
//   };
//
// Registration: add the service to builtin_services() (daemon/builtin_services.h), with its order.
// An explicit list, not self-registering objects: those sat in the static library, where the
// linker drops an object file nothing refers to, so each needed a file of the executable
// (cli/service_*.cpp) to keep it; and the list is built only when the agent starts, not by static
// initialisers at every start of every verb.
// Services start in ascending order (windows: 10) and stop in reverse. Handlers are called on the
// loop thread: keep them short (no sleeping); a handler's error goes back to the client as
// {"error": {"message": ..., "code": errno}}. Method names are "<service>.<verb>" ("window.begin").
// Peers are authenticated before any handler runs (root or a member of group spark-tune); a
// handler may check peer.uid for stricter rules.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/event_log.h"
#include "core/host_paths.h"
#include "core/loop.h"
#include "core/result.h"
#include "tune/tuner.h"

namespace spark::daemon {

using Clock = LoopClock;
using json = nlohmann::json;

// The process at the other end of the control socket (SO_PEERCRED).
struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

using Handler = std::function<Result<json>(const json& params, const Peer& peer)>;

// An answer already serialised (one JSON value's text, as encode_reply writes it): the agent puts
// these bytes into each reply as they are -- no copy of a JSON tree, no serialisation per request
// -- so one answer is shared by every client that asks while it is current (window.list, polled
// back to back by many clients: issue 13, the soak).
using SharedJson = std::shared_ptr<const std::string>;
using RawHandler = std::function<Result<SharedJson>(const json& params, const Peer& peer)>;
// `j` serialised once for sharing (invalid UTF-8 replaced, never thrown, as in every reply).
inline SharedJson share_json(const json& j) {
  return std::make_shared<const std::string>(j.dump(-1, ' ', false, json::error_handler_t::replace));
}

// A request answered later (long-poll): see ServiceContext::defer().
struct DeferredReply {
  int fd = -1;
  uint64_t client = 0;  // the connection's serial: a reply to a connection that has gone is dropped
  json id;
};

// What a service gets from the agent at start.
class ServiceContext {
 public:
  virtual ~ServiceContext() = default;
  virtual const HostPaths& paths() const = 0;
  // The one Tuner of the agent: every kernel change goes through it (journal first).
  virtual tune::Tuner& tuner() = 0;
  // Registers a request handler; a name already taken is an error.
  virtual Result<void> add_handler(const std::string& method, Handler handler) = 0;
  // The same for a handler whose answer is already serialised (SharedJson). A context that cannot
  // send bytes as they are (a test's) gets them parsed back into an ordinary handler's answer.
  virtual Result<void> add_raw_handler(const std::string& method, RawHandler handler) {
    return add_handler(method, [h = std::move(handler)](const json& params, const Peer& peer) -> Result<json> {
      SPARK_TRY(SharedJson text, h(params, peer));
      return json::parse(*text);
    });
  }
  // Inside a handler: answer this request later instead of now (a long-poll). The handler's
  // return value is then ignored; the service calls reply() once, from the loop thread, when it
  // has the answer or its own deadline passes. nullopt: this context cannot defer (answer now).
  virtual std::optional<DeferredReply> defer() { return std::nullopt; }
  virtual void reply(const DeferredReply& /*to*/, Result<json> /*result*/) {
  }  // NOLINT(performance-unnecessary-value-param): overrides move it
  // Whether the client of a deferred request is still connected (it has not closed or died):
  // a request held open for as long as someone wants something (monitor --deep) ends with it.
  virtual bool connected(const DeferredReply& /*to*/) const { return false; }
  // A method whose handler is dear (a window's begin or end: the journal written, the kernel
  // changed): in a round of the loop its requests are handled after the cheap ones that came in
  // the same round (a ping, a window.list from the shared answer), never later than that round.
  virtual void mark_dear(const std::string& /*method*/) {}
  // The agent's one event log (core/event_log.h): every service appends what happens to it; the
  // events service (daemon/event_service.h) answers events.list from it and journals each event.
  EventLog& events() { return events_; }

 private:
  EventLog events_;
};

class Service : public LoopPart {
 public:
  virtual std::string name() const = 0;
  virtual Result<void> on_start(ServiceContext& ctx) = 0;
  virtual void on_stop() {}
  // The agent hands over to another agent (a detached one to the one systemd's socket started):
  // the next agent resumes what is journaled, so nothing is put back; by default as on_stop.
  virtual void on_handover() { on_stop(); }
};

using ServiceFactory = std::function<std::unique_ptr<Service>()>;

struct ServiceEntry {
  std::string name;
  int order;
  ServiceFactory factory;
};

}  // namespace spark::daemon
