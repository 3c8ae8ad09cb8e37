// The WebGPU device (Dawn through the `webgpu` package): every buffer of a module allocated once per name at the
// largest sizes, weights uploaded from the parameter store (16-bit ones still 16-bit, bools as u32 words), one
// pipeline and bind group per kernel, bindings over the device's limit split into chunks (webgpu-load.ts).
//
// The queue: runs, and copies as dispatches (webgpu/copy-kernel.ts), are encoded into one open compute pass and
// submitted in batches; zeroing ends the pass. After the queue was waited on (a write, read or mark submits what
// is pending), the GPU may be idle: the next batch is one run, each after it twice the last, up to runsPerSubmit, so
// the GPU starts while the host encodes the rest; that first run itself is submitted in parts of FIRST_PART_KERNELS
// kernels, each part twice the last (a prompt's 133 kernels take the host about 0.7 ms to encode, which the GPU
// would otherwise wait out). `queue.writeBuffer` takes effect at the next submit, ahead of
// anything still being encoded, so a write (and a graph's size uniforms, when its sizes change while runs that read
// the old ones are still unsubmitted) first submits what is pending. WebGPU cannot replay a command buffer, so a
// recording keeps the list of runs and copies and a replay encodes it again.

import { evalSize } from '../../backends/kernel-ir.ts';
import { LoweredModule } from '../../backends/lowered.ts';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { allocHost, HostTensor } from '../../ir/host-tensor.ts';
import { numel } from '../../ir/shape.ts';
import { BufferKey, checkSizes, Device, gemmFlops, kernelBytes, KernelRange, kernelSpan, KernelTime, LoadOptions, Mark, Program, Recording, Sizes } from '../device.ts';
import { ParamStore } from '../params.ts';
import { CopyDispatch, CopyKernels } from '../webgpu/copy-kernel.ts';
import { WebGpuUnavailableError } from '../webgpu/errors.ts';
import { pacedWait, pacesPolls } from '../webgpu/polling.ts';
import { deviceByteLength, fromDevice, toDevice } from './device-bytes.ts';
import { wgslFeatures } from '../../backends/wgsl/render-wgsl.ts';
import { align, allocateBuffers, dispatchKernel, GpuGraph, GpuKernel, prepareGraph, ShaderPipelines, sizeWords, wordBytes } from './webgpu-load.ts';

export { WebGpuUnavailableError };

export interface WebGpuOptions {
  /** Split storage bindings above this many bytes (default: the device's limit; tests force the split path). */
  readonly maxBindingBytes?: number;
  /** Time marks with timestamp queries where the adapter has them (default); false: host time when work is done. */
  readonly timestamps?: boolean;
  /** Runs encoded per submit at most (default 32). */
  readonly runsPerSubmit?: number;
  /** Use subgroups where the adapter has them (default); false: kernels combine through workgroup memory only. */
  readonly subgroups?: boolean;
  /**
   * GEMM tiles on f16 subgroup matrices where Dawn offers them (default; runtime/webgpu/device.ts says when);
   * false: f32 multiply-adds.
   */
  readonly subgroupMatrix?: boolean;
}

/** Opens the adapter Dawn finds; WebGpuUnavailableError where there is none. Dawn (Node only) loads here, lazily. */
export async function openWebGpu(opts: WebGpuOptions = {}): Promise<WebGpuDevice> {
  const { openDevice } = await import('../webgpu/device.ts');
  const subgroups = opts.subgroups ?? true;
  return new WebGpuDevice(await openDevice({ subgroups, subgroupMatrix: subgroups && (opts.subgroupMatrix ?? true) }), opts);
}

/** The adapter's vendor, architecture and device, as far as the implementation tells. */
function adapterName(device: GPUDevice): string {
  const info = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  return info ? [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') : 'webgpu';
}

export class WebGpuDevice implements Device {
  readonly kind = 'webgpu' as const;
  readonly description: string;
  private readonly programs = new Set<WebGpuProgram>();
  /** Starts a wait for the device (a Dawn promise): on a CPU adapter without a core kept busy (webgpu/polling.ts). */
  readonly wait: <T>(start: () => T) => T;

  /** Whether GEMM tiles of bf16 weights run on f16 subgroup matrices (else f32 multiply-adds). */
  readonly subgroupMatrix: boolean;

  constructor(readonly gpu: GPUDevice, readonly opts: WebGpuOptions = {}) {
    this.description = adapterName(gpu);
    this.subgroupMatrix = wgslFeatures(gpu).subgroupMatrix !== undefined;
    this.wait = pacesPolls(gpu) ? pacedWait : (start) => start();
  }

  /** Shader, binding and allocation mistakes surface here as one error, not as garbage output later. */
  async load(module: LoweredModule, params: ParamStore, opts: LoadOptions): Promise<Program> {
    this.gpu.pushErrorScope('out-of-memory');
    this.gpu.pushErrorScope('validation');
    let program: WebGpuProgram | undefined;
    let thrown: unknown;
    try {
      program = new WebGpuProgram(this, module, params, opts);
    } catch (e) {
      thrown = e;
    }
    const invalid = await this.wait(() => this.gpu.popErrorScope());
    const oom = await this.wait(() => this.gpu.popErrorScope());
    const error = invalid ?? oom;
    if (thrown !== undefined || error) {
      program?.destroy();
      if (thrown !== undefined) throw thrown;
      throw new Error(`WebGPU rejected the compiled program: ${error!.message}`);
    }
    this.programs.add(program!);
    return program!;
  }

  forget(p: WebGpuProgram): void {
    this.programs.delete(p);
  }

  destroy(): void {
    for (const p of this.programs) p.destroy();
    this.gpu.destroy();
  }
}

type Command =
  | { readonly k: 'run'; readonly graph: GpuGraph; readonly sizes: Sizes; readonly groups: readonly number[] }
  | { readonly k: 'copy'; readonly dispatches: readonly CopyDispatch[] }
  | { readonly k: 'zero'; readonly buf: GPUBuffer };

class WebGpuRecording implements Recording {
  constructor(readonly program: WebGpuProgram, readonly list: readonly Command[]) {}
  get commands(): number {
    return this.list.length;
  }
}

interface MarkQuery {
  readonly set: GPUQuerySet;
  readonly resolve: GPUBuffer;
  readonly readback: GPUBuffer;
}

/**
 * Kernels in the first part of a batch's first run (WebGpuProgram's queue); each later part twice the last. Measured
 * on the H200 (BENCHMARKS.md, twenty-third session), a 1B model's 32-token prompt on the device's clock: 3.93–4.10 ms
 * submitted whole, 2.70–2.93 in parts; only the first 4 early and the rest whole gained nothing.
 */
const FIRST_PART_KERNELS = 4;

class WebGpuProgram implements Program {
  private readonly gpu: GPUDevice;
  private readonly buffers: Map<BufferKey, GPUBuffer>;
  private readonly graphs = new Map<string, GpuGraph>();
  private readonly maxBinding: number;
  private readonly timestamps: boolean;
  private readonly runsPerSubmit: number;
  private readonly copies: CopyKernels;
  private encoder: GPUCommandEncoder | undefined;
  private pass: GPUComputePassEncoder | undefined;
  private encoded = 0;
  /** Runs the batch being encoded is submitted at. */
  private batchRuns = 1;
  private submitted = 0;
  private recording: Command[] | undefined;
  private readonly marks: Promise<number>[] = [];
  private readonly markPool: MarkQuery[] = [];
  private readonly stagingPool = new Map<number, GPUBuffer[]>();
  private destroyed = false;

  constructor(readonly device: WebGpuDevice, readonly module: LoweredModule, params: ParamStore, private readonly opts: LoadOptions) {
    this.gpu = device.gpu;
    this.maxBinding = device.opts.maxBindingBytes ?? this.gpu.limits.maxStorageBufferBindingSize;
    this.timestamps = (device.opts.timestamps ?? true) && this.gpu.features.has('timestamp-query');
    this.runsPerSubmit = device.opts.runsPerSubmit ?? 32;
    this.copies = new CopyKernels(this.gpu, this.maxBinding);
    for (const lg of module.graphs) {
      if (lg.kernels.length === 0 && lg.graph.nodes.length > 0) throw new Error(`the webgpu device runs compiled graphs; @${lg.graph.name} has no kernels`);
    }
    this.buffers = allocateBuffers(this.gpu, module, params, opts.maxSizes);
    const pipelines = new Map<string, ShaderPipelines>();
    for (const lg of module.graphs) this.graphs.set(lg.graph.name, prepareGraph(this.gpu, lg, this.buffers, this.maxBinding, pipelines));
  }

  graph(name: string): Graph {
    return this.graphOf(name).lowered.graph;
  }

  has(key: BufferKey): boolean {
    return this.buffers.has(key);
  }

  /** An odd count of 16-bit values writes a zero half after them (writes move whole words). */
  write(key: BufferKey, t: HostTensor): void {
    this.usable('write');
    const buf = this.buffer(key);
    const bytes = toDevice(t, 'words');
    if (align(bytes.byteLength, 4) > buf.size) throw new RangeError(`${t.data.length} elements do not fit buffer ${key}`);
    // Work encoded before the write must reach the queue first.
    this.flush();
    this.gpu.queue.writeBuffer(buf, 0, bytes.byteLength % 4 ? padded(bytes) : bytes);
  }

  zero(key: BufferKey): void {
    this.queue({ k: 'zero', buf: this.buffer(key) });
  }

  run(graph: string, sizes: Sizes, kernels?: KernelRange): void {
    const g = this.graphOf(graph);
    checkSizes(sizes, this.opts.maxSizes);
    // Kernels outside the range are dispatched with no workgroups, that is, not at all.
    const { from, to } = kernelSpan(g.kernels.length, kernels);
    const groups = g.kernels.map((k, i) => (i >= from && i < to ? evalSize(k.rows, sizes) : 0));
    this.queue({ k: 'run', graph: g, sizes: { ...sizes }, groups });
  }

  /** An odd count of 16-bit elements copies the half word after them too (copies move whole words). */
  copy(from: BufferKey, to: BufferKey, dtype: DType, count: number): void {
    const [src, dst] = [this.buffer(from), this.buffer(to)];
    const bytes = wordBytes(dtype, count);
    if (bytes > src.size || bytes > dst.size) throw new RangeError(`copy of ${count} ${dtype} elements from ${from} to ${to}: a buffer is smaller`);
    if (src === dst) throw new Error(`copy from ${from} to itself`);
    if (bytes > 0) this.queue({ k: 'copy', dispatches: this.copies.prepare(src, dst, bytes) });
  }

  record(body: () => void): Recording {
    this.usable('record');
    const list: Command[] = [];
    this.recording = list;
    try {
      body();
    } finally {
      this.recording = undefined;
    }
    return new WebGpuRecording(this, list);
  }

  replay(r: Recording): void {
    if (!(r instanceof WebGpuRecording) || r.program !== this) throw new Error('replay: a recording of another program');
    for (const c of r.list) this.queue(c);
  }

  read(key: BufferKey, dtype: DType, shape: readonly number[]): Promise<HostTensor> {
    this.usable('read');
    const buf = this.buffer(key);
    const n = numel(shape);
    const bytes = wordBytes(dtype, n);
    if (bytes > buf.size) throw new RangeError(`${n} elements of ${dtype} are more than buffer ${key} holds`);
    if (n === 0) return Promise.resolve(allocHost(dtype, shape));
    const staging = this.staging(bytes);
    this.endPass();
    this.commands().copyBufferToBuffer(buf, 0, staging, 0, bytes);
    this.flush();
    return this.device.wait(() => staging.mapAsync(GPUMapMode.READ)).then(() => {
      const t = fromDevice(dtype, shape, new Uint8Array(staging.getMappedRange(0, bytes)), 'words');
      staging.unmap();
      this.stagingPool.get(staging.size)!.push(staging);
      return t;
    });
  }

  mark(): Mark {
    this.usable('mark');
    const id = this.marks.length;
    let at: Promise<number>;
    if (this.timestamps) {
      // An empty pass whose end is stamped once everything before it has finished.
      const q = this.markPool.pop() ?? this.markQuery();
      this.endPass();
      const enc = this.commands();
      enc.beginComputePass({ timestampWrites: { querySet: q.set, endOfPassWriteIndex: 0 } }).end();
      enc.resolveQuerySet(q.set, 0, 1, q.resolve, 0);
      enc.copyBufferToBuffer(q.resolve, 0, q.readback, 0, 8);
      this.flush();
      at = this.device.wait(() => q.readback.mapAsync(GPUMapMode.READ)).then(() => {
        const ns = new BigUint64Array(q.readback.getMappedRange(0, 8))[0];
        q.readback.unmap();
        this.markPool.push(q);
        return Number(ns) / 1e6;
      });
    } else {
      this.flush();
      // Host time: polled at once, so the mark is not late by a paced poll.
      at = this.gpu.queue.onSubmittedWorkDone().then(() => performance.now());
    }
    at.catch(() => {}); // awaited by elapsedMs, if ever
    this.marks.push(at);
    return { id };
  }

  async elapsedMs(a: Mark, b: Mark): Promise<number> {
    const [ta, tb] = [this.marks[a.id], this.marks[b.id]];
    if (!ta || !tb) throw new Error('elapsedMs: a mark of another program');
    return (await tb) - (await ta);
  }

  async finish(): Promise<void> {
    this.usable('finish');
    this.flush();
    await this.device.wait(() => this.gpu.queue.onSubmittedWorkDone());
  }

  kernelCount(graph: string): number {
    return this.graphs.get(graph)?.kernels.length ?? 0;
  }

  /**
   * GPU time per kernel from timestamps around one-dispatch passes, each start from its pass's first timestamp;
   * host time per submit (each awaited before the next) without the feature.
   */
  async profile(graph: string, sizes: Sizes): Promise<KernelTime[]> {
    this.usable('profile');
    const g = this.graphOf(graph);
    this.flush();
    this.bindSizes(g, sizes);
    const n = g.kernels.length;
    const us: number[] = [];
    const startUs: number[] = [];
    const dispatch = (pass: GPUComputePassEncoder, k: GpuKernel) => dispatchKernel(pass, k, evalSize(k.rows, sizes));
    if (this.timestamps && n > 0) {
      const querySet = this.gpu.createQuerySet({ type: 'timestamp', count: 2 * n });
      const resolve = this.gpu.createBuffer({ size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      const read = this.gpu.createBuffer({ size: 16 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const enc = this.gpu.createCommandEncoder();
      g.kernels.forEach((k, i) => {
        const pass = enc.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
        dispatch(pass, k);
        pass.end();
      });
      enc.resolveQuerySet(querySet, 0, 2 * n, resolve, 0);
      enc.copyBufferToBuffer(resolve, 0, read, 0, read.size);
      this.gpu.queue.submit([enc.finish()]);
      await this.device.wait(() => read.mapAsync(GPUMapMode.READ));
      const t = new BigUint64Array(read.getMappedRange().slice(0));
      read.unmap();
      for (let i = 0; i < n; i++) {
        startUs.push(Number(t[2 * i] - t[0]) / 1e3);
        us.push(Number(t[2 * i + 1] - t[2 * i]) / 1e3);
      }
      [querySet, resolve, read].forEach((x) => x.destroy());
    } else {
      let origin: number | undefined;
      for (const k of g.kernels) {
        const enc = this.gpu.createCommandEncoder();
        const pass = enc.beginComputePass();
        dispatch(pass, k);
        pass.end();
        const start = performance.now();
        origin ??= start;
        this.gpu.queue.submit([enc.finish()]);
        await this.gpu.queue.onSubmittedWorkDone(); // host time: polled at once
        startUs.push((start - origin) * 1e3);
        us.push((performance.now() - start) * 1e3);
      }
    }
    const graphKernels = g.lowered.graph.kernels;
    return g.kernels.map((k, i) => ({
      kernel: k.ir.name, kind: String(graphKernels[i]?.attrs.kind ?? ''), startUs: startUs[i], us: us[i],
      bytes: kernelBytes(k.ir, sizes, (d, n) => deviceByteLength(d, n, 'words')), flops: gemmFlops(k.ir, sizes),
      fused: k.ir.fused, last: k.ir.fused[k.ir.fused.length - 1] ?? '',
    }));
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.pass = undefined;
    this.encoder = undefined;
    for (const b of this.buffers.values()) b.destroy();
    for (const g of this.graphs.values()) [g.uniform, g.workspace].forEach((b) => b?.destroy());
    for (const pool of this.stagingPool.values()) for (const b of pool) b.destroy();
    for (const q of this.markPool) [q.set, q.resolve, q.readback].forEach((x) => x.destroy());
    this.buffers.clear();
    this.device.forget(this);
  }

  // ---- the queue ----

  private usable(what: string): void {
    if (this.destroyed) throw new Error(`${what}: the program is destroyed`);
    if (this.recording) throw new Error(`${what} inside record(): a recording holds runs, copies and zeroing only`);
  }

  private queue(c: Command): void {
    if (this.destroyed) throw new Error(`${c.k}: the program is destroyed`);
    if (this.recording) {
      this.recording.push(c);
      return;
    }
    switch (c.k) {
      case 'run': {
        this.bindSizes(c.graph, c.sizes);
        // The batch's first run (the GPU may be idle) in parts, each submitted as soon as it is encoded.
        let part = this.encoded === 0 && this.batchRuns === 1 ? FIRST_PART_KERNELS : Infinity;
        let inPart = 0;
        c.graph.kernels.forEach((k, i) => {
          dispatchKernel(this.computePass(), k, c.groups[i]);
          if (++inPart < part || i + 1 === c.graph.kernels.length) return;
          this.submitEncoded();
          [part, inPart] = [2 * part, 0];
        });
        c.graph.pending = true;
        break;
      }
      case 'copy': {
        const pass = this.computePass();
        for (const d of c.dispatches) {
          pass.setPipeline(d.pipeline);
          pass.setBindGroup(0, d.bindGroup);
          pass.dispatchWorkgroups(d.groups);
        }
        return;
      }
      case 'zero':
        this.endPass();
        this.commands().clearBuffer(c.buf);
        return;
      default: c satisfies never;
    }
    if (++this.encoded >= this.batchRuns) {
      const next = Math.min(2 * this.batchRuns, this.runsPerSubmit);
      this.flush();
      this.batchRuns = next;
    }
  }

  /** Puts a graph's sizes in its uniform; runs still unsubmitted that read other sizes are submitted first. */
  private bindSizes(g: GpuGraph, sizes: Sizes): void {
    const key = g.uses.map((s) => sizes[s]).join(',');
    if (g.bound === key) return;
    if (g.pending) this.flush();
    this.gpu.queue.writeBuffer(g.uniform, 0, sizeWords(g, sizes));
    g.bound = key;
  }

  private commands(): GPUCommandEncoder {
    return (this.encoder ??= this.gpu.createCommandEncoder());
  }

  private computePass(): GPUComputePassEncoder {
    return (this.pass ??= this.commands().beginComputePass());
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = undefined;
  }

  /** Submits everything encoded; the next batch starts at one run. */
  private flush(): void {
    this.batchRuns = 1;
    if (!this.encoder) return;
    this.submitEncoded();
    this.encoded = 0;
    for (const g of this.graphs.values()) g.pending = false;
  }

  /** Submits what is encoded so far (the batch goes on: a part of a run, or the whole batch from flush). */
  private submitEncoded(): void {
    this.endPass();
    this.gpu.queue.submit([this.encoder!.finish()]);
    this.encoder = undefined;
    this.submitted++;
  }

  /** Command buffers submitted so far (how the queue batches its work; tests read it). */
  get submissions(): number {
    return this.submitted;
  }

  private staging(bytes: number): GPUBuffer {
    const size = Math.max(256, 2 ** Math.ceil(Math.log2(bytes)));
    let pool = this.stagingPool.get(size);
    if (!pool) this.stagingPool.set(size, (pool = []));
    return pool.pop() ?? this.gpu.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'read-back' });
  }

  private markQuery(): MarkQuery {
    return {
      set: this.gpu.createQuerySet({ type: 'timestamp', count: 1 }),
      resolve: this.gpu.createBuffer({ size: 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC }),
      readback: this.gpu.createBuffer({ size: 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }),
    };
  }

  // ---- lookups ----

  private graphOf(name: string): GpuGraph {
    const g = this.graphs.get(name);
    if (!g) throw new Error(`no graph @${name} in the program (it has ${[...this.graphs.keys()].map((n) => '@' + n).join(', ')})`);
    return g;
  }

  private buffer(key: BufferKey): GPUBuffer {
    const b = this.buffers.get(key);
    if (!b) throw new Error(`no buffer ${key} in the program`);
    return b;
  }
}

function padded(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(align(b.byteLength, 4));
  out.set(b);
  return out;
}
