#include "support/run_spark_tune.h"

namespace spark::test {

ProcessResult run_spark_tune(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  std::vector<std::string> argv = {SPARK_TUNE_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions opts;
  opts.extra_env = env;
  auto r = run_process(argv, opts);
  if (!r) {
    ProcessResult failed;
    failed.err = r.error().what();
    return failed;
  }
  return std::move(*r);
}

}  // namespace spark::test
