// libsystemd loaded when first used, not at every start (issue 12, defect 4). Linking it made
// every spark-tune process load libsystemd and what it pulls (libgcrypt, libgpg-error, liblzma,
// libzstd, liblz4, libcap): most of the start-up time of a verb that never talks to systemd
// (docs/benchmarks.md). The agent (sd_notify, socket activation, the journal) and the guard's
// transient scopes (sd-bus) are the only users; they call the usual sd_* functions, defined here
// as trampolines into libsystemd.so.0 opened by dlopen at the first call. Without the library
// every call fails as libsystemd's own do when there is no systemd: a negative errno (-ENOSYS),
// 0 for "not socket-activated" / "no watchdog".
//
// Only the functions spark-tune uses are here; a new one is a link error until it is added.
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
// The plain names: sd-journal.h otherwise turns sd_journal_sendv into its _with_location form.
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#include <mutex>

namespace {

void* libsystemd() {
  static void* handle = nullptr;
  static std::once_flag once;
  std::call_once(once, [] { handle = ::dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL); });
  return handle;
}

template <typename F>
F resolve(const char* name) {
  void* h = libsystemd();
  return h ? reinterpret_cast<F>(::dlsym(h, name)) : nullptr;
}

// The function `name` of libsystemd with the type of `decl` (resolved once).
#define SPARK_SD_FN(name) static auto fn = resolve<decltype(&::name)>(#name)

}  // namespace

extern "C" {

int sd_listen_fds(int unset_environment) {
  SPARK_SD_FN(sd_listen_fds);
  return fn ? fn(unset_environment) : 0;
}

int sd_is_socket_unix(int fd, int type, int listening, const char* path, size_t length) {
  SPARK_SD_FN(sd_is_socket_unix);
  return fn ? fn(fd, type, listening, path, length) : -ENOSYS;
}

int sd_notify(int unset_environment, const char* state) {
  SPARK_SD_FN(sd_notify);
  return fn ? fn(unset_environment, state) : 0;
}

int sd_notifyf(int unset_environment, const char* format, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, format);
  int n = vsnprintf(buf, sizeof buf, format, ap);
  va_end(ap);
  if (n < 0) return -EINVAL;
  return sd_notify(unset_environment, buf);
}

int sd_watchdog_enabled(int unset_environment, uint64_t* usec) {
  SPARK_SD_FN(sd_watchdog_enabled);
  return fn ? fn(unset_environment, usec) : 0;
}

int sd_journal_sendv(const struct iovec* iov, int n) {
  SPARK_SD_FN(sd_journal_sendv);
  return fn ? fn(iov, n) : -ENOSYS;
}

int sd_journal_sendv_with_location(const char* file, const char* line, const char* func, const struct iovec* iov,
                                   int n) {
  SPARK_SD_FN(sd_journal_sendv_with_location);
  return fn ? fn(file, line, func, iov, n) : -ENOSYS;
}

int sd_bus_open_system(sd_bus** ret) {
  SPARK_SD_FN(sd_bus_open_system);
  return fn ? fn(ret) : -ENOSYS;
}

sd_bus* sd_bus_flush_close_unref(sd_bus* bus) {
  SPARK_SD_FN(sd_bus_flush_close_unref);
  return fn ? fn(bus) : nullptr;
}

sd_bus_message* sd_bus_message_unref(sd_bus_message* m) {
  SPARK_SD_FN(sd_bus_message_unref);
  return fn ? fn(m) : nullptr;
}

int sd_bus_message_new_method_call(sd_bus* bus, sd_bus_message** m, const char* destination, const char* path,
                                   const char* interface, const char* member) {
  SPARK_SD_FN(sd_bus_message_new_method_call);
  return fn ? fn(bus, m, destination, path, interface, member) : -ENOSYS;
}

// The two variadic calls go to their va_list forms (sd_bus_message_appendv/readv).
#define SPARK_SD_VARIADIC(name, vname)                                                \
  int name(sd_bus_message* m, const char* types, ...) {                               \
    static auto fn = resolve<int (*)(sd_bus_message*, const char*, va_list)>(#vname); \
    if (!fn) return -ENOSYS;                                                          \
    va_list ap;                                                                       \
    va_start(ap, types);                                                              \
    int rc = fn(m, types, ap);                                                        \
    va_end(ap);                                                                       \
    return rc;                                                                        \
  }
SPARK_SD_VARIADIC(sd_bus_message_append, sd_bus_message_appendv)
SPARK_SD_VARIADIC(sd_bus_message_read, sd_bus_message_readv)
#undef SPARK_SD_VARIADIC

int sd_bus_message_open_container(sd_bus_message* m, char type, const char* contents) {
  SPARK_SD_FN(sd_bus_message_open_container);
  return fn ? fn(m, type, contents) : -ENOSYS;
}

int sd_bus_message_close_container(sd_bus_message* m) {
  SPARK_SD_FN(sd_bus_message_close_container);
  return fn ? fn(m) : -ENOSYS;
}

int sd_bus_call(sd_bus* bus, sd_bus_message* m, uint64_t usec, sd_bus_error* ret_error, sd_bus_message** reply) {
  SPARK_SD_FN(sd_bus_call);
  return fn ? fn(bus, m, usec, ret_error, reply) : -ENOSYS;
}

void sd_bus_error_free(sd_bus_error* e) {
  SPARK_SD_FN(sd_bus_error_free);
  if (fn) fn(e);
}

}  // extern "C"
