// What the scheduler knows about a device: a plain description of the target (threads per workgroup, subgroup
// width, workgroup memory, wide loads) and the heuristics each target was tuned with. backends/schedule.ts reads
// it; nothing else decides how threads share a kernel.

import { DType } from '../ir/dtype.ts';
import { ReduceOp, Scalar } from './kernel-ir.ts';

/** What the kernel is printed as: JavaScript (serial, on the host), WGSL or CUDA C. */
export type Target = 'js' | 'wgsl' | 'cuda';

/** A reduction lanes can combine in registers: its op, and for sum and max the type of what is combined. */
export type Combine = `${'sum' | 'max'}:${Scalar}` | 'argmax';

export interface SubgroupCaps {
  /** Lanes per subgroup: exact when `fixed` (a CUDA warp); else the most a device may have (WGSL reads it at run time). */
  readonly width: number;
  readonly fixed: boolean;
  /** Reductions subgroup operations combine (WGSL: subgroupAdd and subgroupMax of f32; CUDA's shuffles: any). */
  readonly combines: 'any' | readonly Combine[];
}

/** A matrix unit (tensor core, subgroup matrix): m×n×k products of `input` accumulated in `accumulator`. */
export interface MatrixUnit {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly input: DType;
  readonly accumulator: DType;
}

/**
 * The heuristics each target was tuned with (on the H200). Where WGSL and CUDA differ, they were tuned apart; a
 * change here changes generated kernels, so it needs measurements on the GPU.
 */
export interface ScheduleTuning {
  /**
   * How an element of a store or array with reductions in it picks one subgroup over one thread:
   *   'long-sums'     when every reduction in it is a sum of 32 or more terms;
   *   'fewest-steps'  when the busiest thread then takes fewer steps, a subgroup's reduction costing its share of
   *                   the range plus log2(width) shuffles (needs a fixed width).
   */
  readonly elementMapping: 'long-sums' | 'fewest-steps';
  /**
   * Which sums read 16 bytes at a time:
   *   'aligned-dots'  dot products of subgroup stores and of array fills whose alignment the index proves (WGSL
   *                   binds such buffers a second time as vec4s);
   *   'all-streams'   every contiguous float stream of cooperative sums and of each thread's own first-level sums,
   *                   alignment checked at run time with a scalar loop for the rest (CUDA).
   */
  readonly vectorize: 'aligned-dots' | 'all-streams' | 'none';
  /** Elements per stream and step of an 'all-streams' vector loop (8: one 16-byte load of 16-bit data, two of f32). */
  readonly streamElements: number;
  /**
   * Iterations per step of a workgroup's strided reduction, of a vector loop, and of a sliced sum (loads in
   * flight per thread: decode attention's probs·V is a sliced sum of scalar loads, and on the H200 8 a step
   * against 4 took 576-position decode from 1.239 to 1.141 ms a token, 16 no better).
   */
  readonly unroll: { readonly workgroup: number; readonly vector: number; readonly sliced: number };
  /**
   * Rows (a GEMM's m, attention's query rows) from which a kernel runs as tiles rather than row by row. The row
   * form reads every weight once per row; a short prompt's tiles (GemmPlan.shortTile) read each weight once for up
   * to 32 rows (CUDA) or 128 (WebGPU), so GEMM tiles win from 2 rows: on the H200 (BENCHMARKS.md, twenty-fifth
   * session) a 1B model's 8-token prompt took 6.96 ms on CUDA with tiles from 16 rows and 1.24 from 2 (2 tokens 2.27
   * → 1.19, 15 tokens 12.34 → 1.25; one row 0.87–0.89 either way), on WebGPU 18.51 against 2.44. Flash attention
   * from 2 query rows on both (the row form reads the whole cache, flash only up to the causal bound).
   */
  readonly tilesFrom: { readonly gemm: number; readonly flash: number };
  /**
   * wgmma GEMM tiles (sm_90a): the columns a tile has at most (the widest of 256, 128 and 64 not past it whose
   * accumulators, products × columns / 2 a thread, stay within 128 and whose tiles are no wider than the GEMM) and
   * the stages of the copy ring (fewer where they do not fit). 128 columns and 6 stages (4 for two products, whose stages are larger) measured best on the H200
   * (backends/schedule.ts); TSFUSE_GEMM=wgmma:256x3 (columns x stages) tries others.
   */
  readonly wgmma?: { readonly columns: number; readonly stages: number };
}

export interface DeviceCaps {
  readonly target: Target;
  /** For the schedule's text, e.g. "cuda sm_90". */
  readonly name: string;
  /** CUDA's compute capability, e.g. 90 (undefined on other targets). */
  readonly computeCapability?: number;
  readonly threadsPerWorkgroup: number;
  /** Undefined where there are none (WebGPU without the `subgroups` feature, the CPU). */
  readonly subgroup?: SubgroupCaps;
  readonly workgroupMemoryBytes: number;
  /** Workgroup memory a kernel may declare statically; row-local arrays beyond it are allocated at launch. */
  readonly staticWorkgroupMemoryBytes: number;
  /** Bytes one wide load reads (0: none). */
  readonly vectorLoadBytes: number;
  /**
   * Whether a load may ask the L2 cache to evict its lines first (CUDA sm_80 and later: an eviction policy from
   * `createpolicy`): for weights a kernel reads once, so that what is read again (the KV cache, activations, a
   * megakernel's counters) stays in L2.
   */
  readonly evictionHints: boolean;
  /** Workgroups a grid may have along x. */
  readonly maxWorkgroupsX: number;
  /** How rows past that run: along a second grid dimension (WebGPU), by workgroups looping over rows (CUDA's
   *  grid-stride loop), or all in one loop (the CPU). */
  readonly rowsPastGrid: 'second-dimension' | 'grid-stride' | 'serial';
  /** Matrix instructions GEMM tiles may use (CUDA's mma.sync on sm_80 and later; wgmma, m64nNk16, on sm_90a). */
  readonly matrixUnits: readonly MatrixUnit[];
  /**
   * Whether a kernel may start while its predecessor finishes (CUDA's programmatic dependent launch, sm_90): it
   * waits for the predecessor's writes inside, after starting what does not depend on them.
   */
  readonly dependentLaunch: boolean;
  /**
   * Workgroups a cluster may have at most (CUDA sm_90: a cluster's blocks run at once on neighbouring
   * multiprocessors and read each other's shared memory); undefined where there are none.
   */
  readonly clusterBlocks?: number;
  /**
   * Multiprocessors (SMs) and the workgroups of GPU_THREADS one can hold at most, where the scheduler sizes
   * register budgets so that a grid runs in one wave (CUDA); undefined elsewhere.
   */
  readonly processors?: { readonly count: number; readonly maxWorkgroups: number };
  /**
   * Workgroup memory a GEMM tile on subgroup matrices may declare (WebGPU: the adapter's limit, which the device is
   * opened with). Every other WGSL kernel keeps to the 16 KiB default, so that its schedule does not depend on it.
   */
  readonly matrixTileBytes?: number;
  readonly tuning: ScheduleTuning;
}

/** Threads per workgroup (block) of every generated GPU kernel. */
export const GPU_THREADS = 256;

/** The CPU backend: one thread runs the rows one after another. */
export const cpuCaps: DeviceCaps = {
  target: 'js',
  name: 'cpu',
  threadsPerWorkgroup: 1,
  workgroupMemoryBytes: 2 ** 31,
  staticWorkgroupMemoryBytes: 2 ** 31,
  vectorLoadBytes: 0,
  evictionHints: false,
  maxWorkgroupsX: 2 ** 31 - 1,
  rowsPastGrid: 'serial',
  matrixUnits: [],
  dependentLaunch: false,
  tuning: { elementMapping: 'long-sums', vectorize: 'none', streamElements: 1, unroll: { workgroup: 1, vector: 1, sliced: 1 }, tilesFrom: { gemm: 0, flash: 0 } },
};

/**
 * WebGPU: 256 threads, 16 KiB of workgroup memory (the default limit), 16-byte loads through vec4 bindings. With
 * the `subgroups` feature, subgroups of up to 32 lanes (their size is read at run time: 4 to 64 exist; kernels
 * assume at least 8 subgroups per workgroup).
 */
export function webgpuCaps(opts: { readonly subgroups: boolean; readonly subgroupMatrix?: SubgroupMatrixCaps }): DeviceCaps {
  const matrix = opts.subgroupMatrix;
  return {
    target: 'wgsl',
    name: `webgpu${opts.subgroups ? ' with subgroups' : ''}${matrix ? ' and subgroup matrices' : ''}`,
    threadsPerWorkgroup: GPU_THREADS,
    subgroup: opts.subgroups ? { width: 32, fixed: false, combines: ['sum:f32', 'max:f32'] } : undefined,
    workgroupMemoryBytes: 16384,
    staticWorkgroupMemoryBytes: 16384,
    vectorLoadBytes: 16,
    evictionHints: false,
    maxWorkgroupsX: 65535,
    rowsPastGrid: 'second-dimension',
    matrixUnits: matrix ? [SUBGROUP_MATRIX_F16] : [],
    dependentLaunch: false,
    ...(matrix ? { matrixTileBytes: matrix.workgroupBytes } : {}),
    tuning: { elementMapping: 'long-sums', vectorize: 'aligned-dots', streamElements: 4, unroll: { workgroup: 4, vector: 8, sliced: 4 }, tilesFrom: { gemm: 2, flash: 2 } },
  };
}

/**
 * WebGPU's subgroup matrices (Dawn's `chromium-experimental-subgroup-matrix`), where the adapter offers f16 × f16 →
 * f32 products of 16 × 16 × 16 on subgroups of exactly 32 lanes (the tiles place 8 subgroups of a workgroup): the
 * workgroup memory a tile may declare, the adapter's limit.
 */
export interface SubgroupMatrixCaps {
  readonly workgroupBytes: number;
}

/** The subgroup-matrix product GEMM tiles use: f16 operands (the weights' bf16 widened exactly), f32 results. */
const SUBGROUP_MATRIX_F16: MatrixUnit = { m: 16, n: 16, k: 16, input: DType.F16, accumulator: DType.F32 };

/** Shared memory per block a kernel may use with the opt-in, by compute capability (CUDA programming guide). */
const sharedBytesByArch: readonly [number, number][] = [[90, 232448], [89, 101376], [87, 166912], [86, 101376], [80, 166912], [75, 65536], [70, 98304]];

/**
 * CUDA at a compute capability (e.g. 90 for an H200, with its 132 multiprocessors): warps of 32, 256 threads per
 * block, 48 KiB of static shared memory. TSFUSE_CUDA_OVERLAP=off (for measuring what overlapping kernels gains)
 * launches every kernel after its predecessor. TSFUSE_GEMM=mma (for measuring what wgmma gains) leaves compute
 * capability 9.0 without its warpgroup matrix instructions, so that its GEMMs take the mma.sync tiles of sm_80;
 * TSFUSE_GEMM=wgmma:256x3 gives the wgmma tiles up to 256 columns and 3 stages (ScheduleTuning.wgmma). (Asking L2 for each workgroup's weights before waiting was measured
 * slower on the H200, 1.113 against 1.066 ms a token, and is gone: BENCHMARKS.md.)
 */
export function cudaCaps(computeCapability = 90, multiprocessors = 132): DeviceCaps {
  const shared = sharedBytesByArch.find(([arch]) => computeCapability >= arch)?.[1] ?? 49152;
  const overlap = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.TSFUSE_CUDA_OVERLAP;
  if (overlap !== undefined && overlap !== 'off') throw new Error(`TSFUSE_CUDA_OVERLAP=${overlap}: expected off (or unset)`);
  const gemmUnits = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.TSFUSE_GEMM;
  const wgmmaTile = /^wgmma(?::(64|128|256)x([3-8]))?$/.exec(gemmUnits ?? 'wgmma');
  if (gemmUnits !== 'mma' && !wgmmaTile) throw new Error(`TSFUSE_GEMM=${gemmUnits}: expected mma, wgmma or wgmma:COLUMNSxSTAGES (64, 128 or 256 × 3 to 8; or unset)`);
  const mma: MatrixUnit = { m: 16, n: 8, k: 16, input: DType.BF16, accumulator: DType.F32 };
  // wgmma exists on sm_90a only (not on sm_100 and later, which have tcgen05 instead): NVRTC compiles 9.0 as sm_90a.
  const wgmma: MatrixUnit = { m: 64, n: 256, k: 16, input: DType.BF16, accumulator: DType.F32 };
  return {
    target: 'cuda',
    name: `cuda sm_${computeCapability}`,
    computeCapability,
    threadsPerWorkgroup: GPU_THREADS,
    subgroup: { width: 32, fixed: true, combines: 'any' },
    workgroupMemoryBytes: shared,
    staticWorkgroupMemoryBytes: 48 * 1024,
    vectorLoadBytes: 16,
    evictionHints: computeCapability >= 80,
    maxWorkgroupsX: 2 ** 31 - 1,
    rowsPastGrid: 'grid-stride',
    // mma.sync m16n8k16 with bf16 inputs and f32 accumulators (sm_80 and later); wgmma m64nNk16, N up to 256 (sm_90a).
    matrixUnits: computeCapability === 90 && wgmmaTile ? [mma, wgmma] : computeCapability >= 80 ? [mma] : [],
    dependentLaunch: computeCapability >= 90 && overlap !== 'off',
    // 8: the most every sm_90 part schedules (more needs a function attribute and may not fit a GPC).
    ...(computeCapability >= 90 ? { clusterBlocks: 8 } : {}),
    // 2,048 threads a multiprocessor since sm_70, but 1,024 on sm_75 and 1,536 on sm_86 and sm_89.
    processors: { count: multiprocessors, maxWorkgroups: computeCapability === 75 ? 4 : computeCapability === 86 || computeCapability === 89 ? 6 : 8 },
    tuning: {
      elementMapping: 'fewest-steps', vectorize: 'all-streams', streamElements: 8, unroll: { workgroup: 1, vector: 4, sliced: 8 }, tilesFrom: { gemm: 2, flash: 2 },
      ...(computeCapability === 90 && wgmmaTile ? { wgmma: { columns: Number(wgmmaTile[1] ?? 128), stages: Number(wgmmaTile[2] ?? 6) } } : {}),
    },
  };
}

/** Whether the device's subgroups combine `op` over values of type `t` in registers. */
export function subgroupCombines(device: DeviceCaps, op: ReduceOp, t: Scalar): boolean {
  const c = device.subgroup?.combines;
  if (!c) return false;
  return c === 'any' || c.includes(op === 'argmax' ? 'argmax' : `${op}:${t}`);
}
