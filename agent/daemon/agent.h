// The agent: one single-threaded poll loop that owns the control socket and the services
// (service.h). Start-up order: single-instance lock + pid file, control socket (inherited from
// systemd socket activation or created), services' on_start (journal recovery), capability drop,
// sd_notify READY=1, then the loop (WATCHDOG=1 at half of WatchdogSec). SIGTERM/SIGINT: services'
// on_stop in reverse order (windows are ended: the host is put back), socket and pid file removed.
//
// A detached agent (started by hand or by an older CLI) and spark-tune.socket never fight: an agent
// systemd activates while a detached one holds the pid file sends it SIGUSR2 and waits for the
// lock; on SIGUSR2 a detached agent hands over -- it stops without ending its windows (journaled,
// the activated agent resumes them, as after a restart) and without removing a socket file that is
// no longer its own. A detached agent never takes the path from a listener (the unit's socket).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/host_paths.h"
#include "core/result.h"
#include "daemon/control_frame.h"
#include "daemon/loop_tally.h"
#include "daemon/service.h"
#include "tune/actuator.h"
#include "tune/tuner.h"

namespace spark::daemon {

// How long an activated agent waits for a detached one to hand over (less than the unit's
// TimeoutStartSec and the CLI's k_activation_wait, so a refusal is reported, not timed out).
inline constexpr std::chrono::seconds k_handover_wait{20};
// The dear requests (mark_dear: a window's begin or end) handled in one round of the loop: once
// they have taken this long, the ones still waiting are handled in the next round, after the cheap
// requests that came meanwhile (at least one per round: none waits for ever). The soak (issue 13):
// 12 and 35 begins and ends that came together held a round 43-81 ms, and every ping with it.
inline constexpr std::chrono::milliseconds k_dear_round_budget{5};
// How long the control socket's group lookup (getgrnam) is reused for the peers it admits.
inline constexpr std::chrono::seconds k_group_lookup_reuse{1};

struct AgentOptions {
  bool drop_capabilities = true;
  // The group whose members may use the socket besides root ("spark-tune").
  std::string group = "spark-tune";
  // A control connection that sends nothing (and waits for no answer) this long is closed; one
  // whose replies wait unread this long is dropped (docs/cli.md, "Limits"). Tests shorten them.
  std::chrono::milliseconds control_idle_timeout = k_control_idle_timeout;
  std::chrono::milliseconds control_send_deadline = k_control_send_deadline;
  std::chrono::milliseconds dear_round_budget = k_dear_round_budget;  // tests set 0: one per round
};

class Agent : public ServiceContext {
 public:
  Agent(HostPaths paths, AgentOptions options);
  ~Agent() override;

  // Adds a service before run(); builtin_services() (builtin_services.h) are added by run() itself.
  void add_service(std::unique_ptr<Service> s, int order);
  // Runs until SIGTERM/SIGINT; returns the exit code.
  int run();

  const HostPaths& paths() const override { return paths_; }
  tune::Tuner& tuner() override { return tuner_; }
  Result<void> add_handler(const std::string& method, Handler handler) override;
  Result<void> add_raw_handler(const std::string& method, RawHandler handler) override;
  void mark_dear(const std::string& method) override { dear_.insert(method); }
  std::optional<DeferredReply> defer() override;
  void reply(const DeferredReply& to, Result<json> result) override;
  bool connected(const DeferredReply& to) const override;

 private:
  // One control connection. Never blocks the loop: replies wait in `out` and are sent as the
  // socket takes them (POLLOUT); limits in daemon/control_frame.h.
  struct Client {
    int fd = -1;
    Peer peer;
    std::string in;
    uint64_t serial = 0;
    std::string out;                // replies not yet taken by the socket
    size_t pending = 0;             // deferred requests not answered yet (a long-poll is not idle)
    Clock::time_point last_input;   // for the idle timeout
    Clock::time_point last_output;  // last send progress while `out` waited
    bool closing = false;           // close once `out` is sent (or its deadline passes)
    bool eof = false;               // the client closed its side: answer what it sent, then close
  };
  Result<void> open_socket();
  Result<void> write_pid_file();
  // Socket-activated while a detached agent holds the pid file: ask it to hand over (SIGUSR2) and
  // wait for its lock, so the unit's agent takes over instead of failing the unit.
  Result<void> take_over_pid_file();
  // Accepts the waiting clients (accepted_ says which).
  void accept_clients();
  // The gid of opt_.group (members may use the socket), looked up at most once a second.
  std::optional<gid_t> allowed_group(Clock::time_point now);
  void serve(Client& c);
  // Handles the complete requests in c.in while c's unsent replies stay under the bound. Outside
  // the round's dear pass, a dear request (mark_dear) stops it: the client waits in dear_clients_.
  void process_input(Client& c);
  // The requests of the round's dear pass: the clients that stopped at a dear one, in order.
  void serve_dear();
  bool is_dear(const std::string& line) const;
  void cleanup();
  // Queues a reply and sends what the socket takes now; never waits. The parts make one line;
  // while nothing else waits for the client they go out straight from where they are (one
  // sendmsg), and only what the socket did not take is copied into c.out.
  void queue_reply(Client& c, std::initializer_list<std::string_view> parts);
  void queue_reply(Client& c, const std::string& line) { queue_reply(c, {std::string_view(line)}); }
  void flush(Client& c);
  void drop(int fd, const std::string& why);
  // Drops clients past their deadlines (idle, unread replies); returns when to look again.
  std::optional<Clock::time_point> expire_clients(Clock::time_point now);
  void accept_failed(int err);

  HostPaths paths_;
  AgentOptions opt_;
  tune::HostActuator actuator_;
  tune::Tuner tuner_;
  std::vector<std::pair<int, std::unique_ptr<Service>>> services_;
  std::map<std::string, Handler> handlers_;
  std::map<std::string, RawHandler> raw_handlers_;
  int listen_fd_ = -1;
  bool own_socket_ = false;  // created here (not inherited from systemd): removed at exit
  dev_t socket_dev_ = 0;     // the socket file this agent bound: removed at exit only while it is
  ino_t socket_ino_ = 0;     // still that one (spark-tune.socket may have bound the path since)
  bool handover_ = false;    // SIGUSR2: stop without putting anything back (the next agent resumes)
  int pid_fd_ = -1;
  int signal_fd_ = -1;
  std::map<int, Client> clients_;
  int reserve_fd_ = -1;  // /dev/null, given up to accept-and-close a client when out of descriptors
  std::optional<Clock::time_point> accept_paused_until_;  // out of descriptors: listener not polled
  RateLimitedLog refusal_log_{k_refusal_log_interval};
  RateLimitedLog accept_log_{k_refusal_log_interval};
  uint64_t next_serial_ = 0;
  std::optional<gid_t> group_gid_;
  std::optional<Clock::time_point> group_looked_up_;
  std::optional<DeferredReply> in_dispatch_;  // the request being dispatched, for defer()
  bool deferred_ = false;
  std::unique_ptr<LoopTally> tally_;
  std::vector<std::pair<int, uint64_t>> accepted_;      // fd, serial: accepted in this round
  std::set<std::string> dear_;                          // mark_dear
  bool dear_pass_ = false;                              // handling the round's dear requests
  size_t dear_handled_ = 0;                             // in this round's dear pass
  Clock::time_point dear_deadline_{};                   // the dear pass's budget (k_dear_round_budget)
  std::vector<std::pair<int, uint64_t>> dear_clients_;  // fd, serial: a dear request waits
};

}  // namespace spark::daemon
