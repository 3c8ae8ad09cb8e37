// A compiled module on a WebGPU device: weights uploaded once (16-bit ones still 16-bit), state and intermediate
// buffers allocated once, one pipeline and one bind group per kernel. Encoding a graph records its dispatches into
// a compute pass; nothing here waits for the GPU.

import { CompiledModule, CompiledGraph } from '../../compiler/compile-module.ts';
import { Binding, evalSize, KernelIR } from '../../backends/kernel-ir.ts';
import { evalRule } from '../../ir/semantics.ts';
import { BufferLayout, perWord, renderWgsl } from '../../backends/wgsl/render-wgsl.ts';
import { DType } from '../../ir/dtype.ts';
import { HostTensor } from '../../ir/host-tensor.ts';
import { encodeBf16, encodeF16 } from '../safetensors.ts';

/** A parameter as read from the checkpoint: decoded values, and the bytes as stored. */
export interface StoredTensor extends HostTensor {
  readonly raw?: Uint8Array;
}

interface DeviceKernel {
  readonly ir: KernelIR;
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly sizes: GPUBuffer;
}

export interface ProgramOptions {
  /** Largest value a symbolic size (S) takes: buffers are allocated for it. */
  readonly maxSizes: Readonly<Record<string, number>>;
  /** Split bindings above this many bytes (default: the device's maxStorageBufferBindingSize). */
  readonly maxBindingBytes?: number;
}

const byteSize = (d: DType, elems: number) => Math.ceil(elems / perWord(d)) * 4;

export class WebGpuProgram {
  private readonly buffers = new Map<string, GPUBuffer>();
  private readonly kernels = new Map<string, DeviceKernel[]>();
  readonly graphs = new Map<string, CompiledGraph>();
  private readonly maxBinding: number;

  constructor(readonly device: GPUDevice, module: CompiledModule, param: (name: string) => StoredTensor, readonly opts: ProgramOptions) {
    this.maxBinding = opts.maxBindingBytes ?? device.limits.maxStorageBufferBindingSize;
    for (const cg of module.graphs) this.graphs.set(cg.graph.name, cg);
    for (const cg of module.graphs) this.uploadParams(cg, param);
    this.allocate(module);
    for (const cg of module.graphs) this.kernels.set(cg.graph.name, cg.kernels.map((k) => this.prepareKernel(cg, k)));
  }

  /** The device buffer behind a binding (graph inputs and outputs are per graph; weights and state shared). */
  buffer(graph: string, b: Binding): GPUBuffer {
    const key = bufferKey(graph, b);
    const buf = this.buffers.get(key);
    if (!buf) throw new Error(`no device buffer ${key}`);
    return buf;
  }

  /** Sets the symbolic sizes of a graph's next run (before encoding it). */
  setSizes(graph: string, sizes: Readonly<Record<string, number>>): void {
    for (const k of this.kernels.get(graph)!) this.device.queue.writeBuffer(k.sizes, 0, sizeWords(k.ir, sizes));
  }

  /** Records every kernel of a graph into a compute pass. */
  encode(pass: GPUComputePassEncoder, graph: string, sizes: Readonly<Record<string, number>>): void {
    for (const k of this.kernels.get(graph)!) {
      const groups = evalSize(k.ir.rows, sizes);
      pass.setPipeline(k.pipeline);
      pass.setBindGroup(0, k.bindGroup);
      pass.dispatchWorkgroups(Math.min(groups, 65535), Math.ceil(groups / 65535));
    }
  }

  /** GPU time of each kernel of one run of a graph, in microseconds (needs the timestamp-query feature). */
  async profile(graph: string, sizes: Readonly<Record<string, number>>): Promise<{ name: string; kind: string; us: number }[]> {
    const kernels = this.kernels.get(graph)!;
    const querySet = this.device.createQuerySet({ type: 'timestamp', count: 2 * kernels.length });
    const resolve = this.device.createBuffer({ size: 16 * kernels.length, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = this.device.createBuffer({ size: 16 * kernels.length, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    kernels.forEach((k, i) => {
      const pass = enc.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      pass.setPipeline(k.pipeline);
      pass.setBindGroup(0, k.bindGroup);
      const groups = evalSize(k.ir.rows, sizes);
      pass.dispatchWorkgroups(Math.min(groups, 65535), Math.ceil(groups / 65535));
      pass.end();
    });
    enc.resolveQuerySet(querySet, 0, 2 * kernels.length, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, read.size);
    this.device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    const cg = this.graphs.get(graph)!;
    return kernels.map((k, i) => ({
      name: k.ir.name,
      kind: String(cg.graph.kernels[i].attrs.kind),
      us: Number(t[2 * i + 1] - t[2 * i]) / 1e3,
    }));
  }

  kernelCount(graph: string): number {
    return this.kernels.get(graph)!.length;
  }

  private uploadParams(cg: CompiledGraph, param: (name: string) => StoredTensor): void {
    const g = cg.graph;
    const host = new Map<string, StoredTensor>();
    const hostParam = (name: string): StoredTensor => {
      let t = host.get(name);
      if (t) return t;
      const v = g.params.find((p) => p.name === name)!;
      const d = g.derivations.get(v);
      // Derived weights (concatenated projections) are computed once on the host from exactly decoded values,
      // so re-encoding them to their 16-bit dtype is lossless.
      t = d ? evalRule(d.op)!(d.inputs.map((i) => hostParam(i.name!)), d.attrs, { dtype: v.type.dtype, shape: v.type.shape as number[] }) : param(name);
      host.set(name, t);
      return t;
    };
    for (const k of cg.kernels) {
      for (const b of k.buffers) {
        if (b.binding.kind === 'param' && !this.buffers.has(bufferKey(g.name, b.binding))) {
          this.upload(bufferKey(g.name, b.binding), deviceBytes(hostParam(b.binding.name)));
        }
      }
    }
  }

  /** Every other buffer, zeroed, at the largest size any kernel of any graph uses it with. */
  private allocate(module: CompiledModule): void {
    const need = new Map<string, number>();
    for (const cg of module.graphs) {
      const temps = slotBytes(cg, this.opts.maxSizes);
      for (const k of cg.kernels) {
        for (const b of k.buffers) {
          if (b.binding.kind === 'param') continue;
          const bytes = b.binding.kind === 'temp' ? temps.get(b.binding.slot)! : byteSize(b.dtype, evalSize(b.elems, this.opts.maxSizes));
          const key = bufferKey(cg.graph.name, b.binding);
          need.set(key, Math.max(need.get(key) ?? 0, bytes));
        }
      }
    }
    for (const [key, bytes] of need) {
      this.buffers.set(key, this.device.createBuffer({
        size: Math.max(16, align(bytes, 16)),
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
        label: key,
      }));
    }
  }

  private upload(key: string, bytes: Uint8Array): void {
    const buf = this.device.createBuffer({ size: Math.max(16, align(bytes.byteLength, 16)), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, mappedAtCreation: true });
    new Uint8Array(buf.getMappedRange()).set(bytes);
    buf.unmap();
    this.buffers.set(key, buf);
  }

  private prepareKernel(cg: CompiledGraph, ir: KernelIR): DeviceKernel {
    const graph = cg.graph.name;
    const maxSizes = this.opts.maxSizes;
    // Bindings over the device's limit are split into chunks the shader indexes through load_bN().
    const chunkBytes = Math.floor(this.maxBinding / 256) * 256;
    const layouts: BufferLayout[] = ir.buffers.map((b) => {
      const chunks = Math.max(1, Math.ceil(this.buffer(graph, b.binding).size / chunkBytes));
      return { chunks, chunkWords: chunks > 1 ? chunkBytes / 4 : 0 };
    });
    const sizes = this.device.createBuffer({ size: 16 * Math.ceil((1 + ir.sizes.length) / 4), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    const { code, bindings } = renderWgsl(ir, { layouts, subgroups: this.device.features.has('subgroups') });
    const entries: GPUBindGroupEntry[] = bindings.map((b, binding) => {
      if (b.kind === 'sizes') return { binding, resource: { buffer: sizes } };
      const buf = this.buffer(graph, ir.buffers[b.buffer].binding);
      if (b.kind === 'vec4') return { binding, resource: { buffer: buf } };
      const offset = b.chunk * chunkBytes;
      return { binding, resource: { buffer: buf, offset, size: Math.min(chunkBytes, buf.size - offset) } };
    });
    // An explicit layout: 'auto' would drop bindings the shader happens not to read (a buffer read only as vec4s).
    const layout = this.device.createBindGroupLayout({
      entries: bindings.map((b, binding) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b.kind === 'sizes' ? 'uniform' : b.kind === 'chunk' && ir.buffers[b.buffer].written ? 'storage' : 'read-only-storage' },
      })),
    });
    const module = this.device.createShaderModule({ code, label: `${graph}.${ir.name}` });
    const pipeline = this.device.createComputePipeline({
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: 'main' },
      label: `${graph}.${ir.name}`,
    });
    const bindGroup = this.device.createBindGroup({ layout, entries });
    this.device.queue.writeBuffer(sizes, 0, sizeWords(ir, maxSizes));
    return { ir, pipeline, bindGroup, sizes };
  }
}

/** Weights, state and outputs are named by binding; temps and inputs are per graph. */
function bufferKey(graph: string, b: Binding): string {
  switch (b.kind) {
    case 'param': case 'state': return `${b.kind}:${b.name}`;
    case 'input': return `input:${b.name}`;
    case 'output': return `${graph}:output:${b.index}`;
    case 'temp': return `${graph}:temp:${b.slot}`;
    default: return b satisfies never;
  }
}

/** Bytes each memory-plan slot needs at the largest sizes. */
function slotBytes(cg: CompiledGraph, sizes: Readonly<Record<string, number>>): Map<number, number> {
  const out = new Map<number, number>();
  for (const k of cg.kernels) {
    for (const b of k.buffers) {
      if (b.binding.kind !== 'temp') continue;
      const bytes = byteSize(b.dtype, evalSize(b.elems, sizes));
      out.set(b.binding.slot, Math.max(out.get(b.binding.slot) ?? 0, bytes));
    }
  }
  return out;
}

function sizeWords(ir: KernelIR, sizes: Readonly<Record<string, number>>): Int32Array {
  const words = new Int32Array(4 * Math.ceil((1 + ir.sizes.length) / 4));
  words[0] = evalSize(ir.rows, sizes);
  ir.sizes.forEach((s, i) => { words[1 + i] = sizes[s]; });
  return words;
}

/** A host tensor as the device stores it: 16-bit floats as their own bits, bools as u32. */
export function deviceBytes(t: StoredTensor): Uint8Array {
  switch (t.dtype) {
    case DType.BF16: case DType.F16: {
      const bits = t.raw ?? new Uint8Array((t.dtype === DType.BF16 ? encodeBf16(t.data) : encodeF16(t.data)).buffer);
      return padTo4(bits);
    }
    case DType.Bool: return new Uint8Array(Uint32Array.from(t.data).buffer);
    default: return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  }
}

function padTo4(b: Uint8Array): Uint8Array {
  if (b.byteLength % 4 === 0) return b;
  const out = new Uint8Array(align(b.byteLength, 4));
  out.set(b);
  return out;
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;

