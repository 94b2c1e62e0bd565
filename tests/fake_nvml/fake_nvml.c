/* A fake libnvidia-ml with the same C ABI for the few calls spark-tune makes, so tests drive the real
 * dlopen path. Behaviour from the environment, read at nvmlInit_v2 (the moment of the 'kill'):
 *   FAKE_NVML_FREE_MIB   free memory per device, comma separated (default "20480,4096": two devices)
 *   FAKE_NVML_TOTAL_MIB  total per device (default 24576)
 *   FAKE_NVML_MODE       normal | unified (memory info not supported, as on GB10) | fail_init |
 *                        fail_memory | hang_init | hang_memory
 *   FAKE_NVML_HANG_MS    how long a hang lasts (default 3000)
 *   FAKE_NVML_DELAY_MS   every memory query takes this long (a slow probe; default 0)
 *   FAKE_NVML_RAMP       "DEV:MIB:MS": device DEV's free memory grows by MIB, linearly over MS after init, as
 *                        the driver frees what a killed process held; meanwhile the dead holder
 *                        FAKE_NVML_DEAD_PID (default 2147483000, never a live pid) is still listed on DEV
 *   FAKE_NVML_STEP       "DEV:MIB:MS": as RAMP, but all of it comes back at once after MS, as a real driver does
 *                        (H100, driver 580: the dead holder stays listed with its memory ~130-190 ms, then both go)
 *   FAKE_NVML_PROCS      "DEV:PID:MIB,...": live compute processes */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int nvmlReturn_t;
typedef void* nvmlDevice_t;
typedef struct {
  unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

enum { OK = 0, INVALID_ARGUMENT = 2, NOT_SUPPORTED = 3, INSUFFICIENT_SIZE = 7, DRIVER_NOT_LOADED = 9, UNKNOWN = 999 };
#define MAX_DEV 8
#define MAX_PROCS 16
#define MIB (1024ull * 1024ull)

static struct {
  unsigned count;
  unsigned long long free_mib[MAX_DEV];
  unsigned long long total_mib;
  char mode[32];
  long hang_ms, delay_ms;
  int ramp_dev;
  long long ramp_mib, ramp_ms;
  int step;
  unsigned dead_pid;
  unsigned nprocs;
  unsigned proc_dev[MAX_PROCS], proc_pid[MAX_PROCS];
  unsigned long long proc_mib[MAX_PROCS];
  struct timespec t0;
} g;

static const char* env(const char* name, const char* def) {
  const char* v = getenv(name);
  return v && *v ? v : def;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static long long elapsed_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (now.tv_sec - g.t0.tv_sec) * 1000LL + (now.tv_nsec - g.t0.tv_nsec) / 1000000LL;
}

nvmlReturn_t nvmlInit_v2(void) {
  memset(&g, 0, sizeof g);
  clock_gettime(CLOCK_MONOTONIC, &g.t0);
  char buf[256];
  snprintf(buf, sizeof buf, "%s", env("FAKE_NVML_FREE_MIB", "20480,4096"));
  for (char* tok = strtok(buf, ","); tok && g.count < MAX_DEV; tok = strtok(NULL, ","))
    g.free_mib[g.count++] = strtoull(tok, NULL, 10);
  g.total_mib = strtoull(env("FAKE_NVML_TOTAL_MIB", "24576"), NULL, 10);
  snprintf(g.mode, sizeof g.mode, "%s", env("FAKE_NVML_MODE", "normal"));
  g.hang_ms = atol(env("FAKE_NVML_HANG_MS", "3000"));
  g.delay_ms = atol(env("FAKE_NVML_DELAY_MS", "0"));
  g.ramp_dev = -1;
  if (sscanf(env("FAKE_NVML_RAMP", ""), "%d:%lld:%lld", &g.ramp_dev, &g.ramp_mib, &g.ramp_ms) != 3) g.ramp_dev = -1;
  if (sscanf(env("FAKE_NVML_STEP", ""), "%d:%lld:%lld", &g.ramp_dev, &g.ramp_mib, &g.ramp_ms) == 3) g.step = 1;
  g.dead_pid = (unsigned)strtoul(env("FAKE_NVML_DEAD_PID", "2147483000"), NULL, 10);
  snprintf(buf, sizeof buf, "%s", env("FAKE_NVML_PROCS", ""));
  for (char* tok = strtok(buf, ","); tok && g.nprocs < MAX_PROCS; tok = strtok(NULL, ",")) {
    unsigned d, p;
    unsigned long long m;
    if (sscanf(tok, "%u:%u:%llu", &d, &p, &m) == 3) {
      g.proc_dev[g.nprocs] = d;
      g.proc_pid[g.nprocs] = p;
      g.proc_mib[g.nprocs++] = m;
    }
  }
  if (strcmp(g.mode, "fail_init") == 0) return DRIVER_NOT_LOADED;
  if (strcmp(g.mode, "hang_init") == 0) sleep_ms(g.hang_ms);
  return OK;
}

nvmlReturn_t nvmlShutdown(void) {
  return OK;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* count) {
  *count = g.count;
  return OK;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t* device) {
  if (index >= g.count) return INVALID_ARGUMENT;
  *device = (nvmlDevice_t)(uintptr_t)(index + 1);
  return OK;
}

static int ramping(unsigned idx) {
  return g.ramp_dev == (int)idx && elapsed_ms() < g.ramp_ms;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t* memory) {
  unsigned idx = (unsigned)(uintptr_t)device - 1;
  if (idx >= g.count) return INVALID_ARGUMENT;
  if (g.delay_ms) sleep_ms(g.delay_ms);
  if (strcmp(g.mode, "hang_memory") == 0) sleep_ms(g.hang_ms);
  if (strcmp(g.mode, "fail_memory") == 0) return UNKNOWN;
  if (strcmp(g.mode, "unified") == 0) return NOT_SUPPORTED;
  unsigned long long free_b = g.free_mib[idx] * MIB;
  if (g.ramp_dev == (int)idx) {
    long long t = elapsed_ms();
    long long ramp = t >= g.ramp_ms ? g.ramp_mib : g.step ? 0 : g.ramp_mib * t / g.ramp_ms;
    free_b += (unsigned long long)ramp * MIB;
  }
  memory->total = g.total_mib * MIB;
  memory->free = free_b > memory->total ? memory->total : free_b;
  memory->used = memory->total - memory->free;
  return OK;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char* name, unsigned int length) {
  unsigned idx = (unsigned)(uintptr_t)device - 1;
  snprintf(name, length, strcmp(g.mode, "unified") == 0 ? "Fake GB10 %u" : "Fake GPU %u", idx);
  return OK;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int* count,
                                                     nvmlProcessInfo_t* infos) {
  unsigned idx = (unsigned)(uintptr_t)device - 1;
  nvmlProcessInfo_t list[MAX_PROCS + 1];
  unsigned n = 0;
  if (ramping(idx)) list[n++] = (nvmlProcessInfo_t){g.dead_pid, (unsigned long long)g.ramp_mib * MIB, 0, 0};
  for (unsigned i = 0; i < g.nprocs; ++i)
    if (g.proc_dev[i] == idx) list[n++] = (nvmlProcessInfo_t){g.proc_pid[i], g.proc_mib[i] * MIB, 0, 0};
  if (*count < n) {
    *count = n;
    return INSUFFICIENT_SIZE;
  }
  memcpy(infos, list, n * sizeof *infos);
  *count = n;
  return OK;
}

const char* nvmlErrorString(nvmlReturn_t r) {
  switch (r) {
    case OK:
      return "Success";
    case INVALID_ARGUMENT:
      return "Invalid Argument";
    case NOT_SUPPORTED:
      return "Not Supported";
    case DRIVER_NOT_LOADED:
      return "Driver Not Loaded";
    default:
      return "Unknown Error";
  }
}
