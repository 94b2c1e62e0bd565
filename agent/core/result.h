// Errors as values: Result<T> holds a T or a std::system_error that says what failed and why.
#pragma once

#include <algorithm>
#include <cerrno>
#include <string>
#include <system_error>
#include <utility>
#include <variant>

// core/ is the house's shared base (Result, HostPaths, the fs helpers, the one Event type...): it
// stays in namespace spark itself, which every part's own namespace (spark::guard, spark::daemon,
// ...) sees without qualification. A part names another part's names qualified (guard::CgroupBox);
// docs/architecture.md lists the parts and which have their namespace yet.
namespace spark {

using Error = std::system_error;

// An error from an errno value, with what was being done: "writing vm.min_free_kbytes: Invalid argument".
inline Error sys_error(int err, const std::string& context) { return Error(err, std::generic_category(), context); }
inline Error errno_error(const std::string& context) { return sys_error(errno, context); }
// An error that is the user's input, not the system's (EINVAL with the message as given).
inline Error input_error(const std::string& message) { return sys_error(EINVAL, message); }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<Error>(v_); }
  T value_or(T fallback) const { return ok() ? value() : std::move(fallback); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  // Implicit and by value as Result<T>'s; system_error copies either way.
  // NOLINTNEXTLINE(google-explicit-constructor,performance-unnecessary-value-param,performance-move-const-arg)
  Result(Error error) : err_(std::move(error)), failed_(true) {}

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return err_; }

 private:
  Error err_{0, std::generic_category()};
  bool failed_ = false;
};

inline Result<void> ok_result() { return {}; }

// The text of an error for a person: the context and the system's reason, once each.
inline std::string describe(const Error& e) { return e.what(); }

// Prefix more context to an error: "applying dgx-spark: writing vm.dirty_ratio: Invalid argument".
inline Error with_context(const Error& e, const std::string& context) {
  std::string what = e.what();
  auto code = e.code();
  // system_error::what() is "context: reason"; keep it whole and put the new context first.
  std::string inner = what.substr(0, what.size() - std::min(what.size(), code.message().size() + 2));
  return Error(code, inner.empty() ? context : context + ": " + inner);
}

}  // namespace spark

// Early return on error: SPARK_TRY(auto x, expr); or SPARK_TRY_VOID(expr);
#define SPARK_CONCAT_INNER(a, b) a##b
#define SPARK_CONCAT(a, b) SPARK_CONCAT_INNER(a, b)
#define SPARK_TRY_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                    \
  if (!tmp.ok()) return tmp.error();    \
  decl = std::move(tmp).value()
#define SPARK_TRY(decl, expr) SPARK_TRY_IMPL(SPARK_CONCAT(spark_try_, __LINE__), decl, expr)
#define SPARK_TRY_VOID(expr)                           \
  do {                                                 \
    auto spark_try_v = (expr);                         \
    if (!spark_try_v.ok()) return spark_try_v.error(); \
  } while (0)
