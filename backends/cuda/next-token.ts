// The hand-written kernel that ends every decode step on the device (the CUDA twin of backends/wgsl/next-token.ts,
// same parameters and same sampling): choose the next token (the graph's argmax, or a temperature / top-p sample
// of the logits row), append it to the history, feed it back as the next step's input and advance the position.
// The host never has to look at a token for the loop to go on.

export { NEXT_TOKEN_PARAMS_BYTES, nextTokenParamsBytes } from '../next-token-params.ts';

export const NEXT_TOKEN_KERNEL = 'tf_next_token';

/** Needs the CUDA prelude (block reductions) before it. */
export const nextTokenCuda = `
// Chooses the next token on the device and feeds it back (tsfuse runtime kernel, not generated).
struct TfNextParams { int row; int vocab; int advance; float temperature; float top_p; unsigned seed; int capacity; int pad; };

__device__ __forceinline__ unsigned tf_pcg(unsigned v) {
  const unsigned s = v * 747796405u + 2891336453u;
  const unsigned w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}

extern "C" __global__ void __launch_bounds__(TF_BLOCK) ${NEXT_TOKEN_KERNEL}(const int* __restrict__ argmax,
    const float* __restrict__ logits, int* __restrict__ tokens, int* __restrict__ pos, int* __restrict__ history,
    const TfNextParams* __restrict__ params) {
  __shared__ float tf_rf[TF_WARPS + 1];
  __shared__ float tf_chunk[TF_BLOCK];
  __shared__ int tf_owner, tf_result;
  __shared__ float tf_target, tf_before;
  const TfNextParams p = *params;
  const int tid = threadIdx.x;
  int chosen;
  if (p.temperature <= 0.0f) {
    chosen = argmax[p.row];
  } else {
    const float* l = logits + (size_t)p.row * p.vocab;
    const float inv_t = 1.0f / p.temperature;
    // Probabilities relative to the largest: p = exp((l - max) / T), in (0, 1].
    float m = -TF_INF;
    for (int i = tid; i < p.vocab; i += TF_BLOCK) m = fmaxf(m, l[i]);
    m = tf_block_max(m, tf_rf);
    float z = 0.0f;
    for (int i = tid; i < p.vocab; i += TF_BLOCK) z += expf((l[i] - m) * inv_t);
    z = tf_block_sum(z, tf_rf);
    // Top-p: the largest threshold whose tokens still hold top_p of the mass, by bisection.
    float lo = 0.0f, hi = 1.0f;
    for (int it = 0; it < 24; it++) {
      const float mid = 0.5f * (lo + hi);
      float s = 0.0f;
      for (int i = tid; i < p.vocab; i += TF_BLOCK) {
        const float q = expf((l[i] - m) * inv_t);
        if (q >= mid) s += q;
      }
      s = tf_block_sum(s, tf_rf);
      if (s >= p.top_p * z) lo = mid; else hi = mid;
    }
    // Inverse CDF over the kept tokens: each thread owns a contiguous chunk of the vocabulary.
    const int chunk = (p.vocab + TF_BLOCK - 1) / TF_BLOCK;
    const int start = tid * chunk;
    const int end = tf_imin(start + chunk, p.vocab);
    float mine = 0.0f;
    for (int i = start; i < end; i++) {
      const float q = expf((l[i] - m) * inv_t);
      if (q >= lo) mine += q;
    }
    tf_chunk[tid] = mine;
    __syncthreads();
    if (tid == 0) {
      float total = 0.0f;
      for (int t = 0; t < TF_BLOCK; t++) total += tf_chunk[t];
      const float u = (float)(tf_pcg(p.seed ^ tf_pcg((unsigned)pos[0])) >> 8u) / 16777216.0f * total;
      float before = 0.0f;
      int owner = TF_BLOCK - 1;
      for (int t = 0; t < TF_BLOCK; t++) {
        if (tf_chunk[t] > 0.0f) owner = t;
        if (before + tf_chunk[t] > u) { owner = t; break; }
        before += tf_chunk[t];
      }
      tf_target = u;
      tf_before = before;
      tf_owner = owner;
    }
    __syncthreads();
    // The owning thread walks its chunk to the token where the running mass passes u.
    if (tid == tf_owner) {
      float acc = tf_before;
      int pick = -1;
      for (int i = start; i < end; i++) {
        const float q = expf((l[i] - m) * inv_t);
        if (q >= lo) {
          pick = i;
          acc += q;
          if (acc > tf_target) break;
        }
      }
      tf_result = pick;
    }
    __syncthreads();
    chosen = tf_result;
  }
  if (tid == 0) {
    const int n = history[0];
    if (n < p.capacity) history[n + 1] = chosen;
    history[0] = n + 1;
    tokens[0] = chosen;
    pos[0] = pos[0] + p.advance;
  }
}
`;
