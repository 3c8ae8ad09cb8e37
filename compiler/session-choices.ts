// What a session on a backend decides before anything is compiled: what its KV cache stores, and the context its
// passes run in (a module of its own: the compile command makes the same choices, to warm the compile cache for a
// session, without opening devices).

import { DType } from '../ir/dtype.ts';
import type { DeviceKind } from '../runtime/device.ts';
import { defaultContext, PassContext } from './passes/context.ts';
import { decodeFormHead } from '../backends/schedule.ts';

/**
 * The dtype a session's KV cache stores. Asked for: that. Not asked for: on the GPUs the weights' precision where it
 * is 16-bit (attention then reads half the bytes; logits within 1e-2 of float32, test/e2e/kv-dtype.test.ts),
 * elsewhere f32 (the CPU is the oracle the fixtures check to 1e-4).
 */
export function kvCacheDType(backend: DeviceKind, weights: DType, asked?: DType): DType {
  if (asked !== undefined) {
    if (![DType.F32, DType.BF16, DType.F16].includes(asked)) throw new KvDTypeError(`--kv-dtype ${asked}: expected f32, bf16 or f16`);
    return asked;
  }
  return (backend === 'cuda' || backend === 'webgpu') && (weights === DType.BF16 || weights === DType.F16) ? weights : DType.F32;
}

/**
 * The passes' context for a session on `backend` with a KV cache of `kv` and heads of `headDim`, assuming `dims`:
 * where attention is split into chunks, and where the cache writes go. A device whose decode attention walks a
 * long cache in its decode form (dividing the cache among workgroups itself) is never split: CUDA with a bf16 or f16
 * cache (backends/cuda/flash.ts), and WebGPU where the decode form takes the head (decodeFormHead:
 * backends/wgsl/flash.ts). On the H200 with a 2,048-position cache after
 * 2,016 tokens, against chunks and their two combine kernels: CUDA 1.094 → 1.076 ms a token, WebGPU 1.666 → 1.320
 * (BENCHMARKS.md). Elsewhere the row form keeps a row of scores in workgroup memory and one workgroup a head: split
 * from SPLIT_ATTENTION_AT. Where a decode form runs, a step's cache writes take no launch of their own
 * (PassContext.cacheWrites): on CUDA they join attention (0.852 → 0.842 ms a token at 2,048 positions); on WebGPU,
 * whose decode form reads a buffer it also writes more slowly (backends/schedule.ts, decodePlan), attention
 * computes the new rows and the write joins the output projection.
 */
export function sessionContext(backend: DeviceKind, kv: DType, headDim: number, dims: ReadonlyMap<string, number> = defaultContext.dims): PassContext {
  const cudaDecodeForm = backend === 'cuda' && (kv === DType.BF16 || kv === DType.F16);
  const wgslDecodeForm = backend === 'webgpu' && decodeFormHead(headDim);
  return {
    dims,
    ...(cudaDecodeForm || wgslDecodeForm ? { splitAttentionFrom: Infinity } : {}),
    ...(cudaDecodeForm ? { cacheWrites: 'attention' as const } : wgslDecodeForm ? { cacheWrites: 'after-attention' as const } : {}),
  };
}

/** A KV-cache dtype the backend cannot store. */
export class KvDTypeError extends Error {
  override name = 'KvDTypeError';
}
