// The CUDA device (libcuda and NVRTC through koffi): every buffer of a module allocated once per name at the
// largest sizes and zeroed, weights uploaded from the parameter store (16-bit ones still 16-bit, bools as bytes),
// one NVRTC module per graph (kernels that differ only in their buffers, as every transformer layer does, share
// one function; compiled images cached on disk), kernel arguments laid out once per size binding.
//
// The queue is the driver's one stream: writes, zeroing, launches and copies go on it in order; a recording is a
// stream capture instantiated as a CUDA graph, replayed with one launch; a read is an asynchronous copy into pinned
// memory and an event, polled without blocking (so reads in flight never stall what is queued after them).

import os from 'node:os';
import { evalSize, KernelIR, KExpr } from '../../backends/kernel-ir.ts';
import { CUDA_BLOCK, CudaFunction, CudaUnit, renderCudaProgram } from '../../backends/cuda/render-cuda.ts';
import { cudaCaps, DeviceCaps } from '../../backends/device-caps.ts';
import { LoweredGraph, LoweredModule } from '../../backends/lowered.ts';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { allocHost, HostTensor } from '../../ir/host-tensor.ts';
import { numel } from '../../ir/shape.ts';
import { CudaDriver, DevicePtr, Handle, KernelArgs } from '../cuda/driver.ts';
import { CudaUnavailableError } from '../cuda/errors.ts';
import { compileCudaAll, CompiledImage } from '../cuda/nvrtc.ts';
import { BufferKey, bufferKey, checkSizes, planBuffers, Device, gemmFlops, kernelBytes, KernelRange, kernelSpan, KernelTime, LoadOptions, Mark, Program, Recording, Sizes } from '../device.ts';
import { ParamStore } from '../params.ts';
import { allocSplitScratch, freeSplitScratch, SplitScratch } from '../cuda/split-scratch.ts';
import { cudaByteLength, fromDevice, toDevice } from './device-bytes.ts';
import { graphAsRun, megakernelGraph, MegakernelOptions, megakernelOptions, PreparedMegakernel, renderCudaMegakernel } from '../../backends/cuda/megakernel.ts';
import { LoadedMegakernel } from './cuda-megakernel.ts';
import { BisectTarget, BisectWrite, bisectMegakernel, MegakernelDifference } from '../megakernel-bisect.ts';
import { MegakernelSchedule, readBuffers } from '../../backends/megakernel-schedule.ts';
import type { MegakernelTimeline } from '../megakernel-timeline.ts';
import { KernelFacts, StepTimeline, stepTimeline } from '../step-timeline.ts';
import { STAMP_WORDS } from '../../backends/cuda/prelude.ts';
import { log, logsOn } from '../../ir/logs.ts';

export { CudaUnavailableError };

export interface CudaOptions {
  /** libcuda names or paths to try (default: TSFUSE_LIBCUDA, else the loader's search path). */
  readonly libraries?: readonly string[];
  /** Where compiled modules are cached (default .cache/tsfuse/cuda in the project, or TSFUSE_CACHE_DIR). */
  readonly cacheDir?: string;
  /**
   * NVRTC compilation units a module's kernels are dealt into (default: the machine's threads, at most 16): each
   * compiles on a thread of its own.
   */
  readonly units?: number;
  /** Run one graph (by default a session's decode step) as one persistent kernel rather than kernel by kernel. */
  readonly megakernel?: boolean | MegakernelOptions;
  /**
   * Print every kernel with stamps (each block's start, wait and end), for a step's timeline
   * (CudaProgram.stepTimeline). The kernels then do a little more: a barrier and an atomic a block.
   */
  readonly stamps?: boolean;
}

/** Blocks the stamps hold at most (16 MiB of device memory), more than one step launches. */
const STAMP_CAPACITY = 1 << 18;

/** A module's kernels rendered, per graph the function of each kernel, and its units compiling. */
interface Prepared {
  readonly functions: ReadonlyMap<LoweredGraph, readonly CudaFunction[]>;
  /** Each graph's kernels the functions run: the module's, or the megakernel's graph lowered for it (megakernelKernels). */
  readonly kernels: ReadonlyMap<LoweredGraph, readonly KernelIR[]>;
  readonly units: readonly CudaUnit[];
  readonly compiling: Promise<CompiledImage[]>;
  /** The megakernel, compiled as the last unit. */
  readonly megakernel?: PreparedMegakernel;
}

/** Opens device 0; CudaUnavailableError where no driver loads or it finds no GPU. */
export function openCuda(opts: CudaOptions = {}): CudaDevice {
  return new CudaDevice(CudaDriver.open(opts.libraries), opts);
}

export class CudaDevice implements Device {
  readonly kind = 'cuda' as const;
  readonly description: string;
  private readonly programs = new Set<CudaProgram>();
  /** Modules prepare() started on, until load() takes them. */
  private readonly prepared = new WeakMap<LoweredModule, Prepared>();
  private destroyed = false;

  /** What the scheduler knows of this GPU (kernels overlap their predecessors only where the driver launches them so). */
  readonly caps: DeviceCaps;

  constructor(readonly driver: CudaDriver, readonly opts: CudaOptions = {}) {
    const { name, computeCapability: cc } = driver.info;
    this.description = `${name} (sm_${cc})`;
    const caps = cudaCaps(cc, driver.info.multiprocessors);
    const launchable: DeviceCaps = driver.clusterLaunches ? caps : { ...caps, clusterBlocks: undefined };
    this.caps = driver.overlapLaunches ? launchable : { ...launchable, dependentLaunch: false };
  }

  /**
   * Starts what loading `module` needs of it alone: every graph's kernels rendered as one program (functions alike
   * in any graph shared) in compilation units, those not in the disk cache compiling in worker threads. A session
   * calls it as soon as the device is open, so the compiling overlaps reading the weights; load waits for it.
   */
  prepare(module: LoweredModule): void {
    if (this.prepared.has(module)) return;
    const graphs = module.graphs.filter((lg) => lg.kernels.length > 0);
    // Measured on the H200 (BENCHMARKS.md, issue 16): a cold start of Llama-3.2-1B uploaded and compiled in 4.9 s
    // with its three graphs' modules one unit each, in 2.3 s with five units each over 16 threads. One program for
    // all graphs (a prompt's and a prefill's kernels are alike), dealt over the threads and started before the
    // weights are read, is the next step from there, not yet measured.
    const units = this.opts.units ?? Math.max(1, Math.min(16, os.availableParallelism()));
    // The megakernel's graph launched one by one as the megakernel runs it (bisecting compares the two).
    const mk = this.opts.megakernel ? megakernelOptions(this.opts.megakernel) : undefined;
    const asRun = graphs.map((lg) => graphAsRun(lg, this.caps, mk));
    const program = renderCudaProgram(graphs.map((lg, i) => ({ ...asRun[i], prefix: `${lg.graph.name}_` })), this.caps, units, { stamps: this.opts.stamps });
    const sources = program.units.map((u, i) => ({ source: u.source, name: `unit${i}.cu` }));
    const megakernel = mk ? renderCudaMegakernel(module, this.caps, mk) : undefined;
    if (megakernel) sources.push({ source: megakernel.kernel.source, name: 'megakernel.cu' });
    const compiling = compileCudaAll(sources, this.driver.info.computeCapability, this.opts.cacheDir);
    compiling.catch(() => {}); // load reports it
    this.prepared.set(module, { functions: new Map(graphs.map((lg, i) => [lg, program.functions[i]])), kernels: new Map(graphs.map((lg, i) => [lg, asRun[i].kernels])), units: program.units, compiling, megakernel });
  }

  /** Loads a module's program (compiled by prepare, called now if it was not) and uploads the weights meanwhile. */
  async load(module: LoweredModule, params: ParamStore, opts: LoadOptions): Promise<CudaProgram> {
    this.prepare(module);
    const prepared = this.prepared.get(module)!;
    this.prepared.delete(module);
    let p: CudaProgram;
    try {
      p = new CudaProgram(this, module, params, opts);
    } catch (e) {
      await prepared.compiling.catch(() => {});
      throw e;
    }
    this.programs.add(p);
    try {
      p.link(prepared.functions, prepared.kernels, prepared.units, await prepared.compiling, prepared.megakernel);
    } catch (e) {
      p.destroy();
      throw e;
    }
    return p;
  }

  /**
   * Device-to-device copy bandwidth in bytes per second, counting bytes read and written, on the device's stream
   * (what "fraction of copy bandwidth" is relative to).
   */
  copyBandwidth(bytes = 1 << 30, repeats = 10): number {
    return this.driver.copyBandwidth(bytes, repeats);
  }

  forget(p: CudaProgram): void {
    this.programs.delete(p);
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const p of this.programs) p.destroy();
    this.driver.destroy();
  }
}

interface CudaKernel {
  /** Blocks to launch (the schedule's grid: a GEMM's tiles, else the kernel's rows). */
  readonly rows: KExpr;
  /** Blocks a cluster (CudaFunction.clusterBlocks), where they are grouped. */
  readonly clusterBlocks?: KExpr;
  readonly ir: KernelIR;
  readonly fn: Handle;
  readonly sharedBytes: number;
  /** Launched to overlap its predecessor (it waits for it inside). */
  readonly overlap: boolean;
  /** The temporaries it writes, each with the dtype it stores it as. */
  readonly tempWrites: readonly { readonly key: BufferKey; readonly dtype: DType }[];
  /** Takes the split scratch after its sizes (CudaFunction.splitScratch: a depth-split GEMM, attention's key chunks). */
  readonly takesSplitScratch: boolean;
  /** Every buffer it writes, as stored, and whether it reads it too (for bisecting a megakernel). */
  readonly writes: readonly BisectWrite[];
}

interface CudaGraph {
  readonly lowered: LoweredGraph;
  readonly kernels: readonly CudaKernel[];
  /** Arguments by size binding, laid out once each. */
  readonly args: Map<string, KernelArgs[]>;
}

class CudaRecording implements Recording {
  constructor(readonly program: CudaProgram, readonly exec: Handle, readonly commands: number) {}
}

interface Pinned {
  readonly ptr: Handle;
  readonly view: ArrayBuffer;
}

/** Largest grid.x CUDA accepts; kernels grid-stride over any rows beyond it. */
const MAX_GRID = 2 ** 31 - 1;
const nextTick = () => new Promise<void>((r) => setImmediate(r));

export class CudaProgram implements Program {
  /** How each compilation unit was obtained (compiled now or read from the disk cache), for reports and tests. */
  readonly images = new Map<string, CompiledImage>();
  private readonly cuda: CudaDriver;
  private readonly buffers = new Map<BufferKey, { ptr: DevicePtr; bytes: number }>();
  private readonly graphs = new Map<string, CudaGraph>();
  private readonly modules: Handle[] = [];
  private readonly recordings: Handle[] = [];
  private readonly marks: Handle[] = [];
  /** Pinned host buffers by capacity, and events, free for the next read. */
  private readonly pinnedPool = new Map<number, Pinned[]>();
  private readonly eventPool: Handle[] = [];
  private capturing: { commands: number } | undefined;
  private destroyed = false;
  /** The graph that runs as one persistent kernel, where the device was opened with the megakernel option. */
  private megakernel?: LoadedMegakernel;
  /**
   * How each temporary was last stored, where a kernel stores it narrower than its value (bf16 left operands of
   * matrix-unit GEMMs): reads of the value (bisect) widen it.
   */
  private readonly storedAs = new Map<BufferKey, DType>();
  private splitScratch: SplitScratch | undefined;
  /** Kernels, grids and cluster sizes whose launch in clusters has been logged (logClusters). */
  private readonly clustersLogged = new Set<string>();
  /** Where the kernels append their blocks' stamps (a device opened with stamps): a count, a capacity, the stamps. */
  private stamps: DevicePtr | undefined;
  /** A launch's stamp id (graph and kernel index) → the graph's name and kernel index. */
  private readonly stampIds = new Map<number, { graph: string; kernel: number }>();

  constructor(readonly device: CudaDevice, readonly module: LoweredModule, params: ParamStore, private readonly opts: LoadOptions) {
    this.cuda = device.driver;
    for (const lg of module.graphs) {
      if (lg.kernels.length === 0 && lg.graph.nodes.length > 0) throw new Error(`the cuda device runs compiled graphs; @${lg.graph.name} has no kernels`);
    }
    try {
      this.allocate(params);
    } catch (e) {
      this.destroy();
      throw e;
    }
  }

  /** The program's units, compiled (CudaDevice.prepare), loaded, and each graph's kernels bound to their functions. */
  link(functions: ReadonlyMap<LoweredGraph, readonly CudaFunction[]>, kernelsOf: ReadonlyMap<LoweredGraph, readonly KernelIR[]>, units: readonly CudaUnit[], images: readonly CompiledImage[], megakernel?: PreparedMegakernel): void {
    this.splitScratch = allocSplitScratch(this.cuda, [...functions.values()].flat().flatMap((f) => (f.splitScratch ? [f.splitScratch] : [])));
    const shared = new Map([...functions.values()].flat().map((f) => [f.name, f.dynamicSharedBytes]));
    const fns = new Map<string, Handle>();
    units.forEach((unit, u) => {
      this.images.set(`unit${u}`, images[u]);
      const mod = this.cuda.loadModule(images[u].image);
      this.modules.push(mod);
      for (const name of unit.names) fns.set(name, this.cuda.getFunction(mod, name, shared.get(name)!));
    });
    for (const lg of this.module.graphs) {
      const fs = functions.get(lg) ?? [];
      const kernels = (kernelsOf.get(lg) ?? lg.kernels).map((ir, i): CudaKernel => {
        const f = fs[i];
        const tempWrites = ir.buffers.flatMap((b, j) => (b.binding.kind === 'temp' && b.written ? [{ key: bufferKey(lg.graph, b.binding), dtype: f.bufferDTypes[j] }] : []));
        const read = readBuffers(ir);
        const writes = ir.buffers.flatMap((b, j) => (b.written ? [{ key: bufferKey(lg.graph, b.binding), dtype: f.bufferDTypes[j], alsoRead: read.has(j), fresh: b.binding.kind === 'temp' || b.binding.kind === 'output' }] : []));
        return { ir, rows: f.rows, ...(f.clusterBlocks ? { clusterBlocks: f.clusterBlocks } : {}), fn: fns.get(f.name)!, sharedBytes: f.dynamicSharedBytes, overlap: f.overlapsPredecessor, tempWrites, takesSplitScratch: !!f.splitScratch, writes };
      });
      this.graphs.set(lg.graph.name, { lowered: lg, kernels, args: new Map() });
    }
    if (this.device.opts.stamps) {
      this.stamps = this.cuda.alloc(8 * (2 + STAMP_WORDS * STAMP_CAPACITY));
      this.cuda.upload(this.stamps, new BigUint64Array([0n, BigInt(STAMP_CAPACITY)]));
    }
    if (megakernel) this.linkMegakernel(megakernel, images[units.length]);
  }

  /** Loads the megakernel (the unit after the others) with its tables, over this program's buffers. */
  private linkMegakernel(prepared: PreparedMegakernel, image: CompiledImage): void {
    this.images.set('megakernel', image);
    const mod = this.cuda.loadModule(image.image);
    this.modules.push(mod);
    const graph = this.graphOf(prepared.graph).lowered.graph;
    this.megakernel = new LoadedMegakernel(this.cuda, mod, prepared, (b) => this.buffer(bufferKey(graph, b)).ptr, megakernelOptions(this.device.opts.megakernel as true | MegakernelOptions));
  }

  /** The megakernel, where `graph` runs as one. */
  private megakernelOf(graph: string): LoadedMegakernel | undefined {
    return this.megakernel?.graph === graph ? this.megakernel : undefined;
  }

  graph(name: string): Graph {
    return this.graphOf(name).lowered.graph;
  }

  has(key: BufferKey): boolean {
    return this.buffers.has(key);
  }

  write(key: BufferKey, t: HostTensor): void {
    this.usable('write');
    const buf = this.buffer(key);
    const bytes = toDevice(t, 'bytes');
    if (bytes.byteLength > buf.bytes) throw new RangeError(`${t.data.length} elements do not fit buffer ${key}`);
    // From pageable memory: returns once `bytes` is staged, ordered on the stream like everything else.
    if (bytes.byteLength > 0) this.cuda.upload(buf.ptr, bytes);
  }

  /** Queues kernel `k` over `rows` blocks (none where there are no rows), in its clusters where it has them. */
  private launch(k: CudaKernel, rows: number, sizes: Sizes, args: KernelArgs, overlap = false): void {
    if (rows <= 0) return;
    const cluster = k.clusterBlocks ? evalSize(k.clusterBlocks, sizes) : 1;
    const grid = Math.min(rows, MAX_GRID);
    if (cluster > 1 && logsOn('schedule')) this.logClusters(k, grid, cluster);
    this.cuda.launch(k.fn, grid, CUDA_BLOCK, args, k.sharedBytes, overlap, cluster);
  }

  /** Says once a kernel and cluster size whether its grid runs in clusters (TSFUSE_LOGS=schedule), and why not. */
  private logClusters(k: CudaKernel, grid: number, cluster: number): void {
    const key = `${k.ir.name}:${grid}:${cluster}`;
    if (this.clustersLogged.has(key)) return;
    this.clustersLogged.add(key);
    const clusters = grid / cluster;
    const { clustered, atOnce } = this.cuda.inClusters(k.fn, grid, CUDA_BLOCK, k.sharedBytes, cluster);
    const alone = 'its blocks launch alone, the parts adding through memory';
    log('schedule', atOnce === undefined
      ? `cuda ${k.ir.name}: ${clusters} clusters of ${cluster} blocks asked, but this driver launches none: ${alone}`
      : `cuda ${k.ir.name}: ${clusters} clusters of ${cluster} blocks, ${clustered ? `${atOnce} run at once: launched in clusters` : `but ${atOnce} run at once: ${alone}`}`);
  }

  zero(key: BufferKey): void {
    const buf = this.buffer(key);
    this.queued('zero');
    this.cuda.fill(buf.ptr, 0, buf.bytes);
  }

  run(graph: string, sizes: Sizes, kernels?: KernelRange): void {
    const g = this.graphOf(graph);
    const mk = this.megakernelOf(graph);
    if (mk) {
      if (kernels) throw new Error(`@${graph} runs as one megakernel: its kernels cannot run apart (bisect without --megakernel)`);
      this.queued('run');
      for (const k of g.kernels) for (const w of k.tempWrites) this.storedAs.set(w.key, w.dtype);
      mk.launch();
      return;
    }
    const { from, to } = kernelSpan(g.kernels.length, kernels);
    checkSizes(sizes, this.opts.maxSizes);
    const args = this.argsFor(g, sizes);
    const rows = g.kernels.map((k) => evalSize(k.rows, sizes));
    // Kernels overlap their predecessors whether recorded (the decode step's CUDA graph) or launched one by one (the
    // prompt's). Launched one by one it had cost 512 tokens 14.2 → 18.0 ms (fourth session); with this session's
    // kernels it gains: 32 tokens 2.336 → 2.199 ms, 2,048 tokens 15.8–16.0 → 15.5–15.6 (H200, BENCHMARKS.md).
    this.queued('run');
    for (const k of g.kernels.slice(from, to)) for (const w of k.tempWrites) this.storedAs.set(w.key, w.dtype);
    g.kernels.forEach((k, i) => {
      if (i >= from && i < to) this.launch(k, rows[i], sizes, args[i], k.overlap);
    });
  }

  copy(from: BufferKey, to: BufferKey, dtype: DType, count: number): void {
    const [src, dst] = [this.buffer(from), this.buffer(to)];
    const bytes = cudaByteLength(dtype, count);
    if (bytes > src.bytes || bytes > dst.bytes) throw new RangeError(`copy of ${count} ${dtype} elements from ${from} to ${to}: a buffer is smaller`);
    this.queued('copy');
    if (bytes > 0) this.cuda.copy(dst.ptr, src.ptr, bytes);
  }

  record(body: () => void): Recording {
    this.usable('record');
    const counted = { commands: 0 };
    this.capturing = counted;
    let exec: Handle;
    try {
      exec = this.cuda.capture(body);
    } finally {
      this.capturing = undefined;
    }
    this.recordings.push(exec);
    return new CudaRecording(this, exec, counted.commands);
  }

  replay(r: Recording): void {
    if (!(r instanceof CudaRecording) || r.program !== this) throw new Error('replay: a recording of another program');
    this.queued('replay');
    this.cuda.replay(r.exec);
  }

  read(key: BufferKey, dtype: DType, shape: readonly number[]): Promise<HostTensor> {
    const stored = this.storedAs.get(key);
    if (stored !== undefined && stored !== dtype) {
      // Floats of every width are held in host memory as f32 values rounded to their dtype: widening relabels them.
      return this.read(key, stored, shape).then((t) => ({ ...t, dtype }));
    }
    this.usable('read');
    const buf = this.buffer(key);
    const n = numel(shape);
    const bytes = cudaByteLength(dtype, n);
    if (bytes > buf.bytes) throw new RangeError(`${n} elements of ${dtype} are more than buffer ${key} holds`);
    if (n === 0) return Promise.resolve(allocHost(dtype, shape));
    const pinned = this.pinned(bytes);
    this.cuda.downloadAsync(pinned.ptr, buf.ptr, bytes);
    const watchdog = this.megakernel?.watch();
    const event = this.eventPool.pop() ?? this.cuda.event();
    this.cuda.record(event);
    return this.reached(event).then(() => {
      watchdog?.();
      const t = fromDevice(dtype, shape, new Uint8Array(pinned.view, 0, bytes), 'bytes');
      this.pinnedPool.get(pinned.view.byteLength)!.push(pinned);
      this.eventPool.push(event);
      return t;
    });
  }

  mark(): Mark {
    this.usable('mark');
    const event = this.cuda.event();
    this.cuda.record(event);
    return { id: this.marks.push(event) - 1 };
  }

  async elapsedMs(a: Mark, b: Mark): Promise<number> {
    const [ea, eb] = [this.marks[a.id], this.marks[b.id]];
    if (!ea || !eb) throw new Error('elapsedMs: a mark of another program');
    await this.reached(ea);
    await this.reached(eb);
    return this.cuda.elapsed(ea, eb);
  }

  async finish(): Promise<void> {
    this.usable('finish');
    const watchdog = this.megakernel?.watch();
    const event = this.eventPool.pop() ?? this.cuda.event();
    this.cuda.record(event);
    await this.reached(event);
    this.eventPool.push(event);
    watchdog?.();
  }

  /**
   * The tasks of the latest step of `graph`'s megakernel, with their times; refused unless `graph` runs as one
   * recording a timeline (megakernel: { timeline: true }).
   */
  async megakernelTimeline(graph: string): Promise<MegakernelTimeline> {
    const mk = this.megakernelOf(graph);
    if (!mk) throw new Error(`@${graph} does not run as a megakernel: it has no timeline (open the device with megakernel: { timeline: true })`);
    await this.finish();
    return mk.readTimeline();
  }

  /**
   * Device time of `steps` steps of `graph`'s megakernel with none of its tasks waiting for their inputs (or only
   * those of `kernels`, indices in the graph), after `warmup` such steps, in ms a step: the step as if that
   * synchronisation cost nothing. Timing only: what the steps write is meaningless, so the caller starts its state
   * again after.
   */
  async timeWithoutWaits(graph: string, steps: number, warmup: number, kernels?: readonly number[]): Promise<number> {
    this.usable('timing without waits');
    const mk = this.megakernelOf(graph);
    if (!mk) throw new Error(`@${graph} does not run as a megakernel: open the device with the megakernel option to time it without waits`);
    if (kernels) mk.withoutWaitsOf(kernels);
    for (let i = 0; i < warmup; i++) mk.launchWithoutWaits(kernels);
    const start = this.mark();
    for (let i = 0; i < steps; i++) mk.launchWithoutWaits(kernels);
    const end = this.mark();
    const ms = await this.elapsedMs(start, end);
    await this.finish();
    return ms / steps;
  }

  /** The schedule of `graph`'s megakernel, where it runs as one (its kernels, tasks and blocks). */
  megakernelSchedule(graph: string): MegakernelSchedule | undefined {
    return this.megakernelOf(graph)?.prepared.schedule;
  }

  kernelCount(graph: string): number {
    if (this.megakernelOf(graph)) return 1;
    return this.graphs.get(graph)?.kernels.length ?? 0;
  }

  /**
   * Where the megakernel of `graph` first differs from the graph's kernels run one by one, from the buffers as they
   * are (runtime/megakernel-bisect.ts); undefined where they agree. The buffers are put back and the megakernel's
   * counters zeroed, so the next step runs as if this had not.
   */
  bisectMegakernel(graph: string, sizes: Sizes): MegakernelDifference | undefined {
    this.usable('bisect');
    const mk = this.megakernelOf(graph);
    if (!mk) throw new Error(`@${graph} does not run as a megakernel: open the device with the megakernel option to bisect it`);
    const g = this.graphOf(graph);
    checkSizes(sizes, this.opts.maxSizes);
    const args = this.argsFor(g, sizes);
    const rows = g.kernels.map((k) => evalSize(k.rows, sizes));
    const s = mk.prepared.schedule;
    const blockOf = new Map<string, number>();
    s.blocks.forEach((list, b) => list.forEach((task) => blockOf.set(`${task.kernel}:${task.task}`, b)));
    const target: BisectTarget = {
      kernels: g.kernels.map((k, i) => ({
        name: k.ir.name, last: k.ir.fused[k.ir.fused.length - 1] ?? '', writes: k.writes,
        tasks: s.spans[i].map((span, t) => ({ from: span.from, to: span.to, block: blockOf.get(`${i}:${t}`)! })),
      })),
      runKernel: (i) => {
        const k = g.kernels[i];
        this.launch(k, rows[i], sizes, args[i]);
      },
      runTasks: (i, task) => mk.launchOnly(i, task),
      save: (keys) => {
        const copies = keys.map((key) => {
          const b = this.buffer(key);
          const copy = this.cuda.alloc(b.bytes);
          this.cuda.copy(copy, b.ptr, b.bytes);
          return { b, copy };
        });
        return {
          restore: () => copies.forEach(({ b, copy }) => this.cuda.copy(b.ptr, copy, b.bytes)),
          release: () => {
            this.cuda.synchronize();
            copies.forEach(({ copy }) => this.cuda.free(copy));
          },
        };
      },
      read: (key) => {
        const b = this.buffer(key);
        const bytes = new Uint8Array(b.bytes);
        this.cuda.download(bytes, b.ptr);
        return bytes;
      },
      fill: (key, byte) => {
        const b = this.buffer(key);
        this.cuda.fill(b.ptr, byte, b.bytes);
      },
    };
    try {
      return bisectMegakernel(target);
    } finally {
      mk.resetCounters();
    }
  }

  /** Forgets the stamps so far (queued: what runs after it stamps afresh); refused unless opened with stamps. */
  clearStamps(): void {
    this.queued('clearStamps');
    this.cuda.fill(this.stampsOrThrow(), 0, 4);
  }

  /**
   * The kernels of the runs queued since clearStamps, as they ran (a replayed step's kernels overlapping each other),
   * from their blocks' stamps; `sizes` are the sizes they ran at (for the bytes each moved).
   */
  async stepTimeline(sizes: Sizes = {}): Promise<StepTimeline> {
    const stamps = this.stampsOrThrow();
    await this.finish();
    const head = new Uint32Array(2);
    this.cuda.download(head, stamps);
    if (head[0] > STAMP_CAPACITY) throw new Error(`the stamps hold ${STAMP_CAPACITY} blocks; ${head[0]} ran since they were cleared`);
    const words = new BigUint64Array(2 + STAMP_WORDS * head[0]);
    this.cuda.download(words, stamps);
    const facts = (id: number): KernelFacts => {
      const at = this.stampIds.get(id);
      if (!at) throw new Error(`a stamp of unknown launch ${id}`);
      const k = this.graphOf(at.graph).kernels[at.kernel];
      return { kernel: `${at.graph}.${k.ir.name}`, kind: String(this.graphOf(at.graph).lowered.graph.kernels[at.kernel]?.attrs.kind ?? ''),
        bytes: kernelBytes(k.ir, sizes, cudaByteLength), flops: gemmFlops(k.ir, sizes), fused: k.ir.fused, last: k.ir.fused[k.ir.fused.length - 1] ?? '' };
    };
    return stepTimeline(words.subarray(2), head[0], facts);
  }

  private stampsOrThrow(): DevicePtr {
    if (this.stamps === undefined) throw new Error('this program keeps no stamps: open the cuda device with stamps: true (bench --timeline)');
    return this.stamps;
  }

  /** A kernel's stamp id: its graph's place in the module (high bits) and its index. */
  private stampId(graph: string, kernel: number): number {
    const id = (this.module.graphs.findIndex((lg) => lg.graph.name === graph) << 16) | kernel;
    this.stampIds.set(id, { graph, kernel });
    return id;
  }

  /**
   * Device time of each kernel of one run of `graph`, from events around every launch (which adds gaps, so the
   * sum exceeds a captured step), with the bytes its buffers hold; each start from the first kernel's start event.
   */
  async profile(graph: string, sizes: Sizes): Promise<KernelTime[]> {
    this.usable('profile');
    const g = this.graphOf(graph);
    if (this.megakernelOf(graph)) throw new Error(`@${graph} runs as one megakernel: its kernels cannot be timed apart (profile without --megakernel)`);
    const args = this.argsFor(g, sizes);
    const events = g.kernels.map(() => [this.cuda.event(), this.cuda.event()]);
    try {
      g.kernels.forEach((k, i) => {
        const rows = evalSize(k.rows, sizes);
        this.cuda.record(events[i][0]);
        this.launch(k, rows, sizes, args[i]);
        this.cuda.record(events[i][1]);
      });
      if (events.length) await this.reached(events[events.length - 1][1]);
      const graphKernels = g.lowered.graph.kernels;
      return g.kernels.map((k, i) => ({
        kernel: k.ir.name, kind: String(graphKernels[i]?.attrs.kind ?? ''), startUs: this.cuda.elapsed(events[0][0], events[i][0]) * 1e3,
        us: this.cuda.elapsed(events[i][0], events[i][1]) * 1e3,
        bytes: kernelBytes(k.ir, sizes, cudaByteLength), flops: gemmFlops(k.ir, sizes), ...this.cuda.resources(k.fn),
        fused: k.ir.fused, last: k.ir.fused[k.ir.fused.length - 1] ?? '',
      }));
    } finally {
      for (const [a, b] of events) {
        this.cuda.destroyEvent(a);
        this.cuda.destroyEvent(b);
      }
    }
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.device.forget(this);
    const c = this.cuda;
    c.synchronize();
    for (const exec of this.recordings) c.destroyGraph(exec);
    for (const e of [...this.marks, ...this.eventPool]) c.destroyEvent(e);
    for (const pool of this.pinnedPool.values()) for (const p of pool) c.freeHost(p.ptr);
    this.megakernel?.destroy();
    for (const b of this.buffers.values()) c.free(b.ptr);
    freeSplitScratch(c, this.splitScratch);
    if (this.stamps !== undefined) c.free(this.stamps);
    for (const m of this.modules) c.unloadModule(m);
    this.buffers.clear();
  }

  // ---- the queue ----

  private usable(what: string): void {
    if (this.destroyed) throw new Error(`${what}: the program is destroyed`);
    if (this.capturing) throw new Error(`${what} inside record(): a recording holds runs, copies and zeroing only`);
  }

  /** Counts a command of a recording being captured. */
  private queued(what: string): void {
    if (this.destroyed) throw new Error(`${what}: the program is destroyed`);
    if (this.capturing) this.capturing.commands++;
  }

  /** Resolves once the stream has passed `event`, polling so that the host keeps queueing meanwhile. */
  private async reached(event: Handle): Promise<void> {
    while (!this.cuda.done(event)) await nextTick();
  }

  private pinned(bytes: number): Pinned {
    const size = Math.max(256, 2 ** Math.ceil(Math.log2(bytes)));
    let pool = this.pinnedPool.get(size);
    if (!pool) this.pinnedPool.set(size, (pool = []));
    return pool.pop() ?? this.cuda.allocHost(size);
  }

  /** Kernel arguments for one size binding: buffer pointers, the sizes the kernel reads, a depth split's scratch. */
  private argsFor(g: CudaGraph, sizes: Sizes): KernelArgs[] {
    const key = JSON.stringify(Object.entries(sizes).sort());
    let args = g.args.get(key);
    if (!args) {
      const graph = g.lowered.graph;
      args = g.kernels.map((k, i) => this.cuda.kernelArgs([
        ...k.ir.buffers.map((b) => this.buffer(bufferKey(graph, b.binding)).ptr),
        ...k.ir.sizes.map((s) => {
          if (sizes[s] === undefined) throw new Error(`kernel ${k.ir.name} of @${graph.name} reads size ${s}, which is not bound`);
          return { int: sizes[s] };
        }),
        ...(k.takesSplitScratch ? [this.splitScratch!.workspace, this.splitScratch!.counters] : []),
        ...(this.stamps !== undefined ? [this.stamps, { int: this.stampId(graph.name, i) }] : []),
      ]));
      g.args.set(key, args);
    }
    return args;
  }

  // ---- loading ----

  private graphOf(name: string): CudaGraph {
    const g = this.graphs.get(name);
    if (!g) throw new Error(`no graph @${name} in the program (it has ${[...this.graphs.keys()].map((n) => '@' + n).join(', ')})`);
    return g;
  }

  private buffer(key: BufferKey): { ptr: DevicePtr; bytes: number } {
    const b = this.buffers.get(key);
    if (!b) throw new Error(`no buffer ${key} in the program`);
    return b;
  }

  /**
   * Every input, state and output of every graph and every buffer a kernel binds, at the largest size any graph
   * uses it with, zeroed; weights a kernel reads, from the store (concatenated projections' parts not apart).
   */
  private allocate(params: ParamStore): void {
    const { sizes: need, params: uploads } = planBuffers(this.module, this.opts.maxSizes, cudaByteLength);
    // Rounded up so 16-byte vector loads of the last elements never leave the allocation.
    const alloc = (key: BufferKey, bytes: number) => {
      const rounded = Math.ceil(Math.max(bytes, 4) / 256) * 256;
      const buf = { ptr: this.cuda.alloc(rounded), bytes: rounded };
      this.buffers.set(key, buf);
      return buf;
    };
    for (const [key, bytes] of need) {
      const buf = alloc(key, bytes);
      this.cuda.fill(buf.ptr, 0, buf.bytes);
    }
    for (const { key, graph, name } of uploads) {
      const bytes = params.bytes(graph, name);
      this.cuda.upload(alloc(key, bytes.byteLength).ptr, bytes);
    }
    // Staged copies of pageable memory finish before the host's copies may go.
    this.cuda.synchronize();
  }
}
