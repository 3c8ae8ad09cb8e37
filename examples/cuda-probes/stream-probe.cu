// Streaming probes for the H200 (or any sm_90 GPU): how fast one block of 256 threads a multiprocessor streams
// weights, by plain loads, cp.async and 1-D bulk copies; a short-prompt GEMM's weight access patterns; and a
// kernel asking for 200 KB of shared memory after one asking for none. The floor the prompt's GEMM kernels are
// measured against in BENCHMARKS.md (tenth session).
//   nvcc -arch=sm_90a -O3 -std=c++17 -o /tmp/stream-probe examples/cuda-probes/stream-probe.cu && /tmp/stream-probe
#include <cstdio>
#include <cuda.h>
#include <cuda_runtime.h>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)

// ---- 1. streaming with one block a multiprocessor ----
template <int U>
__global__ void __launch_bounds__(256, 1) ldg(const uint4* __restrict__ p, size_t n16, unsigned* out) {
  // block b streams [b*per, (b+1)*per) in steps of 256*U uint4
  size_t per = n16 / gridDim.x, base = blockIdx.x * per;
  unsigned acc = 0;
  uint4 cur[U], nxt[U];
  for (int u = 0; u < U; u++) cur[u] = __ldg(p + base + u * 256 + threadIdx.x);
  for (size_t s = 0; s < per; s += 256 * U) {
    if (s + 256 * U < per) for (int u = 0; u < U; u++) nxt[u] = __ldg(p + base + s + 256 * U + u * 256 + threadIdx.x);
    for (int u = 0; u < U; u++) acc ^= cur[u].x ^ cur[u].w;
    for (int u = 0; u < U; u++) cur[u] = nxt[u];
  }
  if (acc == 0x12345) out[0] = acc;
}

__device__ __forceinline__ void cp16(void* dst, const void* src) {
  unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(d), "l"(src));
}
template <int S, int U>
__global__ void __launch_bounds__(256, 1) cpa(const uint4* __restrict__ p, size_t n16, unsigned* out) {
  extern __shared__ uint4 sm[];
  size_t per = n16 / gridDim.x, base = blockIdx.x * per;
  const size_t step = 256 * U;
  unsigned acc = 0;
  size_t steps = per / step;
  for (int s = 0; s < S - 1; s++) { for (int u = 0; u < U; u++) cp16(sm + (s * U + u) * 256 + threadIdx.x, p + base + s * step + u * 256 + threadIdx.x); asm volatile("cp.async.commit_group;"); }
  for (size_t s = 0; s < steps; s++) {
    if (s + S - 1 < steps) { size_t t = s + S - 1; for (int u = 0; u < U; u++) cp16(sm + ((t % S) * U + u) * 256 + threadIdx.x, p + base + t * step + u * 256 + threadIdx.x); }
    asm volatile("cp.async.commit_group;");
    asm volatile("cp.async.wait_group %0;" :: "n"(S - 1));
    for (int u = 0; u < U; u++) { uint4 v = sm[((s % S) * U + u) * 256 + threadIdx.x]; acc ^= v.x ^ v.w; }
  }
  if (acc == 0x12345) out[0] = acc;
}

__device__ __forceinline__ void mbar_init(unsigned long long* b, unsigned n) { asm volatile("mbarrier.init.shared.b64 [%0], %1;" :: "r"((unsigned)__cvta_generic_to_shared(b)), "r"(n)); }
__device__ __forceinline__ void mbar_expect(unsigned long long* b, unsigned bytes) { asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" :: "r"((unsigned)__cvta_generic_to_shared(b)), "r"(bytes)); }
__device__ __forceinline__ void mbar_wait(unsigned long long* b, unsigned phase) {
  asm volatile("{ .reg .pred p; W: mbarrier.try_wait.parity.shared.b64 p, [%0], %1; @!p bra W; }" :: "r"((unsigned)__cvta_generic_to_shared(b)), "r"(phase));
}
__device__ __forceinline__ void bulk(void* dst, const void* src, unsigned bytes, unsigned long long* b) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" :: "r"((unsigned)__cvta_generic_to_shared(dst)), "l"(src), "r"(bytes), "r"((unsigned)__cvta_generic_to_shared(b)) : "memory");
}
// each warp streams its own contiguous region with S stages of CH bytes (one bulk copy per stage, issued by lane 0)
template <int S, int CH>
__global__ void __launch_bounds__(256, 1) tma(const unsigned char* __restrict__ p, size_t bytes, unsigned* out) {
  extern __shared__ __align__(128) unsigned char smb[];
  __shared__ __align__(8) unsigned long long bar[8][S];
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  size_t per = bytes / gridDim.x / 8, base = (size_t)blockIdx.x * (bytes / gridDim.x) + w * per;
  unsigned char* mine = smb + w * S * CH;
  if (lane == 0) for (int s = 0; s < S; s++) mbar_init(&bar[w][s], 1);
  asm volatile("fence.proxy.async.shared::cta;");
  __syncwarp();
  size_t steps = per / CH;
  unsigned acc = 0;
  if (lane == 0) for (int s = 0; s < S - 1 && s < steps; s++) { mbar_expect(&bar[w][s], CH); bulk(mine + s * CH, p + base + s * CH, CH, &bar[w][s]); }
  for (size_t s = 0; s < steps; s++) {
    __syncwarp();
    if (lane == 0 && s + S - 1 < steps) { size_t t = s + S - 1; mbar_expect(&bar[w][t % S], CH); bulk(mine + (t % S) * CH, p + base + t * CH, CH, &bar[w][t % S]); }
    mbar_wait(&bar[w][s % S], (s / S) & 1);
    const uint4* v = reinterpret_cast<const uint4*>(mine + (s % S) * CH);
    for (int i = lane; i < CH / 16; i += 32) acc ^= v[i].x ^ v[i].w;
  }
  if (acc == 0x12345) out[0] = acc;
}

// ---- 2. a short-prompt GEMM's weight patterns ----
template <int MODE, int U>
__global__ void __launch_bounds__(256, 1) pattern(const unsigned short* __restrict__ W, int N, int K, int parts, unsigned* out) {
  const int tiles = N / 64, tile = blockIdx.x % tiles, part = blockIdx.x / tiles;
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int kp = K / parts, k0 = part * kp;
  unsigned acc = 0;
  if (MODE == 1) {
    const unsigned short* p = W + (size_t)(tile * 64 + w * 8 + g) * K + k0 + q * 8;
    uint4 cur[U], nxt[U];
    for (int u = 0; u < U; u++) cur[u] = __ldg(reinterpret_cast<const uint4*>(p + u * 32));
    for (int s = 0; s < kp; s += 32 * U) {
      if (s + 32 * U < kp) for (int u = 0; u < U; u++) nxt[u] = __ldg(reinterpret_cast<const uint4*>(p + s + 32 * U + u * 32));
      for (int u = 0; u < U; u++) acc ^= cur[u].x ^ cur[u].w;
      for (int u = 0; u < U; u++) cur[u] = nxt[u];
    }
  } else {
    // 8 rows, each instruction 256 k (512 B) of one row; a step = 8 rows x 256 k
    const unsigned short* p = W + (size_t)(tile * 64 + w * 8) * K + k0 + lane * 8;
    uint4 cur[8], nxt[8];
    for (int r = 0; r < 8; r++) cur[r] = __ldg(reinterpret_cast<const uint4*>(p + (size_t)r * K));
    for (int s = 0; s < kp; s += 256) {
      if (s + 256 < kp) for (int r = 0; r < 8; r++) nxt[r] = __ldg(reinterpret_cast<const uint4*>(p + (size_t)r * K + s + 256));
      for (int r = 0; r < 8; r++) acc ^= cur[r].x ^ cur[r].w;
      for (int r = 0; r < 8; r++) cur[r] = nxt[r];
    }
  }
  if (acc == 0x12345) out[0] = acc;
}
// ---- 3. shared memory asked for ----
__global__ void __launch_bounds__(256, 1) stream_qkv(const unsigned short* __restrict__ W, int N, int K, int parts, unsigned* out) {
  extern __shared__ unsigned char smq[];
  const int tiles = N / 64, tile = blockIdx.x % tiles, part = blockIdx.x / tiles;
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int kp = K / parts, k0 = part * kp;
  unsigned acc = 0;
  const unsigned short* p = W + (size_t)(tile * 64 + w * 8 + g) * K + k0 + q * 8;
  uint4 cur[8], nxt[8];
  for (int u = 0; u < 8; u++) cur[u] = __ldg(reinterpret_cast<const uint4*>(p + u * 32));
  for (int s = 0; s < kp; s += 256) {
    if (s + 256 < kp) for (int u = 0; u < 8; u++) nxt[u] = __ldg(reinterpret_cast<const uint4*>(p + s + 256 + u * 32));
    for (int u = 0; u < 8; u++) acc ^= cur[u].x ^ cur[u].w;
    for (int u = 0; u < 8; u++) cur[u] = nxt[u];
  }
  if (acc == 0x12345) { smq[threadIdx.x] = 1; out[0] = acc + smq[(threadIdx.x + 1) & 255]; }
}
// a small kernel like a norm: 32 blocks, reads and writes 32 x 2048 floats, no shared memory
__global__ void small(const float* x, float* y) {
  for (int i = threadIdx.x; i < 2048; i += 256) y[blockIdx.x * 2048 + i] = x[blockIdx.x * 2048 + i] * 2.0f;
}
static int streaming() {
  const size_t bytes = 132ull * 8 * 64 * 1024;  // ~69 MB, divisible
  unsigned char* p; unsigned* o;
  CK(cudaMalloc(&p, bytes)); CK(cudaMalloc(&o, 4)); CK(cudaMemset(p, 1, bytes));
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  auto time = [&](const char* name, auto launch) {
    for (int i = 0; i < 3; i++) launch();
    cudaEventRecord(a); for (int i = 0; i < 20; i++) launch(); cudaEventRecord(b); cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b); ms /= 20;
    printf("%-34s %7.1f us  %6.2f TB/s  %5.1f GB/s/SM  (%s)\n", name, ms * 1e3, bytes / ms / 1e9, bytes / ms / 1e6 / 132, cudaGetErrorString(cudaGetLastError()));
  };
  size_t n16 = bytes / 16;
  time("ldg U=4 (16 KB/SM in flight)", [&] { ldg<4><<<132, 256>>>((const uint4*)p, n16, o); });
  time("ldg U=8 (32 KB)", [&] { ldg<8><<<132, 256>>>((const uint4*)p, n16, o); });
  time("ldg U=16 (64 KB)", [&] { ldg<16><<<132, 256>>>((const uint4*)p, n16, o); });
  time("ldg U=8, 4 blocks/SM (528)", [&] { ldg<8><<<528, 256>>>((const uint4*)p, n16, o); });
  time("ldg U=8, 8 blocks/SM (1056)", [&] { ldg<8><<<1056, 256>>>((const uint4*)p, n16, o); });
  { auto k = cpa<4, 8>; int sh = 4 * 8 * 256 * 16; cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sh);
    time("cp.async S=4 U=8 (96 KB ahead)", [&] { k<<<132, 256, sh>>>((const uint4*)p, n16, o); }); }
  { auto k = cpa<6, 8>; int sh = 6 * 8 * 256 * 16; cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sh);
    time("cp.async S=6 U=8 (160 KB ahead)", [&] { k<<<132, 256, sh>>>((const uint4*)p, n16, o); }); }
  { auto k = tma<4, 4096>; int sh = 8 * 4 * 4096; cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sh);
    time("bulk S=4 x 4 KB per warp (96 KB)", [&] { k<<<132, 256, sh>>>(p, bytes, o); }); }
  { auto k = tma<6, 4096>; int sh = 8 * 6 * 4096; cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sh);
    time("bulk S=6 x 4 KB per warp (160 KB)", [&] { k<<<132, 256, sh>>>(p, bytes, o); }); }
  { auto k = tma<4, 1024>; int sh = 8 * 4 * 1024; cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sh);
    time("bulk S=4 x 1 KB per warp (24 KB)", [&] { k<<<132, 256, sh>>>(p, bytes, o); }); }
  { auto k = tma<8, 2048>; int sh = 8 * 8 * 2048; cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sh);
    time("bulk S=8 x 2 KB per warp (112 KB)", [&] { k<<<132, 256, sh>>>(p, bytes, o); }); }
  return 0;
}

static int patterns() {
  unsigned short* W; unsigned* o;
  const size_t maxBytes = 8192ull * 2048 * 2 * 2;
  cudaMalloc(&W, maxBytes); cudaMalloc(&o, 4); cudaMemset(W, 1, maxBytes);
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  auto time = [&](const char* name, double bytes, auto launch) {
    for (int i = 0; i < 3; i++) launch();
    cudaEventRecord(a); for (int i = 0; i < 20; i++) launch(); cudaEventRecord(b); cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b); ms /= 20;
    printf("%-44s %7.1f us  %6.2f TB/s (%s)\n", name, ms * 1e3, bytes / ms / 1e9, cudaGetErrorString(cudaGetLastError()));
  };
  struct S { const char* n; int N, K, parts; } shapes[] = {{"QKV 3072x2048 P2 (96 blocks)", 3072, 2048, 2}, {"o 2048x2048 P4 (128)", 2048, 2048, 4}, {"gate+up 16384x2048 P1 (256)", 16384, 2048, 1}, {"down 2048x8192 P4 (128)", 2048, 8192, 4}, {"big 8192x8192 P1 (128)", 8192, 8192, 1}};
  for (auto s : shapes) {
    const double bytes = 2.0 * s.N * s.K;
    const int grid = s.N / 64 * s.parts;
    char n1[128], n3[128], n2[128];
    snprintf(n1, 128, "%s 8x64B U8", s.n); snprintf(n2, 128, "%s 8x64B U16", s.n); snprintf(n3, 128, "%s 1x512B", s.n);
    time(n1, bytes, [&] { pattern<1, 8><<<grid, 256>>>(W, s.N, s.K, s.parts, o); });
    if (s.K / s.parts >= 512) time(n2, bytes, [&] { pattern<1, 16><<<grid, 256>>>(W, s.N, s.K, s.parts, o); });
    time(n3, bytes, [&] { pattern<3, 8><<<grid, 256>>>(W, s.N, s.K, s.parts, o); });
  }
  return 0;
}

static int shared_asked() {
  unsigned short* W; unsigned* o; float *x, *y;
  const size_t n = 3072ull * 2048;
  cudaMalloc(&o, 4); cudaMalloc(&x, 1 << 20); cudaMalloc(&y, 1 << 20);
  // a ring of 8 weight copies (100 MB): each launch reads a different one (no L2 reuse)
  cudaMalloc(&W, 8 * n * 2); cudaMemset(W, 1, 8 * n * 2);
  cudaFuncSetAttribute(stream_qkv, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024);
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  auto time = [&](const char* name, auto launch) {
    for (int i = 0; i < 8; i++) launch(i);
    cudaEventRecord(a); for (int i = 0; i < 40; i++) launch(i); cudaEventRecord(b); cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b); ms /= 40;
    printf("%-52s %7.2f us (%s)\n", name, ms * 1e3, cudaGetErrorString(cudaGetLastError()));
  };
  time("QKV stream, 0 smem", [&](int i) { stream_qkv<<<96, 256, 0>>>(W + (i % 8) * n, 3072, 2048, 2, o); });
  time("QKV stream, 200 KB smem", [&](int i) { stream_qkv<<<96, 256, 200 * 1024>>>(W + (i % 8) * n, 3072, 2048, 2, o); });
  time("small kernel alone", [&](int i) { small<<<32, 256>>>(x, y); });
  time("small + QKV 0 smem", [&](int i) { small<<<32, 256>>>(x, y); stream_qkv<<<96, 256, 0>>>(W + (i % 8) * n, 3072, 2048, 2, o); });
  time("small + QKV 200 KB smem", [&](int i) { small<<<32, 256>>>(x, y); stream_qkv<<<96, 256, 200 * 1024>>>(W + (i % 8) * n, 3072, 2048, 2, o); });
  cudaFuncSetAttribute(small, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
  cudaFuncSetAttribute(stream_qkv, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
  time("carveout max: small + QKV 200 KB smem", [&](int i) { small<<<32, 256>>>(x, y); stream_qkv<<<96, 256, 200 * 1024>>>(W + (i % 8) * n, 3072, 2048, 2, o); });
  time("carveout max: QKV 200 KB alone", [&](int i) { stream_qkv<<<96, 256, 200 * 1024>>>(W + (i % 8) * n, 3072, 2048, 2, o); });
  return 0;
}

int main() {
  printf("-- streaming, one block a multiprocessor --\n");
  if (streaming()) return 1;
  printf("-- a short-prompt GEMM's weight patterns (the smaller matrices stay in L2 between launches) --\n");
  if (patterns()) return 1;
  printf("-- 200 KB of shared memory asked for --\n");
  return shared_asked();
}
