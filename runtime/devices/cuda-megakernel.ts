// A graph run as one persistent CUDA kernel (backends/megakernel-schedule.ts, backends/cuda/megakernel.ts) on the
// CUDA device: rendered beside the program's other kernels (renderCudaMegakernel), loaded with its tables (the buffers' pointers, the task
// table, the counters, each block's step count, the watchdog's record, all zeroed once, and with the timeline on,
// each task's times), launched in place of the graph's kernels, and its watchdog read back with every read of the
// program; the timeline is read on request (runtime/megakernel-timeline.ts reads it as tasks).

import { MegakernelOptions, MegakernelRefused, planWithoutWaits, PreparedMegakernel, RUN_STEP, TIMELINE_WORDS, TIMING_WITHOUT_WAITS, WATCHDOG_FIELDS, WATCHDOG_WORDS } from '../../backends/cuda/megakernel.ts';
import { Binding } from '../../backends/kernel-ir.ts';
import { CudaDriver, DevicePtr, Handle, KernelArgs } from '../cuda/driver.ts';
import { MegakernelTimeline, taskTimes } from '../megakernel-timeline.ts';

/** How long one wait may spin before the watchdog stops the step, unless the options say. */
const DEFAULT_WATCHDOG_MS = 5000;

/** A megakernel loaded: its function, its tables in device memory, and its launch's arguments. */
export class LoadedMegakernel {
  private readonly fn: Handle;
  private readonly args: KernelArgs;
  private readonly argsWithoutWaits: KernelArgs;
  /** Per set of kernels (their sorted indices), a step's arguments with a task table in which those do not wait. */
  private readonly argsWithoutWaitsOf = new Map<string, KernelArgs>();
  /** The launch's arguments but the last two (the kernel and task a bisecting launch runs alone). */
  private readonly fixedArgs: readonly (DevicePtr | { int: number })[];
  /** Each kernel's count of finished tasks, and each block's count of steps (zeroed again after bisecting). */
  private readonly counts: readonly { ptr: DevicePtr; bytes: number }[];
  private readonly memory: DevicePtr[] = [];
  private readonly watchdog: DevicePtr;
  /** Each task's times of the latest step, where the kernel records them. */
  private readonly timeline?: DevicePtr;
  private readonly pinned: { ptr: Handle; view: ArrayBuffer }[] = [];
  /** The error of a step the watchdog stopped: the counters are off from then on, so every later use fails too. */
  private stuck?: Error;

  constructor(private readonly cuda: CudaDriver, module: Handle, readonly prepared: PreparedMegakernel, pointer: (b: Binding) => DevicePtr, opts: MegakernelOptions) {
    const k = prepared.kernel;
    this.fn = cuda.getFunction(module, k.name, k.sharedBytes);
    const perProcessor = cuda.residentBlocks(this.fn, k.threads, k.sharedBytes);
    if (perProcessor * cuda.info.multiprocessors < k.blocks) {
      throw new MegakernelRefused(`--megakernel: its ${k.blocks} blocks (${k.sharedBytes} bytes of shared memory each) must all be resident, and ${cuda.info.name} holds ${perProcessor * cuda.info.multiprocessors} (${perProcessor} a multiprocessor): ${perProcessor ? `give --megakernel-blocks ${perProcessor} or fewer` : 'not one block fits a multiprocessor'}`);
    }
    const table = (words: Int32Array | BigUint64Array) => {
      const p = this.alloc(words.byteLength);
      cuda.upload(p, words);
      return p;
    };
    const zeroed = (bytes: number) => {
      const p = this.alloc(bytes);
      cuda.fill(p, 0, bytes);
      return p;
    };
    const buffers = table(BigUint64Array.from(k.buffers, (b) => BigInt(pointer(b))));
    const plan = table(k.plan);
    const done = zeroed(4 * k.counters);
    const steps = zeroed(4 * k.blocks);
    const counts = [{ ptr: done, bytes: 4 * k.counters }, { ptr: steps, bytes: 4 * k.blocks }];
    this.watchdog = zeroed(4 * WATCHDOG_WORDS);
    const limitNs = (opts.watchdogMs ?? DEFAULT_WATCHDOG_MS) * 1e6;
    if (!(limitNs > 0)) throw new Error(`--megakernel: a watchdog of ${opts.watchdogMs} ms`);
    if (k.timeline) this.timeline = zeroed(8 * TIMELINE_WORDS * k.tasks);
    // The scratch attention's chunks of keys merge through: their counters start at zero and each merge leaves its
    // own so (zeroed again after bisecting, which can stop a head's chunks halfway).
    let scratch: { ws: DevicePtr; count: DevicePtr } | undefined;
    if (k.scratch) {
      scratch = { ws: this.alloc(4 * k.scratch.workspaceFloats), count: zeroed(4 * k.scratch.counters) };
      counts.push({ ptr: scratch.count, bytes: 4 * k.scratch.counters });
    }
    this.counts = counts;
    // The limit is an unsigned 64-bit argument: passed in a pointer's slot.
    this.fixedArgs = [buffers, plan, done, steps, this.watchdog, Math.round(limitNs), this.timeline ?? 0, scratch?.ws ?? 0, scratch?.count ?? 0];
    this.args = cuda.kernelArgs([...this.fixedArgs, { int: RUN_STEP }, { int: -1 }]);
    this.argsWithoutWaits = cuda.kernelArgs([...this.fixedArgs, { int: TIMING_WITHOUT_WAITS }, { int: -1 }]);
  }

  get graph(): string {
    return this.prepared.graph;
  }

  launch(): void {
    this.queue(this.args);
  }

  /**
   * Queues a step whose tasks do not wait for their inputs (or only those of `kernels`, indices in the graph, the
   * others waiting as in a step), for timing: what the step takes when that synchronisation costs nothing. Its writes
   * are meaningless (each task reads whatever its inputs hold as it runs); the counters stay right, since every task
   * still releases its own.
   */
  launchWithoutWaits(kernels?: readonly number[]): void {
    this.queue(kernels ? this.withoutWaitsOf(kernels) : this.argsWithoutWaits);
  }

  /**
   * A step's arguments with a task table in which the tasks of `kernels` wait for nothing, the table uploaded the
   * first time (a timing asks before it starts, to keep the copy out of it).
   */
  withoutWaitsOf(kernels: readonly number[]): KernelArgs {
    const key = [...new Set(kernels)].sort((a, b) => a - b).join();
    let args = this.argsWithoutWaitsOf.get(key);
    if (!args) {
      const words = planWithoutWaits(this.prepared.kernel, new Set(kernels));
      const plan = this.alloc(words.byteLength);
      this.cuda.upload(plan, words);
      args = this.cuda.kernelArgs([this.fixedArgs[0], plan, ...this.fixedArgs.slice(2), { int: RUN_STEP }, { int: -1 }]);
      this.argsWithoutWaitsOf.set(key, args);
    }
    return args;
  }

  /**
   * Queues a launch that runs only kernel `kernel`'s tasks (or only its task `task`), none of them waiting: the caller
   * has run their producers. The counters are off afterwards until resetCounters.
   */
  launchOnly(kernel: number, task = -1): void {
    this.queue(this.cuda.kernelArgs([...this.fixedArgs, { int: kernel }, { int: task }]));
  }

  /** Queues the zeroing of the counters and step counts, as loaded: the next step starts the count again. */
  resetCounters(): void {
    for (const c of this.counts) this.cuda.fill(c.ptr, 0, c.bytes);
  }

  /** Queues a copy of the watchdog's record; what it returns, called once the stream is past it, throws if it tripped. */
  watch(): () => void {
    const pinned = this.pinned.pop() ?? this.cuda.allocHost(4 * WATCHDOG_WORDS);
    this.cuda.downloadAsync(pinned.ptr, this.watchdog, 4 * WATCHDOG_WORDS);
    return () => {
      const record = Uint32Array.from(new Uint32Array(pinned.view, 0, WATCHDOG_WORDS));
      this.pinned.push(pinned);
      if (record[0] !== 0 && !this.stuck) this.stuck = this.stuckError(record);
      if (this.stuck) throw this.stuck;
    };
  }

  /** The tasks of the latest step queued, with their times: waits for the stream to get there. */
  readTimeline(): MegakernelTimeline {
    if (this.stuck) throw this.stuck;
    if (this.timeline === undefined) throw new Error(`the megakernel of @${this.graph} records no timeline: open the device with megakernel: { timeline: true }`);
    const words = new BigUint64Array(TIMELINE_WORDS * this.prepared.kernel.tasks);
    this.cuda.download(words, this.timeline);
    return { ...taskTimes(this.prepared.schedule, words), ...this.cuda.resources(this.fn) };
  }

  destroy(): void {
    for (const p of this.pinned) this.cuda.freeHost(p.ptr);
    for (const p of this.memory) this.cuda.free(p);
    this.pinned.length = 0;
    this.memory.length = 0;
  }

  /** Queues a launch of the whole grid with these arguments (refused once the watchdog stopped a step). */
  private queue(args: KernelArgs): void {
    if (this.stuck) throw this.stuck;
    this.cuda.launch(this.fn, this.prepared.kernel.blocks, this.prepared.kernel.threads, args, this.prepared.kernel.sharedBytes);
  }

  private alloc(bytes: number): DevicePtr {
    const p = this.cuda.alloc(bytes);
    this.memory.push(p);
    return p;
  }

  private stuckError(record: Uint32Array): Error {
    const r = Object.fromEntries(WATCHDOG_FIELDS.map((f, i) => [f, record[i]])) as Record<(typeof WATCHDOG_FIELDS)[number], number>;
    const s = this.prepared.schedule;
    const name = (k: number) => s.kernels[k]?.kernel.name ?? `#${k}`;
    const c = s.counters[r.counter];
    const counted = c ? `kernel ${c.kernel} ${name(c.kernel)}, tasks ${c.from} to ${c.to - 1}` : 'not one of the schedule\'s';
    return new Error(`the megakernel of @${this.graph} is stuck: block ${r.block}, task entry ${r.entry} (kernel ${r.kernel} ${name(r.kernel)}, task ${r.task}) `
      + `waited on counter ${r.counter} (${counted}) past the watchdog: it saw ${r.seen}, awaiting ${r.awaited}. `
      + 'Its counters are off from here on: load the program again');
  }
}
