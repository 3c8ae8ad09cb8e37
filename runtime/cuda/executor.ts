// A compiled module run on CUDA over host tensors, one graph at a time: the GraphExecutor interface the CPU
// backend has, for differential tests of the CUDA kernels against the reference interpreter (on a GPU, or on
// the CPU fake the tests build). Inputs and state go up before each run, outputs and state come back after it.

import { CompiledModule } from '../../compiler/compile-module.ts';
import { DType } from '../../ir/dtype.ts';
import { resolveShape } from '../../ir/shape.ts';
import { GraphExecutor } from '../executor.ts';
import { allocHost, HostTensor } from '../../ir/host-tensor.ts';
import { decodeBf16, decodeF16 } from '../safetensors.ts';
import { CudaDriver, DevicePtr } from './driver.ts';
import { CudaProgram, deviceBytes, StoredTensor } from './program.ts';

export interface CudaExecutorOptions {
  /** Largest value of each symbolic size (default: none; a graph with symbolic sizes needs them). */
  readonly maxSizes?: Readonly<Record<string, number>>;
  readonly cacheDir?: string;
  readonly libraries?: readonly string[];
}

export class CudaExecutor implements GraphExecutor {
  readonly cuda: CudaDriver;
  readonly program: CudaProgram;

  constructor(readonly module: CompiledModule, param: (name: string) => StoredTensor, opts: CudaExecutorOptions = {}) {
    this.cuda = CudaDriver.open(opts.libraries);
    try {
      this.program = new CudaProgram(this.cuda, module, param, { maxSizes: opts.maxSizes ?? {}, cacheDir: opts.cacheDir });
    } catch (e) {
      this.cuda.destroy();
      throw e;
    }
  }

  run(name: string, inputs: Readonly<Record<string, HostTensor>>, states: Map<string, HostTensor>): HostTensor[] {
    const cg = this.program.graphs.get(name);
    if (!cg) throw new Error(`no compiled graph @${name}`);
    const g = cg.graph;
    const sizes: Record<string, number> = {};
    for (const v of g.inputs) {
      v.type.shape.forEach((d, i) => {
        if (typeof d === 'string') sizes[d] = inputs[v.name!].shape[i];
      });
    }
    for (const v of g.inputs) this.cuda.upload(this.program.buffer(name, { kind: 'input', name: v.name! }), deviceBytes(v.type.dtype, inputs[v.name!].data));
    for (const v of g.states) {
      const t = states.get(v.name!);
      if (t) this.cuda.upload(this.program.buffer(name, { kind: 'state', name: v.name! }), deviceBytes(t.dtype, t.data));
    }
    this.program.enqueue(name, sizes);
    const bindings = new Map(Object.entries(sizes));
    const outputs = g.outputs.map((v, i) => this.read(this.program.buffer(name, { kind: 'output', index: i }), v.type.dtype, resolveShape(v.type.shape, bindings)));
    for (const v of g.states) states.set(v.name!, this.read(this.program.buffer(name, { kind: 'state', name: v.name! }), v.type.dtype, resolveShape(v.type.shape, bindings)));
    return outputs;
  }

  /** A device buffer back as a host tensor (16-bit floats widened, as the host keeps them). */
  private read(ptr: DevicePtr, dtype: DType, shape: number[]): HostTensor {
    const t = allocHost(dtype, shape);
    const n = t.data.length;
    switch (dtype) {
      case DType.BF16: case DType.F16: {
        const bits = new Uint16Array(n);
        if (n) this.cuda.download(bits, ptr);
        t.data.set(dtype === DType.BF16 ? decodeBf16(bits) : decodeF16(bits));
        return t;
      }
      default:
        if (n) this.cuda.download(t.data, ptr);
        return t;
    }
  }

  destroy(): void {
    this.program.destroy();
    this.cuda.destroy();
  }
}
