// The one event stream (issue 12): the Event shape, the bounded log (seq, capacity, drops,
// filters, counters), the OOM merge of a probe's and a guard's oom_kill, the events service's
// long-poll, and docs/events.md covering every type the code can emit.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "core/event.h"
#include "core/event_log.h"
#include "daemon/event_service.h"
#include "guard/event.h"

using spark::tune::Tuner;

namespace spark {
namespace {

using namespace std::chrono_literals;

Event ev(EventSource src, const std::string& type, const std::string& subject = "", nlohmann::json data = {}) {
  Event e;
  e.source = src;
  e.type = type;
  e.subject = subject;
  e.summary = type + " " + subject;
  e.data = data.is_object() ? data : nlohmann::json::object();
  return e;
}

TEST(EventShape, JsonHasOneKeySetAndRoundTrips) {
  Event e = ev(EventSource::window, "window_end", "w3", {{"reason", "TTL ran out"}});
  e.seq = 7;
  e.hint = "h";
  auto j = e.to_json();
  for (const char* k : {"seq", "time_ms", "source", "type", "subject", "summary", "hint", "data"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j.size(), 8u) << j.dump();
  EXPECT_EQ(j["source"], "window");
  auto back = event_from_json(j);
  ASSERT_TRUE(back.ok()) << back.error().what();
  EXPECT_EQ(back->to_json(), j);
  // An unknown type or source is refused, with where to look.
  j["type"] = "window_exploded";
  auto bad = event_from_json(j);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.error().what()).find("docs/events.md"), std::string::npos);
  j["type"] = "window_end";
  j["source"] = "kernel";
  EXPECT_FALSE(event_from_json(j).ok());
}

TEST(EventShape, JournalFieldsNameEveryAttribute) {
  Event e = ev(EventSource::guard, "oom_kill", "g1", {{"pid", 42}});
  e.seq = 3;
  std::map<std::string, std::string> f;
  for (const auto& [k, v] : event_log_fields(e)) f[k] = v;
  EXPECT_EQ(f["TUNE_EVENT_SEQ"], "3");
  EXPECT_EQ(f["TUNE_EVENT_SOURCE"], "guard");
  EXPECT_EQ(f["TUNE_EVENT_TYPE"], "oom_kill");
  EXPECT_EQ(f["TUNE_EVENT_SUBJECT"], "g1");
  EXPECT_TRUE(f.count("TUNE_EVENT_TIME_MS") && f.count("TUNE_EVENT_HINT"));
  EXPECT_EQ(nlohmann::json::parse(f["TUNE_EVENT_DATA"])["pid"], 42);
}

TEST(EventLog, NumbersKeepsTheNewestAndCountsDrops) {
  EventLog log(3);
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(log.append(ev(EventSource::window, "window_begin", "w" + std::to_string(i))), uint64_t(i + 1));
  EXPECT_EQ(log.size(), 3u);
  EXPECT_EQ(log.dropped(), 2u);
  EXPECT_EQ(log.last_seq(), 5u);
  auto page = log.after(0);
  ASSERT_EQ(page.events.size(), 3u);
  EXPECT_EQ(page.events.front().seq, 3u);
  EXPECT_EQ(page.dropped, 2u) << "the client missed seq 1 and 2";
  EXPECT_EQ(page.next, 5u);
  auto later = log.after(3);
  EXPECT_EQ(later.dropped, 0u);
  ASSERT_EQ(later.events.size(), 2u);
  EXPECT_EQ(later.events[0].seq, 4u);
  EXPECT_TRUE(log.after(5).events.empty());
}

TEST(EventLog, FiltersBySourceTypeAndSubject) {
  EventLog log;
  log.append(ev(EventSource::window, "window_begin", "w1"));
  log.append(ev(EventSource::guard, "server_ready", "g1"));
  log.append(ev(EventSource::guard, "server_ready", "g2"));
  log.append(ev(EventSource::telemetry, "reclaim_storm"));
  EventFilter f;
  f.source = EventSource::guard;
  EXPECT_EQ(log.after(0, f).events.size(), 2u);
  f.subject = "g2";
  auto one = log.after(0, f);
  ASSERT_EQ(one.events.size(), 1u);
  EXPECT_EQ(one.events[0].seq, 3u);
  EXPECT_EQ(one.next, 4u) << "the cursor moves past events that did not match";
  EventFilter t;
  t.type = "reclaim_storm";
  EXPECT_EQ(log.after(0, t).events.size(), 1u);
}

TEST(EventLog, CountersAreViewsOfTheLogWithZerosForKnownTypes) {
  EventLog log(1);
  log.append(ev(EventSource::window, "window_begin", "w1"));
  log.append(ev(EventSource::window, "window_begin", "w2"));
  auto m = log.metrics_text();
  EXPECT_NE(m.find("spark_tune_events_total{source=\"window\",type=\"window_begin\"} 2\n"), std::string::npos) << m;
  EXPECT_NE(m.find("spark_tune_events_total{source=\"guard\",type=\"oom_kill\"} 0\n"), std::string::npos);
  EXPECT_NE(m.find("spark_tune_events_dropped_total 1\n"), std::string::npos);
  EXPECT_NE(m.find("spark_tune_event_log_capacity 1\n"), std::string::npos);
}

TEST(EventLog, ListenersSeeEachNumberedEvent) {
  EventLog log;
  std::vector<uint64_t> seen;
  log.on_append([&](const Event& e) { seen.push_back(e.seq); });
  log.append(ev(EventSource::profile, "profile_applied", "base"));
  log.append(ev(EventSource::profile, "profile_reverted"));
  EXPECT_EQ(seen, (std::vector<uint64_t>{1, 2}));
}

// One OOM kill, one event: the probe's oom_kill waits for the guard's and becomes part of it.
TEST(EventLogOom, ProbeThenGuardIsOneGuardEvent) {
  EventLog log;
  log.set_guards_active([] { return true; });
  auto t0 = EventLog::Clock::now();
  EXPECT_EQ(log.append(ev(EventSource::telemetry, "oom_kill", "42", {{"pid", 42}, {"comm", "srv"}}), t0), 0u);
  EXPECT_TRUE(log.after(0).events.empty()) << "held for the guard";
  ASSERT_TRUE(log.next_flush());
  uint64_t seq = log.append(ev(EventSource::guard, "oom_kill", "g1", {{"pid", 42}, {"victims", {42}}}), t0 + 100ms);
  EXPECT_EQ(seq, 1u);
  auto page = log.after(0);
  ASSERT_EQ(page.events.size(), 1u);
  const auto& e = page.events[0];
  EXPECT_EQ(e.source, EventSource::guard);
  EXPECT_EQ(e.subject, "g1");
  EXPECT_EQ(e.data["probe"]["comm"], "srv");
  EXPECT_FALSE(log.next_flush());
  log.flush(t0 + 10s);
  EXPECT_EQ(log.after(0).events.size(), 1u);
}

TEST(EventLogOom, GuardThenProbeIsFolded) {
  EventLog log;
  log.set_guards_active([] { return true; });
  auto t0 = EventLog::Clock::now();
  EXPECT_EQ(log.append(ev(EventSource::guard, "oom_kill", "g1", {{"pid", 7}, {"victims", {7, 8}}}), t0), 1u);
  EXPECT_EQ(log.append(ev(EventSource::telemetry, "oom_kill", "8", {{"pid", 8}}), t0 + 50ms), 0u);
  EXPECT_EQ(log.after(0).events.size(), 1u);
  EXPECT_EQ(log.folded(), 1u);
  // Another victim, not the guard's: its own event after the hold.
  EXPECT_EQ(log.append(ev(EventSource::telemetry, "oom_kill", "99", {{"pid", 99}}), t0 + 60ms), 0u);
  log.flush(t0 + 60ms + EventLog::k_oom_join);
  auto page = log.after(0);
  ASSERT_EQ(page.events.size(), 2u);
  EXPECT_EQ(page.events[1].source, EventSource::telemetry);
  EXPECT_EQ(page.events[1].subject, "99");
}

TEST(EventLogOom, GuardFirstWaitsForTheProbesWhenTheyRun) {
  EventLog log;
  log.set_guards_active([] { return true; });
  log.set_probes_active([] { return true; });
  auto t0 = EventLog::Clock::now();
  EXPECT_EQ(log.append(ev(EventSource::guard, "oom_kill", "g1", {{"pid", 7}, {"victims", {7}}}), t0), 0u);
  EXPECT_EQ(log.append(ev(EventSource::telemetry, "oom_kill", "7", {{"pid", 7}, {"comm", "srv"}}), t0 + 30ms), 1u);
  auto page = log.after(0);
  ASSERT_EQ(page.events.size(), 1u);
  EXPECT_EQ(page.events[0].source, EventSource::guard);
  EXPECT_EQ(page.events[0].data["probe"]["comm"], "srv");
  // No probe event for the next kill: the guard's goes out at the end of the hold, as it was.
  EXPECT_EQ(log.append(ev(EventSource::guard, "oom_kill", "g1", {{"pid", 9}, {"victims", {9}}}), t0 + 1s), 0u);
  log.flush(t0 + 1s + EventLog::k_oom_join);
  page = log.after(1);
  ASSERT_EQ(page.events.size(), 1u);
  EXPECT_FALSE(page.events[0].data.contains("probe"));
}

TEST(EventLogOom, WithoutGuardsTheProbeEventGoesOutAtOnce) {
  EventLog log;
  log.set_guards_active([] { return false; });
  EXPECT_EQ(log.append(ev(EventSource::telemetry, "oom_kill", "5", {{"pid", 5}})), 1u);
  EXPECT_FALSE(log.next_flush());
}

// Every type the code can emit (the one table) is documented in docs/events.md, with its source.
TEST(EventDocs, EveryTypeIsDocumented) {
  std::ifstream in(std::string(SPARK_TUNE_SOURCE_POLICY_DIR) + "/../docs/events.md");
  ASSERT_TRUE(in) << "docs/events.md is missing";
  std::stringstream ss;
  ss << in.rdbuf();
  std::string doc = ss.str();
  for (const auto& t : event_types()) {
    std::string row = std::string("| ") + event_source_name(t.source) + " | `" + t.type + "` |";
    EXPECT_NE(doc.find(row), std::string::npos) << "docs/events.md has no row '" << row << "'";
  }
  for (const char* field : {"SPARK_TUNE_EVENT_SEQ", "SPARK_TUNE_EVENT_SOURCE", "SPARK_TUNE_EVENT_TYPE",
                            "SPARK_TUNE_EVENT_SUBJECT", "SPARK_TUNE_EVENT_DATA", "spark_tune_events_total",
                            "spark_tune_events_dropped_total", "--source", "--type", "--subject", "--wait"})
    EXPECT_NE(doc.find(field), std::string::npos) << field;
  EXPECT_NE(doc.find(std::to_string(EventLog::k_default_capacity)), std::string::npos) << "the capacity";
}

// Every type the guard's event maker names is in the table.
TEST(EventDocs, GuardEventsAreInTheTable) {
  for (const char* t : {"guard_start", "guard_settled", "guard_resume", "guard_error", "guard_end", "memory_growth",
                        "oom_kill", "hook_start", "hook_done", "server_exit", "server_restart", "restart_limit",
                        "restart_failed", "server_ready"}) {
    auto e = guard::make_event("g1", t, {});
    EXPECT_TRUE(known_event_type(e.source, e.type)) << t;
    EXPECT_NE(e.summary.find("g1"), std::string::npos) << t;
  }
}

// The events service: a long-poll is answered when a matching event arrives, not before.
class FakeContext : public daemon::ServiceContext {
 public:
  const HostPaths& paths() const override { return paths_; }
  Tuner& tuner() override { std::abort(); }
  Result<void> add_handler(const std::string& m, daemon::Handler h) override {
    handlers[m] = std::move(h);
    return {};
  }
  std::optional<daemon::DeferredReply> defer() override {
    deferred = true;
    return daemon::DeferredReply{3, 1, nlohmann::json(1)};
  }
  void reply(const daemon::DeferredReply&, Result<daemon::json> r) override { replies.push_back(std::move(r)); }
  std::map<std::string, daemon::Handler> handlers;
  std::vector<Result<daemon::json>> replies;
  bool deferred = false;
  HostPaths paths_ = HostPaths::system();
};

TEST(EventService, LongPollWakesOnAMatchingEventOnly) {
  FakeContext ctx;
  daemon::EventService svc;
  ASSERT_TRUE(svc.on_start(ctx).ok());
  daemon::Peer peer;
  auto now = ctx.handlers.at("events.list")(nlohmann::json::object(), peer);
  ASSERT_TRUE(now.ok());
  uint64_t cursor = (*now)["next"];
  auto r = ctx.handlers.at("events.list")(
      {{"after", cursor}, {"wait_ms", 5000}, {"source", "guard"}, {"type", "server_ready"}}, peer);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(ctx.deferred);
  ctx.events().append(ev(EventSource::window, "window_begin", "w1"));
  auto t = svc.next_timer();
  ASSERT_TRUE(t);
  svc.on_timer(daemon::Clock::now());
  EXPECT_TRUE(ctx.replies.empty()) << "a window event does not answer a wait for server_ready";
  ctx.events().append(ev(EventSource::guard, "server_ready", "g1"));
  t = svc.next_timer();
  ASSERT_TRUE(t);
  EXPECT_LE(*t, daemon::Clock::now()) << "woken at once";
  svc.on_timer(daemon::Clock::now());
  ASSERT_EQ(ctx.replies.size(), 1u);
  ASSERT_TRUE(ctx.replies[0].ok());
  auto& out = *ctx.replies[0];
  ASSERT_EQ(out["events"].size(), 1u);
  EXPECT_EQ(out["events"][0]["type"], "server_ready");
  EXPECT_EQ(out["next"], 2);
  EXPECT_EQ(out["dropped"], 0);
  EXPECT_EQ(out["capacity"], EventLog::k_default_capacity);
  // Bad filters are refused; a client cannot forge a guard event.
  EXPECT_FALSE(ctx.handlers.at("events.list")({{"source", "kernel"}}, peer).ok());
  auto forged = ctx.handlers.at("events.emit")({{"event", ev(EventSource::guard, "oom_kill", "g1").to_json()}}, peer);
  EXPECT_FALSE(forged.ok());
  auto applied =
      ctx.handlers.at("events.emit")({{"event", ev(EventSource::profile, "profile_applied", "base").to_json()}}, peer);
  ASSERT_TRUE(applied.ok());
  EXPECT_EQ((*applied)["seq"], 3);
}

}  // namespace
}  // namespace spark
