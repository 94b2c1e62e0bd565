// spark-tune window begin|end|list: load windows held by the agent.
#include "cli/registry.h"
#include "cli/window_options.h"
#include "core/units.h"

using spark::window::spec_to_json;

namespace {

using json = nlohmann::json;

std::string ttl_left(const json& w) {
  return spark::format_duration(std::chrono::milliseconds(w.value("ttl_left_ms", int64_t{0})));
}

void setup(CLI::App& app, spark::cli::Context& ctx) {
  using namespace spark;
  auto* window =
      app.add_subcommand("window", "load windows: temporary sysctl overlay, readahead throttle, page-cache control");
  window->require_subcommand(1);

  static cli::WindowCliOptions begin_opts;
  auto* begin = window->add_subcommand("begin", "begin a window and print its id");
  cli::add_window_options(*begin, begin_opts, true);
  begin->callback([&ctx] {
    auto spec = cli::to_spec(begin_opts);
    if (!spec) {
      ctx.exit_code = cli::report_error(ctx, describe(spec.error()));
      return;
    }
    auto r = cli::agent_call(ctx, "window.begin", spec_to_json(*spec));
    if (!r) {
      ctx.exit_code = cli::agent_error(ctx, r.error());
      return;
    }
    if (ctx.json) {
      cli::print_json(*r);
    } else {
      std::cout << r->value("id", "") << std::endl;
      if (r->contains("overlay_reserve")) std::cerr << (*r)["overlay_reserve"].value("text", "") << std::endl;
    }
  });

  static std::string end_id;
  static bool end_all = false;
  auto* end = window->add_subcommand("end", "end a window (or --all): every change it made is undone");
  end->add_option("id", end_id, "window id (from window begin / window list)");
  end->add_flag("--all", end_all, "end every window");
  end->callback([&ctx] {
    if (end_id.empty() == !end_all) {
      ctx.exit_code = cli::report_error(ctx, "give a window id or --all (see spark-tune window list)");
      return;
    }
    json params = end_all ? json{{"all", true}} : json{{"id", end_id}};
    auto r = cli::agent_call(ctx, "window.end", params);
    if (!r) {
      ctx.exit_code = cli::agent_error(ctx, r.error());
      return;
    }
    if (ctx.json)
      cli::print_json(*r);
    else
      for (const auto& id : (*r)["ended"]) std::cout << "ended " << id.get<std::string>() << std::endl;
  });

  auto* list = window->add_subcommand("list", "windows held by the agent");
  list->callback([&ctx] {
    auto r = cli::agent_call(ctx, "window.list", json::object());
    if (!r) {
      ctx.exit_code = cli::agent_error(ctx, r.error());
      return;
    }
    if (ctx.json) {
      cli::print_json(*r);
      return;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& w : *r) {
      std::string devs;
      for (const auto& d : w["devices"]) devs += (devs.empty() ? "" : ",") + d.get<std::string>();
      rows.push_back({w.value("id", ""), ttl_left(w), w.value("pid", 0) ? std::to_string(w.value("pid", 0)) : "-",
                      w.value("cache", ""),
                      devs.empty() ? "-" : devs + "=" + std::to_string(w.value("readahead_kb", 0)) + "k",
                      std::to_string(w.value("file_count", w["files"].size())), w.value("label", "")});
    }
    cli::print_table({"ID", "TTL LEFT", "PID", "CACHE", "READAHEAD", "FILES", "LABEL"}, rows);
    for (const auto& w : *r)
      for (const auto& c : w["changes"])
        std::cout << "  " << w.value("id", "") << ": " << c.value("target", "") << " = "
                  << (c["value"].is_string() ? c["value"].get<std::string>() : "(absent)") << " (was "
                  << (c["previous"].is_string() ? c["previous"].get<std::string>() : "absent") << ")\n";
  });
}

const spark::cli::Verb k_verb{"window", 40, setup};

}  // namespace
