# Sourced by test.sh (stage boot1): the project's integration test binary, where the harness copied it.
if [ ! -x "$V/itest/integration_tests" ]; then
  skip "integration tests" "no integration_tests binary for $arch on the transfer disk (amd64 guests only)"
else
  # The tests find the binary, fixtures and policies by their build-time paths.
  . "$V/itest/paths"
  mkdir -p "$build/agent" "$repo"
  cp "$V/itest/spark-tune" "$build/agent/spark-tune"
  tar -C "$repo" -xf "$V/itest/tree.tar"
  # The agent of the package must not hold the kernel while the tests run their own agents.
  systemctl stop spark-tune.socket spark-tune.service
  t0=$SECONDS
  # Each test's start goes to the console (a hang names its test), and the binary is bounded:
  # past SPARK_TUNE_VM_ITEST_TIMEOUT (default 1800 s) it is killed and the stage goes on.
  # TCG emulates the CPU: tests that bound a latency scale it by 4; those that watch a short period
  # from outside skip and say so (tests/support/fixture.h, time_scale).
  SPARK_TUNE_TEST_TIME_SCALE=4 timeout --signal=KILL "${SPARK_TUNE_VM_ITEST_TIMEOUT:-1800}" "$V/itest/integration_tests" --gtest_color=no 2>&1 |
    tee "$OUT/integration.log" | while IFS= read -r line; do
      case "$line" in "[ RUN      ]"*|"[  FAILED  ]"*) con "  ${line#\[ RUN      \] }" ;; esac
    done
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 137 ] && con "integration tests killed after ${SPARK_TUNE_VM_ITEST_TIMEOUT:-1800} s, in: $(grep '^\[ RUN' "$OUT/integration.log" | tail -n 1)"
  t=$((SECONDS - t0))
  passed=$(sed -nE 's/^\[  PASSED  \] ([0-9]+) tests?.*/\1/p' "$OUT/integration.log")
  skipped=$(sed -nE 's/^\[  SKIPPED \] ([0-9]+) tests?.*/\1/p' "$OUT/integration.log")
  failed=$(sed -nE 's/^\[  FAILED  \] ([0-9]+) tests?.*/\1/p' "$OUT/integration.log")
  summary="${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped in ${t} s"
  sed -nE "s/^\[  FAILED  \] ([A-Za-z][A-Za-z0-9_.\/]*).*/\1/p" "$OUT/integration.log" | sort -u |
    while read -r name; do con "  integration FAILED $name"; done
  # A skip with its reason (the line gtest prints after "Skipped").
  awk '/: Skipped$/ { getline why; next } /^\[  SKIPPED \] [A-Za-z].* \(/ { print $4 ": " why; why = "" }' "$OUT/integration.log" |
    while IFS= read -r line; do con "  integration SKIPPED $line"; done
  [ $rc -eq 0 ] && pass "integration tests: $summary" || fail "integration tests" "$summary (exit $rc; out/integration.log)"
  systemctl start spark-tune.socket
  check "integration tests left the values as they were" same_as "$OUT/baseline.txt"
fi
