// The scheduler: how a kernel runs on a device. Lowering (backends/lower.ts) says what each row computes; this
// decides, from the device's description (backends/device-caps.ts), how threads share it: the grid, and for every
// statement whether the whole workgroup strides over it, one subgroup takes each element, the subgroups split a
// few elements between them, several threads slice each element, or each thread takes elements of its own; which
// reductions read 16 bytes at a time and how partial results combine; where row-local arrays live. The renderers
// print these decisions and take none. formatSchedule (backends/schedule-format.ts) prints them as text.

import { cudaCaps, cpuCaps, DeviceCaps, GPU_THREADS, subgroupCombines, webgpuCaps } from './device-caps.ts';
import { DType, dtypeBytes } from '../ir/dtype.ts';
import { add, anyExpr, FlashIR, GemmIR, idiv, int, KernelIR, KExpr, KStmt, loadsOf, mul, offsetAlong, reductionsOf, ROW, runsAlong, Scalar, statementExprs, topReductions, varsOf } from './kernel-ir.ts';
import { alignedDot, contiguousStreams, multipleOf, Stream, streamKey } from './schedule-vector.ts';
import { formatSchedule } from './schedule-format.ts';
import { boundKeyLoops, maxExtent } from './causal-bound.ts';
import { narrowGemmActivations } from './narrow-activations.ts';
import { log, logsOn } from '../ir/logs.ts';
import { UpdateShare, weightReads } from './element-ranges.ts';
import { rowStreams } from './weight-stream.ts';

export { cudaCaps, cpuCaps, webgpuCaps };
export type { DeviceCaps };

type Reduce = Extract<KExpr, { k: 'reduce' }>;
type ArrayStmt = Extract<KStmt, { k: 'array' }>;
type StoreStmt = Extract<KStmt, { k: 'store' }>;

/** How the threads of a workgroup share one statement of a row. */
export type Mapping =
  /** One thread does everything in order (the CPU). */
  | { readonly kind: 'serial' }
  /** Every thread computes the same value (a let). */
  | { readonly kind: 'uniform' }
  /** The threads stride over a reduction's range, then combine (a coop). */
  | { readonly kind: 'workgroup' }
  /**
   * Elements strided over the threads, each computed by one thread alone. `each`: every thread takes exactly this
   * many (a constant count, at most UNROLLED_ELEMENTS), in a loop of that count that the printers unroll, so that
   * its loads issue together. `runs` (an array's elements, `each` a multiple of 8): a thread takes runs of 8
   * neighbouring elements instead, and these loads, contiguous along the array and aligned, are read 16 bytes at
   * a time: a few wide loads in flight rather than `each` narrow ones per stream, in fewer registers.
   */
  | { readonly kind: 'thread-per-element'; readonly each?: number; readonly runs?: readonly Stream[] }
  /** Elements strided over the subgroups; the lanes of one split its reductions, lane 0 writes. */
  | { readonly kind: 'subgroup-per-element' }
  /** Fewer elements than subgroups: the subgroups are divided between the elements and split their reductions. */
  | { readonly kind: 'split-subgroups'; readonly elements: number }
  /** Few elements, each a long reduction: `slices` threads per element, neighbouring threads on neighbouring elements. */
  | { readonly kind: 'sliced'; readonly slices: number };

/** 16-byte loads of a reduction's contiguous streams. */
export interface VectorPlan {
  /** With 'proved' alignment (WGSL): the weight first, then the other factor of the product if it is contiguous too. */
  readonly streams: readonly Stream[];
  /** Elements of each stream one step reads. */
  readonly elements: number;
  /** 'proved' by the index (no scalar rest); 'checked' at run time, a scalar loop doing what the vector loop did not. */
  readonly alignment: 'proved' | 'checked';
  /** Vector steps per iteration (loads in flight per lane). */
  readonly unroll: number;
  /** Steps every lane takes, where that is one constant (fixedVectorSteps): a loop of that count, no bound to check. */
  readonly steps?: number;
}

/** How a reduction that is not a plain serial loop runs. */
export interface ReductionPlan {
  /** Who splits its range: the workgroup, a subgroup's lanes, the subgroups of an element, the threads of a slice, or one thread. */
  readonly lanes: 'workgroup' | 'subgroup' | 'split-subgroups' | 'slices' | 'thread';
  /** How partial results combine: in registers through subgroup operations (then workgroup memory across subgroups),
   *  a tree in workgroup memory, across slices in workgroup memory, or not at all (one thread). */
  readonly combine: 'subgroup' | 'tree' | 'slices' | 'none';
  /** Iterations per step of its scalar loop. */
  readonly unroll: number;
  readonly vector?: VectorPlan;
}

export interface StmtSchedule {
  readonly mapping: Mapping;
  /** The reductions in the statement that do not run as a plain serial loop, by loop variable. */
  readonly reductions: ReadonlyMap<string, ReductionPlan>;
}

export interface Grid {
  /** Workgroups. */
  readonly rows: KExpr;
  /**
   * Rows of the kernel one workgroup computes: 1, or (WebGPU, sharedPrologue) more, the kernel's first
   * `sharedStatements` statements computed once for them all, then the rest for rows w, w + rows, … below the
   * kernel's rows.
   */
  readonly rowsPerWorkgroup: number;
  readonly sharedStatements?: number;
  readonly threads: number;
  /** How rows beyond the device's largest grid dimension run: a second grid dimension (WebGPU), workgroups
   *  looping over rows (CUDA), or one loop over every row (the CPU). */
  readonly overflow: 'second-dimension' | 'grid-stride' | 'serial';
  readonly maxWorkgroupsX: number;
  /**
   * CUDA: workgroups a cluster, where some form runs its workgroups in clusters (ShortTile.cluster): that form's
   * count where it runs, else 1.
   */
  readonly clusterBlocks?: KExpr;
}

/** A row-local array: in workgroup memory, declared statically or placed at an offset of memory given at launch. */
export interface ArrayPlacement {
  readonly name: string;
  readonly elements: number;
  readonly type: Scalar;
  /** Stored as vec4s, so that a sum reads it 16 bytes at a time (WGSL). */
  readonly vec4: boolean;
  /** Byte offset in the workgroup memory allocated at launch; undefined when declared statically. */
  readonly dynamicOffset?: number;
}

/**
 * How a GEMM kernel (KernelIR.gemm) runs: each workgroup computes a tile of rows × columns, staging `depth`
 * columns of the left operand and rows of the right ones through workgroup memory per step, so each weight tile
 * is read once per tile of rows.
 */
export interface GemmPlan {
  /**
   * 'mma-bf16': CUDA's m16n8k16 matrix instructions, bf16 inputs (the left operand rounded to bf16 as it is
   * staged; the weights are bf16 already) and f32 accumulators, each warp a block of the tile;
   * 'wgmma-bf16': sm_90a's warpgroup instructions (wgmma m64nNk16), both operands bf16 in shared memory read
   * through matrix descriptors, each of the two warpgroups 64 rows of the tile (always copied: 'async' staging);
   * 'subgroup-matrix-f16': WebGPU's subgroup matrices, 16 × 16 × 16 products of f16 operands (the left operand
   * rounded to f16, bf16 weights widened exactly) into f32 results, each of the 8 subgroups a block of the tile,
   * the operands staged through registers a step ahead;
   * 'fma': f32 multiply-adds, each thread a block of 4 × 4 outputs; 'serial': the CPU's loops, row by row.
   */
  readonly units: 'mma-bf16' | 'wgmma-bf16' | 'subgroup-matrix-f16' | 'fma' | 'serial';
  readonly tileRows: number;
  readonly tileColumns: number;
  readonly tileDepth: number;
  /** Tiles along the rows (the grid's rows are these times the tiles along the columns). */
  readonly rowTiles: KExpr;
  readonly columnTiles: number;
  /**
   * How an mma tile's operands reach shared memory: 'registers' (loaded a step ahead, the left operand computed and
   * rounded on the way), or 'async' (cp.async copies `stages − 1` steps ahead into a ring of stages in memory given
   * at launch, the left operand as it is in memory: f32, rounded as fragments are read, or bf16). wgmma tiles copy
   * `stages − 2` steps ahead (one step's instructions stay in flight while the next are issued), rows of 64 bf16
   * (128 bytes) in the 128-byte swizzle, the ring aligned to 1,024 bytes inside `bytes`.
   */
  readonly staging?: { readonly kind: 'registers' } | { readonly kind: 'async'; readonly stages: number; readonly bytes: number; readonly left: 'f32' | 'bf16' };
  /** WGSL tiles: how each operand's staging loads read (StagedLoads). */
  readonly loads?: StagedLoads;
  /** Where few tiles would leave multiprocessors idle: each tile's depth divided among workgroups (DepthSplit). */
  readonly split?: DepthSplit;
  /**
   * The tiles for fewer rows than `below` (a short prompt), whose weights every multiprocessor must stream at once.
   * WebGPU's subgroup matrices: tiles of tileRows × tileColumns in which each of the 8 subgroups takes a 16-deep
   * slice of every 128-deep step, their sums added through workgroup memory at the end; narrow tiles make four
   * times the workgroups of 64-column ones. CUDA's mma tiles: the left operand's rows of the tile's depth copied
   * once into the memory given at launch, each of the 8 warps 8 columns of every row, its weights read 16 bytes a
   * lane straight into the matrix instructions' registers, `tileDepth` (the loads in flight) ahead; the depth split
   * among `split.parts` workgroups (ShortTile.split).
   */
  readonly shortTile?: ShortTile;
}

export interface ShortTile {
  readonly below: number;
  readonly tileRows: number;
  readonly tileColumns: number;
  readonly tileDepth: number;
  readonly rowTiles: KExpr;
  readonly columnTiles: number;
  /** WGSL: how the staging loads read. */
  readonly loads?: StagedLoads;
  /**
   * WGSL: steps whose staging loads are in flight at once, each in registers of its own (1: the next step's while
   * this one's products run).
   */
  readonly stagesAhead?: number;
  /** CUDA: the depth split (parts a constant), where there is one. */
  readonly split?: DepthSplit;
  /**
   * CUDA: the weights, which the one tile of rows reads once, loaded asking L2 to evict them first (where the
   * device takes eviction hints): a 32-token prompt 1.50–1.55 → 1.37–1.39 ms on the H200's clock (BENCHMARKS.md).
   */
  readonly weightsOnce?: boolean;
  /**
   * CUDA sm_90: a tile's parts run as one cluster, each leaving its sums in its shared memory, where each part's
   * warps add every part's sums for their own columns (in the parts' order) and run the epilogue there. Launched
   * without a cluster, the parts add through memory as any split tile's (addParts).
   */
  readonly cluster?: boolean;
  /**
   * CUDA: copy groups the left rows of a part land in (2 where the part's steps are even: the second half lands
   * while the first half's products run; else 1).
   */
  readonly leftGroups?: number;
  /**
   * CUDA sm_90: the left rows copied by the copy engine, a bulk copy of each row's run of each group counted
   * against a barrier of the group, rather than 16 bytes a thread by cp.async (whose .cg copies ncu saw move twice the
   * rows' bytes from L2). Measured on the H200 (BENCHMARKS.md, twenty-first session), a 1B model's 32-token prefill:
   * 1.47–1.51 ms against 1.57–1.62 with cp.async.cg and 1.51–1.55 with cp.async.ca.
   */
  readonly bulkLeft?: boolean;
}

/**
 * Elements each staging load of a WGSL tile reads, for the left operand and each right one: 4 (a run of f32) or 8
 * (a run of bf16) through the buffer's vec4 binding, where the operand is read from memory as it is in aligned runs
 * along the depth and its buffer is bound whole; else 1. The runs a step's tile holds must spread evenly over the
 * threads (those past a tile with fewer runs than threads idle).
 */
export interface StagedLoads {
  readonly left: number;
  readonly right: readonly number[];
}

function stagedLoads(k: KernelIR, gemm: GemmIR, tile: { readonly tileRows: number; readonly tileColumns: number; readonly tileDepth: number }, device: DeviceCaps, opts: ScheduleOptions): StagedLoads {
  const threads = device.threadsPerWorkgroup;
  const elements = (e: KExpr, tileSide: number) => {
    if (e.k !== 'load' || opts.splitBuffers?.has(e.buf)) return 1;
    const dtype = k.buffers[e.buf].dtype;
    const per = dtype === DType.F32 ? 4 : dtype === DType.BF16 || dtype === DType.F16 ? 8 : 1;
    const runs = (tileSide * tile.tileDepth) / per;
    const even = tile.tileDepth % per === 0 && threads % (tile.tileDepth / per) === 0 && (runs <= threads || runs % threads === 0);
    return per > 1 && even && runsAlong(e.index, gemm.k, per) ? per : 1;
  };
  return { left: elements(gemm.a, tile.tileRows), right: gemm.b.map((b) => elements(b, tile.tileColumns)) };
}

/**
 * A GEMM tile's depth divided among `parts` workgroups (an expression of the rows: 1 once the tiles alone fill the
 * device), each a run of consecutive steps. Each writes its sums to a workspace given at launch (`workspaceFloats`)
 * and counts itself done in a counter of the tile (`counters`, zero between launches); the last one adds the parts
 * in the order of the depth (the same sum whichever finishes last), runs the epilogue and zeroes the counter.
 */
export interface DepthSplit extends SplitScratchNeeds {
  readonly parts: KExpr;
  readonly maxParts: number;
}

/** What a kernel whose workgroups add their parts through memory needs given at launch (zeroed counters). */
export interface SplitScratchNeeds {
  readonly workspaceFloats: number;
  readonly counters: number;
}

/**
 * The decode form's keys divided among workgroups of a head (a long cache): chunk c takes keys [c·keys, (c + 1)·keys)
 * up to the position, and the chunks the position reaches each leave their maximum, sum and output run in the
 * workspace; on CUDA the last to count itself done in the head's counter merges them in the chunks' order (the same
 * sum whichever is last) and zeroes the counter; on WebGPU (no counters) a second dispatch, a workgroup a head,
 * merges them in the same order. Chunks past the position exit at once.
 */
export interface KeyChunks extends SplitScratchNeeds {
  readonly keys: number;
  readonly count: number;
  /** WGSL: chunks the merging dispatch reads a round trip (their loads issued before any is used). */
  readonly mergeBatch?: number;
}

/**
 * How a flash-attention kernel (KernelIR.flash) runs: each workgroup takes `tileQueries` query rows of one batch
 * index (head) and walks the keys in tiles of `tileKeys` up to the tile's causal bound.
 *   'fma':      the query tile, each key and value tile and the tile of scores in workgroup memory, f32;
 *               `threadsPerQuery` threads share a query row, each computing keys/threadsPerQuery of its scores and
 *               width/threadsPerQuery of its output.
 *   'mma-bf16': each warp 16 query rows by CUDA's m16n8k16 bf16 matrix instructions (f32 accumulators): the scores
 *               and the output stay in registers, the probabilities feed the second product directly as two bf16
 *               terms each (hi + lo); queries, keys and values are staged as bf16 (keys and values read from bf16
 *               memory), copied 16 bytes at a time by cp.async where `wideRows` says so (a key tile ahead, in two
 *               stages, where both are: `ring`), fragments read by ldmatrix.
 *   'serial':   the CPU's loops, row by row.
 */
export interface FlashPlan {
  /**
   * 'decode': one query row (a decode step) on CUDA, keys and values read 16 bytes at a time from bf16 or f16 memory: each
   * group of depth / 8 lanes takes one key at a time, its loads of keys and values for `keyUnroll` keys issued
   * together; every group keeps its own online softmax, and the groups are merged at the end. One round of loads
   * rather than the row form's phases (scores, maximum, sum, then probs·V, each waiting for the last).
   */
  readonly units: 'fma' | 'mma-bf16' | 'serial' | 'decode';
  readonly tileQueries: number;
  readonly tileKeys: number;
  /** 'fma': the threads sharing a query row (0 otherwise). */
  readonly threadsPerQuery: number;
  readonly queryTiles: KExpr;
  /** Workgroup memory the tiles declare. */
  readonly bytes: number;
  /** 'mma-bf16': whether key rows and value rows are read from bf16 memory in aligned runs of 8 along the head. */
  readonly wideRows?: { readonly keys: boolean; readonly values: boolean };
  /**
   * 'mma-bf16' with wide key and value rows: both copied by cp.async a key tile ahead, into two stages of this many
   * bytes of memory given at launch, so a tile's loads overlap the previous tile's products.
   */
  readonly ring?: { readonly bytes: number };
  /**
   * 'mma-bf16' under a causal bound: workgroups take the last query tiles of every head first (they walk the most
   * keys; the short ones fill in behind them). 2,048 tokens on the H200: 25.1 → 24.2–24.4 ms (BENCHMARKS.md).
   */
  readonly longestFirst?: boolean;
  /**
   * 'mma-bf16': groups of warps on the same query rows, each taking its share of every key tile (1 or absent: a
   * warp walks all of them); the groups' softmax states are merged at the end. Two groups halve the query tile
   * (64 rows), doubling the workgroups of a prompt and halving each warp's walk: at 512 tokens a 1B model's 128
   * tiles had left each multiprocessor 8 warps, most of them waiting (ncu: 0.41 instructions issued a cycle).
   */
  readonly keyGroups?: number;
  /** 'decode': keys a lane group loads at once (and the groups of the workgroup, tileKeys, take one key each). */
  readonly keyUnroll?: number;
  /** 'decode' over a cache longer than a step (tileKeys · keyUnroll keys): a workgroup a step of each head. */
  readonly keyChunks?: KeyChunks;
  /**
   * 'decode' launched to overlap its predecessor, over keys and values that this step's update writes a run of
   * (FlashIR.fresh): the first step's key and value rows are loaded before the wait (through L2, past the L1), and
   * those in the fresh run loaded again after it (or, where the kernel writes them itself, computed: FreshRange.value).
   * The position and the runs are read from inputs, which no kernel writes.
   */
  readonly earlyKeys?: boolean;
  /**
   * 'decode' computing the step's new key and value rows under a register cap (ScheduleOptions.registersPerThread:
   * the megakernel's): the first step's keys and values are loaded after those rows, not before them. Held across
   * the rows' rotary arithmetic, 8 keys' and values' loads (64 registers) under a cap of 64 cost more than the round
   * trip they hide (the megakernel of Llama-3.2-1B on the H200, BENCHMARKS.md, twenty-seventh session: 0.873–0.878
   * ms a token loaded after against 0.879 before, 0.952 against 0.977 at a 2,048-position cache).
   */
  readonly keysAfterRows?: boolean;
  /**
   * 'decode' making the step's cache writes (FlashIR.updates): how its heads share them (UpdateShare: every head an
   * even share, so that each writes the rows of the keys it reads and a megakernel's head waits only for its own
   * inputs), on the threads from `firstThread` on (those the query leaves idle, where there are enough).
   */
  readonly updateShare?: UpdateShare & { readonly firstThread: number };
}

export interface ScheduledKernel {
  readonly kernel: KernelIR;
  readonly device: DeviceCaps;
  readonly grid: Grid;
  /** Whether any statement uses subgroup operations (WGSL enables the extension for them). */
  readonly subgroups: boolean;
  /** One per statement of kernel.body. */
  readonly stmts: readonly StmtSchedule[];
  readonly arrays: readonly ArrayPlacement[];
  /** Workgroup memory the launch must provide (arrays too large to declare statically). */
  readonly dynamicWorkgroupBytes: number;
  /**
   * With a GEMM or flash plan: the rows (the GEMM's m, the flash's queries) from which the tiles run; fewer run
   * the kernel's row form (`stmts`). 0: the tiles always (the CPU; WebGPU where both forms' memory would not fit).
   */
  readonly tilesFrom?: number;
  readonly gemm?: GemmPlan;
  readonly flash?: FlashPlan;
  /**
   * Whether the kernel starts while its predecessor finishes (DeviceCaps.dependentLaunch): it waits for the
   * predecessor's writes before touching anything, then lets its own successor start, so the order of writes and
   * reads is the launch sequence's.
   */
  readonly overlap?: boolean;
  /**
   * Workgroups each multiprocessor must hold at once (the compiler caps the registers a thread may use to fit
   * them): so that a fixed grid runs in one wave, or two of the matrix-unit flash tiles; undefined where the grid
   * is not fixed, already fits, or cannot.
   */
  readonly workgroupsPerProcessor?: number;
}

export interface ScheduleOptions {
  /** Buffers bound in several chunks (over a WebGPU binding's size limit): read element by element only. */
  readonly splitBuffers?: ReadonlySet<number>;
  /**
   * false: attention's decode form takes whole heads, never chunks of keys (FlashPlan.keyChunks): for code that runs
   * without the scratch or second dispatch the chunks merge through (compiler/artifact.ts's WGSL kernels).
   */
  readonly keyChunks?: boolean;
  /**
   * Registers a thread may use where every kernel runs in a grid that caps them (the megakernel's blocks a
   * multiprocessor: 128 at 2, 64 at 4); at 64 attention's decode form keeps fewer keys' loads in flight
   * (FlashPlan.keyUnroll), at 128 a lane's weight steps are all in flight (REGISTERS_FOR_WHOLE_STEPS).
   */
  readonly registersPerThread?: number;
  /**
   * Every kernel row by row at any size but attention's decode form: the megakernel's graph, whose tasks are rows,
   * and whose kernels launched one by one (which bisecting compares with it byte for byte) must compute as they do.
   */
  readonly rowsOnly?: boolean;
  /**
   * The megakernel's pages of shared memory, in bytes, where it streams each row's weights through them
   * (backends/weight-stream.ts): the weights streamed are read from shared memory, so with no eviction hints.
   */
  readonly streamPageBytes?: number;
}

/** Elements a thread may take in an unrolled loop (Mapping 'thread-per-element'). */
const UNROLLED_ELEMENTS = 8;

/** A reduction shorter than this leaves lanes idle: it is not worth a subgroup or a slice of threads. */
const LONG_REDUCTION = 32;
/** Workgroup memory kept for reduction scratch when deciding whether arrays fit statically. */
const SCRATCH_BYTES = 512;

/**
 * A graph's kernels scheduled for a device, in order: first what spans kernels (temporaries that only matrix-unit
 * GEMMs read stored as bf16: backends/narrow-activations.ts), then each kernel.
 */
export function scheduleKernels(kernels: readonly KernelIR[], device: DeviceCaps, opts: ScheduleOptions = {}): ScheduledKernel[] {
  return narrowActivations(kernels, device).map((k) => scheduleKernel(k, device, opts));
}

/**
 * A graph's kernels with the temporaries that only matrix-unit GEMMs read stored in their 16-bit type
 * (backends/narrow-activations.ts): bf16 for CUDA's mma tiles, f16 for WebGPU's subgroup matrices. On the H200 a
 * 32-token prompt's WebGPU GEMMs moved about as many bytes a second whether from memory or L2, most of them each
 * tile's copy of the f32 left rows (BENCHMARKS.md, seventeenth session).
 */
export function narrowActivations(kernels: readonly KernelIR[], device: DeviceCaps): readonly KernelIR[] {
  if (device.target === 'wgsl') return narrowGemmActivations(kernels, (k) => gemmOnSubgroupMatrix(k, device), DType.F16);
  return narrowGemmActivations(kernels, (k) => gemmOnMatrixUnits(k, device));
}

export function scheduleKernel(k: KernelIR, device: DeviceCaps, opts: ScheduleOptions = {}): ScheduledKernel {
  const earlier = made.get(k.body)?.find((m) => m.scheduled.device === device && sameOptions(m.opts, opts) && alike(m.kernel, k));
  let scheduled: ScheduledKernel;
  if (earlier) {
    // The kernel as scheduled (its loops perhaps bounded: scheduleOnce), with this one's name, comment and buffers.
    const { kernel } = earlier.scheduled;
    scheduled = { ...earlier.scheduled, kernel: kernel === earlier.kernel ? k : { ...kernel, name: k.name, fused: k.fused, buffers: k.buffers } };
    copiedFrom.set(scheduled, earlier.scheduled);
  } else {
    scheduled = scheduleOnce(k, device, opts);
    made.set(k.body, [...(made.get(k.body) ?? []), { kernel: k, opts, scheduled }]);
  }
  // TSFUSE_LOGS=schedule: each kernel's schedule as --dump-schedule prints it.
  if (logsOn('schedule')) log('schedule', formatSchedule(scheduled));
  return scheduled;
}

/**
 * Schedules made so far, by the body of the kernel they were made for. Kernels lowered once and shared (lowerGraph
 * gives every transformer layer's the same body) differ only in name, comment and the buffers bound, which no
 * decision reads: they take the first one's schedule (Llama-3.2-1B's 404 kernels are 31 different ones).
 */
const made = new WeakMap<readonly KStmt[], { readonly kernel: KernelIR; readonly opts: ScheduleOptions; readonly scheduled: ScheduledKernel }[]>();
/** Each schedule taken from one made for an alike kernel, and that one. */
const copiedFrom = new WeakMap<ScheduledKernel, ScheduledKernel>();

/** The schedule `s` was taken from (made for a kernel alike but for its name, comment and bindings), else `s`: printers print its code once. */
export function scheduleOrigin(s: ScheduledKernel): ScheduledKernel {
  return copiedFrom.get(s) ?? s;
}

/** The same kernel but for its name, comment and which buffers are bound (their kinds alike). */
function alike(a: KernelIR, b: KernelIR): boolean {
  if (a.kind !== b.kind || a.rows !== b.rows || a.sizes !== b.sizes || a.gemm !== b.gemm || a.flash !== b.flash || a.buffers.length !== b.buffers.length) return false;
  return a.buffers.every((x, i) => {
    const y = b.buffers[i];
    return x.dtype === y.dtype && x.written === y.written && x.elems === y.elems && x.binding.kind === y.binding.kind;
  });
}

/** Options that schedule alike (an option added to ScheduleOptions must be compared here too). */
function sameOptions(a: ScheduleOptions, b: ScheduleOptions): boolean {
  const [x, y] = [a.splitBuffers ?? new Set<number>(), b.splitBuffers ?? new Set<number>()];
  return x.size === y.size && [...x].every((i) => y.has(i)) && (a.keyChunks ?? true) === (b.keyChunks ?? true) &&
    a.registersPerThread === b.registersPerThread && !!a.rowsOnly === !!b.rowsOnly && a.streamPageBytes === b.streamPageBytes;
}

function scheduleOnce(lowered: KernelIR, device: DeviceCaps, opts: ScheduleOptions): ScheduledKernel {
  // Attention's loops over the keys run to the causal bound (read from memory: in WGSL too, uniformity analysis
  // rejects only barriers inside such loops, and a row has none there); a score's own sum keeps its constant extent
  // where only that is read wide (aligned dots).
  const k = boundKeyLoops(lowered, { maskedElements: device.tuning.vectorize !== 'aligned-dots' });
  const gemm = k.gemm && !opts.rowsOnly ? gemmPlan(k, k.gemm, device, opts) : undefined;
  const planned = k.flash && flashPlan(k.flash, k, device, opts);
  const flash = opts.rowsOnly && planned?.units !== 'decode' ? undefined : planned;
  const tileBytes = gemm ? gemmBytes(k.gemm!, gemm) : flash ? flash.bytes : 0;
  const extent = k.gemm?.rows ?? k.flash?.queries;
  const gemmGrid = gemm && mul(mul(gemm.rowTiles, int(gemm.columnTiles)), gemm.split?.parts ?? int(1));
  const short = gemm?.shortTile;
  const shortGrid = short && mul(mul(short.rowTiles, int(short.columnTiles)), short.split?.parts ?? int(1));
  const tileGrid = gemmGrid ? (shortGrid ? select(lt(extent!, int(short!.below)), shortGrid, gemmGrid) : gemmGrid) : flash ? mul(int(k.flash!.batch * (flash.keyChunks?.count ?? 1)), flash.queryTiles) : undefined;
  // Fewer rows than this run row by row (the CPU, with no choice to make, always runs the tiles).
  // The decode form runs whenever it exists; on CUDA its kernel keeps the row form for the megakernel's tasks.
  const decodeFrom = device.target === 'cuda' ? 1 : 0;
  let tilesFrom = !tileGrid ? Infinity : device.threadsPerWorkgroup === 1 ? 0 : gemm ? device.tuning.tilesFrom.gemm : flash?.units === 'decode' ? decodeFrom : device.tuning.tilesFrom.flash;
  const s = new Scheduler(k, device, opts);
  const stmts = tilesFrom === 0 ? [] : k.body.map((st) => s.statement(st));
  const uses = (m: Mapping) => m.kind === 'subgroup-per-element' || m.kind === 'split-subgroups';
  const subgroups = stmts.some((st) => uses(st.mapping) || [...st.reductions.values()].some((r) => r.combine === 'subgroup'));
  let { arrays, dynamicWorkgroupBytes } = tilesFrom === 0 ? { arrays: [], dynamicWorkgroupBytes: 0 } : s.placeArrays(stmts, tilesFrom === Infinity ? 0 : tileBytes);
  // Both forms in one kernel declare both forms' workgroup memory: where that is more than a kernel may declare
  // (WebGPU's 16 KiB), the tiles alone.
  if (tilesFrom > 0 && tilesFrom < Infinity && device.target === 'wgsl') {
    const rowBytes = arrays.reduce((n, a) => n + a.elements * 4, 0) + 2 * 4 * device.threadsPerWorkgroup;
    const limit = gemm?.units === 'subgroup-matrix-f16' ? device.matrixTileBytes! : device.staticWorkgroupMemoryBytes;
    if (rowBytes + tileBytes > limit) {
      tilesFrom = 0;
      arrays = [];
      dynamicWorkgroupBytes = 0;
    }
  }
  const rows = tilesFrom === Infinity ? k.rows : tilesFrom === 0 ? tileGrid! : select(lt(extent!, int(tilesFrom)), k.rows, tileGrid!);
  // Memory given at launch serves whichever form runs.
  const staging = gemm?.staging;
  if (tilesFrom < Infinity && staging?.kind === 'async') dynamicWorkgroupBytes = Math.max(dynamicWorkgroupBytes, staging.bytes);
  if (tilesFrom < Infinity && flash?.ring) dynamicWorkgroupBytes = Math.max(dynamicWorkgroupBytes, flash.ring.bytes);
  // Matrix-unit flash tiles: two workgroups a multiprocessor (registers capped at 128; 2,048 tokens 33.6 → 31.9 ms).
  const workgroupsPerProcessor = flash?.units === 'mma-bf16' ? 2 : oneWave(rows, device);
  const shared = tilesFrom === Infinity ? sharedPrologue(k, device) : undefined;
  // A clustered short tile's parts are a cluster where it runs: from tilesFrom rows to below its `below`.
  const clusterBlocks = short?.cluster && tilesFrom < Infinity ? select(lt(extent!, int(short.below)), short.split!.parts, int(1)) : undefined;
  const grid: Grid = {
    rows, rowsPerWorkgroup: 1, threads: device.threadsPerWorkgroup, overflow: device.rowsPastGrid, maxWorkgroupsX: device.maxWorkgroupsX,
    ...(clusterBlocks ? { clusterBlocks: tilesFrom > 0 ? select(lt(extent!, int(tilesFrom)), int(1), clusterBlocks) : clusterBlocks } : {}),
  };
  return {
    kernel: k,
    device,
    grid: shared !== undefined ? { ...grid, rows: idiv(add(k.rows, int(SHARED_PROLOGUE_ROWS - 1)), int(SHARED_PROLOGUE_ROWS)), rowsPerWorkgroup: SHARED_PROLOGUE_ROWS, sharedStatements: shared } : grid,
    subgroups: tilesFrom === 0 ? false : subgroups,
    stmts: tilesFrom === 0 ? [] : fixedVectorSteps(k, stmts, device, opts),
    arrays,
    dynamicWorkgroupBytes,
    ...(tilesFrom < Infinity ? { tilesFrom, gemm, flash } : {}),
    ...(device.dependentLaunch ? { overlap: true } : {}),
    ...(workgroupsPerProcessor ? { workgroupsPerProcessor } : {}),
  };
}

/**
 * WebGPU: rows a workgroup computes where the kernel's first statements do not read the row and the rest use no
 * workgroup memory (a norm's sum and normalised row, then the projection's outputs: decode's gate/up and LM head):
 * those statements once for both rows, where one row a workgroup computed them for each; only where that leaves
 * SHARED_PROLOGUE_WORKGROUPS workgroups or more. On the H200 (a 1B model, BENCHMARKS.md): decode 1.061 / 1.061 →
 * 1.039 / 1.039 ms a token; 3 rows a workgroup 1.063 / 1.065; QKV (384 rows) one row a workgroup again, 1.007 /
 * 1.009 → 0.989 / 1.005 (its 192 workgroups had left 60 multiprocessors with two and 72 with one).
 */
const SHARED_PROLOGUE_ROWS = 2;
const SHARED_PROLOGUE_WORKGROUPS = 256;

/** How many of its first statements a WebGPU kernel of many rows computes once a workgroup (Grid.sharedStatements), if any. */
function sharedPrologue(k: KernelIR, device: DeviceCaps): number | undefined {
  if (device.target !== 'wgsl' || k.rows.k !== 'const' || k.rows.value < SHARED_PROLOGUE_ROWS * SHARED_PROLOGUE_WORKGROUPS) return undefined;
  return rowInvariantPrologue(k);
}

/**
 * The kernel's first statements that do not read the row, where they use workgroup memory and the rest do not (a
 * norm's sum and normalised row, then a projection's outputs): code running several rows computes them once for all
 * (WebGPU's Grid.sharedStatements; a CUDA megakernel's task). Undefined where there are none such.
 */
export function rowInvariantPrologue(k: KernelIR): number | undefined {
  let shared = 0;
  while (shared < k.body.length - 1 && statementExprs(k.body[shared]).every((e) => !varsOf(e).has(ROW))) shared++;
  const memory = (st: KStmt) => st.k === 'coop' || st.k === 'array';
  if (!k.body.slice(0, shared).some(memory) || k.body.slice(shared).some(memory)) return undefined;
  return shared;
}

/**
 * Where every kernel runs under a register cap of at least this many (ScheduleOptions.registersPerThread: the
 * megakernel at 2 blocks a multiprocessor, 128), a lane issues up to WHOLE_STEPS_UNROLL of its 16-byte steps at once,
 * as many loads in flight a multiprocessor as 4 blocks' 4 (where 8 spill: 2.312 ms a token launched, 1.216 in the
 * megakernel, BENCHMARKS.md, twenty-seventh session). The megakernel of Llama-3.2-1B on the H200 (twenty-eighth
 * session): 2 blocks with 4 steps in flight 0.869 / 0.866 ms a token, with 8 0.865 / 0.865, 4 blocks 0.869 / 0.879.
 */
const REGISTERS_FOR_WHOLE_STEPS = 128;
const WHOLE_STEPS_UNROLL = 8;

/**
 * Vector loops whose alignment is checked at run time (CUDA's), over a constant range that gives every lane the
 * same count of 16-byte steps, run that count with no bound to check, so that the compiler issues a lane's loads
 * `unroll` at a time with no remainder loop. Decode on the H200: 0.837 → 0.810 ms a token (the down and output
 * projections' spills gone too); letting kernels of at most 4 workgroups a multiprocessor (QKV: 64 registers and
 * more) take all their 8 steps at once was slower, 0.817–0.821 (BENCHMARKS.md, thirteenth session).
 */
function fixedVectorSteps(k: KernelIR, stmts: readonly StmtSchedule[], device: DeviceCaps, opts: ScheduleOptions): StmtSchedule[] {
  const threads = device.threadsPerWorkgroup;
  const wholeSteps = (opts.registersPerThread ?? 0) >= REGISTERS_FOR_WHOLE_STEPS;
  const width = device.subgroup?.width ?? 1;
  return stmts.map((sched, i) => {
    const ranges = reductionsOf(k.body[i]);
    const m = sched.mapping;
    let changed = false;
    const reductions = new Map([...sched.reductions].map(([v, plan]) => {
      const vec = plan.vector;
      const n = ranges.get(v)?.n;
      if (!vec || vec.alignment !== 'checked' || n?.k !== 'const' || n.value % vec.elements !== 0) return [v, plan];
      const lanes = plan.lanes === 'workgroup' ? threads : plan.lanes === 'subgroup' ? width
        : plan.lanes === 'split-subgroups' && m.kind === 'split-subgroups' ? threads / m.elements : plan.lanes === 'thread' ? 1 : 0;
      const total = n.value / vec.elements;
      if (!lanes || total % lanes !== 0) return [v, plan];
      changed = true;
      return [v, { ...plan, vector: { ...vec, steps: total / lanes, unroll: Math.min(total / lanes, wholeSteps ? Math.max(vec.unroll, WHOLE_STEPS_UNROLL) : vec.unroll) } }];
    }));
    return changed ? { ...sched, reductions } : sched;
  });
}

/**
 * A fixed grid of more rows than the multiprocessors, that their workgroup slots can hold all at once: the
 * workgroups each must hold. A decode projection of 1,024 rows holds 6 a multiprocessor at 40 registers a thread
 * (1.3 waves on an H200's 132); capped to hold 8, it runs in one. Measured on the H200 with 1,024-row projections
 * (BENCHMARKS.md, issue 11): 1.066 → 1.048 ms a token with every kernel capped so, 1.136 with the gate/up kernel
 * of 512 rows capped too (its 16 outputs a row then spill).
 */
function oneWave(rows: KExpr, device: DeviceCaps): number | undefined {
  const p = device.processors;
  if (!p || rows.k !== 'const' || rows.value <= p.count) return undefined;
  const need = Math.ceil(rows.value / p.count);
  return need <= p.maxWorkgroups ? need : undefined;
}

// Folded where constant (a decode kernel's grid: 32 rows, not `1 < 1 ? 32 : 32`).
const lt = (a: KExpr, b: KExpr): KExpr => (a.k === 'const' && b.k === 'const' ? { k: 'const', value: a.value < b.value ? 1 : 0, t: 'bool' } : { k: 'binary', op: 'lt', a, b, t: 'bool' });
const select = (cond: KExpr, a: KExpr, b: KExpr): KExpr => {
  if (cond.k === 'const') return cond.value ? a : b;
  return JSON.stringify(a) === JSON.stringify(b) ? a : { k: 'select', cond, a, b, t: 'i32' };
};

/**
 * The fewest workgroups for which WebGPU's short tiles take 32 columns rather than 16. Measured on the H200
 * (BENCHMARKS.md, eighteenth session), a 1B model's 32-token prompt, µs a GEMM: 96 workgroups of 32 columns against
 * 192 of 16 (QKV) 25.2 against 27.5, 256 against 512 (gate/up) 52.9 against 66.5; but 64 against 128 (the output
 * projection, down) 27.5 against 23.4 and 67.0 against 43.6: too few workgroups for the multiprocessors.
 */
const WIDE_SHORT_TILES_FROM = 96;

/**
 * Steps of staging loads WebGPU's short tiles keep in flight (ShortTile.stagesAhead). Measured on the H200
 * (BENCHMARKS.md, eighteenth session), a 1B model's 32-token prompt, its GEMMs: 1 step 2.317 ms (both rounds), 2 steps
 * 2.419 / 2.411, 4 steps 2.062 / 2.046; 8 steps 2.312 / 2.303 against 4 steps' 2.046 / 2.054 in a later lease.
 */
const SHORT_TILE_STAGES = 4;

/**
 * Tiles for a GEMM: bf16 matrix instructions where the device has them and every right operand is a bf16 weight
 * read along the depth (the products' inputs they take exactly), else f32 multiply-adds; one row at a time on the
 * CPU. Tiles of 64 × 64, or 128 × 64 where cp.async copies the operands and the columns are many. Tiles along the
 * rows are neighbours in the grid, so the tiles sharing a weight tile run together and read it from L2.
 */
function gemmPlan(k: KernelIR, gemm: GemmIR, device: DeviceCaps, opts: ScheduleOptions): GemmPlan | undefined {
  if (device.threadsPerWorkgroup === 1) {
    return { units: 'serial', tileRows: 1, tileColumns: gemm.columns, tileDepth: gemm.depth, rowTiles: gemm.rows, columnTiles: 1 };
  }
  const mma = gemmOnMatrixUnits(k, device);
  const rowTilesOf = (rows: number) => idiv(add(gemm.rows, int(rows - 1)), int(rows));
  // 64 × 64 tiles staged through registers, and f32 tiles. (128-row register-staged tiles, each warp 32 × 32,
  // measured no faster at 512 rows on the H200 — 68 against 66 TFLOP/s — and slower for 32 to 128 rows.)
  const [tileRows, tileColumns] = [64, 64];
  const plan: GemmPlan = { units: mma ? 'mma-bf16' : 'fma', tileRows, tileColumns, tileDepth: mma ? 32 : 16, rowTiles: rowTilesOf(tileRows), columnTiles: Math.ceil(gemm.columns / tileColumns) };
  // A left operand read from f32 (or bf16) memory in runs of 4 (8) along the depth, 16 aligned bytes, is copied as
  // it is, several steps ahead: a row, or heads side by side (the attention's output read by the output projection).
  const left = gemm.a.k === 'load' ? k.buffers[gemm.a.buf].dtype : undefined;
  const plainA = gemm.a.k === 'load' && ((left === DType.F32 && runsAlong(gemm.a.index, gemm.k, 4)) || (left === DType.BF16 && runsAlong(gemm.a.index, gemm.k, 8)));
  // Copied tiles are 128 × 64, each warp 32 × 32 (every right fragment read once for two instructions), 64 deep a
  // step where the depth allows (half the waits and barriers); where the tiles are few, their depth is split
  // (depthSplit). Measured on the H200 (BENCHMARKS.md, issue 10), 32 / 512 / 2,048 tokens: 64 × 64 × 32 tiles
  // 5.3 / 10.2 / 42.6 ms, 128 × 64 × 32 6.1 / 9.7 / 38.0, 64 deep (and the output projection copied) 4.7 / 8.2 /
  // 33.5; 64 × 128, 128 × 128, 4 stages, or 2 stages of 64 no better. With the depth split, 64 × 64 tiles for GEMMs
  // of fewer than two column tiles a multiprocessor (the output and down projections of a 1B model) measured
  // 2.3–2.5 / 7.7–7.9 / 29.8 ms against 2.7–2.8 / 6.7 / 24.9–25.1 for 128 × 64 everywhere.
  // sm_90a (unless TSFUSE_GEMM=mma): warpgroup MMA where the left operand is bf16 in memory (wgmma reads both
  // operands from shared memory as they are) and the depth a multiple of 64 (a step is one 128-byte swizzled row).
  // 128 rows (a warpgroup each 64) × 128 columns where there are that many (each left row read from shared memory
  // once per 128 columns rather than 64, 64 accumulators a thread a product; 256 would be 128 accumulators, and half
  // the tiles to spread over the multiprocessors at 512 tokens), else 64; 6 stages where they fit, else 4 (stages − 2
  // steps of copies in flight, one of wgmma). Measured on the H200 (BENCHMARKS.md, sixth session), 32 / 128 / 512 / 2,048 tokens, wall: 2.7–2.9 /
  // 4.2–4.4 / 5.2–5.4 / 16.1–16.3 ms against mma tiles' 3.0–3.1 / 4.1–4.2 / 7.9–8.3 / 27.4–27.5; 3 stages 3.0 / 4.9 /
  // 6.9 / 21.0, 256 columns 4.2 / – / 6.6 / 19.1, 64 columns for the 2,048-column GEMMs 2.9 / 4.2–4.3 / 5.6 / 18.3–18.5.
  // Then (32 / 512 / 2,048) 4 stages 2.7–3.1 / 5.0–5.1 / 16.1–16.2, 5 stages 2.6 / 4.9 / 15.9, 6 stages 2.5–2.6 / 4.9–5.0 / 15.9.
  const wg = device.tuning.wgmma;
  if (mma && plainA && left === DType.BF16 && wg && hasWgmma(device) && gemm.depth % 64 === 0) {
    const ops = gemm.b.length;
    const columns = wgmmaColumns(gemm, wg.columns, device);
    const [rows, depth] = [128, 64];
    const stageBytes = rows * depth * 2 + ops * columns * depth * 2;
    const stages = [wg.stages, 4, 3].filter((s) => s <= wg.stages).find((s) => s * stageBytes + 1024 <= device.workgroupMemoryBytes);
    if (stages) {
      const tile: GemmPlan = { units: 'wgmma-bf16', tileRows: rows, tileColumns: columns, tileDepth: depth, rowTiles: rowTilesOf(rows), columnTiles: Math.ceil(gemm.columns / columns) };
      const bytes = stages * stageBytes + 1024;
      const split = depthSplit(tile, gemm, device, bytes);
      const shortTile = streamedShortTile(gemm, device, bytes);
      return { ...tile, staging: { kind: 'async', stages, bytes, left: 'bf16' }, ...(split ? { split } : {}), ...(shortTile ? { shortTile } : {}) };
    }
  }
  if (mma && plainA) {
    const [asyncRows, asyncColumns, stages, depth] = [128, 64, 3, gemm.depth % 64 === 0 ? 64 : 32];
    const bytes = stages * (asyncRows * (depth + 8) * dtypeBytes[left!] + gemm.b.length * asyncColumns * (depth + 8) * 2);
    const tile = { ...plan, tileDepth: depth, tileRows: asyncRows, tileColumns: asyncColumns, rowTiles: rowTilesOf(asyncRows), columnTiles: Math.ceil(gemm.columns / asyncColumns) };
    const split = depthSplit(tile, gemm, device, bytes);
    const shortTile = left === DType.BF16 ? streamedShortTile(gemm, device, bytes) : undefined;
    if (bytes <= device.workgroupMemoryBytes) return { ...tile, staging: { kind: 'async', stages, bytes, left: left === DType.BF16 ? 'bf16' : 'f32' }, ...(split ? { split } : {}), ...(shortTile ? { shortTile } : {}) };
  }
  // WebGPU's subgroup matrices: 128 × 64 tiles, each subgroup 32 × 32 (four products of two left and two right
  // fragments), 64 deep a step where that fits in the adapter's workgroup memory, else 32 (two products); below 128
  // rows, 32 × 16 tiles with the depth split among the subgroups. Measured on the H200 (BENCHMARKS.md, ninth session),
  // prefill at 32 / 64 / 128 / 512 tokens: on the wall clock 64 × 64 × 32 tiles throughout 8.1 / – / – / 21.0 ms and
  // 128 × 32 10.0 / – / – / 19.0; on the device's clock 128 × 64 8.1 / 20.8 / 8.8 / 17.7, and with short tiles below
  // 128 rows 4.3–5.2 / 14.0 / – / –.
  if (gemmOnSubgroupMatrix(k, device)) {
    const below = 128;
    const shortTileOf = (columns: number): ShortTile | undefined => {
      const short = { tileRows: 32, tileColumns: columns, tileDepth: 128 };
      return gemm.depth % 128 === 0 && below > device.tuning.tilesFrom.gemm
        ? { ...short, below, rowTiles: rowTilesOf(32), columnTiles: Math.ceil(gemm.columns / columns), loads: stagedLoads(k, gemm, short, device, opts), stagesAhead: Math.min(SHORT_TILE_STAGES, gemm.depth / 128) } : undefined;
    };
    // The deepest tiles that fit, with short tiles of 32 columns where they fit too and leave WIDE_SHORT_TILES_FROM
    // workgroups or more (each tile copies the left rows once: half as many copies as of 16), else 16.
    const shortColumns = Math.ceil(gemm.columns / 32) >= WIDE_SHORT_TILES_FROM ? [32, 16] : [16];
    for (const depth of [64, 32]) {
      for (const columns of shortColumns) {
        const shortTile = shortTileOf(columns);
        const shape = { tileRows: 128, tileColumns: 64, tileDepth: depth };
        const tile: GemmPlan = { ...plan, units: 'subgroup-matrix-f16', ...shape, rowTiles: rowTilesOf(128), staging: { kind: 'registers' }, loads: stagedLoads(k, gemm, shape, device, opts), ...(shortTile ? { shortTile } : {}) };
        // The row form's reduction arrays (2 × 4 bytes a thread) are declared beside the tiles'.
        if (gemm.depth % depth === 0 && gemmBytes(gemm, tile) + 2 * 4 * GPU_THREADS <= device.matrixTileBytes!) return tile;
      }
    }
  }
  if (gemmBytes(gemm, plan) > device.staticWorkgroupMemoryBytes) return undefined;
  return mma ? { ...plan, staging: { kind: 'registers' } } : device.target === 'wgsl' ? { ...plan, loads: stagedLoads(k, gemm, plan, device, opts) } : plan;
}

/**
 * CUDA's tiles for a short prompt (GemmPlan.shortTile) of a GEMM whose bf16 left operand is copied into `ringBytes`
 * given at launch: 32 rows × 64 columns (8 warps side by side), for 32 rows or fewer. The depth is split into the
 * most parts (powers of two) that keep the work items within one wave of one workgroup a multiprocessor (the ring
 * leaves room for one), or more where a part's left rows would not fit the ring; each part at least 32 deep. Loads
 * in flight: 8 steps of 32 for one product, 4 for two, fewer where the part is shallower.
 *   Measured on the H200 (BENCHMARKS.md, tenth session), a 1B model's 32-token prefill on the device's clock: the
 *   wgmma tiles 1.92–2.05 ms, these 1.83–1.92, and with the first weights loaded before the wait for the previous
 *   kernel 1.79–1.86. No better: 16 steps ahead (1.83), 4 (1.98); 128 columns with the weights copied by cp.async 5
 *   or 6 stages deep, lane by lane (1.89–1.98) or 32 lanes a column's run (1.78–1.80); fewer parts.
 */
function streamedShortTile(gemm: GemmIR, device: DeviceCaps, ringBytes: number): ShortTile | undefined {
  const processors = device.processors?.count;
  if (device.target !== 'cuda' || !processors || gemm.depth % 32) return undefined;
  // Two row tiles (33 to 63 rows) each streaming the weights measured slower than the wgmma tiles: 48 rows 2.60 ms
  // against 2.23 for a 1B model's prefill on the H200 (BENCHMARKS.md, tenth session).
  const [tileRows, tileColumns, below] = [32, 64, 33];
  const columnTiles = Math.ceil(gemm.columns / tileColumns);
  const fits = (parts: number) => gemm.depth % (32 * parts) === 0 && shortLeftBytes(tileRows, gemm.depth / parts) <= ringBytes;
  const candidates = [1, 2, 4, 8, 16].filter(fits);
  if (!candidates.length) return undefined;
  const parts = [...candidates].reverse().find((q) => columnTiles * q <= processors) ?? candidates[0];
  const part = gemm.depth / parts;
  // Chunks of 32 a step: up to 8 loads of 16 bytes a lane in flight.
  const chunks = [8 / gemm.b.length, 4, 2, 1].find((u) => u >= 1 && part % (32 * u) === 0)!;
  const tileDepth = 32 * chunks;
  const rowTiles = idiv(add(gemm.rows, int(tileRows - 1)), int(tileRows));
  const accs = gemm.b.length * (tileRows / 16) * 4;
  // Work items: each part of every tile (of the row tiles of fewer rows than `below`).
  const tiles = Math.ceil((below - 1) / tileRows) * columnTiles;
  const split: DepthSplit | undefined = parts > 1 ? { parts: int(parts), maxParts: parts, workspaceFloats: tiles * parts * accs * 256, counters: tiles } : undefined;
  const cluster = parts > 1 && parts <= (device.clusterBlocks ?? 0);
  // Bulk copies on sm_90 where each row's run of the depth lies contiguous in memory (not the heads of attention's
  // output, which lie apart).
  const bulkLeft = (device.computeCapability ?? 0) >= 90 && gemm.a.k === 'load' && offsetAlong(gemm.a.index, gemm.k) !== undefined;
  return { below, tileRows, tileColumns, tileDepth, rowTiles, columnTiles, leftGroups: (part / tileDepth) % 2 === 0 ? 2 : 1, ...(split ? { split } : {}), ...(cluster ? { cluster } : {}), ...(bulkLeft ? { bulkLeft } : {}), ...(device.evictionHints ? { weightsOnce: true } : {}) };
}

/** Bytes a CUDA short tile's left rows of one part take: bf16 rows 32 elements longer than the part (bank spread). */
export const shortLeftBytes = (rows: number, partDepth: number) => rows * (partDepth + 32) * 2;

/**
 * Bytes of the workgroup arrays a subgroup-matrix tile declares, both its tile forms' in one: the left operand's f16
 * rows and each right operand's (padded by 8), and f32 scratch for the results (a 16 × 16 fragment of each product
 * for each of the 8 subgroups; the short tile's fragments of a product, one per 16 rows, for each subgroup).
 */
export function subgroupMatrixBytes(g: GemmIR, p: GemmPlan): [left: number, right: number, scratch: number] {
  const forms = [p, ...(p.shortTile ? [p.shortTile] : [])];
  const left = Math.max(...forms.map((f) => 2 * f.tileRows * (f.tileDepth + 8)));
  const right = Math.max(...forms.map((f) => 2 * f.tileColumns * (f.tileDepth + 8)));
  const fragments = Math.max(g.b.length, p.shortTile ? p.shortTile.tileRows / 16 : 0);
  return [left, right * g.b.length, 4 * 256 * (GPU_THREADS / 32) * fragments];
}

/**
 * Whether a GEMM kernel runs on WebGPU's f16 subgroup matrices: the device has them, and every right operand is a
 * bf16 weight read along a depth of a multiple of 32 (bf16 widens to f16 exactly, but for magnitudes below 2⁻¹⁴,
 * which keep 2⁻²⁴ of absolute precision, and above 65,504).
 */
function gemmOnSubgroupMatrix(k: KernelIR, device: DeviceCaps): boolean {
  if (device.target !== 'wgsl' || device.matrixTileBytes === undefined) return false;
  return device.matrixUnits.some((u) => u.input === DType.F16 && u.m === 16 && u.n === 16 && u.k === 16) && bf16Products(k);
}

/** Whether a GEMM's every right operand is a bf16 weight read along a depth of a multiple of 32. */
function bf16Products(k: KernelIR): boolean {
  const gemm = k.gemm;
  return gemm !== undefined && gemm.depth % 32 === 0 && gemm.b.every((b) => bf16WeightAlong(b, gemm.k, k));
}

/**
 * A wgmma tile's columns: the widest of 256, 128 and 64 that the tuning allows and the GEMM fills (a product's
 * columns a thread's accumulators: 256 for one product at most), unless 96 fills the multiprocessors by a tenth more
 * with one row of tiles split into parts (powers of two): a 1B model's QKV projection (3,072 columns) makes 24 tiles
 * of 128, 96 work items in 4 parts, against 32 tiles of 96, 128 work items, on 132 multiprocessors (its kernel 26.5
 * → 23.6 µs at 512 tokens on the H200, in two leases: BENCHMARKS.md).
 */
function wgmmaColumns(gemm: GemmIR, widest: number, device: DeviceCaps): number {
  const ops = gemm.b.length;
  const widestFitting = [256, 128, 64].find((c) => c <= widest && (c === 64 || (ops * c <= 256 && c <= gemm.columns)))!;
  const processors = device.processors?.count;
  if (!processors || widestFitting !== 128) return widestFitting;
  // The largest share of the multiprocessors a row of tiles of c columns fills, split into 1, 2, 4, ... parts.
  const fill = (c: number) => {
    const tiles = Math.ceil(gemm.columns / c);
    let best = 0;
    for (let parts = 1; parts <= 16 && tiles * parts <= processors; parts *= 2) best = tiles * parts;
    return best / processors;
  };
  return fill(96) > fill(128) + 0.1 ? 96 : 128;
}

/**
 * The depth split of copied tiles: enough parts that the grid nears one wave (two workgroups a multiprocessor, or
 * one where `ringBytes` leaves room for one), powers of two up to 16, each part at least 4 steps (fewer leave
 * cp.async nothing to overlap). A 32-token prompt gives a 1B model's output and down projections 32 mma tiles for
 * the H200's 132 multiprocessors: 8 parts each. (Targeting two a multiprocessor for wgmma's one-a-processor rings
 * left a second wave: 512 tokens 6.3–6.4 ms against 5.6–5.8, 2,048 tokens 18.7 against 16.6.)
 */
function depthSplit(tile: GemmPlan, gemm: GemmIR, device: DeviceCaps, ringBytes: number): DepthSplit | undefined {
  if (device.target !== 'cuda' || !device.processors) return undefined;
  const target = Math.max(1, Math.min(2, Math.floor(device.workgroupMemoryBytes / ringBytes))) * device.processors.count;
  const steps = gemm.depth / tile.tileDepth;
  let maxParts = 1;
  while (maxParts < 16 && steps / (2 * maxParts) >= 4 && 2 * maxParts <= target) maxParts *= 2;
  if (maxParts === 1) return undefined;
  const tiles = mul(tile.rowTiles, int(tile.columnTiles));
  let parts: KExpr = int(1);
  for (let q = 2; q <= maxParts; q *= 2) parts = select(lt(int(target), mul(tiles, int(q))), parts, int(q));
  // Split tiles are at most target / 2, and their parts at most target workgroups.
  return { parts, maxParts, workspaceFloats: target * tile.tileRows * tile.tileColumns * gemm.b.length, counters: Math.floor(target / 2) };
}

/**
 * Whether a GEMM kernel runs bf16 matrix instructions: the device has them, and every right operand is a bf16 weight
 * read along a depth of a multiple of 32 (the products' inputs they take exactly).
 */
export function gemmOnMatrixUnits(k: KernelIR, device: DeviceCaps): boolean {
  return device.threadsPerWorkgroup > 1 && hasBf16Mma(device) && bf16Products(k);
}

/** Whether the device has warpgroup matrix instructions (wgmma m64nNk16) on bf16 inputs. */
const hasWgmma = (device: DeviceCaps) => device.matrixUnits.some((u) => u.input === DType.BF16 && u.m === 64 && u.k === 16);

/** Whether the device has m16n8k16 matrix instructions on bf16 inputs. */
const hasBf16Mma = (device: DeviceCaps) => device.matrixUnits.some((u) => u.input === DType.BF16 && u.m === 16 && u.n === 8 && u.k === 16);

/** Workgroup memory a GEMM tile declares: the staged operands (bf16 rows padded by 8 for mma, f32 otherwise). */
function gemmBytes(g: GemmIR, p: GemmPlan): number {
  if (p.units === 'serial' || p.staging?.kind === 'async') return 0;
  // f16 operands in rows padded by 8, and a 16 × 16 f32 result of each product for each subgroup's epilogue.
  if (p.units === 'subgroup-matrix-f16') return subgroupMatrixBytes(g, p).reduce((a, b) => a + b, 0);
  return p.units === 'mma-bf16'
    ? 2 * (p.tileDepth + 8) * (p.tileRows + g.b.length * p.tileColumns)
    : 4 * p.tileDepth * (p.tileRows + g.b.length * p.tileColumns);
}

/** Workgroup memory an f32 flash tile declares: query and key tiles (rows padded by one), values, scores, bounds. */
function flashBytes(f: FlashIR, bq: number, bk: number): number {
  return 4 * (bq * (f.depth + 1) + bk * (f.depth + 1) + bk * f.width + bq * bk + bq + 1);
}

/** Workgroup memory of a bf16 matrix-unit flash tile's query rows (padded by 8) and their bounds. */
function flashMmaQueryBytes(f: FlashIR, bq: number): number {
  return 2 * bq * (f.depth + 8) + 4 * bq;
}

/**
 * Memory the merge of a flash tile's key groups passes through (FlashPlan.keyGroups): per thread of a warp of every
 * group past the first, each of its 2 rows' maximum and sum and its output accumulators (width / 2).
 */
function flashMergeBytes(f: FlashIR, groups: number, rowWarps: number): number {
  return 4 * 32 * rowWarps * (4 + f.width / 2) * (groups - 1);
}

/** Workgroup memory of one stage of a bf16 matrix-unit flash tile's key rows and value rows (each padded by 8). */
function flashMmaKeyBytes(f: FlashIR, bk: number): number {
  return 2 * bk * (f.depth + 8 + f.width + 8);
}

/**
 * Flash-attention tiles. With bf16 matrix units, keys and values read from bf16 memory and a head a multiple of 16:
 * a warp per 16 query rows (128 rows for 256 threads), 64 keys a tile. Otherwise the largest query × key tile whose
 * query, key, value and score tiles fit the statically declared workgroup memory (48 KiB on CUDA: 64 × 32 for head
 * size 64; 16 KiB on WebGPU: 16 × 16), with the threads of a query row dividing its keys and its output evenly;
 * none where nothing fits (the row form runs). The CPU walks every row, key by key.
 */
function flashPlan(f: FlashIR, k: KernelIR, device: DeviceCaps, opts: ScheduleOptions): FlashPlan | undefined {
  if (f.queries.k === 'const' && f.queries.value === 1) return decodePlan(f, k, device, opts);
  const queryTiles = (bq: number) => idiv(add(f.queries, int(bq - 1)), int(bq));
  if (device.threadsPerWorkgroup === 1) {
    return { units: 'serial', tileQueries: 1, tileKeys: f.keys, threadsPerQuery: 1, queryTiles: f.queries, bytes: 0 };
  }
  const threads = device.threadsPerWorkgroup;
  const warps = threads / 32;
  if (hasBf16Mma(device) && Number.isInteger(warps) && f.depth % 16 === 0 && f.width % 16 === 0 && readsOnly([f.k, f.v], DType.BF16, k)) {
    const bk = 64;
    // A KV cache's rows: a load of bf16 memory running along the head in aligned runs of 8 (16 bytes).
    const wide = (e: KExpr, along: string, n: number) => e.k === 'load' && n % 8 === 0 && runsAlong(e.index, along, 8);
    const wideRows = { keys: wide(f.k, f.d, f.depth), values: wide(f.v, f.e, f.width) };
    const tiles = (bq: number) => ({ units: 'mma-bf16', tileQueries: bq, tileKeys: bk, threadsPerQuery: 0, queryTiles: queryTiles(bq), wideRows, ...(f.limit ? { longestFirst: true } : {}) } as const);
    const ring = wideRows.keys && wideRows.values ? { bytes: 2 * flashMmaKeyBytes(f, bk) } : undefined;
    // With the ring, two groups of warps split each key tile (keyGroups); their merge goes through the ring.
    // (Four groups of 32-query tiles measured slower at 2,048 tokens on the H200: 16.7 ms against 15.7–15.8.)
    const [groups, bq] = [2, 16 * warps / 2];
    if (ring && ring.bytes <= device.workgroupMemoryBytes && flashMmaQueryBytes(f, bq) + SCRATCH_BYTES <= device.staticWorkgroupMemoryBytes && flashMergeBytes(f, groups, warps / groups) <= ring.bytes) {
      return { ...tiles(bq), bytes: flashMmaQueryBytes(f, bq), ring, keyGroups: groups };
    }
    const bytes = flashMmaQueryBytes(f, 16 * warps) + flashMmaKeyBytes(f, bk);
    if (bytes + SCRATCH_BYTES <= device.staticWorkgroupMemoryBytes) return { ...tiles(16 * warps), bytes };
  }
  const tiles: [number, number][] = [[64, 32], [32, 32], [32, 16], [16, 16], [8, 32], [8, 16]];
  const fits = tiles.find(([bq, bk]) => {
    const per = threads / bq;
    return Number.isInteger(per) && bk % per === 0 && f.width % per === 0 && flashBytes(f, bq, bk) + SCRATCH_BYTES <= device.staticWorkgroupMemoryBytes;
  });
  if (!fits) return undefined;
  const [tileQueries, tileKeys] = fits;
  return { units: 'fma', tileQueries, tileKeys, threadsPerQuery: threads / tileQueries, queryTiles: queryTiles(tileQueries), bytes: flashBytes(f, tileQueries, tileKeys) };
}

/**
 * Keys each lane group of the decode form loads at once (FlashPlan.keyUnroll): 8 against 4 on the H200
 * (BENCHMARKS.md), 0.897 → 0.895 ms a token at a 160-position cache, 0.958 → 0.946 at 528.
 */
const DECODE_KEY_UNROLL = 8;
/**
 * Keys a lane group of the CUDA decode form loads at once over a cache of several chunks where a thread has
 * REGISTERS_FOR_UNROLL registers or fewer (ScheduleOptions.registersPerThread: the megakernel's): 8 keys' and
 * values' 16-byte loads alone are 64 registers. Measured on the H200 (BENCHMARKS.md, twenty-third session), the
 * megakernel of Llama-3.2-1B at a 2,048-position cache: 8 keys 1.172 / 1.176 ms a token, 4 keys in chunks of two
 * steps 1.030 / 1.032 (in chunks of one step, twice as many, 1.082 / 1.083); at 161 positions (one chunk) 8 keys
 * 0.919, 4 keys in two steps 0.945.
 */
const CAPPED_KEY_UNROLL = 4;
const REGISTERS_FOR_UNROLL = 64;

/**
 * WebGPU's decode form divides a cache of this many steps or more (FlashPlan.keyChunks) among workgroups, a step
 * each, whose results a second dispatch merges. On the H200 (a 1B model, bf16 cache, BENCHMARKS.md): with a merge
 * that waited for L2 twice a chunk, chunks cost more than they saved at 4 steps (1,024 positions: 1.145 → 1.185 ms a
 * token on the device's clock) and less at 8 (2,048: 1.251 → 1.206, 1.240 → 1.203 wall clock); with the merge 8
 * chunks a round trip (eighteenth session) they save at 4 too (1,024 positions: 1.043 / 1.079 → 1.021 / 1.021 wall).
 */
const WGSL_KEY_CHUNKS_FROM = 4;

/**
 * The chunks WebGPU's merging dispatch reads a round trip (KeyChunks.mergeBatch): each thread loads a chunk's maximum,
 * sum and output element, 3 loads a chunk, all issued before any is used.
 */
const WGSL_MERGE_BATCH = 8;

/**
 * One query row (a decode step's attention): the decode form where the keys and values are rows read 16 bytes at a
 * time and a head splits into 8-element runs over at most 32 threads. On CUDA from bf16 or f16 memory (a lane group
 * adds its products by shuffles; a long cache is divided among workgroups, the last to finish merging them); on
 * WebGPU from f32, bf16 or f16 memory bound whole (read as vec4s; the products added through workgroup memory; a long
 * cache divided among workgroups, merged by a second dispatch); else none (the row form runs).
 */
function decodePlan(f: FlashIR, k: KernelIR, device: DeviceCaps, opts: ScheduleOptions): FlashPlan | undefined {
  const lanesPerKey = f.depth / 8;
  const wide = (e: KExpr, along: string) => e.k === 'load' && runsAlong(e.index, along, 8);
  if (f.depth !== f.width || !decodeFormHead(f.depth) || !wide(f.k, f.d) || !wide(f.v, f.e)) return undefined;
  const groups = device.threadsPerWorkgroup / lanesPerKey;
  // The new key and value rows the kernel computes (FreshRange.value): one row each, not one per key.
  const computed = [f.fresh?.k?.value, f.fresh?.v?.value].filter((x) => x !== undefined);
  if (computed.some((x) => varsOf(x).has(f.t))) return undefined;
  if (device.target === 'wgsl') {
    // The WGSL form reads every key and value from memory: not one whose cache write it makes (FlashIR.updates).
    // (Computing the new rows into workgroup memory, the cache bound once read-write for its stores, measured on the
    // H200: 1.080 → 1.064 and 1.074 → 1.062 ms a token at 160 positions, 1.331 → 1.974 and 1.315 → 1.741 at 2,048:
    // the cache's reads no longer read-only.)
    // (Where attention computes the new rows and a later kernel writes them, PassContext.cacheWrites
    // 'after-attention', the cache stays read-only here: the form computes them into workgroup memory.)
    if (f.updates) return undefined;
    const whole = [f.k, f.v].every((e) => e.k === 'load' && !opts.splitBuffers?.has(e.buf));
    if (!whole || ![DType.F32, DType.BF16, DType.F16].some((d) => readsOnly([f.k, f.v], d, k))) return undefined;
    // The query and computed rows, a step's partial products (then the groups' output runs), the groups' maxima and sums.
    const bytes = 4 * (f.depth * (1 + computed.length) + DECODE_KEY_UNROLL * device.threadsPerWorkgroup + 2 * groups + 1);
    if (groups * f.width > DECODE_KEY_UNROLL * device.threadsPerWorkgroup || bytes + SCRATCH_BYTES > device.staticWorkgroupMemoryBytes) return undefined;
    // A long cache in chunks of a step, merged by a second dispatch (WGSL has no fence for the last to merge them).
    const step = groups * DECODE_KEY_UNROLL;
    const count = opts.keyChunks === false ? 1 : Math.ceil(f.keys / step);
    // (The merge dispatches a workgroup a head along x alone.)
    const keyChunks = count >= WGSL_KEY_CHUNKS_FROM && f.batch <= device.maxWorkgroupsX
      ? { keys: step, count, workspaceFloats: f.batch * count * (f.width + 2), counters: 0, mergeBatch: Math.min(WGSL_MERGE_BATCH, count) } : undefined;
    return { units: 'decode', tileQueries: 1, tileKeys: groups, threadsPerQuery: 0, queryTiles: int(1), bytes, wideRows: { keys: true, values: true }, keyUnroll: DECODE_KEY_UNROLL, ...(keyChunks ? { keyChunks } : {}) };
  }
  if (device.target !== 'cuda') return undefined;
  const halves = readsOnly([f.k, f.v], DType.BF16, k) || readsOnly([f.k, f.v], DType.F16, k);
  if (!halves) return undefined;
  // Where the kernel writes the cache itself, it computes both new rows.
  if (f.updates && computed.length !== 2) return undefined;
  // Each group's maximum, sum and output run, merged through workgroup memory; the query and computed rows.
  const bytes = 4 * (groups * (2 + f.width) + f.depth * (1 + computed.length));
  if (bytes + SCRATCH_BYTES > device.staticWorkgroupMemoryBytes) return undefined;
  // Chunks of the keys a step takes at the full unroll; under a register cap, two steps of half the unroll where
  // the cache is more than one chunk (CAPPED_KEY_UNROLL).
  const chunk = groups * DECODE_KEY_UNROLL;
  const count = opts.keyChunks === false ? 1 : Math.ceil(f.keys / chunk);
  const capped = (opts.registersPerThread ?? Infinity) <= REGISTERS_FOR_UNROLL;
  const keyUnroll = count > 1 && capped ? CAPPED_KEY_UNROLL : DECODE_KEY_UNROLL;
  const keyChunks = count > 1 ? { keys: chunk, count, workspaceFloats: f.batch * count * (f.width + 2), counters: f.batch } : undefined;
  const late = capped && computed.length > 0;
  const early = !late && device.dependentLaunch && earlyKeys(f, k);
  const updateShare = f.updates ? shareUpdates(f, device.threadsPerWorkgroup) : undefined;
  return { units: 'decode', tileQueries: 1, tileKeys: groups, threadsPerQuery: 0, queryTiles: int(1), bytes, wideRows: { keys: true, values: true }, keyUnroll, ...(keyChunks ? { keyChunks } : {}), ...(early ? { earlyKeys: true } : {}), ...(late ? { keysAfterRows: true } : {}), ...(updateShare ? { updateShare } : {}) };
}

/**
 * How the decode form's heads share the step's cache writes: each an even share of the largest (a head of Llama's
 * 32 writes 16 elements of each new row, a quarter of the row its group of 4 heads reads), on the threads the query
 * leaves idle where the share fits there (the query takes a thread an element of the head); else a workgroup's
 * threads' worth a head, from thread 0 on.
 */
function shareUpdates(f: FlashIR, threads: number): UpdateShare & { firstThread: number } {
  const sizes = f.updates!.map((u) => (u.n.k === 'const' ? u.n.value : Infinity));
  const perHead = Math.ceil(Math.max(...sizes) / f.batch);
  if (Number.isFinite(perHead) && f.depth + perHead <= threads) return { perHead, firstThread: f.depth };
  return { perHead: threads, firstThread: 0 };
}

/** Whether the decode form takes heads of `depth`: runs of 8 elements over at most 32 lanes, dividing a warp (8 to 256, powers of two). */
export function decodeFormHead(depth: number): boolean {
  const lanes = depth / 8;
  return Number.isInteger(lanes) && lanes <= 32 && 32 % lanes === 0;
}

/**
 * Whether a decode attention may load its keys and values before it waits for its predecessor (FlashPlan.earlyKeys):
 * both are runs of a state updated in this step (the fresh elements then read again, or computed, after the wait), at indices
 * of no loads, and the causal bound reads inputs only.
 */
function earlyKeys(f: FlashIR, k: KernelIR): boolean {
  const inputsOnly = (e: KExpr | undefined): boolean => !e || loadsOf(e).every((l) => ['input', 'param'].includes(k.buffers[l.buf].binding.kind));
  const plain = (e: KExpr) => e.k === 'load' && loadsOf(e.index).length === 0;
  return !!f.fresh?.k && !!f.fresh.v && plain(f.k) && plain(f.v) && inputsOnly(f.limit);
}

/** Whether every value the expressions load (not the indices they load at) comes from a buffer of `dtype`. */
function readsOnly(es: readonly KExpr[], dtype: DType, k: KernelIR): boolean {
  const values = (e: KExpr): boolean => {
    switch (e.k) {
      case 'const': case 'var': return true;
      case 'load': return k.buffers[e.buf].dtype === dtype;
      case 'elem': return false;
      case 'unary': case 'cast': return values(e.a);
      case 'binary': return values(e.a) && values(e.b);
      case 'select': return values(e.a) && values(e.b);
      case 'reduce': return values(e.body);
      default: return e satisfies never;
    }
  };
  return es.every(values);
}

/** A load of a bf16 buffer at an index running along `v` with a start that is a multiple of 8 (16-byte aligned). */
function bf16WeightAlong(e: KExpr, v: string, k: KernelIR): boolean {
  if (e.k !== 'load' || k.buffers[e.buf].dtype !== DType.BF16) return false;
  return runsAlong(e.index, v, 8);
}

/** Workgroups a launch of `rows` rows dispatches, as [x, y] (WebGPU spreads them over two dimensions). */
export function workgroupCount(grid: Grid, rows: number): [number, number] {
  switch (grid.overflow) {
    case 'second-dimension': return [Math.min(rows, grid.maxWorkgroupsX), Math.ceil(rows / grid.maxWorkgroupsX)];
    case 'grid-stride': return [Math.min(rows, grid.maxWorkgroupsX), 1];
    case 'serial': return [1, 1];
    default: return grid.overflow satisfies never;
  }
}

class Scheduler {
  private readonly arrayLengths = new Map<string, number>();

  constructor(readonly k: KernelIR, readonly device: DeviceCaps, readonly opts: ScheduleOptions) {
    for (const st of k.body) if (st.k === 'array') this.arrayLengths.set(st.name, st.n);
  }

  private get tuning() { return this.device.tuning; }

  statement(st: KStmt): StmtSchedule {
    // One thread per workgroup (the CPU) runs everything in order.
    if (this.device.threadsPerWorkgroup === 1) return { mapping: { kind: 'serial' }, reductions: new Map() };
    const plans = new Map<string, ReductionPlan>();
    switch (st.k) {
      case 'let':
        this.threadSums(st.value, plans);
        return { mapping: { kind: 'uniform' }, reductions: plans };
      case 'coop': {
        const t = st.body.t;
        const vector = st.op === 'sum' && t === 'f32' ? this.streams(st.body, st.v) : undefined;
        plans.set(st.v, { lanes: 'workgroup', combine: subgroupCombines(this.device, st.op, t) ? 'subgroup' : 'tree', unroll: this.tuning.unroll.workgroup, vector });
        this.threadSums(st.body, plans);
        return { mapping: { kind: 'workgroup' }, reductions: plans };
      }
      case 'array': return this.array(st, plans);
      case 'store': return this.store(st, plans);
      default: return st satisfies never;
    }
  }

  private array(st: ArrayStmt, plans: Map<string, ReductionPlan>): StmtSchedule {
    // An element that is one reduction (or one reduction finished by arithmetic: a mean).
    const reductions = topReductions(st.value);
    const r = reductions.length === 1 ? reductions[0] : undefined;
    // A dot product per element read wide (attention scores): one thread each, 16 bytes per load. Only where
    // the element is the dot product itself: one with an epilogue (exp of a score) keeps its serial loop.
    const dot = st.value.k === 'reduce' && this.tuning.vectorize === 'aligned-dots' ? this.alignedDot(st.value) : undefined;
    if (r && dot) {
      plans.set(r.v, { lanes: 'thread', combine: 'none', unroll: 1, vector: dot });
      return { mapping: { kind: 'thread-per-element' }, reductions: plans };
    }
    if (r && this.sliceable(st, r)) {
      let slices = 1;
      while (2 * slices * st.n <= this.device.threadsPerWorkgroup) slices *= 2;
      plans.set(r.v, { lanes: 'slices', combine: 'slices', unroll: this.tuning.unroll.sliced });
      this.threadSums(r.body, plans);
      return { mapping: { kind: 'sliced', slices }, reductions: plans };
    }
    if (this.subgroupPerElement(st.n, st.value, true)) {
      this.subgroupReductions(st.value, 'subgroup', plans);
      return { mapping: { kind: 'subgroup-per-element' }, reductions: plans };
    }
    this.threadSums(st.value, plans);
    const mapping = this.threadPerElement(st.n);
    const runs = mapping.each ? this.elementRuns(st, mapping.each) : undefined;
    return { mapping: runs ? { ...mapping, runs } : mapping, reductions: plans };
  }

  /**
   * An array's loads read 16 bytes at a time, 8 neighbouring elements a thread (Mapping 'thread-per-element'
   * runs): where every element reads memory only at index base + v (base the same for the row, proved a multiple
   * of 8) or at an index that is the same for the whole row, and computes no sum of its own. Decode's norm
   * prologues (a row and a gain, 2,048 elements): 3 loads a thread in place of 16; 0.800 → 0.791 ms a token on
   * the H200 (BENCHMARKS.md, fourteenth session).
   */
  private elementRuns(st: ArrayStmt, each: number): Stream[] | undefined {
    if (this.tuning.vectorize !== 'all-streams' || this.tuning.streamElements !== 8 || each % 8 !== 0) return undefined;
    if (topReductions(st.value).length > 0 || anyExpr(st.value, (e) => e.k === 'elem')) return undefined;
    const streams = contiguousStreams(st.value, st.v, this.k.buffers);
    const along = (ld: Extract<KExpr, { k: 'load' }>) => varsOf(ld.index).has(st.v);
    const loads = loadsOf(st.value);
    const aligned = streams.every((s) => multipleOf(s.base, 8));
    const covered = loads.filter(along).every((ld) => streams.some((s) => s.key === streamKey(ld)));
    return streams.length > 0 && aligned && covered ? streams : undefined;
  }

  /**
   * Elements over the threads; a constant count that gives every thread the same few, unrolled. Decode on the H200,
   * whose QKV and gate/up projections normalise their input first (8 elements a thread, a load of the row and of
   * the gain each, one round trip an element while strided): 0.892 → 0.838 ms a token (BENCHMARKS.md).
   */
  private threadPerElement(n: number | undefined): Extract<Mapping, { kind: 'thread-per-element' }> {
    const threads = this.device.threadsPerWorkgroup;
    const each = n !== undefined && n % threads === 0 ? n / threads : 0;
    return each > 1 && each <= UNROLLED_ELEMENTS ? { kind: 'thread-per-element', each } : { kind: 'thread-per-element' };
  }

  private store(st: StoreStmt, plans: Map<string, ReductionPlan>): StmtSchedule {
    const n = st.n.k === 'const' ? st.n.value : undefined;
    const minSubgroups = this.device.subgroup ? this.device.threadsPerWorkgroup / this.device.subgroup.width : 0;
    const sums = topReductions(st.value).every((r) => r.op === 'sum' && r.t === 'f32');
    if (this.subgroupPerElement(st.n, st.value)) {
      if (n !== undefined && n < minSubgroups && minSubgroups % n === 0 && sums) {
        this.subgroupReductions(st.value, 'split-subgroups', plans);
        return { mapping: { kind: 'split-subgroups', elements: n }, reductions: plans };
      }
      this.subgroupReductions(st.value, 'subgroup', plans);
      return { mapping: { kind: 'subgroup-per-element' }, reductions: plans };
    }
    this.threadSums(st.value, plans);
    this.threadSums(st.index, plans);
    return { mapping: this.threadPerElement(n), reductions: plans };
  }

  /**
   * Whether the elements of a store or array run one per subgroup, the subgroup's lanes sharing its reductions.
   * (`array`: by the 'long-sums' rule, an array element goes to a subgroup only when it is the sum itself.)
   */
  private subgroupPerElement(n: KExpr | number, value: KExpr, array = false): boolean {
    const sg = this.device.subgroup;
    const rs = topReductions(value);
    if (!sg || rs.length === 0 || !rs.every((r) => subgroupCombines(this.device, r.op, r.op === 'argmax' ? r.body.t : r.t))) return false;
    switch (this.tuning.elementMapping) {
      case 'long-sums': return rs.every((r) => r.op === 'sum' && !isShort(r)) && (!array || value.k === 'reduce');
      case 'fewest-steps': {
        // By the steps the busiest thread takes either way; symbolic sizes count as 4096.
        const lengths = rs.map((r) => maxExtent(r.n) ?? 4096);
        const count = typeof n === 'number' ? n : n.k === 'const' ? n.value : 4096;
        const threads = this.device.threadsPerWorkgroup;
        const byThread = Math.ceil(count / threads) * lengths.reduce((a, b) => a + b, 0);
        const shuffles = Math.log2(sg.width);
        const byWarp = Math.ceil(count / (threads / sg.width)) * lengths.reduce((a, b) => a + Math.ceil(b / sg.width) + shuffles, 0);
        return byWarp < byThread;
      }
      default: return this.tuning.elementMapping satisfies never;
    }
  }

  /** A long f32 reduction per element of a short array: threads split each, so that many take part. */
  private sliceable(st: ArrayStmt, r: Reduce): boolean {
    const valueType = r.op === 'argmax' ? r.body.t : r.t;
    return valueType === 'f32' && 2 * st.n <= this.device.threadsPerWorkgroup && !isShort(r);
  }

  /** Plans the top reductions of an element's value as shared by a subgroup's lanes (or split subgroups'). */
  private subgroupReductions(value: KExpr, lanes: 'subgroup' | 'split-subgroups', plans: Map<string, ReductionPlan>): void {
    for (const r of topReductions(value)) {
      const vector = this.tuning.vectorize === 'aligned-dots' ? this.alignedDot(r)
        : r.op === 'sum' && r.t === 'f32' ? this.streams(r.body, r.v) : undefined;
      plans.set(r.v, { lanes, combine: 'subgroup', unroll: 1, vector });
      // Split subgroups run each reduction as a statement of its own: a thread's sums inside it are its first.
      if (lanes === 'split-subgroups') this.threadSums(r.body, plans);
    }
  }

  /** A thread's own first-level f32 sums read their contiguous streams 16 bytes at a time (where the tuning says so). */
  private threadSums(e: KExpr, plans: Map<string, ReductionPlan>): void {
    if (this.tuning.vectorize !== 'all-streams') return;
    for (const r of topReductions(e)) {
      const vector = r.op === 'sum' && r.t === 'f32' ? this.streams(r.body, r.v) : undefined;
      if (vector) plans.set(r.v, { lanes: 'thread', combine: 'none', unroll: 1, vector });
    }
  }

  /** Contiguous streams read with alignment checked at run time, or undefined if there are none (or no wide loads). */
  private streams(body: KExpr, v: string): VectorPlan | undefined {
    if (this.tuning.vectorize !== 'all-streams' || this.device.vectorLoadBytes === 0) return undefined;
    const streams = contiguousStreams(body, v, this.k.buffers);
    if (streams.length === 0) return undefined;
    const once = this.readOnce();
    const marked = streams.map((s) => (s.load.k === 'load' && once.has(s.load.buf) ? { ...s, readOnce: true } : s));
    return { streams: marked, elements: this.tuning.streamElements, alignment: 'checked', unroll: this.tuning.unroll.vector };
  }

  private readOnceMemo?: ReadonlySet<number>;

  /**
   * Weights whose every element the kernel reads once, where the device takes eviction hints: the rows times what
   * one row reads of the weight is no more than the weight (decode's projections, each row its own outputs' part;
   * not a short prompt's rows, each of which reads the whole weight again). Only kernels of constant rows and sizes.
   */
  private readOnce(): ReadonlySet<number> {
    if (this.readOnceMemo) return this.readOnceMemo;
    const once = new Set<number>();
    const rows = this.k.rows;
    if (this.device.evictionHints && rows.k === 'const') {
      const page = this.opts.streamPageBytes;
      const streamed = new Set(page ? rowStreams(this.k, page, rowInvariantPrologue(this.k) ?? 0).map((s) => s.buffer) : []);
      for (const r of weightReads(this.k, {}, 0, 1)) {
        if (streamed.has(r.buffer)) continue;
        const elems = this.k.buffers[r.buffer].elems;
        if (elems.k === 'const' && rows.value * (r.to - r.from) <= elems.value) once.add(r.buffer);
      }
    }
    return (this.readOnceMemo = once);
  }

  /** A dot product the index proves aligned (the weight, and the other factor if contiguous). */
  private alignedDot(r: Reduce): VectorPlan | undefined {
    if (this.device.vectorLoadBytes === 0) return undefined;
    const split = this.opts.splitBuffers;
    const dot = alignedDot(r, this.k.buffers, (a) => this.arrayLengths.get(a), (b) => !split?.has(b));
    return dot && { ...dot, alignment: 'proved', unroll: this.tuning.unroll.vector };
  }

  /**
   * Row-local arrays: stored as vec4s where a proved-aligned sum reads them wide; declared statically while they
   * fit (with room for reduction scratch), else placed in workgroup memory given at launch.
   */
  placeArrays(stmts: readonly StmtSchedule[], reservedBytes = 0): { arrays: ArrayPlacement[]; dynamicWorkgroupBytes: number } {
    const wide = new Set<string>();
    for (const st of stmts) {
      for (const plan of st.reductions.values()) {
        for (const s of plan.vector?.alignment === 'proved' ? plan.vector.streams : []) if (s.load.k === 'elem') wide.add(s.load.array);
      }
    }
    const decls = this.k.body.filter((s): s is ArrayStmt => s.k === 'array');
    const bytes = (s: ArrayStmt) => s.n * (s.value.t === 'bool' ? 1 : 4);
    const total = decls.reduce((n, s) => n + bytes(s), 0);
    const dynamic = this.device.staticWorkgroupMemoryBytes < this.device.workgroupMemoryBytes;
    // `reservedBytes`: declared statically beside the arrays (a kernel's tile form).
    const fits = !dynamic || total + SCRATCH_BYTES + reservedBytes <= this.device.staticWorkgroupMemoryBytes;
    let offset = 0;
    const arrays = decls.map((s): ArrayPlacement => {
      const placed: ArrayPlacement = { name: s.name, elements: s.n, type: s.value.t, vec4: wide.has(s.name) };
      if (fits) return placed;
      const at = offset;
      offset += Math.ceil(bytes(s) / 16) * 16;
      return { ...placed, dynamicOffset: at };
    });
    return { arrays, dynamicWorkgroupBytes: offset };
  }
}

const isShort = (r: Reduce) => (maxExtent(r.n) ?? LONG_REDUCTION) < LONG_REDUCTION;

