// The CPU backend: runs compiled kernels as JavaScript functions (rendered by backends/cpu/render-js.ts) over
// typed arrays, one call per kernel, intermediates in the memory plan's reused slots.

import { CompiledGraph, CompiledModule } from '../compiler/compile-module.ts';
import { JsKernelRuntime, renderJs } from '../backends/cpu/render-js.ts';
import { Binding, evalSize, KernelIR } from '../backends/kernel-ir.ts';
import { evalRule } from '../ir/semantics.ts';
import { Graph } from '../ir/graph.ts';
import { resolveShape } from '../ir/shape.ts';
import { allocData, allocHost, HostData, HostTensor, roundBf16, roundF16 } from '../ir/host-tensor.ts';
import { GraphExecutor } from './executor.ts';

type KernelFn = (buffers: HostData[], sizes: Record<string, number>, round: JsKernelRuntime) => void;
const kernelRuntime: JsKernelRuntime = { bf16: roundBf16, f16: roundF16 };

interface CpuGraph {
  readonly compiled: CompiledGraph;
  readonly fns: KernelFn[];
}

export class CpuExecutor implements GraphExecutor {
  private readonly graphs = new Map<string, CpuGraph>();
  private readonly params = new Map<string, HostTensor>();

  constructor(module: CompiledModule, private readonly loadParam: (name: string) => HostTensor) {
    for (const compiled of module.graphs) {
      // eslint-disable-next-line @typescript-eslint/no-implied-eval -- the kernel source is our own rendering
      const fns = compiled.kernels.map((k) => new Function('b', 'sizes', 'round', renderJs(k)) as KernelFn);
      this.graphs.set(compiled.graph.name, { compiled, fns });
    }
  }

  run(name: string, inputs: Readonly<Record<string, HostTensor>>, states: Map<string, HostTensor>): HostTensor[] {
    const cg = this.graphs.get(name);
    if (!cg) throw new Error(`no compiled graph @${name}`);
    const g = cg.compiled.graph;
    const sizes = bindSizes(g, inputs);
    const bindings = new Map<string, number>(Object.entries(sizes));
    const outputs = g.outputs.map((v) => allocHost(v.type.dtype, resolveShape(v.type.shape, bindings)));
    const slots = new Map<number, ArrayBuffer>();
    const slotData = (slot: number, k: KernelIR, i: number): HostData => {
      const b = k.buffers[i];
      const n = evalSize(b.elems, sizes);
      let buf = slots.get(slot);
      if (!buf || buf.byteLength < n * 4) {
        buf = new ArrayBuffer(Math.max(n * 4, buf?.byteLength ?? 0));
        slots.set(slot, buf);
      }
      const view = allocData(b.dtype, 0).constructor as new (b: ArrayBuffer, o: number, n: number) => HostData;
      return new view(buf, 0, n);
    };
    const data = (binding: Binding, k: KernelIR, i: number): HostData => {
      switch (binding.kind) {
        case 'input': return inputs[binding.name].data;
        case 'param': return this.param(g, binding.name).data;
        case 'state': return states.get(binding.name)!.data;
        case 'output': return outputs[binding.index].data;
        case 'temp': return slotData(binding.slot, k, i);
        default: return binding satisfies never;
      }
    };
    cg.compiled.kernels.forEach((k, ki) => cg.fns[ki](k.buffers.map((b, i) => data(b.binding, k, i)), sizes, kernelRuntime));
    return outputs;
  }

  /** A parameter as stored, or computed once from others when the compiler derived it (concatenated weights). */
  private param(g: Graph, name: string): HostTensor {
    let t = this.params.get(name);
    if (t) return t;
    const v = g.params.find((p) => p.name === name)!;
    const d = g.derivations.get(v);
    t = d
      ? evalRule(d.op)!(d.inputs.map((i) => this.param(g, i.name!)), d.attrs, { dtype: v.type.dtype, shape: v.type.shape as number[] })
      : this.loadParam(name);
    this.params.set(name, t);
    return t;
  }
}

/** Symbolic sizes from the inputs' shapes (S from tokens: i32[S]). */
function bindSizes(g: Graph, inputs: Readonly<Record<string, HostTensor>>): Record<string, number> {
  const sizes: Record<string, number> = {};
  for (const v of g.inputs) {
    v.type.shape.forEach((d, i) => {
      if (typeof d === 'string') sizes[d] = inputs[v.name!].shape[i];
    });
  }
  return sizes;
}
