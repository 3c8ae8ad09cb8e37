// Any compiled module on WebGPU over host tensors (compile()'s webgpu backend): inputs and state uploaded before a
// run, outputs and new state read back after it. The Llama runtime keeps state on the device instead; this is for
// running arbitrary model functions, where a round trip per call is the price of host tensors in and out.

import { CompiledModule } from '../compiler/compile-module.ts';
import { DType } from '../ir/dtype.ts';
import { resolveShape } from '../ir/shape.ts';
import { allocHost, HostTensor } from '../ir/host-tensor.ts';
import { decodeBf16, decodeF16 } from './safetensors.ts';
import { openDevice } from './webgpu/device.ts';
import { deviceBytes, WebGpuProgram } from './webgpu/program.ts';

let shared: Promise<GPUDevice> | undefined;

export class WebGpuExecutor {
  private constructor(readonly device: GPUDevice, readonly module: CompiledModule, readonly program: WebGpuProgram,
    readonly sizes: Readonly<Record<string, number>>) {}

  /** `sizes`: the size of every symbolic dimension (compile() runs each bucket at its full size). */
  static async create(module: CompiledModule, param: (name: string) => HostTensor, sizes: Readonly<Record<string, number>>): Promise<WebGpuExecutor> {
    shared ??= openDevice();
    const device = await shared;
    device.pushErrorScope('validation');
    const program = new WebGpuProgram(device, module, param, { maxSizes: sizes });
    const error = await device.popErrorScope();
    if (error) throw new Error(`WebGPU rejected the compiled program: ${error.message}`);
    return new WebGpuExecutor(device, module, program, sizes);
  }

  async run(inputs: Readonly<Record<string, HostTensor>>, states: Map<string, HostTensor>): Promise<HostTensor[]> {
    const cg = this.module.graphs[0];
    const g = cg.graph;
    const used = new Set(cg.kernels.flatMap((k) => k.buffers.map((b) => JSON.stringify(b.binding))));
    const upload = (binding: { kind: 'input' | 'state'; name: string }, t: HostTensor) => {
      if (used.has(JSON.stringify(binding))) this.device.queue.writeBuffer(this.program.buffer(g.name, binding), 0, deviceBytes(t));
    };
    for (const v of g.inputs) upload({ kind: 'input', name: v.name! }, inputs[v.name!]);
    for (const v of g.states) upload({ kind: 'state', name: v.name! }, states.get(v.name!)!);
    this.program.setSizes(g.name, this.sizes);
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    this.program.encode(pass, g.name, this.sizes);
    pass.end();
    const bindings = new Map<string, number>(Object.entries(this.sizes));
    const reads = [
      ...g.outputs.map((v, index) => ({ binding: { kind: 'output' as const, index }, dtype: v.type.dtype, shape: resolveShape(v.type.shape, bindings) })),
      ...g.states.map((v) => ({ binding: { kind: 'state' as const, name: v.name! }, dtype: v.type.dtype, shape: resolveShape(v.type.shape, bindings) })),
    ].map((r) => {
      const src = this.program.buffer(g.name, r.binding);
      const dst = this.device.createBuffer({ size: src.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      enc.copyBufferToBuffer(src, 0, dst, 0, src.size);
      return { ...r, dst };
    });
    this.device.queue.submit([enc.finish()]);
    const read = await Promise.all(reads.map(async (r) => {
      await r.dst.mapAsync(GPUMapMode.READ);
      const t = fromDevice(r.dtype, r.shape, r.dst.getMappedRange().slice(0));
      r.dst.unmap();
      r.dst.destroy();
      return t;
    }));
    g.states.forEach((v, i) => states.set(v.name!, read[g.outputs.length + i]));
    return read.slice(0, g.outputs.length);
  }
}

/** A host tensor from the bytes the device stores (16-bit floats as their bits, bools as u32). */
function fromDevice(dtype: DType, shape: number[], bytes: ArrayBuffer): HostTensor {
  const t = allocHost(dtype, shape);
  const n = t.data.length;
  switch (dtype) {
    case DType.F32: t.data.set(new Float32Array(bytes, 0, n)); break;
    case DType.I32: t.data.set(new Int32Array(bytes, 0, n)); break;
    case DType.U32: case DType.Bool: t.data.set(new Uint32Array(bytes, 0, n)); break;
    case DType.F16: t.data.set(decodeF16(new Uint16Array(bytes, 0, n))); break;
    case DType.BF16: t.data.set(decodeBf16(new Uint16Array(bytes, 0, n))); break;
    default: return dtype satisfies never;
  }
  return t;
}
