#include "daemon/window_service.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include "core/log.h"

using spark::window::WindowManager, spark::window::WindowRecord, spark::window::WindowSpec,
    spark::window::expand_window_files, spark::window::plain_window_files, spark::window::spec_from_json;

namespace spark::daemon {

namespace {
constexpr std::chrono::milliseconds k_list_reuse{25};
}  // namespace

std::optional<Result<json>> WindowService::begin_now(const WindowSpec& spec, const Peer& peer,
                                                     const std::vector<fs::path>* files, const DeferredReply* later) {
  list_.reset();
  auto begun = mgr_->begin(spec, files, later != nullptr);
  if (!begun) return Result<json>(begun.error());
  const WindowRecord& r = *begun;
  log_info("window " + r.id + " begun for uid " + std::to_string(peer.uid) + " pid " + std::to_string(peer.pid),
           {{"WINDOW", r.id}, {"PEER_UID", std::to_string(peer.uid)}});
  if (later)
    if (auto recipe = mgr_->keeper_recipe(r.id)) {
      Expansion job{};
      job.spec = spec;
      job.peer = peer;
      job.to = *later;
      job.keeper_recipe = std::move(*recipe);
      expand_off_loop(std::move(job));
      return std::nullopt;  // answered when its keeper is attached (keeper_built)
    }
  return Result<json>(mgr_->describe_window(r.id));
}

void WindowService::keeper_built(Expansion& job) {
  list_.reset();
  const std::string& id = job.keeper_recipe->id;
  if (!mgr_->attach_keeper(id, std::move(job.keeper))) {
    if (job.to)
      ctx_->reply(*job.to, sys_error(ECANCELED, "window " + id +
                                                    " ended before its cache keeper was ready (its settings were "
                                                    "applied and restored): begin it again"));
    return;
  }
  if (job.to)
    ctx_->reply(*job.to, mgr_->describe_window(id));
  else
    log_info("window " + id + ": its cache keeper is attached", {{"WINDOW", id}});
}

void WindowService::expand_off_loop(Expansion job) {
  std::lock_guard<std::mutex> l(mu_);
  if (loop_runs_ && !worker_.joinable()) worker_ = std::thread([this] { worker_main(); });
  todo_.push_back(std::move(job));
  cv_.notify_one();
}

void WindowService::evict_off_loop(std::vector<window::WindowRecord> evict, std::optional<DeferredReply> to,
                                   json answer) {
  if (evict.empty()) return;
  Expansion job{};
  job.to = std::move(to);
  job.evicts = true;
  job.evict = std::move(evict);
  job.answer = std::move(answer);
  expand_off_loop(std::move(job));
}

void WindowService::evict_job(Expansion& job) {
  for (auto& r : job.evict) {
    const std::string id = r.id;
    window::evict_last_time(std::move(r));
    if (evicted_hook_) evicted_hook_(id);
  }
  job.evict.clear();
}

void WindowService::worker_main() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [this] { return quit_ || !todo_.empty(); });
    if (quit_) return;
    Expansion job = std::move(todo_.front());
    todo_.pop_front();
    l.unlock();
    if (job.evicts)
      evict_job(job);
    else if (job.keeper_recipe)
      job.keeper = job.keeper_recipe->build();
    else
      job.files = expand_window_files(job.spec.files);
    l.lock();
    done_.push_back(std::move(job));
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
}

WindowService::~WindowService() {
  {
    std::lock_guard<std::mutex> l(mu_);
    quit_ = true;
    cv_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void WindowService::stop_worker() {
  {
    std::lock_guard<std::mutex> l(mu_);
    quit_ = true;
    cv_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
  // The last evictions still queued (or left by the manager) are made here, inline: an ended
  // window leaves nothing cached that it promised to evict; their window.end is answered. Nothing
  // was begun for the others: say so to each client still waiting.
  std::deque<Expansion> left;
  left.swap(todo_);
  for (auto& j : done_) left.push_back(std::move(j));
  done_.clear();
  if (mgr_) {
    mgr_->set_work_elsewhere(false);  // the stop's own ends evict inline
    Expansion rest{};
    rest.evicts = true;
    rest.evict = mgr_->take_evictions();
    if (!rest.evict.empty()) left.push_back(std::move(rest));
  }
  for (auto& j : left) {
    if (j.evicts) {
      evict_job(j);
      if (ctx_ && j.to) ctx_->reply(*j.to, std::move(j.answer));
      continue;
    }
    j.keeper.reset();  // while the manager (its descriptor cache) is there
    if (!ctx_ || !j.to) continue;
    if (j.keeper_recipe)
      ctx_->reply(*j.to, sys_error(ESHUTDOWN, "the agent stopped as window " + j.keeper_recipe->id +
                                                  " began: it is ended with the agent (or resumed by the agent "
                                                  "taking over): run it again"));
    else
      ctx_->reply(
          *j.to, sys_error(ESHUTDOWN, "the agent stopped before the window began (nothing was changed): run it again"));
  }
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
    wake_fd_ = -1;
  }
}

Result<void> WindowService::on_start(ServiceContext& ctx) {
  ctx_ = &ctx;
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return errno_error("eventfd for the window service");
  mgr_ = std::make_unique<WindowManager>(ctx.paths(), ctx.tuner());
  EventLog* log = &ctx.events();
  mgr_->set_event_sink([log](const Event& e) { log->append(e); });
  mgr_->set_work_elsewhere(true);
  SPARK_TRY(auto ended, mgr_->recover());
  if (!ended.empty()) log_info("recovery ended " + std::to_string(ended.size()) + " window(s)");
  // The big windows' work recovery left: queued now, made by the worker once the loop runs.
  evict_off_loop(mgr_->take_evictions());
  for (const auto& r : mgr_->list())
    if (auto recipe = mgr_->keeper_recipe(r.id)) {
      Expansion job{};
      job.keeper_recipe = std::move(*recipe);
      expand_off_loop(std::move(job));
    }

  SPARK_TRY_VOID(ctx.add_handler("window.begin", [this](const json& params, const Peer& peer) -> Result<json> {
    SPARK_TRY(WindowSpec spec, spec_from_json(params));
    // Directories, globs or many files: expanded and their keeper built on the worker.
    bool dear =
        !spec.files.empty() && (!plain_window_files(spec.files) || spec.files.size() > window::k_keeper_inline_files);
    if (dear)
      if (auto to = ctx_->defer()) {
        Expansion job{};
        job.spec = std::move(spec);
        job.peer = peer;
        job.to = *to;
        expand_off_loop(std::move(job));
        return json();  // answered from on_ready
      }
    return *begin_now(spec, peer, nullptr);
  }));
  SPARK_TRY_VOID(ctx.add_handler("window.end", [this](const json& params, const Peer& peer) -> Result<json> {
    list_.reset();
    std::string who = "ended by uid " + std::to_string(peer.uid);
    json answer;
    if (params.value("all", false)) {
      auto ids = mgr_->end_all(who);
      if (!ids) {
        evict_off_loop(mgr_->take_evictions());  // those it ended before the error
        return ids.error();
      }
      answer = json{{"ended", *ids}};
    } else {
      if (!params.contains("id") || !params["id"].is_string()) return input_error("window.end needs an id or all");
      std::string id = params["id"];
      SPARK_TRY_VOID(mgr_->end(id, who));
      answer = json{{"ended", {id}}};
    }
    // Answered once the worker has evicted the big windows' files (as a begin waits for its keeper).
    auto evict = mgr_->take_evictions();
    if (evict.empty()) return answer;
    auto to = ctx_->defer();
    if (!to) {  // this context cannot wait
      for (auto& r : evict) window::evict_last_time(std::move(r));
      return answer;
    }
    evict_off_loop(std::move(evict), std::move(*to), std::move(answer));
    return json();
  }));
  // A begin or end writes the journal and the kernel: after the cheap requests of its round.
  ctx.mark_dear("window.begin");
  ctx.mark_dear("window.end");
  SPARK_TRY_VOID(ctx.add_raw_handler("window.list", [this](const json&, const Peer&) -> Result<SharedJson> {
    auto now = Clock::now();
    if (!list_ || now - list_at_ >= k_list_reuse || now < list_at_) {
      list_ = share_json(mgr_->describe_windows());
      list_at_ = now;
    }
    return list_;
  }));
  return {};
}

std::vector<pollfd> WindowService::poll_fds() {
  std::vector<pollfd> out;
  if (mgr_)
    for (int fd : mgr_->poll_fds()) out.push_back({fd, POLLIN | POLLPRI, 0});
  if (wake_fd_ >= 0) out.push_back({wake_fd_, POLLIN, 0});
  return out;
}

void WindowService::on_ready(int fd, Clock::time_point now) {
  if (fd != wake_fd_) {
    mgr_->on_ready(fd, now);
    evict_off_loop(mgr_->take_evictions());  // a watched process's exit ended a big window
    return;
  }
  uint64_t n = 0;
  (void)!::read(wake_fd_, &n, sizeof n);
  std::deque<Expansion> ready;
  {
    std::lock_guard<std::mutex> l(mu_);
    ready.swap(done_);
  }
  for (auto& job : ready) {
    if (job.evicts) {  // the ended windows' files evicted
      if (job.to) ctx_->reply(*job.to, std::move(job.answer));
      continue;
    }
    if (job.keeper_recipe) {
      keeper_built(job);
      continue;
    }
    if (!*job.files) {
      ctx_->reply(*job.to, job.files->error());
      continue;
    }
    if (auto r = begin_now(job.spec, job.peer, &**job.files, &*job.to)) ctx_->reply(*job.to, std::move(*r));
  }
}

std::optional<Clock::time_point> WindowService::next_timer() {
  if (!loop_runs_) {
    // The loop runs (the agent dropped its capabilities before it): the worker may start, for
    // what recovery queued.
    std::lock_guard<std::mutex> l(mu_);
    loop_runs_ = true;
    if (!todo_.empty() && !worker_.joinable() && !quit_) worker_ = std::thread([this] { worker_main(); });
  }
  return mgr_ ? mgr_->next_timer() : std::nullopt;
}

void WindowService::on_timer(Clock::time_point now) {
  mgr_->on_timer(now);
  evict_off_loop(mgr_->take_evictions());  // a TTL (or a port, a process gone) ended a big window
}

void WindowService::on_stop() {
  stop_worker();
  if (!mgr_) return;
  if (auto r = mgr_->end_all("agent stopped"); !r) log_error("ending windows at stop: " + describe(r.error()));
}

void WindowService::on_handover() {
  stop_worker();
  if (!mgr_) return;
  log_info("handing " + std::to_string(mgr_->list().size()) + " window(s) over: they stay journaled");
  mgr_.reset();
}

}  // namespace spark::daemon
