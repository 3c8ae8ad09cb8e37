// Running one graph of any compiled module on WebGPU with host tensors in and out: for tests and framework code
// that is not the Llama session (which keeps everything on the device between steps).

import { CompiledModule } from '../../compiler/compile-module.ts';
import { DType } from '../../ir/dtype.ts';
import { resolveShape } from '../../ir/shape.ts';
import { allocHost, HostTensor } from '../../ir/host-tensor.ts';
import { decodeBf16, decodeF16 } from '../safetensors.ts';
import { deviceBytes, WebGpuProgram } from './program.ts';

export interface WebGpuRun {
  readonly outputs: HostTensor[];
  /** The states' values after the run. */
  readonly states: Map<string, HostTensor>;
}

export async function runOnWebGpu(device: GPUDevice, module: CompiledModule, graphName: string,
  inputs: Readonly<Record<string, HostTensor>>, param: (name: string) => HostTensor,
  states: ReadonlyMap<string, HostTensor> = new Map()): Promise<WebGpuRun> {
  const cg = module.graphs.find((c) => c.graph.name === graphName);
  if (!cg) throw new Error(`no compiled graph @${graphName}`);
  const g = cg.graph;
  const sizes: Record<string, number> = {};
  for (const v of g.inputs) v.type.shape.forEach((d, i) => { if (typeof d === 'string') sizes[d] = inputs[v.name!].shape[i]; });
  device.pushErrorScope('validation');
  const program = new WebGpuProgram(device, module, param, { maxSizes: sizes });
  const error = await device.popErrorScope();
  if (error) throw new Error(`WebGPU rejected the compiled program: ${error.message}`);
  const has = (b: Parameters<WebGpuProgram['buffer']>[1]) => {
    try { return program.buffer(graphName, b); } catch { return undefined; }
  };
  for (const v of g.inputs) {
    const buf = has({ kind: 'input', name: v.name! });
    if (buf) device.queue.writeBuffer(buf, 0, deviceBytes(inputs[v.name!]));
  }
  for (const v of g.states) {
    const buf = has({ kind: 'state', name: v.name! });
    if (buf) device.queue.writeBuffer(buf, 0, deviceBytes(states.get(v.name!)!));
  }
  program.setSizes(graphName, sizes);
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  program.encode(pass, graphName, sizes);
  pass.end();
  const reads: { buf: GPUBuffer | undefined; t: HostTensor }[] = [
    ...g.outputs.map((v, i) => ({ buf: has({ kind: 'output', index: i }), t: allocHost(v.type.dtype, resolveShape(v.type.shape, new Map(Object.entries(sizes)))) })),
    ...g.states.map((v) => ({ buf: has({ kind: 'state', name: v.name! }), t: structuredCloneHost(states.get(v.name!)!) })),
  ];
  const staging = reads.map(({ buf }) => (buf ? device.createBuffer({ size: buf.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }) : undefined));
  reads.forEach(({ buf }, i) => { if (buf) enc.copyBufferToBuffer(buf, 0, staging[i]!, 0, buf.size); });
  device.queue.submit([enc.finish()]);
  for (let i = 0; i < reads.length; i++) {
    const s = staging[i];
    if (!s) continue;
    await s.mapAsync(GPUMapMode.READ);
    fromDevice(new Uint8Array(s.getMappedRange()), reads[i].t);
    s.unmap();
    s.destroy();
  }
  return {
    outputs: reads.slice(0, g.outputs.length).map((r) => r.t),
    states: new Map(g.states.map((v, i) => [v.name!, reads[g.outputs.length + i].t])),
  };
}

function structuredCloneHost(t: HostTensor): HostTensor {
  return { dtype: t.dtype, shape: [...t.shape], data: t.data.slice() };
}

/** Decodes device bytes into a host tensor of the same dtype (16-bit floats and bools as the device keeps them). */
function fromDevice(bytes: Uint8Array, t: HostTensor): void {
  const n = t.data.length;
  const aligned = new Uint8Array(bytes).buffer;
  switch (t.dtype) {
    case DType.BF16: t.data.set(decodeBf16(new Uint16Array(aligned, 0, n))); break;
    case DType.F16: t.data.set(decodeF16(new Uint16Array(aligned, 0, n))); break;
    case DType.Bool: t.data.set(new Uint32Array(aligned, 0, n).map((x) => (x ? 1 : 0))); break;
    case DType.F32: t.data.set(new Float32Array(aligned, 0, n)); break;
    case DType.I32: t.data.set(new Int32Array(aligned, 0, n)); break;
    case DType.U32: t.data.set(new Uint32Array(aligned, 0, n)); break;
    default: t.dtype satisfies never;
  }
}
