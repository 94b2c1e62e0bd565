// Test seam: an actuator whose writes and triggers fail with the given errno for one target and
// go to the inner actuator for every other. set_failing(false) heals it (a cause that goes away);
// failures() counts the writes and triggers refused.
#pragma once

#include "tune/actuator.h"

namespace spark::test {

class FailingActuator : public tune::Actuator {
 public:
  FailingActuator(tune::Actuator& inner, state::Target fail_on, int err)
      : inner_(inner), fail_on_(std::move(fail_on)), err_(err) {}
  Result<std::optional<std::string>> read(const state::Target& t) override { return inner_.read(t); }
  Result<void> write(const state::Target& t, const std::optional<std::string>& value) override {
    if (failing_ && t == fail_on_) {
      ++failures_;
      return sys_error(err_, "writing " + t.display() + " = " + value.value_or("(remove)"));
    }
    return inner_.write(t, value);
  }
  Result<void> trigger(const state::Target& t, const std::string& value) override {
    if (failing_ && t == fail_on_) {
      ++failures_;
      return sys_error(err_, "writing " + t.display() + " = " + value);
    }
    return inner_.trigger(t, value);
  }
  void set_failing(bool f) { failing_ = f; }
  int failures() const { return failures_; }

 private:
  tune::Actuator& inner_;
  state::Target fail_on_;
  int err_;
  bool failing_ = true;
  int failures_ = 0;
};

}  // namespace spark::test
