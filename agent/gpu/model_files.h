// The size of a model given as files, directories and glob patterns (safetensors and GGUF shards).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/result.h"

namespace spark::gpu {

struct ModelFiles {
  uint64_t bytes = 0;
  std::vector<std::string> files;
};
// A file counts whole. A directory counts its weight files (*.safetensors, *.gguf, *.bin, *.pt, *.pth,
// *.ckpt, *.onnx) recursively, or every regular file when it has none. A pattern with * ? [ is expanded;
// one that matches nothing, or a path that does not exist, is an input error. Each file counts once.
Result<ModelFiles> model_files(const std::vector<std::string>& args);

}  // namespace spark::gpu
