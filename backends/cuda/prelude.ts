// The helpers every generated CUDA kernel uses, compiled once per module: 16-bit widening and rounding by bit
// operations (so NVRTC needs no headers), 16-byte loads of eight elements, and warp- and block-wide reductions
// whose result every participating thread receives.

import { DType } from '../../ir/dtype.ts';
import { randomFunction } from '../random-source.ts';
import { wgmmaHelpers } from './wgmma-prelude.ts';

/** Threads per block; the runtime launches every generated kernel with this many. */
export const CUDA_BLOCK = 256;

/** The prelude's load of 8 consecutive elements of memory of dtype `d` (16-byte aligned), widened to f32. */
export function ld8Function(d: DType): string {
  return d === DType.F32 ? 'tf_ld8_f32' : d === DType.BF16 ? 'tf_ld8_bf16' : 'tf_ld8_f16';
}

/** Marks (tf_stamp_mark) a kernel's form may set between its phases, for a step's timeline. */
export const STAMP_MARKS = 3;

/**
 * Words (u64) a block's stamp takes (a program printed with stamps, for a step's timeline): the kernel's id (high
 * half) and the block's index, its multiprocessor, when it started, when its wait returned, when it ended, and
 * the STAMP_MARKS marks (ns; a mark not set is 0).
 */
export const STAMP_WORDS = 5 + STAMP_MARKS;

/** Helpers every generated kernel uses; once per compiled source. */
export const cudaPrelude = `// tsfuse CUDA helpers: 16-bit widening, 16-byte loads, warp- and block-wide reductions
#ifndef TSFUSE_PRELUDE
#define TSFUSE_PRELUDE
#ifndef TF_BLOCK
#define TF_BLOCK ${CUDA_BLOCK}
#endif
#define TF_WARPS (TF_BLOCK / 32)
#define TF_INF __int_as_float(0x7f800000)
#define TF_NAN __int_as_float(0x7fffffff)

__device__ __forceinline__ float tf_bf16(unsigned short x) { return __uint_as_float(((unsigned)x) << 16); }
__device__ __forceinline__ unsigned short tf_to_bf16(float f) {
  const unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
// Counts one more part done and returns the count before: an acquire-release add at the device's scope, so that
// after a block's barrier it publishes every write the block made (cumulativity), and the part that finds itself
// last sees every other part's. (A fence, an atomic add and a fence measured slower on the H200, BENCHMARKS.md
// twenty-third session: 5 µs a decode step with a 2,048-position cache; a 32-token prompt's split GEMMs 0.02–0.05 ms.)
#ifdef __CUDA_ARCH__
__device__ __forceinline__ unsigned tf_count_part(unsigned* counter) {
  unsigned before;
  asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(before) : "l"(counter) : "memory");
  return before;
}
#else
__device__ __forceinline__ unsigned tf_count_part(unsigned* counter) { return __atomic_fetch_add(counter, 1u, __ATOMIC_ACQ_REL); }
#endif
#ifdef __CUDA_ARCH__
__device__ __forceinline__ float tf_f16(unsigned short x) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x)); return f; }
__device__ __forceinline__ unsigned short tf_to_f16(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
#else
// Host compilers (the CPU emulation the tests use) have no PTX: the same conversions by bit operations.
__device__ __forceinline__ float tf_f16(unsigned short x) {
  const unsigned sign = (x & 0x8000u) << 16, exp = (x >> 10) & 0x1fu, mant = x & 0x3ffu;
  if (exp == 0) return __uint_as_float(sign) + (sign ? -1.0f : 1.0f) * (float)mant * 5.9604644775390625e-8f;
  if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
  return __uint_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
}
__device__ __forceinline__ unsigned short tf_to_f16(float f) {
  const unsigned b = __float_as_uint(f);
  const unsigned sign = (b >> 16) & 0x8000u, exp = (b >> 23) & 0xffu, mant = b & 0x7fffffu;
  if (exp == 0xffu) return (unsigned short)(sign | 0x7c00u | (mant ? 0x200u : 0u));
  const int e = (int)exp - 112;
  if (e >= 0x1f) return (unsigned short)(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return (unsigned short)sign;
    const unsigned full = mant | 0x800000u;
    const int shift = 14 - e;
    const unsigned rest = full & ((1u << shift) - 1u), half = 1u << (shift - 1), m = full >> shift;
    return (unsigned short)(sign | ((rest > half || (rest == half && (m & 1u))) ? m + 1u : m));
  }
  const unsigned h = sign | ((unsigned)e << 10) | (mant >> 13), rest = mant & 0x1fffu;
  return (unsigned short)((rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ? h + 1u : h);
}
#endif
__device__ __forceinline__ float tf_round_bf16(float f) { return tf_bf16(tf_to_bf16(f)); }
__device__ __forceinline__ float tf_round_f16(float f) { return tf_f16(tf_to_f16(f)); }
__device__ __forceinline__ int tf_imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int tf_imin(int a, int b) { return a < b ? a : b; }

// Special values as the README's Numerics section has them. NaN tests look at the bits (so that fast-math
// flags cannot fold them); maximum and minimum propagate NaN (fmaxf and fminf drop it).
__device__ __forceinline__ bool tf_isnan(float x) { return (__float_as_uint(x) & 0x7fffffffu) > 0x7f800000u; }
__device__ __forceinline__ float tf_fmax(float a, float b) { return (a > b || tf_isnan(a)) ? a : b; }
__device__ __forceinline__ float tf_fmin(float a, float b) { return (a < b || tf_isnan(a)) ? a : b; }
// i32 division floors (PyTorch's //); x / 0 = 0; -2^31 / -1 wraps (C leaves both undefined).
__device__ __forceinline__ int tf_idiv(int a, int b) {
  if (b == 0) return 0;
  if (b == -1) return (int)(0u - (unsigned)a);
  const int q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
// i32 power wraps like i32 products; a negative exponent gives trunc(1 / x^n).
__device__ __forceinline__ int tf_ipow(int x, int y) {
  if (y < 0) return x == 1 ? 1 : x == -1 ? ((y & 1) ? -1 : 1) : 0;
  unsigned r = 1u, b = (unsigned)x;
  for (unsigned e = (unsigned)y; e > 0u; e >>= 1) {
    if (e & 1u) r *= b;
    b *= b;
  }
  return (int)r;
}
// float -> i32 toward zero, saturating; NaN -> 0 (a C cast leaves these undefined; x86 gives -2^31).
__device__ __forceinline__ int tf_f2i(float x) {
  if (tf_isnan(x)) return 0;
  if (x >= 2147483648.0f) return 2147483647;
  if (x <= -2147483648.0f) return (int)0x80000000u;
  return (int)x;
}
__device__ __forceinline__ unsigned tf_f2u(float x) {
  if (tf_isnan(x) || x <= 0.0f) return 0u;
  if (x >= 4294967296.0f) return 0xffffffffu;
  return (unsigned)x;
}

// Eight consecutive elements from a 16-byte-aligned address, widened to f32.
__device__ __forceinline__ void tf_unpack_bf16x8(const uint4 w, float* o) {
  o[0] = __uint_as_float(w.x << 16); o[1] = __uint_as_float(w.x & 0xffff0000u);
  o[2] = __uint_as_float(w.y << 16); o[3] = __uint_as_float(w.y & 0xffff0000u);
  o[4] = __uint_as_float(w.z << 16); o[5] = __uint_as_float(w.z & 0xffff0000u);
  o[6] = __uint_as_float(w.w << 16); o[7] = __uint_as_float(w.w & 0xffff0000u);
}
__device__ __forceinline__ void tf_ld8_bf16(const unsigned short* p, float* o) {
  tf_unpack_bf16x8(__ldg(reinterpret_cast<const uint4*>(p)), o);
}
__device__ __forceinline__ void tf_unpack_f16x8(const uint4 w, float* o) {
  o[0] = tf_f16((unsigned short)(w.x & 0xffffu)); o[1] = tf_f16((unsigned short)(w.x >> 16));
  o[2] = tf_f16((unsigned short)(w.y & 0xffffu)); o[3] = tf_f16((unsigned short)(w.y >> 16));
  o[4] = tf_f16((unsigned short)(w.z & 0xffffu)); o[5] = tf_f16((unsigned short)(w.z >> 16));
  o[6] = tf_f16((unsigned short)(w.w & 0xffffu)); o[7] = tf_f16((unsigned short)(w.w >> 16));
}
__device__ __forceinline__ void tf_ld8_f16(const unsigned short* p, float* o) {
  tf_unpack_f16x8(__ldg(reinterpret_cast<const uint4*>(p)), o);
}
// Two f32 values as one u32 of two 16-bit floats (the lower address's element in the low half; for matrix
// instructions too), and eight as tf_unpack_*x8 reads them (a decode step's new key or value row, computed).
__device__ __forceinline__ unsigned tf_pack_bf16(float lo, float hi) { return (unsigned)tf_to_bf16(lo) | ((unsigned)tf_to_bf16(hi) << 16); }
__device__ __forceinline__ unsigned tf_pack_f16(float lo, float hi) { return (unsigned)tf_to_f16(lo) | ((unsigned)tf_to_f16(hi) << 16); }
__device__ __forceinline__ uint4 tf_pack_bf16x8(const float* v) {
  return make_uint4(tf_pack_bf16(v[0], v[1]), tf_pack_bf16(v[2], v[3]), tf_pack_bf16(v[4], v[5]), tf_pack_bf16(v[6], v[7]));
}
__device__ __forceinline__ uint4 tf_pack_f16x8(const float* v) {
  return make_uint4(tf_pack_f16(v[0], v[1]), tf_pack_f16(v[2], v[3]), tf_pack_f16(v[4], v[5]), tf_pack_f16(v[6], v[7]));
}
__device__ __forceinline__ void tf_ld8_f32(const float* p, float* o) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w; o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
}

// 16 bytes of a weight the kernel reads once (a decode step streams every weight through L2 once): the line is the
// first L2 evicts, so that what is read again stays (the KV cache, activations, a megakernel's counters; on the
// H200 0.793 → 0.785 ms a decode step, the megakernel 0.933 → 0.902, a 32-token prompt 1.49 → 1.33–1.39:
// BENCHMARKS.md, twenty-fourth session), and L1 keeps none of it.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// The L2 policy of a weight read once (a cache hint of loads and bulk copies): its lines are the first L2 evicts.
__device__ __forceinline__ unsigned long long tf_evict_first() {
  unsigned long long policy;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}
#endif
__device__ __forceinline__ uint4 tf_ld16_once(const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p), "l"(tf_evict_first()));
  return r;
#else
  return __ldg(reinterpret_cast<const uint4*>(p));
#endif
}
__device__ __forceinline__ void tf_ld8_bf16_once(const unsigned short* p, float* o) { tf_unpack_bf16x8(tf_ld16_once(p), o); }
__device__ __forceinline__ void tf_ld8_f16_once(const unsigned short* p, float* o) { tf_unpack_f16x8(tf_ld16_once(p), o); }
__device__ __forceinline__ void tf_ld8_f32_once(const float* p, float* o) {
  const uint4 a = tf_ld16_once(p), b = tf_ld16_once(p + 4);
  o[0] = __uint_as_float(a.x); o[1] = __uint_as_float(a.y); o[2] = __uint_as_float(a.z); o[3] = __uint_as_float(a.w);
  o[4] = __uint_as_float(b.x); o[5] = __uint_as_float(b.y); o[6] = __uint_as_float(b.z); o[7] = __uint_as_float(b.w);
}

__device__ __forceinline__ void tf_ld8_smem(const float* p, float* o) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w; o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
}
__device__ __forceinline__ void tf_st8_smem(float* p, const float* v) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

__device__ __forceinline__ float tf_lowest(float) { return -TF_INF; }
__device__ __forceinline__ int tf_lowest(int) { return (int)0x80000000; }
__device__ __forceinline__ float tf_max(float a, float b) { return tf_fmax(a, b); }
__device__ __forceinline__ int tf_max(int a, int b) { return tf_imax(a, b); }

// Warp-wide sum / max / argmax: every lane of the warp gets the result (all 32 lanes must take part).
template <typename T> __device__ __forceinline__ T tf_warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename T> __device__ __forceinline__ T tf_warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = tf_max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Whether (b at ib) replaces (a at ia) in an argmax keeping the first maximum: larger, or equal at a lower index;
// NaN counts as the largest (the first NaN wins), as in PyTorch.
__device__ __forceinline__ bool tf_argmax_takes(int b, int ib, int a, int ia) { return b > a || (b == a && ib < ia); }
__device__ __forceinline__ bool tf_argmax_takes(float b, int ib, float a, int ia) {
  const bool nb = tf_isnan(b), na = tf_isnan(a);
  if (nb || na) return nb && (!na || ib < ia);
  return b > a || (b == a && ib < ia);
}
// i is 0x7fffffff where a thread saw nothing larger than the lowest value; the result is then 0, as a serial loop
// would leave it.
template <typename T> __device__ __forceinline__ void tf_argmax_step(T& v, int& i, T ov, int oi) {
  if (tf_argmax_takes(ov, oi, v, i)) { v = ov; i = oi; }
}
template <typename T> __device__ __forceinline__ void tf_warp_argmax_pair(T& v, int& i) {
  for (int o = 16; o > 0; o >>= 1) tf_argmax_step(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
}
template <typename T> __device__ __forceinline__ int tf_warp_argmax(T v, int i) {
  tf_warp_argmax_pair(v, i);
  return i == 0x7fffffff ? 0 : i;
}

// Block-wide: every thread gets the result. s: TF_WARPS + 1 elements of shared memory. The result slot is apart
// from the partials, so the next reduction may start while slow threads still read this one.
template <typename T> __device__ __forceinline__ T tf_block_sum(T v, T* s) {
  v = tf_warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) s[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = tf_warp_sum(lane < TF_WARPS ? s[lane] : (T)0);
    if (lane == 0) s[TF_WARPS] = v;
  }
  __syncthreads();
  return s[TF_WARPS];
}
template <typename T> __device__ __forceinline__ T tf_block_max(T v, T* s) {
  v = tf_warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) s[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = tf_warp_max(lane < TF_WARPS ? s[lane] : tf_lowest(v));
    if (lane == 0) s[TF_WARPS] = v;
  }
  __syncthreads();
  return s[TF_WARPS];
}
template <typename T> __device__ __forceinline__ int tf_block_argmax(T v, int i, T* sv, int* si) {
  tf_warp_argmax_pair(v, i);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { sv[warp] = v; si[warp] = i; }
  __syncthreads();
  if (warp == 0) {
    v = lane < TF_WARPS ? sv[lane] : tf_lowest(v);
    i = lane < TF_WARPS ? si[lane] : 0x7fffffff;
    tf_warp_argmax_pair(v, i);
    if (lane == 0) si[TF_WARPS] = i == 0x7fffffff ? 0 : i;
  }
  __syncthreads();
  return si[TF_WARPS];
}
// A split GEMM tile's parts summed (addParts), P parts, stride floats apart from part0, U accumulators a thread in
// flight: accumulator a of thread t (t < live) is at a · 256 + t of a part and of sum. Thread x takes thread x % live's
// accumulators x / live, x / live + 256 / live, ... (divided once, not per item: the divisions by a runtime count had
// cost the tail more than its loads); each one's parts added in their order, so the sum does not depend on which
// part finished last.
template <int P, int U> __device__ __forceinline__ void tf_add_parts(const float* part0, size_t stride, int accs, int live, float* sum) {
  const int groups = 256 / live, t = threadIdx.x % live, first = threadIdx.x / live;
  if (first >= groups) return;
  for (int a0 = first; a0 < accs; a0 += groups * U) {
    float v[U][P];
    #pragma unroll
    for (int u = 0; u < U; u++) {
      const int a = a0 + u * groups;
      if (a < accs) {
        #pragma unroll
        for (int p = 0; p < P; p++) v[u][p] = __ldcg(part0 + p * stride + a * 256 + t);
      }
    }
    #pragma unroll
    for (int u = 0; u < U; u++) {
      const int a = a0 + u * groups;
      if (a < accs) {
        float s = v[u][0];
        #pragma unroll
        for (int p = 1; p < P; p++) s += v[u][p];
        sum[a * 256 + t] = s;
      }
    }
  }
}
// c += a · b for one warp: a 16 × 16 tile of bf16 (row-major fragments), b 16 × 8 (column-major), c 16 × 8 f32, in
// the fragment layout of mma.sync.m16n8k16 (lane = 4 · group + index in group).
#ifdef __CUDA_ARCH__
__device__ __forceinline__ void tf_mma_bf16(float* c, const unsigned* a, const unsigned* b) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// 16 bytes copied from global to shared memory without passing through registers (zeros where full is false),
// in groups: commit closes a group, wait<N> returns once at most N groups are still in flight (sm_80 and later).
__device__ __forceinline__ void tf_cp16(void* dst, const void* src, bool full) {
  unsigned d;
  asm volatile("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(d) : "l"(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(d), "l"(src), "r"(full ? 16 : 0));
}
// The same through L1 (cp.async.ca), for a short tile's left rows where they are not copied in bulk: measured by
// ncu, the .cg copies of them, four or eight lanes a row's contiguous run, moved twice their bytes from L2
// (BENCHMARKS.md, twentieth session); the wgmma tiles' copies, the same bytes either way, were slower through L1.
__device__ __forceinline__ void tf_cp16_l1(void* dst, const void* src, bool full) {
  unsigned d;
  asm volatile("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(d) : "l"(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;" :: "r"(d), "l"(src), "r"(full ? 16 : 0));
}
__device__ __forceinline__ void tf_cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void tf_cp_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N)); }
// Two f32 as bf16x2 (lo in the low half), rounded to nearest even.
__device__ __forceinline__ unsigned tf_pack_bf16x2(float lo, float hi) { unsigned r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r; }
// Four 8 × 8 matrices of 16-bit elements from shared memory (ldmatrix): lanes 8j … 8j + 7 give the addresses of
// matrix j's rows (8 contiguous elements each); r[j] is the lane's part of matrix j in the mma fragment layout
// (row lane / 4, columns 2 · (lane % 4) and the next), or with tf_ldsm4t of its transpose (rows 2 · (lane % 4) and
// the next, column lane / 4).
__device__ __forceinline__ void tf_ldsm4(unsigned* r, const unsigned short* row) {
  unsigned a;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(a) : "l"(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void tf_ldsm4t(unsigned* r, const unsigned short* row) {
  unsigned a;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(a) : "l"(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
#else
__device__ __forceinline__ void tf_cp16(void* dst, const void* src, bool full) {
  if (full) memcpy(dst, src, 16); else memset(dst, 0, 16);
}
__device__ __forceinline__ void tf_cp16_l1(void* dst, const void* src, bool full) { tf_cp16(dst, src, full); }
__device__ __forceinline__ void tf_cp_commit() {}
template <int N> __device__ __forceinline__ void tf_cp_wait() {}
__device__ __forceinline__ unsigned tf_pack_bf16x2(float lo, float hi) { return tf_pack_bf16(lo, hi); }
// The matrices' rows gathered from the lanes that address them (addresses shuffled as integers).
__device__ __forceinline__ const unsigned short* tf_shfl_ptr(const unsigned short* p, int lane) {
  return reinterpret_cast<const unsigned short*>(__shfl_sync(0xffffffffu, reinterpret_cast<unsigned long long>(p), lane));
}
__device__ __forceinline__ void tf_ldsm4(unsigned* r, const unsigned short* row) {
  const int lane = threadIdx.x & 31;
  for (int j = 0; j < 4; j++) {
    const unsigned short* p = tf_shfl_ptr(row, j * 8 + (lane >> 2));
    r[j] = (unsigned)p[(lane & 3) * 2] | ((unsigned)p[(lane & 3) * 2 + 1] << 16);
  }
}
__device__ __forceinline__ void tf_ldsm4t(unsigned* r, const unsigned short* row) {
  const int lane = threadIdx.x & 31;
  for (int j = 0; j < 4; j++) {
    const unsigned short* p0 = tf_shfl_ptr(row, j * 8 + (lane & 3) * 2);
    const unsigned short* p1 = tf_shfl_ptr(row, j * 8 + (lane & 3) * 2 + 1);
    r[j] = (unsigned)p0[lane >> 2] | ((unsigned)p1[lane >> 2] << 16);
  }
}
// Host compilers (the tests' CPU emulation): the same product, each lane gathering its rows and columns by shuffles.
__device__ __forceinline__ void tf_mma_bf16(float* c, const unsigned* a, const unsigned* b) {
  const int lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  for (int kp = 0; kp < 8; kp++) {
    const unsigned ag = __shfl_sync(0xffffffffu, a[(kp >> 2) * 2], g * 4 + (kp & 3));
    const unsigned ag8 = __shfl_sync(0xffffffffu, a[(kp >> 2) * 2 + 1], g * 4 + (kp & 3));
    const unsigned b0 = __shfl_sync(0xffffffffu, b[kp >> 2], q * 8 + (kp & 3));
    const unsigned b1 = __shfl_sync(0xffffffffu, b[kp >> 2], q * 8 + 4 + (kp & 3));
    const float x0 = __uint_as_float(ag << 16), x1 = __uint_as_float(ag & 0xffff0000u);
    const float y0 = __uint_as_float(ag8 << 16), y1 = __uint_as_float(ag8 & 0xffff0000u);
    const float p0 = __uint_as_float(b0 << 16), p1 = __uint_as_float(b0 & 0xffff0000u);
    const float r0 = __uint_as_float(b1 << 16), r1 = __uint_as_float(b1 & 0xffff0000u);
    c[0] += x0 * p0 + x1 * p1; c[1] += x0 * r0 + x1 * r1;
    c[2] += y0 * p0 + y1 * p1; c[3] += y0 * r0 + y1 * r1;
  }
}
#endif
${wgmmaHelpers()}
// Overlapping kernels (programmatic dependent launch, sm_90): a kernel launched to overlap its predecessor runs
// tf_grid_wait() before it reads or writes anything the predecessor may touch (it returns once the predecessor's
// writes are visible; at once when nothing overlaps), then tf_grid_release() to let its successor be launched.
// Elsewhere (older GPUs, the host emulation) they do nothing: kernels then run one after another.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void tf_grid_wait_only() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void tf_grid_release() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
#else
__device__ __forceinline__ void tf_grid_wait_only() {}
__device__ __forceinline__ void tf_grid_release() {}
#endif
// Bulk copies (sm_90's copy engine): a contiguous run of global memory into shared memory, counted against a
// barrier in shared memory: init readies a barrier for one arrival, expect arrives announcing the bytes its copies
// bring, wait returns once they all landed (their writes then visible to the waiting thread), inval ends its use.
// The host emulation copies at once.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ unsigned tf_shared_address(const void* p) {
  unsigned a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
__device__ __forceinline__ void tf_bar_init(unsigned long long* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(tf_shared_address(bar)) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
__device__ __forceinline__ void tf_bar_expect(unsigned long long* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(tf_shared_address(bar)), "r"(bytes) : "memory");
}
// Whether the barrier's phase of that parity completed: one probe (which may wait a while in the hardware).
__device__ __forceinline__ bool tf_bar_passed(unsigned long long* bar, unsigned parity) {
  unsigned done;
  asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
    : "=r"(done) : "r"(tf_shared_address(bar)), "r"(parity) : "memory");
  return done != 0;
}
__device__ __forceinline__ void tf_bar_wait(unsigned long long* bar, unsigned parity) {
  while (!tf_bar_passed(bar, parity)) {}
}
__device__ __forceinline__ void tf_bar_inval(unsigned long long* bar) {
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];" :: "r"(tf_shared_address(bar)) : "memory");
}
__device__ __forceinline__ void tf_bulk_copy(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
    :: "r"(tf_shared_address(dst)), "l"(src), "r"(bytes), "r"(tf_shared_address(bar)) : "memory");
}
// Shared memory the threads wrote or read before, ordered before the copy engine's writes to it.
__device__ __forceinline__ void tf_fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
#elif defined(TF_FAKE_CUDA)
// The barrier's word: arrivals in the high half, bytes announced and not yet copied in the low (a copy lands at once).
inline void tf_bar_init(unsigned long long* bar) { __atomic_store_n(bar, 0ull, __ATOMIC_SEQ_CST); }
inline void tf_bar_expect(unsigned long long* bar, unsigned bytes) { __atomic_fetch_add(bar, (1ull << 32) + bytes, __ATOMIC_SEQ_CST); }
inline void tf_bar_wait(unsigned long long* bar, unsigned) {
  for (;;) {
    const unsigned long long v = __atomic_load_n(bar, __ATOMIC_SEQ_CST);
    if ((v >> 32) != 0 && (unsigned)v == 0) return;
    __nanosleep(0);
  }
}
inline void tf_bar_inval(unsigned long long*) {}
inline void tf_bulk_copy(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
  memcpy(dst, src, bytes);
  __atomic_fetch_sub(bar, (unsigned long long)bytes, __ATOMIC_SEQ_CST);
}
inline void tf_fence_async_shared() {}
#else
// Older GPUs (and a compiler's host pass): no copy engine; the schedule prints no bulk copy for them.
__device__ __forceinline__ void tf_bar_init(unsigned long long*) {}
__device__ __forceinline__ void tf_bar_expect(unsigned long long*, unsigned) {}
__device__ __forceinline__ void tf_bar_wait(unsigned long long*, unsigned) {}
__device__ __forceinline__ void tf_bar_inval(unsigned long long*) {}
__device__ __forceinline__ void tf_bulk_copy(void*, const void*, unsigned, unsigned long long*) {}
__device__ __forceinline__ void tf_fence_async_shared() {}
#endif
// Clusters (sm_90): the blocks a cluster has (1 where the launch made none), a barrier of all their threads (each
// block's shared-memory writes before it visible to the others' reads after it), and a float read from the same
// place of cluster block \`rank\`'s shared memory. Older GPUs launch no clusters; the host emulation (the tests' fake
// CUDA) runs a cluster's blocks as resident neighbours.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ unsigned tf_cluster_blocks() { unsigned n; asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(n)); return n; }
__device__ __forceinline__ void tf_cluster_sync() { asm volatile("barrier.cluster.arrive.release.aligned;\\n\\tbarrier.cluster.wait.acquire.aligned;" ::: "memory"); }
__device__ __forceinline__ float tf_cluster_load(const float* p, unsigned rank) {
  unsigned a, r;
  float v;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(r) : "memory");
  return v;
}
#elif defined(TF_FAKE_CUDA)
inline unsigned tf_cluster_blocks() { return tf_fake::cluster_blocks; }
inline void tf_cluster_sync() { tf_fake::cluster_sync(); }
inline float tf_cluster_load(const float* p, unsigned rank) { return *tf_fake::cluster_peer(p, rank); }
#else
__device__ __forceinline__ unsigned tf_cluster_blocks() { return 1; }
__device__ __forceinline__ void tf_cluster_sync() {}
__device__ __forceinline__ float tf_cluster_load(const float* p, unsigned) { return *p; }
#endif
// The clock (ns) and the multiprocessor, for the stamps and the megakernel's timeline and watchdog. Host compilers
// (the tests' CPU emulation): its clock64 counts nanoseconds; its 32 resident blocks stand for 8 multiprocessors of 4.
#ifdef __CUDA_ARCH__
__device__ __forceinline__ unsigned long long tf_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ unsigned tf_processor() {
  unsigned id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  return id;
}
#else
__device__ __forceinline__ unsigned long long tf_now() { return clock64(); }
__device__ __forceinline__ unsigned tf_processor() { return blockIdx.x / 4 % 8; }
#endif
// Stamps (a program printed for a step's timeline, TF_STAMPS defined): each kernel is wrapped so that its block's
// thread 0 notes when the block started, when its wait returned, the marks its form sets between phases
// (tf_stamp_mark; nothing without stamps) and when its last thread was done, and appends them with the block's
// multiprocessor to tf_stamps: a count and a capacity, then STAMP_WORDS words a block.
#ifdef TF_STAMPS
__device__ __forceinline__ unsigned long long& tf_stamp_ready() {
  __shared__ unsigned long long ready;
  return ready;
}
// Marks a kernel's form sets between its phases (0 where it sets none).
__device__ __forceinline__ unsigned long long* tf_stamp_marks() {
  __shared__ unsigned long long marks[${STAMP_MARKS}];
  return marks;
}
__device__ __forceinline__ void tf_stamp_mark(int i) {
  if (threadIdx.x == 0) tf_stamp_marks()[i] = tf_now();
}
__device__ __forceinline__ unsigned long long tf_stamp_start() {
  if (threadIdx.x != 0) return 0;
  const unsigned long long t = tf_now();
  tf_stamp_ready() = t;
  for (int i = 0; i < ${STAMP_MARKS}; i++) tf_stamp_marks()[i] = 0;
  return t;
}
__device__ __forceinline__ void tf_stamp_end(unsigned long long* stamps, int id, unsigned long long started) {
  __syncthreads();
  if (threadIdx.x != 0) return;
  const unsigned long long ended = tf_now();
  const unsigned slot = atomicAdd((unsigned*)stamps, 1u);
  if (slot >= stamps[1]) return;
  unsigned long long* r = stamps + 2 + ${STAMP_WORDS} * (unsigned long long)slot;
  r[0] = ((unsigned long long)(unsigned)id << 32) | blockIdx.x;
  r[1] = tf_processor();
  r[2] = started;
  r[3] = tf_stamp_ready();
  r[4] = ended;
  for (int i = 0; i < ${STAMP_MARKS}; i++) r[5 + i] = tf_stamp_marks()[i];
}
__device__ __forceinline__ void tf_grid_wait() {
  tf_grid_wait_only();
  if (threadIdx.x == 0) tf_stamp_ready() = tf_now();
}
#else
__device__ __forceinline__ void tf_grid_wait() { tf_grid_wait_only(); }
__device__ __forceinline__ void tf_stamp_mark(int) {}
#endif
#endif
#ifndef TSFUSE_RANDOM
#define TSFUSE_RANDOM
` + randomFunction('cuda') + '#endif\n';


