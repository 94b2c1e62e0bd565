// spark-tune preflight: refuse a load that will not fit. Exit 0 go, 1 refused, 2 could not decide.
#include "gpu/preflight.h"

#include <unistd.h>

#include <iostream>
#include <sstream>

#include "cli/registry.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/units.h"
#include "gpu/model_files.h"
#include "profile/profile_options.h"
#include "telemetry/free_blocks.h"
#include "telemetry/reserve.h"
#include "window/window.h"

using spark::tune::HostActuator;

using spark::telemetry::BlocksAsk, spark::telemetry::BlocksReport, spark::telemetry::BlocksVerdict,
    spark::telemetry::OverlayReserve, spark::telemetry::blocks_verdict_name, spark::telemetry::check_blocks,
    spark::telemetry::overlay_reserve, spark::telemetry::parse_blocks, spark::telemetry::read_buddyinfo;

using spark::profile::ProfileOptions, spark::profile::profile_options;

using spark::window::load_window_overlay;

using spark::gpu::PreflightRequest, spark::gpu::Verdict, spark::gpu::model_files, spark::gpu::run_preflight;

namespace spark::cli {
namespace {

struct Options {
  std::string bytes;
  std::vector<std::string> models;
  std::string gpus;
  std::string gpu_bytes;
  std::string factor;
  std::string headroom;
  std::string profile;
  bool settle = false;
  bool settle_force = false;
  std::string settle_max;
  bool compact = false;
  std::string blocks;
  bool no_overlay = false;
};

Result<std::vector<unsigned>> parse_gpus(const std::string& text) {
  std::vector<unsigned> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    item = trim(item);
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 4)
      return input_error("--gpu " + text + ": expected device indexes like 0 or 0,1");
    unsigned idx = static_cast<unsigned>(std::stoul(item));
    if (std::find(out.begin(), out.end(), idx) == out.end()) out.push_back(idx);
  }
  if (out.empty()) return input_error("--gpu: expected device indexes like 0 or 0,1");
  return out;
}

Result<double> parse_factor(const std::string& text, const std::string& what) {
  char* end = nullptr;
  double f = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(f > 0 && f <= 10))
    return input_error(
        what + " = '" + text +
        "': the factor must be a number above 0 and at most 10 (1.1 with pinned host memory, 0.9 without)");
  return f;
}

// --factor / --headroom win; else the [preflight] table of --profile NAME or of the applied profile;
// else 1.1 and 1 GiB.
Result<void> fill_limits(const HostPaths& paths, const Options& o, PreflightRequest& r) {
  ProfileOptions prof;
  if (o.factor.empty() || o.headroom.empty() || !o.profile.empty()) {
    auto p = profile_options(paths, o.profile.empty() ? std::nullopt : std::optional<std::string>(o.profile));
    if (!p && !o.profile.empty()) return with_context(p.error(), "--profile " + o.profile);
    if (p)
      prof = std::move(*p);
    else
      log_warning(std::string(p.error().what()) + "; preflight uses the built-in factor and headroom");
  }
  std::string factor_from = "built-in", headroom_from = "built-in";
  if (!o.factor.empty()) {
    SPARK_TRY(r.factor, parse_factor(o.factor, "--factor"));
    factor_from = "--factor";
  } else if (auto v = prof.get("preflight.factor")) {
    SPARK_TRY(r.factor, parse_factor(*v, prof.describe() + " preflight.factor"));
    factor_from = prof.describe();
  }
  if (!o.headroom.empty()) {
    auto h = parse_size(o.headroom);
    if (!h) return with_context(h.error(), "--headroom");
    r.headroom = *h;
    headroom_from = "--headroom";
  } else if (auto v = prof.get("preflight.headroom")) {
    auto h = parse_size(*v);
    if (!h) return with_context(h.error(), prof.describe() + " preflight.headroom = '" + *v + "'");
    r.headroom = *h;
    headroom_from = prof.describe();
  }
  r.limits_from = factor_from == headroom_from ? factor_from : "factor " + factor_from + ", headroom " + headroom_from;
  if (r.limits_from == "built-in") r.limits_from = "built-in defaults";
  return {};
}

Result<PreflightRequest> build_request(const HostPaths& paths, const Options& o) {
  PreflightRequest r;
  if (o.bytes.empty() == o.models.empty())
    return input_error("give the model's size with --bytes SIZE or its files with --model PATH...");
  if (!o.bytes.empty()) {
    auto b = parse_size(o.bytes);
    if (!b) return with_context(b.error(), "--bytes");
    r.bytes = *b;
  } else {
    SPARK_TRY(auto m, model_files(o.models));
    r.bytes = m.bytes;
  }
  SPARK_TRY_VOID(fill_limits(paths, o, r));
  if (o.gpus.empty() != o.gpu_bytes.empty())
    return input_error("--gpu and --gpu-bytes go together: which devices, and what each must hold");
  if (!o.gpus.empty()) {
    SPARK_TRY(r.gpus, parse_gpus(o.gpus));
    auto g = parse_size(o.gpu_bytes);
    if (!g) return with_context(g.error(), "--gpu-bytes");
    r.gpu_bytes = *g;
  }
  r.settle = o.settle || o.settle_force;
  r.settle_force = o.settle_force;
  if (!o.settle_max.empty()) {
    auto d = parse_duration(o.settle_max);
    if (!d) return with_context(d.error(), "--settle-max");
    if (d->count() <= 0 || d->count() > 60000) return input_error("--settle-max must be above 0 and at most 60s");
    r.settle_max = *d;
  }
  r.compact = o.compact;
  return r;
}

void setup(CLI::App& app, Context& ctx) {
  auto opts = std::make_shared<Options>();
  auto* cmd =
      app.add_subcommand("preflight", "refuse a load that will not fit: host RAM, fragmentation, per-GPU memory");
  cmd->footer("Exit codes: 0 go, 1 refused (every reason printed), 2 could not decide or bad input.");
  cmd->add_option("--bytes", opts->bytes, "the model's size (17.4G, 18683719680)");
  cmd->add_option("--model", opts->models, "model files, directories or glob patterns; their sizes are summed");
  cmd->add_option("--gpu", opts->gpus, "devices the model is pinned to: IDX[,IDX...]");
  cmd->add_option("--gpu-bytes", opts->gpu_bytes, "what each of those devices must hold");
  cmd->add_option("--factor", opts->factor,
                  "host RAM per model byte (default: the profile's preflight.factor, else 1.1; about 0.9 without "
                  "pinned memory)");
  cmd->add_option("--headroom", opts->headroom,
                  "host RAM kept free on top (default: the profile's preflight.headroom, else 1G)");
  cmd->add_option("--profile", opts->profile,
                  "take the [preflight] defaults from this profile (default: the applied profile, if any)");
  cmd->add_flag("--settle", opts->settle, "wait for GPU memory freed by a recently killed process to come back");
  cmd->add_flag("--settle-force", opts->settle_force, "wait for settle even when no recent kill is seen");
  cmd->add_option("--settle-max", opts->settle_max, "bound on the settle wait, probe time included (default 2s)");
  cmd->add_flag("--compact", opts->compact, "when free memory is fragmented, compact memory and check again");
  cmd->add_option("--blocks", opts->blocks,
                  "COUNTxSIZE: at least COUNT free blocks of SIZE (200x32M); if short, compact once and count "
                  "again: go, compacted (exit 0) or reboot (exit 1)")
      ->type_name("COUNTxSIZE");
  cmd->add_flag("--no-overlay", opts->no_overlay,
                "judge host RAM as it is now, not under the load-window overlay's reserve");
  cmd->callback([opts, &ctx] {
    // --blocks is checked first: bad input changes nothing.
    std::optional<BlocksAsk> ask;
    if (!opts->blocks.empty()) {
      auto buddy = read_buddyinfo(ctx.paths);
      if (!buddy) {
        ctx.exit_code = report_error(ctx, describe(buddy.error()));
        return;
      }
      auto a = parse_blocks(opts->blocks, static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)), buddy->orders());
      if (!a) {
        ctx.exit_code = report_error(ctx, describe(a.error()));
        return;
      }
      ask = *a;
    }
    if (ask && opts->bytes.empty() && opts->models.empty()) {
      HostActuator act(ctx.paths);
      auto rep = check_blocks(ctx.paths, act, *ask);
      if (!rep) {
        ctx.exit_code = report_error(ctx, describe(rep.error()));
        return;
      }
      if (ctx.json)
        print_json(nlohmann::json{{"verdict", blocks_verdict_name(rep->verdict)}, {"blocks", rep->to_json()}});
      else
        std::cout << rep->to_text();
      ctx.exit_code = rep->verdict == BlocksVerdict::reboot ? k_exit_check : k_exit_ok;
      return;
    }
    auto req = build_request(ctx.paths, *opts);
    if (!req) {
      ctx.exit_code = report_error(ctx, req.error().what());
      return;
    }
    HostActuator act(ctx.paths);
    if (!opts->no_overlay) {
      auto overlay = load_window_overlay(ctx.paths, act);
      auto reserve = overlay ? overlay_reserve(ctx.paths, *overlay) : Result<OverlayReserve>(overlay.error());
      if (reserve)
        req->overlay = *reserve;
      else
        log_debug(std::string("overlay reserve not counted: ") + describe(reserve.error()));
    }
    auto rep = run_preflight(ctx.paths, *req, act);
    std::optional<BlocksReport> blocks;
    if (ask) {
      auto b = check_blocks(ctx.paths, act, *ask);
      if (!b) {
        ctx.exit_code = report_error(ctx, describe(b.error()));
        return;
      }
      blocks = *b;
    }
    if (ctx.json) {
      auto j = rep.to_json();
      if (blocks) j["blocks"] = blocks->to_json();
      print_json(j);
    } else {
      std::cout << rep.to_text();
      if (blocks) std::cout << "  " << blocks->to_text();
    }
    ctx.exit_code = rep.verdict == Verdict::go        ? k_exit_ok
                    : rep.verdict == Verdict::refused ? k_exit_check
                                                      : k_exit_error;
    if (blocks && blocks->verdict == BlocksVerdict::reboot && ctx.exit_code == k_exit_ok) ctx.exit_code = k_exit_check;
  });
}

const Verb k_verb{"preflight", 60, setup};

}  // namespace
}  // namespace spark::cli
