// A compiled module on a CUDA device: weights uploaded once (16-bit ones still 16-bit), state, inputs, outputs
// and the memory plan's slots allocated once for the largest sizes, one NVRTC module per graph (kernels that
// differ only in their buffers, as every transformer layer does, share one function), and kernel arguments laid
// out once per size binding. Enqueuing a graph puts its launches on the stream; nothing here waits for the GPU.

import { CompiledGraph, CompiledModule } from '../../compiler/compile-module.ts';
import { Binding, evalSize, KernelIR } from '../../backends/kernel-ir.ts';
import { CUDA_BLOCK, renderCudaModule } from '../../backends/cuda/render-cuda.ts';
import { evalRule } from '../../ir/semantics.ts';
import { DType, dtypeBytes } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { Op } from '../../ir/ops.ts';
import { numel, resolveShape } from '../../ir/shape.ts';
import { HostTensor } from '../../ir/host-tensor.ts';
import { encodeBf16, encodeF16 } from '../safetensors.ts';
import { CudaDriver, DevicePtr, Handle, KernelArgs } from './driver.ts';
import { compileCuda, CompiledImage } from './nvrtc.ts';

/** A parameter as read from the checkpoint: decoded values, and the bytes as stored when there are any. */
export interface StoredTensor extends HostTensor {
  readonly raw?: Uint8Array;
}

export interface CudaProgramOptions {
  /** Largest value each symbolic size (S) takes: buffers are allocated for it. */
  readonly maxSizes: Readonly<Record<string, number>>;
  readonly cacheDir?: string;
}

export interface KernelProfile {
  readonly kernel: string;
  readonly rows: number;
  readonly ms: number;
  /** Bytes of the buffers it reads and writes (each counted once: an upper bound on what it must move). */
  readonly bytes: number;
  /** The last node it fuses, to tell kernels apart. */
  readonly last: string;
}

interface DeviceKernel {
  readonly ir: KernelIR;
  readonly fn: Handle;
  readonly sharedBytes: number;
}

/** Largest grid.x CUDA accepts; kernels grid-stride over any rows beyond it. */
const MAX_GRID = 2 ** 31 - 1;

/** Bytes a buffer of `elems` elements of `d` takes on the device. */
const byteSize = (d: DType, elems: number) => elems * dtypeBytes[d];

/** Values as the bytes of `d` in device memory. */
export function deviceBytes(d: DType, data: ArrayLike<number>): Uint8Array {
  const view = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  switch (d) {
    case DType.F32: return view(data instanceof Float32Array ? data : Float32Array.from(data));
    case DType.BF16: return view(encodeBf16(data));
    case DType.F16: return view(encodeF16(data));
    case DType.I32: return view(data instanceof Int32Array ? data : Int32Array.from(data));
    case DType.U32: return view(data instanceof Uint32Array ? data : Uint32Array.from(data));
    case DType.Bool: return Uint8Array.from(data, (x) => (x ? 1 : 0));
    default: return d satisfies never;
  }
}

function bufferKey(graph: string, b: Binding): string {
  switch (b.kind) {
    case 'param': case 'state': case 'input': return `${b.kind}:${b.name}`;
    case 'output': return `output:${graph}:${b.index}`;
    case 'temp': return `temp:${graph}:${b.slot}`;
    default: return b satisfies never;
  }
}

export class CudaProgram {
  readonly graphs = new Map<string, CompiledGraph>();
  /** How each graph's module was obtained (compiled now or read from the disk cache), for reports and tests. */
  readonly images = new Map<string, CompiledImage>();
  private readonly buffers = new Map<string, { ptr: DevicePtr; bytes: number }>();
  private readonly kernels = new Map<string, DeviceKernel[]>();
  private readonly args = new Map<string, KernelArgs[]>();
  private readonly modules: Handle[] = [];

  constructor(readonly cuda: CudaDriver, module: CompiledModule, param: (name: string) => StoredTensor, readonly opts: CudaProgramOptions) {
    for (const cg of module.graphs) this.graphs.set(cg.graph.name, cg);
    this.allocate(module);
    this.uploadParams(module, param);
    for (const cg of module.graphs) this.kernels.set(cg.graph.name, this.load(cg));
  }

  /** The device buffer behind a binding (graph outputs and slots are per graph; inputs, weights and state shared). */
  buffer(graph: string, b: Binding): DevicePtr {
    const key = bufferKey(graph, b);
    const buf = this.buffers.get(key);
    if (!buf) throw new Error(`no device buffer ${key}`);
    return buf.ptr;
  }

  bufferBytes(graph: string, b: Binding): number {
    return this.buffers.get(bufferKey(graph, b))?.bytes ?? 0;
  }

  kernelCount(graph: string): number {
    return this.kernels.get(graph)?.length ?? 0;
  }

  /** Puts every kernel of `graph` on the stream, with its symbolic sizes bound to `sizes`. */
  enqueue(graph: string, sizes: Readonly<Record<string, number>> = {}): void {
    const kernels = this.kernels.get(graph);
    if (!kernels) throw new Error(`no compiled graph @${graph}`);
    for (const [name, max] of Object.entries(this.opts.maxSizes)) {
      if ((sizes[name] ?? 0) > max) throw new RangeError(`${name}=${sizes[name]} exceeds the ${max} the buffers were allocated for`);
    }
    const args = this.argsFor(graph, kernels, sizes);
    kernels.forEach((k, i) => {
      const rows = evalSize(k.ir.rows, sizes);
      if (rows > 0) this.cuda.launch(k.fn, Math.min(rows, MAX_GRID), CUDA_BLOCK, args[i], k.sharedBytes);
    });
  }

  /**
   * Device time of each kernel of one run of `graph`, from events around every launch (which adds gaps, so the
   * sum exceeds a captured step), with the bytes its buffers hold: what a kernel-by-kernel profile reports.
   */
  profile(graph: string, sizes: Readonly<Record<string, number>> = {}): KernelProfile[] {
    const kernels = this.kernels.get(graph);
    if (!kernels) throw new Error(`no compiled graph @${graph}`);
    const args = this.argsFor(graph, kernels, sizes);
    const events = kernels.map(() => [this.cuda.event(), this.cuda.event()]);
    try {
      kernels.forEach((k, i) => {
        const rows = evalSize(k.ir.rows, sizes);
        this.cuda.record(events[i][0]);
        if (rows > 0) this.cuda.launch(k.fn, Math.min(rows, MAX_GRID), CUDA_BLOCK, args[i], k.sharedBytes);
        this.cuda.record(events[i][1]);
      });
      this.cuda.synchronize();
      return kernels.map((k, i) => ({
        kernel: k.ir.name,
        rows: evalSize(k.ir.rows, sizes),
        ms: this.cuda.elapsed(events[i][0], events[i][1]),
        bytes: k.ir.buffers.reduce((n, b) => n + byteSize(b.dtype, evalSize(b.elems, sizes)), 0),
        last: k.ir.fused[k.ir.fused.length - 1] ?? '',
      }));
    } finally {
      for (const [a, b] of events) {
        this.cuda.destroyEvent(a);
        this.cuda.destroyEvent(b);
      }
    }
  }

  /** Kernel arguments for one size binding, laid out once: buffer pointers, then the sizes the kernel reads. */
  private argsFor(graph: string, kernels: DeviceKernel[], sizes: Readonly<Record<string, number>>): KernelArgs[] {
    const key = `${graph}:${JSON.stringify(Object.entries(sizes).sort())}`;
    let args = this.args.get(key);
    if (!args) {
      args = kernels.map((k) => this.cuda.kernelArgs([
        ...k.ir.buffers.map((b) => this.buffer(graph, b.binding)),
        ...k.ir.sizes.map((s) => {
          if (sizes[s] === undefined) throw new Error(`kernel ${k.ir.name} of @${graph} reads size ${s}, which is not bound`);
          return { int: sizes[s] };
        }),
      ]));
      this.args.set(key, args);
    }
    return args;
  }

  // ---- memory ----

  private allocate(module: CompiledModule): void {
    const need = new Map<string, number>();
    const want = (key: string, bytes: number) => need.set(key, Math.max(need.get(key) ?? 0, bytes));
    const bindings = new Map(Object.entries(this.opts.maxSizes));
    for (const { graph: g, kernels } of module.graphs) {
      for (const v of g.inputs) want(`input:${v.name}`, byteSize(v.type.dtype, numel(resolveShape(v.type.shape, bindings))));
      for (const v of g.states) want(`state:${v.name}`, byteSize(v.type.dtype, numel(resolveShape(v.type.shape, bindings))));
      g.outputs.forEach((v, i) => want(`output:${g.name}:${i}`, byteSize(v.type.dtype, numel(resolveShape(v.type.shape, bindings)))));
      for (const k of kernels) {
        for (const b of k.buffers) want(bufferKey(g.name, b.binding), byteSize(b.dtype, evalSize(b.elems, this.opts.maxSizes)));
      }
    }
    for (const [key, bytes] of need) {
      // Rounded up so 16-byte vector loads of the last elements never leave the allocation.
      const rounded = Math.ceil(Math.max(bytes, 4) / 256) * 256;
      this.buffers.set(key, { ptr: this.cuda.alloc(rounded), bytes: rounded });
    }
    // State starts zeroed (the KV cache's unwritten positions are masked, but never garbage).
    for (const [key, b] of this.buffers) if (key.startsWith('state:')) this.cuda.fill(b.ptr, 0, b.bytes);
  }

  /** Zeroes every state buffer (a fresh KV cache). */
  resetState(): void {
    for (const [key, b] of this.buffers) if (key.startsWith('state:')) this.cuda.fill(b.ptr, 0, b.bytes);
  }

  private uploadParams(module: CompiledModule, param: (name: string) => StoredTensor): void {
    const uploaded = new Set<string>();
    for (const { graph: g } of module.graphs) {
      for (const v of g.params) {
        const key = `param:${v.name}`;
        const buf = this.buffers.get(key);
        // Only what some kernel reads: projections concatenated at load time are not uploaded apart.
        if (!buf || uploaded.has(key)) continue;
        const bytes = this.paramBytes(g, v.name!, param);
        if (bytes.byteLength > buf.bytes) throw new Error(`parameter ${v.name}: ${bytes.byteLength} bytes do not fit its ${buf.bytes}-byte buffer`);
        this.cuda.upload(buf.ptr, bytes);
        uploaded.add(key);
      }
    }
    // Staged copies of pageable memory finish before the host buffers are dropped.
    this.cuda.synchronize();
  }

  /**
   * A parameter's bytes as the device keeps them: as stored in the checkpoint, or derived once on the host
   * (concatenated projections: the stored bytes back to back; other rules on decoded values, encoded again).
   */
  private paramBytes(g: Graph, name: string, param: (name: string) => StoredTensor): Uint8Array {
    const v = g.params.find((p) => p.name === name);
    if (!v) throw new Error(`@${g.name} has no parameter ${name}`);
    const d = g.derivations.get(v);
    if (!d) {
      const t = param(name);
      const n = numel(v.type.shape as number[]);
      if (t.raw && t.dtype === v.type.dtype && t.raw.byteLength === byteSize(v.type.dtype, n)) return t.raw;
      return deviceBytes(v.type.dtype, t.data);
    }
    if (d.op === Op.Concat && d.attrs.axis === 0) {
      const parts = d.inputs.map((i) => this.paramBytes(g, i.name!, param));
      const out = new Uint8Array(parts.reduce((s, p) => s + p.byteLength, 0));
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.byteLength;
      }
      return out;
    }
    const decoded = (n: string): HostTensor => {
      const w = g.params.find((p) => p.name === n)!;
      const dd = g.derivations.get(w);
      if (!dd) return param(n);
      return evalRule(dd.op)!(dd.inputs.map((i) => decoded(i.name!)), dd.attrs, { dtype: w.type.dtype, shape: w.type.shape as number[] });
    };
    return deviceBytes(v.type.dtype, decoded(name).data);
  }

  // ---- code ----

  /** One module per graph (kernels with equal bodies share a function). */
  private load(cg: CompiledGraph): DeviceKernel[] {
    const g = cg.graph.name;
    const { source, functions } = renderCudaModule(cg.kernels, `${g}_`);
    const image = compileCuda(source, this.cuda.info.computeCapability, `${g}.cu`, this.opts.cacheDir);
    this.images.set(g, image);
    const mod = this.cuda.loadModule(image.image);
    this.modules.push(mod);
    const fns = new Map<string, Handle>();
    for (const f of functions) if (!fns.has(f.name)) fns.set(f.name, this.cuda.getFunction(mod, f.name, f.dynamicSharedBytes));
    return cg.kernels.map((k, i) => ({ ir: k, fn: fns.get(functions[i].name)!, sharedBytes: functions[i].dynamicSharedBytes }));
  }

  /** Loads extra hand-written code (the next-token kernel) for this device; returns its functions by name. */
  loadExtra(source: string, names: readonly string[], label: string): Map<string, Handle> {
    const image = compileCuda(source, this.cuda.info.computeCapability, `${label}.cu`, this.opts.cacheDir);
    this.images.set(label, image);
    const mod = this.cuda.loadModule(image.image);
    this.modules.push(mod);
    return new Map(names.map((n) => [n, this.cuda.getFunction(mod, n)]));
  }

  destroy(): void {
    this.cuda.synchronize();
    for (const b of this.buffers.values()) this.cuda.free(b.ptr);
    this.buffers.clear();
  }
}
