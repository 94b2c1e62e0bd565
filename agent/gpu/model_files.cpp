#include "gpu/model_files.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <set>

namespace spark::gpu {

namespace fs = std::filesystem;

namespace {

bool is_weight_file(const fs::path& p) {
  static const std::set<std::string> k_ext = {".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".onnx"};
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return k_ext.count(ext) > 0;
}

Result<std::vector<std::string>> expand(const std::string& arg) {
  if (arg.find_first_of("*?[") == std::string::npos) return std::vector<std::string>{arg};
  glob_t g{};
  int rc = ::glob(arg.c_str(), GLOB_ERR, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  if (rc == GLOB_NOMATCH || out.empty()) return input_error("--model " + arg + ": no file matches this pattern");
  if (rc != 0) return input_error("--model " + arg + ": cannot expand this pattern");
  return out;
}

}  // namespace

Result<ModelFiles> model_files(const std::vector<std::string>& args) {
  std::set<fs::path> seen;
  ModelFiles m;
  auto add = [&](const fs::path& p) -> Result<void> {
    std::error_code ec;
    auto canon = fs::canonical(p, ec);
    if (ec) return sys_error(ec.value(), "--model " + p.string());
    if (!seen.insert(canon).second) return {};
    auto size = fs::file_size(canon, ec);
    if (ec) return sys_error(ec.value(), "--model " + p.string());
    m.bytes += size;
    m.files.push_back(p.string());
    return {};
  };
  for (const auto& arg : args) {
    SPARK_TRY(auto paths, expand(arg));
    for (const auto& ps : paths) {
      fs::path p(ps);
      std::error_code ec;
      auto st = fs::status(p, ec);
      if (ec || !fs::exists(st)) return input_error("--model " + ps + ": no such file or directory");
      if (fs::is_directory(st)) {
        std::vector<fs::path> all, weights;
        for (fs::recursive_directory_iterator it(p, fs::directory_options::follow_directory_symlink, ec), end;
             !ec && it != end; it.increment(ec)) {
          if (!it->is_regular_file(ec)) continue;
          all.push_back(it->path());
          if (is_weight_file(it->path())) weights.push_back(it->path());
        }
        if (ec) return sys_error(ec.value(), "--model " + ps + ": reading the directory");
        auto& chosen = weights.empty() ? all : weights;
        if (chosen.empty()) return input_error("--model " + ps + ": the directory holds no files");
        std::sort(chosen.begin(), chosen.end());
        for (const auto& f : chosen) SPARK_TRY_VOID(add(f));
      } else if (fs::is_regular_file(st)) {
        SPARK_TRY_VOID(add(p));
      } else {
        return input_error("--model " + ps + ": not a regular file or directory");
      }
    }
  }
  return m;
}

}  // namespace spark::gpu
