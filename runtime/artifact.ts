// Running a compiled artifact (`tsfuse compile model.ts --out FILE`): the generated module holds the launch plan
// and the JavaScript kernels as data, and calls runArtifact; nothing is traced or compiled again.

import { evalRule } from '../ir/semantics.ts';
import type { Binding, KExpr } from '../backends/kernel-ir.ts';
import { DType } from '../ir/dtype.ts';
import type { Attrs } from '../ir/ops.ts';
import { formatShape, resolveShape } from '../ir/shape.ts';
import { allocData, allocHost, HostData, HostTensor, roundBf16, roundF16 } from '../ir/host-tensor.ts';
import { randomUniform } from '../ir/random.ts';
import type { JsKernelRuntime } from '../backends/cpu/render-js.ts';

export type { HostTensor } from '../ir/host-tensor.ts';

export interface ArtifactTensor {
  readonly name: string;
  readonly dtype: `${DType}`;
  readonly shape: readonly (number | string)[];
}

export interface ArtifactParam extends ArtifactTensor {
  /** Computed once from other parameters when the compiler derived it (concatenated projections). */
  readonly derived?: { readonly op: string; readonly inputs: readonly string[]; readonly attrs: Attrs };
}

export interface ArtifactKernel {
  readonly name: string;
  /** The body of `function (b, sizes, round)`, as backends/cpu/render-js.ts renders it. */
  readonly source: string;
  readonly buffers: readonly { readonly binding: Binding; readonly dtype: `${DType}`; readonly elems: KExpr }[];
}

/** Everything a run needs: the graph's signature, its kernels in launch order, and their buffers. */
export interface ArtifactPlan {
  readonly name: string;
  readonly inputs: readonly ArtifactTensor[];
  readonly params: readonly ArtifactParam[];
  readonly states: readonly ArtifactTensor[];
  readonly outputs: readonly Omit<ArtifactTensor, 'name'>[];
  readonly kernels: readonly ArtifactKernel[];
}

type KernelFn = (b: HostData[], sizes: Record<string, number>, round: JsKernelRuntime) => void;

const prepared = new WeakMap<ArtifactPlan, { fns: KernelFn[]; derived: Map<string, HostTensor> }>();

/**
 * Runs the plan over host tensors: inputs and params by name; states (a KV cache), when the graph has any, are
 * updated in place in `states` (allocated, zeroed, on first use).
 */
export function runArtifact(plan: ArtifactPlan, inputs: Readonly<Record<string, HostTensor>>,
  params: Readonly<Record<string, HostTensor>>, states: Map<string, HostTensor> = new Map()): HostTensor[] {
  let p = prepared.get(plan);
  if (!p) {
    // eslint-disable-next-line @typescript-eslint/no-implied-eval -- the kernels are tsfuse's own rendering
    p = { fns: plan.kernels.map((k) => new Function('b', 'sizes', 'round', k.source) as KernelFn), derived: new Map() };
    prepared.set(plan, p);
  }
  const sizes: Record<string, number> = {};
  for (const spec of plan.inputs) check(spec, inputs[spec.name], 'input', sizes);
  const param = (name: string): HostTensor => {
    const spec = plan.params.find((q) => q.name === name)!;
    if (!spec.derived) return check(spec, params[name], 'param', sizes);
    let t = p!.derived.get(name);
    if (!t) {
      const d = spec.derived;
      t = evalRule(d.op)!(d.inputs.map(param), d.attrs, { dtype: spec.dtype as DType, shape: spec.shape as number[] });
      p!.derived.set(name, t);
    }
    return t;
  };
  for (const s of plan.states) {
    if (!states.has(s.name)) states.set(s.name, allocHost(s.dtype as DType, s.shape as number[]));
  }
  const bound = new Map(Object.entries(sizes));
  const outputs = plan.outputs.map((o) => allocHost(o.dtype as DType, resolveShape(o.shape, bound)));
  const slots = new Map<number, ArrayBuffer>();
  plan.kernels.forEach((k, ki) => {
    const buffers = k.buffers.map((b): HostData => {
      const binding = b.binding;
      switch (binding.kind) {
        case 'input': return inputs[binding.name].data;
        case 'param': return param(binding.name).data;
        case 'state': return states.get(binding.name)!.data;
        case 'output': return outputs[binding.index].data;
        case 'temp': {
          const n = evalSize(b.elems, sizes);
          let buf = slots.get(binding.slot);
          if (!buf || buf.byteLength < n * 4) slots.set(binding.slot, (buf = new ArrayBuffer(Math.max(n * 4, buf?.byteLength ?? 0))));
          const View = allocData(b.dtype as DType, 0).constructor as new (b: ArrayBuffer, o: number, n: number) => HostData;
          return new View(buf, 0, n);
        }
        default: return binding satisfies never;
      }
    });
    p!.fns[ki](buffers, sizes, { bf16: roundBf16, f16: roundF16, random: randomUniform });
  });
  return outputs;
}

/** Checks a tensor against its declared type, binding symbolic sizes on first sight. */
function check(spec: ArtifactTensor, t: HostTensor | undefined, kind: string, sizes: Record<string, number>): HostTensor {
  const want = `${spec.dtype}${formatShape(spec.shape)}`;
  if (!t) throw new Error(`${kind} ${spec.name} (${want}) is missing`);
  const bad = () => new Error(`${kind} ${spec.name} must be ${want}, got ${t.dtype}${formatShape(t.shape)}`);
  if (t.dtype !== spec.dtype || t.shape.length !== spec.shape.length) throw bad();
  spec.shape.forEach((d, i) => {
    if (typeof d === 'number' ? d !== t.shape[i] : (sizes[d] ??= t.shape[i]) !== t.shape[i]) throw bad();
  });
  return t;
}

function evalSize(e: KExpr, sizes: Readonly<Record<string, number>>): number {
  switch (e.k) {
    case 'const': return e.value;
    case 'var': return sizes[e.name];
    case 'binary': return e.op === 'mul' ? evalSize(e.a, sizes) * evalSize(e.b, sizes) : evalSize(e.a, sizes) + evalSize(e.b, sizes);
    default: throw new Error('a buffer size is not a product of sizes');
  }
}
