// A stand-in for libcuda and libnvrtc, for testing the CUDA backend on machines without a GPU: the same C entry
// points runtime/cuda/driver.ts and nvrtc.ts bind, over host memory. The "NVRTC" compiles the CUDA C with g++
// against kernel-shim.h (which runs a block's threads as fibers) and hands back the shared object as the "cubin";
// launches run at once, or are recorded while a stream captures and replayed by cuGraphLaunch; a cluster's blocks
// run as resident neighbours.
//
//   g++ -std=c++17 -O2 -shared -fPIC -o libfakecuda.so fake-cuda.cpp -ldl
//   TSFUSE_LIBCUDA=.../libfakecuda.so TSFUSE_LIBNVRTC=.../libfakecuda.so FAKE_CUDA_SHIM=.../kernel-shim.h

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using Thunk = void (*)(void** params, unsigned grid, unsigned block, unsigned shared, unsigned cluster);

struct Op {
  std::function<void()> run;
};

struct Graph {
  std::vector<Op> ops;
};

bool capturing = false;
Graph* captured = nullptr;

/** Runs now, or records for the graph being captured. */
void submit(std::function<void()> f) {
  if (capturing) captured->ops.push_back({std::move(f)});
  else f();
}

struct Event {
  std::chrono::steady_clock::time_point at;
};

struct Program {
  std::string source, name, log;
  std::vector<unsigned char> image;
};

const char kMagic[8] = {'F', 'A', 'K', 'E', 'C', 'U', 'B', 0};
int dummy_context, dummy_stream;

}  // namespace

extern "C" {

// ---- libcuda ----

int cuInit(unsigned) { return 0; }
int cuDriverGetVersion(int* v) { *v = 13000; return 0; }
int cuGetErrorName(int e, const char** s) { *s = e == 1 ? "CUDA_ERROR_INVALID_VALUE" : e == 0 ? "CUDA_SUCCESS" : "CUDA_ERROR_UNKNOWN"; return 0; }
int cuGetErrorString(int e, const char** s) { *s = e == 0 ? "no error" : "fake CUDA error"; return 0; }
int cuDeviceGetCount(int* n) { *n = 1; return 0; }
int cuDeviceGet(int* d, int) { *d = 0; return 0; }
int cuDeviceGetName(char* name, int len, int) { std::snprintf(name, len, "tsfuse fake CUDA (CPU fibers)"); return 0; }
int cuDeviceGetAttribute(int* v, int attr, int) {
  switch (attr) {
    case 16: *v = 8; return 0;          // multiprocessors: GEMMs of few columns take 64-row tiles, of more 128
    case 75: *v = 9; return 0;          // compute capability major
    case 76: *v = 0; return 0;          // minor
    case 97: *v = 227 * 1024; return 0; // opt-in shared memory per block
    default: *v = 0; return 0;
  }
}
int cuDevicePrimaryCtxRetain(void** ctx, int) { *ctx = &dummy_context; return 0; }
int cuDevicePrimaryCtxRelease_v2(int) { return 0; }
int cuCtxSetCurrent(void*) { return 0; }
int cuCtxSynchronize() { return 0; }

int cuMemAlloc_v2(uint64_t* p, size_t bytes) {
  void* m = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!m) return 2;
  std::memset(m, 0xa5, bytes);  // garbage, as fresh device memory is
  *p = reinterpret_cast<uint64_t>(m);
  return 0;
}
int cuMemFree_v2(uint64_t p) { std::free(reinterpret_cast<void*>(p)); return 0; }
int cuMemAllocHost_v2(void** p, size_t bytes) { *p = std::malloc(bytes); return *p ? 0 : 2; }
int cuMemFreeHost(void* p) { std::free(p); return 0; }
int cuMemcpyHtoD_v2(uint64_t dst, const void* src, size_t n) { std::memcpy(reinterpret_cast<void*>(dst), src, n); return 0; }
int cuMemcpyDtoH_v2(void* dst, uint64_t src, size_t n) { std::memcpy(dst, reinterpret_cast<void*>(src), n); return 0; }
int cuMemcpyHtoDAsync_v2(uint64_t dst, const void* src, size_t n, void*) {
  if (capturing) return 900;  // not from pageable memory inside a capture
  std::memcpy(reinterpret_cast<void*>(dst), src, n);
  return 0;
}
int cuMemcpyDtoHAsync_v2(void* dst, uint64_t src, size_t n, void*) {
  submit([=] { std::memcpy(dst, reinterpret_cast<void*>(src), n); });
  return 0;
}
int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t n, void*) {
  submit([=] { std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<void*>(src), n); });
  return 0;
}
int cuMemsetD8Async(uint64_t dst, unsigned char v, size_t n, void*) {
  submit([=] { std::memset(reinterpret_cast<void*>(dst), v, n); });
  return 0;
}

int cuModuleLoadData(void** module, const void* image) {
  const auto* bytes = static_cast<const unsigned char*>(image);
  if (std::memcmp(bytes, kMagic, 8) != 0) return 200;  // CUDA_ERROR_INVALID_IMAGE
  uint64_t size;
  std::memcpy(&size, bytes + 8, 8);
  char path[] = "/tmp/fakecuda-module-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0 || write(fd, bytes + 16, size) != static_cast<ssize_t>(size)) return 999;
  close(fd);
  void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  unlink(path);
  if (!h) { std::fprintf(stderr, "fake cuModuleLoadData: %s\n", dlerror()); return 200; }
  *module = h;
  return 0;
}
// Kept loaded: the modules share the shim's inline variables (GNU unique symbols, bound to the first module that
// defined them), so closing one would pull them from under the others.
int cuModuleUnload(void*) { return 0; }
int cuModuleGetFunction(void** fn, void* module, const char* name) {
  *fn = dlsym(module, (std::string("tf_thunk_") + name).c_str());
  return *fn ? 0 : 500;  // CUDA_ERROR_NOT_FOUND
}
int cuFuncSetAttribute(void*, int, int) { return 0; }
// Registers (4) and local bytes (3) of a kernel: the host compiler gives none; fixed figures that the profile
// carries through (a GPU's come from ptxas).
int cuFuncGetAttribute(int* value, int attrib, void*) {
  if (attrib == 4) *value = 40;
  else if (attrib == 3) *value = 0;
  else return 1;  // CUDA_ERROR_INVALID_VALUE
  return 0;
}
// Four blocks a multiprocessor (what the megakernel, its only caller, asks for by default): the shim's kResident
// over the 8 multiprocessors cuDeviceGetAttribute reports.
int cuOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, void*, int, size_t) { *blocks = 4; return 0; }

int cuStreamCreate(void** s, unsigned) { *s = &dummy_stream; return 0; }
int cuStreamDestroy_v2(void*) { return 0; }
int cuStreamSynchronize(void*) { return capturing ? 900 : 0; }

int cuLaunchKernel(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned shared, void*, void** params, void** extra) {
  if (gy != 1 || gz != 1 || by != 1 || bz != 1 || extra) return 1;
  if (gx == 0) return 1;
  auto thunk = reinterpret_cast<Thunk>(fn);
  submit([=] { thunk(params, gx, bx, shared, 1); });
  return 0;
}

// Grids launched in clusters so far (tests read it to see that a form ran clustered).
static unsigned clustered_launches = 0;

// A CUlaunchConfig as runtime/cuda/driver.ts lays it out: grid and block dims and shared bytes as u32s, the stream
// at byte 32, the attributes at 40 and their count at 48; an attribute is an id, padding and a 64-byte value. Reads
// the dims and the cluster's size (attribute 4: x blocks dividing the grid; 1 without it); false for any attribute
// but that and overlap (6, which needs nothing here: launches run one by one) or a malformed cluster.
static bool read_config(const void* config, unsigned* dims, unsigned* cluster) {
  const auto* c = static_cast<const unsigned char*>(config);
  std::memcpy(dims, c, 7 * sizeof(unsigned));
  const unsigned char* attrs;
  unsigned count;
  std::memcpy(&attrs, c + 40, 8);
  std::memcpy(&count, c + 48, 4);
  *cluster = 1;
  for (unsigned i = 0; i < count; i++) {
    unsigned id, value[3];
    std::memcpy(&id, attrs + 72 * i, 4);
    std::memcpy(value, attrs + 72 * i + 8, sizeof value);
    if (id == 4) {
      if (value[1] != 1 || value[2] != 1 || value[0] == 0 || dims[0] % value[0] != 0) return false;
      *cluster = value[0];
    } else if (id != 6) {
      return false;
    }
  }
  return true;
}

// Clusters run as neighbouring resident blocks, or (FAKE_CUDA_NO_CLUSTERS=1, as a GPU without them) as blocks alone.
int cuLaunchKernelEx(const void* config, void* fn, void** params, void** extra) {
  unsigned dims[7], cluster;
  if (!read_config(config, dims, &cluster)) return 1;
  if (dims[1] != 1 || dims[2] != 1 || dims[4] != 1 || dims[5] != 1 || extra || dims[0] == 0) return 1;
  const char* alone = std::getenv("FAKE_CUDA_NO_CLUSTERS");
  if (alone && std::strcmp(alone, "1") == 0) cluster = 1;
  if (cluster > 1) clustered_launches++;
  auto thunk = reinterpret_cast<Thunk>(fn);
  const unsigned grid = dims[0], block = dims[3], shared = dims[6];
  submit([=] { thunk(params, grid, block, shared, cluster); });
  return 0;
}

int cuStreamBeginCapture_v2(void*, int) {
  if (capturing) return 900;
  capturing = true;
  captured = new Graph();
  return 0;
}
int cuStreamEndCapture(void*, void** graph) {
  if (!capturing) return 900;
  capturing = false;
  *graph = captured;
  captured = nullptr;
  return 0;
}
int cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) {
  *exec = new Graph(*static_cast<Graph*>(graph));
  return 0;
}
int cuGraphLaunch(void* exec, void*) {
  if (capturing) return 900;
  for (auto& op : static_cast<Graph*>(exec)->ops) op.run();
  return 0;
}
int cuGraphDestroy(void* g) { delete static_cast<Graph*>(g); return 0; }
int cuGraphExecDestroy(void* g) { delete static_cast<Graph*>(g); return 0; }

int cuEventCreate(void** e, unsigned) { *e = new Event(); return 0; }
int cuEventDestroy_v2(void* e) { delete static_cast<Event*>(e); return 0; }
int cuEventRecord(void* e, void*) {
  auto* ev = static_cast<Event*>(e);
  submit([ev] { ev->at = std::chrono::steady_clock::now(); });
  return 0;
}
int cuEventQuery(void*) { return 0; }
int cuEventSynchronize(void*) { return 0; }
int cuEventElapsedTime_v2(float* ms, void* a, void* b) {
  *ms = std::chrono::duration<float, std::milli>(static_cast<Event*>(b)->at - static_cast<Event*>(a)->at).count();
  return 0;
}

unsigned fakeCudaClusteredLaunches() { return clustered_launches; }
// Clusters at once: 16 blocks (two a multiprocessor, as the H200 holds the GEMM kernels' blocks) in clusters of the
// config's size.
int cuOccupancyMaxActiveClusters(int* clusters, void*, const void* config) {
  unsigned dims[7], cluster;
  if (!read_config(config, dims, &cluster)) return 1;
  *clusters = static_cast<int>(16 / cluster);
  return 0;
}

// ---- libnvrtc ----

int nvrtcVersion(int* major, int* minor) { *major = 13; *minor = 0; return 0; }
const char* nvrtcGetErrorString(int r) { return r == 0 ? "NVRTC_SUCCESS" : r == 6 ? "NVRTC_ERROR_COMPILATION" : "NVRTC_ERROR"; }

int nvrtcCreateProgram(void** prog, const char* src, const char* name, int, void*, void*) {
  *prog = new Program{src, name ? name : "program.cu", "", {}};
  return 0;
}

int nvrtcCompileProgram(void* handle, int n, const char** options) {
  auto* p = static_cast<Program*>(handle);
  bool arch = false;
  for (int i = 0; i < n; i++) arch = arch || std::strncmp(options[i], "--gpu-architecture=sm_", 22) == 0;
  if (!arch) { p->log = "fake NVRTC: no --gpu-architecture=sm_XY option"; return 5; }
  const char* shim = std::getenv("FAKE_CUDA_SHIM");
  if (!shim) { p->log = "fake NVRTC: FAKE_CUDA_SHIM is not set"; return 6; }
  // Dynamic shared memory has no C++ spelling: the shim's buffer stands in for it. Each static declaration
  // (`__shared__ [__align__(N)] TYPE NAME[DIMS];`) becomes a reference to the running block's own copy, keyed by a
  // static that is unique to the declaration (a lambda's: one per place in the source).
  std::string src = std::regex_replace(p->source,
      std::regex(R"(extern __shared__ __align__\(16\) unsigned char (\w+)\[\];)"),
      "unsigned char* const $1 = tf_fake::dynamic_smem();");
  src = std::regex_replace(src,
      std::regex(R"(__shared__\s+(?:__align__\(\d+\)\s+)?([A-Za-z_][A-Za-z_0-9 ]*[A-Za-z_0-9])\s+(\w+)((?:\[[^\]]+\])*);)"),
      "auto& $2 = *reinterpret_cast<$1(*)$3>(tf_fake::block_static([] { static char key; return &key; }(), sizeof($1$3)));");
  std::ostringstream thunks;
  std::regex kernel(R"(extern "C" __global__ void (?:__launch_bounds__\([^)]*\) )?(\w+)\()");
  for (auto it = std::sregex_iterator(p->source.begin(), p->source.end(), kernel); it != std::sregex_iterator(); ++it) {
    const std::string k = (*it)[1];
    thunks << "extern \"C\" void tf_thunk_" << k << "(void** p, unsigned g, unsigned b, unsigned s, unsigned c) {\n"
           << "  tf_fake::run_grid([p] { tf_fake::call(" << k << ", p); }, g, b, s, c);\n}\n";
  }
  char dir[] = "/tmp/fakecuda-nvrtc-XXXXXX";
  if (!mkdtemp(dir)) return 6;
  const std::string base = std::string(dir) + "/" + "kernels";
  std::ofstream(base + ".cpp") << src << "\n" << thunks.str();
  const std::string cmd = std::string("g++ -std=c++17 -O1 -w -shared -fPIC -include ") + shim + " -o " + base + ".so " +
      base + ".cpp > " + base + ".log 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream log(base + ".log");
  p->log = std::string(std::istreambuf_iterator<char>(log), {});
  if (rc != 0) return 6;
  std::ifstream so(base + ".so", std::ios::binary);
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(so)), {});
  const uint64_t size = bytes.size();
  p->image.assign(kMagic, kMagic + 8);
  p->image.resize(16);
  std::memcpy(p->image.data() + 8, &size, 8);
  p->image.insert(p->image.end(), bytes.begin(), bytes.end());
  std::system((std::string("rm -rf ") + dir).c_str());
  return 0;
}

int nvrtcGetProgramLogSize(void* h, size_t* n) { *n = static_cast<Program*>(h)->log.size() + 1; return 0; }
int nvrtcGetProgramLog(void* h, char* out) { auto& l = static_cast<Program*>(h)->log; std::memcpy(out, l.c_str(), l.size() + 1); return 0; }
int nvrtcGetCUBINSize(void* h, size_t* n) { *n = static_cast<Program*>(h)->image.size(); return 0; }
int nvrtcGetCUBIN(void* h, char* out) { auto& i = static_cast<Program*>(h)->image; std::memcpy(out, i.data(), i.size()); return 0; }
int nvrtcGetPTXSize(void*, size_t*) { return 1; }
int nvrtcGetPTX(void*, char*) { return 1; }
int nvrtcDestroyProgram(void** h) { delete static_cast<Program*>(*h); *h = nullptr; return 0; }

}  // extern "C"
