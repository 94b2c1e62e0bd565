// gpu_hog: holds GPU memory until killed, to measure the settle wait after a kill on a real driver.
// Usage: gpu_hog DEVICE GIB [READY_FILE]. CUDA driver API through dlopen (libcuda.so.1): no build dependency.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: gpu_hog DEVICE GIB [READY_FILE]\n");
    return 2;
  }
  int device = std::atoi(argv[1]);
  int gib = std::atoi(argv[2]);
  void* lib = ::dlopen("libcuda.so.1", RTLD_NOW);
  if (!lib) {
    std::fprintf(stderr, "gpu_hog: %s\n", ::dlerror());
    return 1;
  }
  using init_t = int (*)(unsigned);
  using dev_t_ = int (*)(int*, int);
  using ctx_t = int (*)(void**, unsigned, int);
  using alloc_t = int (*)(unsigned long long*, size_t);
  using memset_t = int (*)(unsigned long long, unsigned char, size_t);
  auto cu_init = reinterpret_cast<init_t>(::dlsym(lib, "cuInit"));
  auto cu_dev = reinterpret_cast<dev_t_>(::dlsym(lib, "cuDeviceGet"));
  auto cu_ctx = reinterpret_cast<ctx_t>(::dlsym(lib, "cuCtxCreate_v2"));
  auto cu_alloc = reinterpret_cast<alloc_t>(::dlsym(lib, "cuMemAlloc_v2"));
  auto cu_memset = reinterpret_cast<memset_t>(::dlsym(lib, "cuMemsetD8_v2"));
  int dev = 0;
  void* ctx = nullptr;
  if (!cu_init || cu_init(0) || cu_dev(&dev, device) || cu_ctx(&ctx, 0, dev)) {
    std::fprintf(stderr, "gpu_hog: CUDA init failed\n");
    return 1;
  }
  for (int i = 0; i < gib; ++i) {
    unsigned long long p = 0;
    if (cu_alloc(&p, 1ull << 30)) {
      std::fprintf(stderr, "gpu_hog: allocation %d failed\n", i);
      break;
    }
    if (cu_memset) cu_memset(p, 1, 1ull << 30);
  }
  std::fprintf(stderr, "gpu_hog: holding %d GiB on GPU %d, pid %d\n", gib, device, static_cast<int>(::getpid()));
  if (argc > 3) std::ofstream(argv[3]) << ::getpid() << "\n";
  for (;;) ::pause();
}
