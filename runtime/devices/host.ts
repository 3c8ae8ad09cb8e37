// The host devices: `cpu` runs the compiled kernels as JavaScript functions (backends/cpu/render-js.ts), one call
// per kernel; `reference` runs each graph op by op on the reference interpreter (the oracle). Buffers are host
// memory allocated once per name at the largest sizes, as on a GPU; floats of every width are held as f32 rounded
// to their dtype, as the host keeps them. Work runs when it is queued, so reads answer at once.

import { JsKernelRuntime, renderJs } from '../../backends/cpu/render-js.ts';
import { evalSize, KernelIR } from '../../backends/kernel-ir.ts';
import { LoweredGraph, LoweredModule } from '../../backends/lowered.ts';
import { interpret } from '../../backends/reference/interpreter.ts';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { allocData, HostData, HostTensor, roundBf16, roundF16 } from '../../ir/host-tensor.ts';
import { randomUniform } from '../../ir/random.ts';
import { numel, resolveShape } from '../../ir/shape.ts';
import { BufferKey, bufferKey, checkSizes, planBuffers, Device, gemmFlops, kernelBytes, KernelRange, kernelSpan, KernelTime, LoadOptions, Mark, outputKey, Program, Recording, Sizes } from '../device.ts';
import { ParamStore } from '../params.ts';

type KernelFn = (buffers: HostData[], sizes: Sizes, round: JsKernelRuntime) => void;
const kernelRuntime: JsKernelRuntime = { bf16: roundBf16, f16: roundF16, random: randomUniform };

export class HostDevice implements Device {
  readonly description: string;
  constructor(readonly kind: 'cpu' | 'reference') {
    this.description = kind === 'cpu' ? 'cpu (kernels as JavaScript)' : 'reference interpreter';
  }

  load(module: LoweredModule, params: ParamStore, opts: LoadOptions): Program {
    return new HostProgram(this, module, params, opts);
  }

  destroy(): void {}
}

/** A typed-array view of `n` elements of dtype `d` over `buf`. */
function view(d: DType, buf: ArrayBuffer, n: number): HostData {
  const Ctor = allocData(d, 0).constructor as new (b: ArrayBuffer, o: number, n: number) => HostData;
  return new Ctor(buf, 0, n);
}

/** Bytes per element in host memory: floats of every width as f32, bools as bytes. */
const hostBytes = (d: DType) => (d === DType.Bool ? 1 : 4);

class HostProgram implements Program {
  private readonly buffers = new Map<BufferKey, ArrayBuffer>();
  private readonly graphs = new Map<string, LoweredGraph>();
  private readonly kernels = new Map<string, KernelFn[]>();
  private recording: (() => void)[] | undefined;
  private marks: number[] = [];

  constructor(readonly device: HostDevice, readonly module: LoweredModule, private readonly params: ParamStore,
    private readonly opts: LoadOptions) {
    for (const lg of module.graphs) {
      this.graphs.set(lg.graph.name, lg);
      if (device.kind === 'cpu') {
        if (lg.kernels.length === 0 && lg.graph.nodes.length > 0) throw new Error(`the cpu device runs compiled graphs; @${lg.graph.name} has no kernels`);
        // eslint-disable-next-line @typescript-eslint/no-implied-eval -- the kernel source is our own rendering
        this.kernels.set(lg.graph.name, lg.kernels.map((k) => new Function('b', 'sizes', 'round', renderJs(k)) as KernelFn));
      }
    }
    this.allocate();
  }

  graph(name: string): Graph {
    const lg = this.graphs.get(name);
    if (!lg) throw new Error(`no graph @${name} in the program (it has ${[...this.graphs.keys()].map((n) => '@' + n).join(', ')})`);
    return lg.graph;
  }

  has(key: BufferKey): boolean {
    return this.buffers.has(key);
  }

  write(key: BufferKey, t: HostTensor): void {
    this.queue(() => {
      const buf = this.buffer(key);
      const n = t.data.length;
      if (n * hostBytes(t.dtype) > buf.byteLength) throw new RangeError(`${n} elements do not fit buffer ${key}`);
      view(t.dtype, buf, n).set(t.data);
    });
  }

  zero(key: BufferKey): void {
    this.queue(() => new Uint8Array(this.buffer(key)).fill(0));
  }

  run(graph: string, sizes: Sizes, kernels?: KernelRange): void {
    const lg = this.graphs.get(graph);
    if (!lg) throw new Error(`no graph @${graph} in the program`);
    checkSizes(sizes, this.opts.maxSizes);
    if (kernels && this.device.kind === 'reference') throw new Error('the reference device runs graphs op by op: it has no kernels to run apart');
    const span = kernelSpan(lg.kernels.length, kernels);
    this.queue(() => (this.device.kind === 'cpu' ? this.runKernels(lg, sizes, span) : this.interpret(lg.graph, sizes)));
  }

  copy(from: BufferKey, to: BufferKey, dtype: DType, count: number): void {
    this.queue(() => view(dtype, this.buffer(to), count).set(view(dtype, this.buffer(from), count)));
  }

  record(body: () => void): Recording {
    const work: (() => void)[] = [];
    this.recording = work;
    try {
      body();
    } finally {
      this.recording = undefined;
    }
    return new HostRecording(work);
  }

  replay(r: Recording): void {
    if (!(r instanceof HostRecording)) throw new Error('replay: a recording of another device');
    for (const w of r.work) w();
  }

  read(key: BufferKey, dtype: DType, shape: readonly number[]): HostTensor {
    const n = numel(shape);
    const data = allocData(dtype, n);
    data.set(view(dtype, this.buffer(key), n));
    return { dtype, shape: [...shape], data };
  }

  mark(): Mark {
    return { id: this.marks.push(performance.now()) - 1 };
  }

  async elapsedMs(a: Mark, b: Mark): Promise<number> {
    return this.marks[b.id] - this.marks[a.id];
  }

  async finish(): Promise<void> {}

  kernelCount(graph: string): number {
    return this.graphs.get(graph)?.kernels.length ?? 0;
  }

  /** Host time of each kernel, run one after the other; starts on the same clock, after the first kernel's. */
  async profile(graph: string, sizes: Sizes): Promise<KernelTime[]> {
    const lg = this.graphs.get(graph);
    if (!lg) throw new Error(`no graph @${graph} in the program`);
    const fns = this.kernels.get(graph);
    if (!fns) throw new Error('the reference device runs graphs op by op: it has no kernels to profile');
    let origin: number | undefined;
    return lg.kernels.map((k, i) => {
      const start = performance.now();
      origin ??= start;
      fns[i](this.kernelBuffers(lg.graph, k, sizes), sizes, kernelRuntime);
      const end = performance.now();
      return {
        kernel: k.name, kind: String(lg.graph.kernels[i]?.attrs.kind ?? ''), startUs: (start - origin) * 1e3, us: (end - start) * 1e3,
        bytes: kernelBytes(k, sizes, (d, n) => n * hostBytes(d)), flops: gemmFlops(k, sizes),
        fused: k.fused, last: k.fused[k.fused.length - 1] ?? '',
      };
    });
  }

  destroy(): void {
    this.buffers.clear();
  }

  // ---- internals ----

  private queue(work: () => void): void {
    if (this.recording) this.recording.push(work);
    else work();
  }

  private buffer(key: BufferKey): ArrayBuffer {
    const b = this.buffers.get(key);
    if (!b) throw new Error(`no buffer ${key} in the program`);
    return b;
  }

  /**
   * Inputs, state, outputs and the memory plan's slots at the largest sizes; the weights the kernels read (the
   * reference reads every stored weight), from the store.
   */
  private allocate(): void {
    const { sizes, params } = planBuffers(this.module, this.opts.maxSizes, (d, n) => n * hostBytes(d));
    const reads = this.device.kind === 'cpu' ? params : this.module.graphs.flatMap(({ graph }) =>
      graph.params.filter((p) => !graph.derivations.has(p)).map((p) => ({ key: `param:${p.name}`, graph, name: p.name! })));
    for (const [key, bytes] of sizes) this.buffers.set(key, new ArrayBuffer(Math.max(bytes, 4)));
    for (const { key, graph, name } of reads) {
      if (this.buffers.has(key)) continue;
      const t = this.params.tensor(graph, name);
      this.buffers.set(key, new ArrayBuffer(Math.max(t.data.length * hostBytes(t.dtype), 4)));
      view(t.dtype, this.buffer(key), t.data.length).set(t.data);
    }
  }

  private kernelBuffers(g: Graph, k: KernelIR, sizes: Sizes): HostData[] {
    return k.buffers.map((b) => view(b.dtype, this.buffer(bufferKey(g, b.binding)), evalSize(b.elems, sizes)));
  }

  private runKernels(lg: LoweredGraph, sizes: Sizes, span: KernelRange): void {
    const fns = this.kernels.get(lg.graph.name)!;
    for (let i = span.from; i < span.to; i++) fns[i](this.kernelBuffers(lg.graph, lg.kernels[i], sizes), sizes, kernelRuntime);
  }

  /** The graph op by op: inputs and state as views of their buffers at this run's sizes; results copied back. */
  private interpret(g: Graph, sizes: Sizes): void {
    const bindings = new Map(Object.entries(sizes));
    const tensorOf = (key: BufferKey, dtype: DType, shape: Graph['inputs'][number]['type']['shape']): HostTensor => {
      const s = resolveShape(shape, bindings);
      return { dtype, shape: s, data: view(dtype, this.buffer(key), numel(s)) };
    };
    const inputs = Object.fromEntries(g.inputs.map((v) => [v.name!, tensorOf(`input:${v.name}`, v.type.dtype, v.type.shape)]));
    const states = new Map(g.states.map((v) => [v.name!, tensorOf(`state:${v.name}`, v.type.dtype, v.type.shape)]));
    const param = (name: string) => this.params.tensor(g, name);
    const outs = interpret(g, { inputs, param, states });
    outs.forEach((t, i) => view(t.dtype, this.buffer(outputKey(g, i)), t.data.length).set(t.data));
    for (const v of g.states) {
      const t = states.get(v.name!)!;
      view(t.dtype, this.buffer(`state:${v.name}`), t.data.length).set(t.data);
    }
  }
}

class HostRecording implements Recording {
  constructor(readonly work: readonly (() => void)[]) {}
  get commands(): number {
    return this.work.length;
  }
}
