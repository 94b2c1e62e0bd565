// libFuzzer target for the /metrics HTTP request parser the agent runs (answer_http), on the
// bytes received so far as the server accumulates them: every prefix boundary the fuzzer picks,
// then the whole input. Every answer must format (format_http_reply) into a well-formed status
// line; nothing may crash, hang or leak.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "daemon/metrics_http.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  auto body = [] { return std::string("spark_tune_up 1\n"); };
  size_t cut = size ? data[0] % (size + 1) : 0;
  for (std::string_view seen : {all.substr(0, cut), all}) {
    auto reply = spark::daemon::answer_http(seen, body, 512);  // a small head limit reaches 431 often
    if (!reply) continue;
    std::string wire = spark::daemon::format_http_reply(*reply);
    if (wire.rfind("HTTP/1.0 ", 0) != 0 || wire.find("\r\n\r\n") == std::string::npos) std::abort();
    if (reply->status < 200 || reply->status > 599) std::abort();
  }
  return 0;
}
