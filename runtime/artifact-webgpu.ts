// Running a webgpu artifact: its WGSL shaders as they were rendered at compile time (no subgroups, every buffer one
// binding, so they run on any adapter), on a device opened at the first run. Weights stay on the device between
// runs; the other buffers grow to the largest sizes seen. One run is one submit: inputs and state written, every
// kernel dispatched in one compute pass, outputs and the new state read back.

import { evalSize } from '../backends/kernel-ir.ts';
import { bindingType } from '../backends/wgsl/bindings.ts';
import { DType } from '../ir/dtype.ts';
import { HostTensor } from '../ir/host-tensor.ts';
import { resolveShape } from '../ir/shape.ts';
import { BoundCall, bufferBytes, bufferKey, WebGpuArtifactPlan } from './artifact.ts';
import { fromDevice, toDevice } from './devices/device-bytes.ts';
import { align, MAX_GROUPS, wordBytes } from './devices/webgpu-load.ts';
import { openDevice } from './webgpu/device.ts';

interface Loaded {
  readonly gpu: GPUDevice;
  /** One pipeline per shader. */
  readonly pipelines: readonly GPUComputePipeline[];
  /** Inputs, state, outputs and temporaries by bufferKey, each as large as the largest run so far needed. */
  readonly buffers: Map<string, GPUBuffer>;
  /** Each parameter with the tensor it was uploaded from. */
  readonly params: Map<string, { readonly tensor: HostTensor; readonly buffer: GPUBuffer }>;
  /** Every kernel's size words (rows, then its sizes), at `stride`-byte offsets. */
  readonly uniform: GPUBuffer;
  readonly stride: number;
}

const loaded = new Map<WebGpuArtifactPlan, Promise<Loaded>>();
// A function: the GPU* constants are globals only once Dawn has loaded.
const storageUsage = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
/** Bytes of a kernel's size words: the row count and each size, in whole 16-byte uniform slots. */
const sizeBytes = (sizes: readonly string[]) => 16 * Math.ceil((1 + sizes.length) / 4);

export async function runWebGpu(plan: WebGpuArtifactPlan, call: BoundCall, inputs: Readonly<Record<string, HostTensor>>,
  states: Map<string, HostTensor>): Promise<HostTensor[]> {
  let promise = loaded.get(plan);
  if (!promise) {
    promise = load(plan);
    loaded.set(plan, promise);
    // A failed load is not kept: the next run tries again.
    promise.catch(() => loaded.delete(plan));
  }
  const g = await promise;
  const gpu = g.gpu;
  gpu.pushErrorScope('out-of-memory');
  gpu.pushErrorScope('validation');
  let reads: Promise<HostTensor>[];
  let error: GPUError | null;
  try {
    reads = enqueueRun(plan, g, call, inputs, states);
  } finally {
    const invalid = await gpu.popErrorScope();
    const oom = await gpu.popErrorScope();
    error = invalid ?? oom;
  }
  if (error) throw new Error(`@${plan.name} on webgpu: the device rejected the run: ${error.message}`);
  const read = await Promise.all(reads);
  plan.states.forEach((s, i) => states.set(s.name, read[plan.outputs.length + i]));
  return read.slice(0, plan.outputs.length);
}

/** Destroys the plan's buffers and its device. */
export async function releaseWebGpu(plan: WebGpuArtifactPlan): Promise<void> {
  const promise = loaded.get(plan);
  if (!promise) return;
  loaded.delete(plan);
  const g = await promise;
  for (const b of g.buffers.values()) b.destroy();
  for (const p of g.params.values()) p.buffer.destroy();
  g.uniform.destroy();
  g.gpu.destroy();
}

/** Opens a device and compiles every shader; a shader the device rejects is an error naming it. */
async function load(plan: WebGpuArtifactPlan): Promise<Loaded> {
  const gpu = await openDevice();
  gpu.pushErrorScope('validation');
  const pipelines = plan.shaders.map((code, i) => {
    const k = plan.kernels.find((kk) => kk.shader === i);
    if (!k) throw new Error(`@${plan.name}: shader ${i} is run by no kernel`);
    // An explicit layout: 'auto' would drop bindings the shader happens not to read (a buffer read only as vec4s).
    const layout = gpu.createBindGroupLayout({
      entries: k.bindings.map((b, binding) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: bindingType(b, k.buffers) },
      })),
    });
    return gpu.createComputePipeline({
      layout: gpu.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module: gpu.createShaderModule({ code, label: `${plan.name}.${k.name}` }), entryPoint: 'main' },
      label: `${plan.name}.${k.name}`,
    });
  });
  const error = await gpu.popErrorScope();
  if (error) {
    gpu.destroy();
    throw new Error(`@${plan.name}: the WebGPU device rejected the artifact's shaders: ${error.message}`);
  }
  const stride = align(Math.max(16, ...plan.kernels.map((k) => sizeBytes(k.sizes))), gpu.limits.minUniformBufferOffsetAlignment);
  const uniform = gpu.createBuffer({ size: stride * Math.max(1, plan.kernels.length), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: `${plan.name}:sizes` });
  return { gpu, pipelines, buffers: new Map(), params: new Map(), uniform, stride };
}

/** Queues one run and its read-backs (outputs, then states) in one submit. */
function enqueueRun(plan: WebGpuArtifactPlan, g: Loaded, call: BoundCall, inputs: Readonly<Record<string, HostTensor>>,
  states: Map<string, HostTensor>): Promise<HostTensor>[] {
  const gpu = g.gpu;
  for (const [key, bytes] of bufferBytes(plan, call, wordBytes)) {
    const have = g.buffers.get(key);
    if (have && have.size >= bytes) continue;
    have?.destroy();
    g.buffers.set(key, gpu.createBuffer({ size: Math.max(16, align(bytes, 16)), usage: storageUsage(), label: key }));
  }
  for (const [name, tensor] of call.params) {
    const have = g.params.get(name);
    if (have?.tensor === tensor) continue;
    have?.buffer.destroy();
    g.params.set(name, { tensor, buffer: upload(gpu, `param:${name}`, tensor) });
  }
  const buffer = (key: string): GPUBuffer => {
    const b = key.startsWith('param:') ? g.params.get(key.slice(6))?.buffer : g.buffers.get(key);
    if (!b) throw new Error(`@${plan.name}: no buffer ${key}`);
    // The shaders bind every buffer whole: they were rendered without the chunks larger buffers need.
    if (b.size > gpu.limits.maxStorageBufferBindingSize) {
      throw new RangeError(`@${plan.name}: buffer ${key} of ${b.size} bytes is larger than this device binds at once ` +
        `(${gpu.limits.maxStorageBufferBindingSize}); run the model through compile() or the CLI, which split it`);
    }
    return b;
  };
  for (const t of plan.inputs) write(gpu, buffer(`input:${t.name}`), inputs[t.name]);
  const encoder = gpu.createCommandEncoder();
  for (const s of plan.states) {
    const t = states.get(s.name);
    if (t) write(gpu, buffer(`state:${s.name}`), t);
    else encoder.clearBuffer(buffer(`state:${s.name}`));
  }
  const words = new Int32Array((g.stride / 4) * Math.max(1, plan.kernels.length));
  const groups = plan.kernels.map((k, i) => {
    const at = (i * g.stride) / 4;
    words[at] = evalSize(k.rows, call.sizes);
    k.sizes.forEach((s, j) => { words[at + 1 + j] = call.sizes[s]; });
    return words[at];
  });
  gpu.queue.writeBuffer(g.uniform, 0, words);
  const pass = encoder.beginComputePass();
  plan.kernels.forEach((k, i) => {
    if (groups[i] <= 0) return;
    const bufs = k.buffers.map((b) => buffer(bufferKey(b.binding)));
    const entries: GPUBindGroupEntry[] = k.bindings.map((b, binding) => {
      if (b.kind === 'sizes') return { binding, resource: { buffer: g.uniform, offset: i * g.stride, size: sizeBytes(k.sizes) } };
      if (b.kind === 'chunk' && b.chunk !== 0) throw new Error(`@${plan.name}: kernel ${k.name} binds buffers in chunks, which artifacts do not`);
      if (b.kind === 'workspace') throw new Error(`@${plan.name}: kernel ${k.name} has a second dispatch and its workspace, which artifacts do not`);
      return { binding, resource: { buffer: bufs[b.buffer] } };
    });
    const pipeline = g.pipelines[k.shader];
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, gpu.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries, label: `${plan.name}.${k.name}` }));
    pass.dispatchWorkgroups(Math.min(groups[i], MAX_GROUPS), Math.ceil(groups[i] / MAX_GROUPS));
  });
  pass.end();
  const bound = new Map(Object.entries(call.sizes));
  const wanted = [
    ...plan.outputs.map((o, i) => ({ key: `output:${i}`, dtype: o.dtype as DType, shape: call.outputShapes[i] })),
    ...plan.states.map((s) => ({ key: `state:${s.name}`, dtype: s.dtype as DType, shape: resolveShape(s.shape, bound) })),
  ];
  const staged = wanted.map((r) => {
    const bytes = wordBytes(r.dtype, r.shape.reduce((a, b) => a * b, 1));
    const staging = gpu.createBuffer({ size: Math.max(4, bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: `read ${r.key}` });
    if (bytes > 0) encoder.copyBufferToBuffer(buffer(r.key), 0, staging, 0, bytes);
    return { ...r, bytes, staging };
  });
  gpu.queue.submit([encoder.finish()]);
  return staged.map(async (r) => {
    await r.staging.mapAsync(GPUMapMode.READ);
    const t = fromDevice(r.dtype, r.shape, new Uint8Array(r.staging.getMappedRange(0, Math.max(4, r.bytes))), 'words');
    r.staging.destroy();
    return t;
  });
}

function upload(gpu: GPUDevice, label: string, t: HostTensor): GPUBuffer {
  const bytes = toDevice(t, 'words');
  const buf = gpu.createBuffer({ size: Math.max(16, align(bytes.byteLength, 16)), usage: storageUsage(), mappedAtCreation: true, label });
  new Uint8Array(buf.getMappedRange()).set(bytes);
  buf.unmap();
  return buf;
}

/** Host values into a buffer; whole words, so an odd count of 16-bit values gets a zero half after them. */
function write(gpu: GPUDevice, buf: GPUBuffer, t: HostTensor): void {
  const bytes = toDevice(t, 'words');
  const padded = new Uint8Array(align(bytes.byteLength, 4));
  padded.set(bytes);
  gpu.queue.writeBuffer(buf, 0, padded);
}
