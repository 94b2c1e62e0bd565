// libFuzzer target for the profile parser: any bytes must give a Profile or an error, never a
// crash, a hang or an exception.
#include <cstddef>
#include <cstdint>
#include <string>

#include "profile/profile.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto p = spark::profile::parse_profile(text, "fuzz", "fuzz.toml");
  if (p.ok()) {
    for (const auto& s : p->settings) (void)s.key.name.size();
  }
  return 0;
}
