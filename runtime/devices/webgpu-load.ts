// Loading a module on a WebGPU device: its buffers allocated once per name at the largest sizes, weights uploaded
// from the parameter store, and per graph one pipeline and bind group per kernel with the sizes in one uniform.

import { evalSize, KernelIR, KExpr, varsOf } from '../../backends/kernel-ir.ts';
import { LoweredGraph, LoweredModule } from '../../backends/lowered.ts';
import { bindingType, BufferLayout, narrowWgsl, renderWgsl, wgslFeatures } from '../../backends/wgsl/render-wgsl.ts';
import { DType } from '../../ir/dtype.ts';
import { bufferKey, BufferKey, planBuffers, Sizes } from '../device.ts';
import { ParamStore } from '../params.ts';
import { boolWords, deviceByteLength } from './device-bytes.ts';

export interface GpuKernel {
  readonly ir: KernelIR;
  /** Workgroups it dispatches (the schedule's grid). */
  readonly rows: KExpr;
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  /** A second entry point dispatched right after, with the same bind group (RenderedWgsl.merge). */
  readonly merge?: { readonly pipeline: GPUComputePipeline; readonly rows: number };
}

/** Dispatches a kernel's `groups` workgroups (rows past the largest x dimension go along y), then its merge. */
export function dispatchKernel(pass: GPUComputePassEncoder, k: GpuKernel, groups: number): void {
  if (groups <= 0) return;
  pass.setPipeline(k.pipeline);
  pass.setBindGroup(0, k.bindGroup);
  pass.dispatchWorkgroups(Math.min(groups, MAX_GROUPS), Math.ceil(groups / MAX_GROUPS));
  if (k.merge) {
    pass.setPipeline(k.merge.pipeline);
    pass.dispatchWorkgroups(k.merge.rows);
  }
}

export interface GpuGraph {
  readonly lowered: LoweredGraph;
  readonly kernels: readonly GpuKernel[];
  /** The workspace its kernels with a merge share (one at a time: each merge runs before the next kernel). */
  readonly workspace?: GPUBuffer;
  /** Every kernel's size words, at `stride`-byte offsets. */
  readonly uniform: GPUBuffer;
  readonly stride: number;
  /** The sizes any kernel reads (arguments and row counts). */
  readonly uses: readonly string[];
  /** The sizes the uniform holds (or will at the next submit). */
  bound?: string;
  /** Runs of it are encoded and not yet submitted. */
  pending: boolean;
}

export const align = (n: number, a: number) => Math.ceil(n / a) * a;
/** Workgroups a dispatch takes along one dimension (WebGPU's default limit); more continue along y. */
export const MAX_GROUPS = 65535;
/** Device bytes of `n` elements, as WebGPU sizes and copies want them (whole words). */
export const wordBytes = (d: DType, n: number) => align(deviceByteLength(d, n, 'words'), 4);

/**
 * Weights a kernel reads, from the store (concatenated projections' parts are not uploaded apart); every input,
 * state and output of every graph, and every buffer a kernel binds, at the largest size any graph uses it with
 * (zeroed, as WebGPU buffers start).
 */
export function allocateBuffers(gpu: GPUDevice, module: LoweredModule, params: ParamStore, maxSizes: Sizes): Map<BufferKey, GPUBuffer> {
  const buffers = new Map<BufferKey, GPUBuffer>();
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const { sizes: need, params: uses } = planBuffers(module, maxSizes, wordBytes);
  for (const { key, graph, name } of uses) {
    const stored = params.bytes(graph, name);
    const dtype = graph.params.find((p) => p.name === name)!.type.dtype;
    const bytes = dtype === DType.Bool ? boolWords(stored) : stored;
    const buf = gpu.createBuffer({ size: Math.max(16, align(bytes.byteLength, 16)), usage, mappedAtCreation: true, label: key });
    new Uint8Array(buf.getMappedRange()).set(bytes);
    buf.unmap();
    buffers.set(key, buf);
  }
  for (const [key, bytes] of need) buffers.set(key, gpu.createBuffer({ size: Math.max(16, align(bytes, 16)), usage, label: key }));
  return buffers;
}

/** A shader's pipelines: `main`'s, and its second entry point's (RenderedWgsl.merge) where it has one. */
export interface ShaderPipelines {
  readonly main: GPUComputePipeline;
  readonly merge?: GPUComputePipeline;
}

/**
 * A graph's kernels as pipelines and bind groups (kernels with the same shader, as every layer's are, share a
 * pipeline through `pipelines`). Bindings over `maxBinding` bytes are split into chunks the shader indexes.
 */
export function prepareGraph(gpu: GPUDevice, lg: LoweredGraph, buffers: ReadonlyMap<BufferKey, GPUBuffer>, maxBinding: number,
  pipelines: Map<string, ShaderPipelines>): GpuGraph {
  const g = lg.graph;
  const wordsBytes = (k: KernelIR) => 16 * Math.ceil((1 + k.sizes.length) / 4);
  const stride = align(Math.max(16, ...lg.kernels.map(wordsBytes)), gpu.limits.minUniformBufferOffsetAlignment);
  const uniform = gpu.createBuffer({ size: stride * Math.max(1, lg.kernels.length), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: `${g.name}:sizes` });
  const chunkBytes = Math.floor(maxBinding / 256) * 256;
  if (chunkBytes === 0) throw new RangeError(`bindings of ${maxBinding} bytes: chunks start at multiples of 256`);
  const features = wgslFeatures(gpu);
  const rendered = narrowWgsl(lg.kernels, features).map((ir) => {
    const bufs = ir.buffers.map((b) => {
      const buf = buffers.get(bufferKey(g, b.binding));
      if (!buf) throw new Error(`no buffer ${bufferKey(g, b.binding)} for kernel ${ir.name} of @${g.name}`);
      return buf;
    });
    const layouts: BufferLayout[] = bufs.map((buf) => {
      const chunks = Math.max(1, Math.ceil(buf.size / chunkBytes));
      return { chunks, chunkWords: chunks > 1 ? chunkBytes / 4 : 0 };
    });
    return { ir, bufs, ...renderWgsl(ir, { layouts, ...features }) };
  });
  // One workspace, as large as the largest need: a merge runs right after its kernel, before the next one.
  const workspaceFloats = Math.max(0, ...rendered.map((r) => r.merge?.workspaceFloats ?? 0));
  const workspace = workspaceFloats > 0
    ? gpu.createBuffer({ size: Math.max(16, 4 * workspaceFloats), usage: GPUBufferUsage.STORAGE, label: `${g.name}:workspace` })
    : undefined;
  const kernels = rendered.map(({ ir, bufs, code, bindings, rows, merge }, i): GpuKernel => {
    let shader = pipelines.get(code);
    if (!shader) {
      // An explicit layout: 'auto' would drop bindings the shader happens not to read (a buffer read only as vec4s).
      const layout = gpu.createBindGroupLayout({
        entries: bindings.map((b, binding) => ({
          binding,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: bindingType(b, ir.buffers) },
        })),
      });
      const module = gpu.createShaderModule({ code, label: `${g.name}.${ir.name}` });
      const pipelineLayout = gpu.createPipelineLayout({ bindGroupLayouts: [layout] });
      const entry = (entryPoint: string) => gpu.createComputePipeline({ layout: pipelineLayout, compute: { module, entryPoint }, label: `${g.name}.${ir.name}${entryPoint === 'main' ? '' : `.${entryPoint}`}` });
      shader = { main: entry('main'), ...(merge ? { merge: entry('merge') } : {}) };
      pipelines.set(code, shader);
    }
    const entries: GPUBindGroupEntry[] = bindings.map((b, binding) => {
      if (b.kind === 'sizes') return { binding, resource: { buffer: uniform, offset: i * stride, size: wordsBytes(ir) } };
      if (b.kind === 'workspace') return { binding, resource: { buffer: workspace! } };
      const buf = bufs[b.buffer];
      if (b.kind === 'vec4') return { binding, resource: { buffer: buf } };
      const offset = b.chunk * chunkBytes;
      return { binding, resource: { buffer: buf, offset, size: Math.min(chunkBytes, buf.size - offset) } };
    });
    const bindGroup = gpu.createBindGroup({ layout: shader.main.getBindGroupLayout(0), entries, label: `${g.name}.${ir.name}` });
    return { ir, rows, pipeline: shader.main, bindGroup, ...(merge && shader.merge ? { merge: { pipeline: shader.merge, rows: merge.rows } } : {}) };
  });
  const uses = [...new Set(kernels.flatMap((k) => [...k.ir.sizes, ...varsOf(k.rows)]))].sort();
  return { lowered: lg, kernels, ...(workspace ? { workspace } : {}), uniform, stride, uses, pending: false };
}

/** A graph's size words for one binding of its sizes, every kernel's at its offset in the uniform. */
export function sizeWords(g: GpuGraph, sizes: Sizes): Int32Array {
  const words = new Int32Array((g.stride / 4) * Math.max(1, g.kernels.length));
  g.kernels.forEach((k, i) => {
    const at = (i * g.stride) / 4;
    words[at] = evalSize(k.rows, sizes);
    k.ir.sizes.forEach((s, j) => { words[at + 1 + j] = sizes[s]; });
  });
  return words;
}
