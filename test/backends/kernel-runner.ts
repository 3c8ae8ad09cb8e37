// Running a compiled graph's kernels straight from their schedules, without the runtime: as JavaScript (printJs)
// or as WGSL on a WebGPU device (printWgsl, dispatched as the schedule's grid says). For graphs of f32, i32 and
// bool inputs and outputs, no parameters or state: what the schedule tests need to check numerics per device.

import { printJs } from '../../backends/cpu/render-js.ts';
import { Binding, evalSize, KernelIR } from '../../backends/kernel-ir.ts';
import { DeviceCaps } from '../../backends/device-caps.ts';
import { scheduleKernel, workgroupCount } from '../../backends/schedule.ts';
import { bindingType, printWgsl } from '../../backends/wgsl/render-wgsl.ts';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';

const key = (b: Binding) => JSON.stringify(b);

/** The graph's symbolic sizes, read off its inputs' shapes. */
function bindDims(g: Graph, inputs: Readonly<Record<string, HostTensor>>): Record<string, number> {
  const sizes: Record<string, number> = {};
  for (const v of g.inputs) v.type.shape.forEach((d, i) => { if (typeof d === 'string') sizes[d] = inputs[v.name!].shape[i]; });
  return sizes;
}

type Array32 = Float32Array | Int32Array | Uint32Array;

function hostArray(dtype: DType, n: number): Array32 {
  switch (dtype) {
    case DType.F32: return new Float32Array(n);
    case DType.I32: return new Int32Array(n);
    case DType.Bool: case DType.U32: return new Uint32Array(n);
    default: throw new Error(`kernel-runner: ${dtype} buffers are not supported`);
  }
}

/** Buffers of every binding the kernels use, inputs filled in, sized for the graph's symbolic sizes. */
function allocate(g: Graph, kernels: readonly KernelIR[], inputs: Readonly<Record<string, HostTensor>>, sizes: Record<string, number>) {
  const buffers = new Map<string, Array32>();
  for (const k of kernels) {
    for (const b of k.buffers) {
      if (b.binding.kind === 'param' || b.binding.kind === 'state') throw new Error('kernel-runner: graphs with parameters or state are not supported');
      const n = evalSize(b.elems, sizes);
      const have = buffers.get(key(b.binding));
      if (!have || have.length < n) buffers.set(key(b.binding), hostArray(b.dtype, n));
    }
  }
  for (const v of g.inputs) buffers.get(key({ kind: 'input', name: v.name! }))?.set(inputs[v.name!].data);
  return buffers;
}

function outputs(g: Graph, buffers: Map<string, Array32>, sizes: Record<string, number>): HostTensor[] {
  return g.outputs.map((v, index) => {
    const shape = v.type.shape.map((d) => (typeof d === 'number' ? d : sizes[d]));
    return hostTensor(v.type.dtype, shape, Array.from(buffers.get(key({ kind: 'output', index }))!));
  });
}

/** The kernels printed as JavaScript from their CPU schedules, run in order. */
export function runOnJs(g: Graph, kernels: readonly KernelIR[], device: DeviceCaps, inputs: Readonly<Record<string, HostTensor>>): HostTensor[] {
  const sizes = bindDims(g, inputs);
  const buffers = allocate(g, kernels, inputs, sizes);
  const round = { bf16: (x: number) => x, f16: (x: number) => x, random: () => { throw new Error('kernel-runner: random'); } };
  for (const k of kernels) {
    const fn = new Function('b', 'sizes', 'round', printJs(scheduleKernel(k, device)));
    fn(k.buffers.map((b) => buffers.get(key(b.binding))), sizes, round);
  }
  return outputs(g, buffers, sizes);
}

/** The kernels printed as WGSL from their schedules for `caps`, dispatched on `device` as their grids say. */
export async function runOnWebGpu(gpu: GPUDevice, caps: DeviceCaps, g: Graph, kernels: readonly KernelIR[],
  inputs: Readonly<Record<string, HostTensor>>): Promise<HostTensor[]> {
  const sizes = bindDims(g, inputs);
  const host = allocate(g, kernels, inputs, sizes);
  const gpuBuffers = new Map<string, GPUBuffer>();
  for (const [k, data] of host) {
    const buf = gpu.createBuffer({ size: Math.max(16, data.byteLength), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    gpu.queue.writeBuffer(buf, 0, data);
    gpuBuffers.set(k, buf);
  }
  const enc = gpu.createCommandEncoder();
  const pass = enc.beginComputePass();
  for (const k of kernels) {
    const scheduled = scheduleKernel(k, caps);
    const { code, bindings } = printWgsl(scheduled);
    const words = new Int32Array(4 * Math.ceil((1 + k.sizes.length) / 4));
    const rows = evalSize(scheduled.grid.rows, sizes);
    words[0] = rows;
    k.sizes.forEach((s, i) => { words[1 + i] = sizes[s]; });
    const uniform = gpu.createBuffer({ size: words.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    gpu.queue.writeBuffer(uniform, 0, words);
    // An explicit layout: 'auto' would drop bindings the shader happens not to read.
    const layout = gpu.createBindGroupLayout({
      entries: bindings.map((b, binding) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: bindingType(b, k.buffers) },
      })),
    });
    const pipeline = gpu.createComputePipeline({
      layout: gpu.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module: gpu.createShaderModule({ code }), entryPoint: 'main' },
    });
    const entries = bindings.map((b, binding) => {
      if (b.kind === 'workspace') throw new Error(`kernel ${k.name}: a second dispatch (its merge) is run by the webgpu device, not here`);
      return { binding, resource: { buffer: b.kind === 'sizes' ? uniform : gpuBuffers.get(key(k.buffers[b.buffer].binding))! } };
    });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, gpu.createBindGroup({ layout, entries }));
    const [x, y] = workgroupCount(scheduled.grid, rows);
    pass.dispatchWorkgroups(x, y);
  }
  pass.end();
  const reads = g.outputs.map((_, index) => {
    const buf = gpuBuffers.get(key({ kind: 'output', index }))!;
    const read = gpu.createBuffer({ size: buf.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    enc.copyBufferToBuffer(buf, 0, read, 0, buf.size);
    return read;
  });
  gpu.queue.submit([enc.finish()]);
  for (const [index, read] of reads.entries()) {
    await read.mapAsync(GPUMapMode.READ);
    const out = host.get(key({ kind: 'output', index }))!;
    out.set(new (out.constructor as { new (b: ArrayBuffer): Array32 })(read.getMappedRange().slice(0, out.byteLength)));
    read.unmap();
  }
  return outputs(g, host, sizes);
}
