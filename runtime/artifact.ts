// Running a compiled artifact (`tsfuse compile model.ts --out FILE`). The generated module holds a launch plan for
// one backend as data: the graph's signature, its kernels in launch order with their buffers, and the kernels'
// source (JavaScript, WGSL or CUDA C). It imports this file from the installed tsfuse package and calls
// runArtifact; nothing is traced, fused, scheduled or rendered again. The WebGPU and CUDA runners load only when a
// plan for them runs, so a cpu artifact never loads Dawn or koffi.

import { evalSize } from '../backends/kernel-ir.ts';
import type { Binding, KExpr } from '../backends/kernel-ir.ts';
import type { JsKernelRuntime } from '../backends/cpu/render-js.ts';
import type { SplitScratchNeeds } from '../backends/schedule.ts';
import type { WgslBinding } from '../backends/wgsl/bindings.ts';
import { DType } from '../ir/dtype.ts';
import { allocData, allocHost, HostData, HostTensor, roundBf16, roundF16 } from '../ir/host-tensor.ts';
import type { Attrs } from '../ir/ops.ts';
import { randomUniform } from '../ir/random.ts';
import { evalRule } from '../ir/semantics.ts';
import { formatShape, resolveShape } from '../ir/shape.ts';
import { CudaUnavailableError } from './cuda/errors.ts';
import { WebGpuUnavailableError } from './webgpu/errors.ts';

export type { HostTensor } from '../ir/host-tensor.ts';
// What a GPU artifact's run() rejects with where the device cannot be used, so callers can tell it apart.
export { CudaUnavailableError, WebGpuUnavailableError };

export interface ArtifactTensor {
  readonly name: string;
  readonly dtype: `${DType}`;
  readonly shape: readonly (number | string)[];
}

export interface ArtifactParam extends ArtifactTensor {
  /** Computed from other parameters when the compiler derived it (concatenated projections). */
  readonly derived?: { readonly op: string; readonly inputs: readonly string[]; readonly attrs: Attrs };
}

export interface ArtifactBuffer {
  readonly binding: Binding;
  /** The dtype in memory (16-bit floats stay 16-bit). */
  readonly dtype: `${DType}`;
  readonly elems: KExpr;
  readonly written: boolean;
}

interface PlanKernel {
  readonly name: string;
  readonly buffers: readonly ArtifactBuffer[];
}

/** A GPU kernel: given the symbolic sizes `sizes` after its buffers. */
interface GpuKernel extends PlanKernel {
  /** Workgroups (blocks) to launch: the schedule's grid (a GEMM's tiles, else the kernel's rows). */
  readonly rows: KExpr;
  readonly sizes: readonly string[];
}

interface PlanSignature {
  readonly name: string;
  readonly inputs: readonly ArtifactTensor[];
  readonly params: readonly ArtifactParam[];
  readonly states: readonly ArtifactTensor[];
  readonly outputs: readonly Omit<ArtifactTensor, 'name'>[];
}

export interface CpuArtifactPlan extends PlanSignature {
  readonly backend: 'cpu';
  /** `source`: the body of `function (b, sizes, round)`, as backends/cpu/render-js.ts renders it. */
  readonly kernels: readonly (PlanKernel & { readonly source: string })[];
}

export interface WebGpuArtifactPlan extends PlanSignature {
  readonly backend: 'webgpu';
  /** Distinct WGSL shaders (every layer's kernels share theirs), each bound as `bindings` says. */
  readonly shaders: readonly string[];
  readonly kernels: readonly (GpuKernel & { readonly shader: number; readonly bindings: readonly WgslBinding[] })[];
}

export interface CudaArtifactPlan extends PlanSignature {
  readonly backend: 'cuda';
  /** Threads per block the source was printed for. */
  readonly threads: number;
  /** One CUDA C module, compiled by NVRTC for the device at the first run. */
  readonly source: string;
  /**
   * `depthSplit`: a GEMM kernel whose tiles may split their depth (or attention's decode form over key chunks) takes,
   * after its sizes, a workspace of this many floats and this many counters, zero at its first launch (it leaves
   * them zero); one pair serves every kernel of a program, as large as the largest asks. (The field keeps its first
   * name, so that written artifacts load.) `clusterBlocks`: blocks a cluster at those sizes, where the launch groups
   * them (a short GEMM tile's parts; launched alone, they add through the workspace instead).
   */
  readonly kernels: readonly (GpuKernel & { readonly function: string; readonly sharedBytes: number; readonly clusterBlocks?: KExpr; readonly depthSplit?: SplitScratchNeeds })[];
}

export type GpuArtifactPlan = WebGpuArtifactPlan | CudaArtifactPlan;
export type ArtifactPlan = CpuArtifactPlan | GpuArtifactPlan;

/** A call's inputs and parameters checked against the plan, with its symbolic sizes bound. */
export interface BoundCall {
  readonly sizes: Readonly<Record<string, number>>;
  /** Every parameter a kernel may read, derived ones computed. */
  readonly params: ReadonlyMap<string, HostTensor>;
  readonly outputShapes: readonly number[][];
}

/**
 * Runs the plan over host tensors: inputs and params by name. States (a KV cache), when the graph has any, are
 * read from `states` (zero where missing) and the updated ones put back. On cpu the result is at once; on webgpu
 * and cuda a promise (the device opens at the first call; a parameter is uploaded again only when another tensor
 * object is passed for it).
 */
export function runArtifact(plan: CpuArtifactPlan, inputs: Readonly<Record<string, HostTensor>>,
  params: Readonly<Record<string, HostTensor>>, states?: Map<string, HostTensor>): HostTensor[];
export function runArtifact(plan: GpuArtifactPlan, inputs: Readonly<Record<string, HostTensor>>,
  params: Readonly<Record<string, HostTensor>>, states?: Map<string, HostTensor>): Promise<HostTensor[]>;
export function runArtifact(plan: ArtifactPlan, inputs: Readonly<Record<string, HostTensor>>,
  params: Readonly<Record<string, HostTensor>>, states: Map<string, HostTensor> = new Map()): HostTensor[] | Promise<HostTensor[]> {
  switch (plan.backend) {
    case 'cpu': return runOnHost(plan, bindCall(plan, inputs, params), inputs, states);
    case 'webgpu': return webgpuRunner().then((r) => {
      running.add(plan);
      return r.runWebGpu(plan, bindCall(plan, inputs, params), inputs, states);
    });
    case 'cuda': return cudaRunner().then((r) => {
      running.add(plan);
      return r.runCuda(plan, bindCall(plan, inputs, params), inputs, states);
    });
    default: return plan satisfies never;
  }
}

/** GPU plans whose runner has loaded: only those can hold anything on a device. */
const running = new WeakSet<GpuArtifactPlan>();

/** Frees what runs of a GPU plan hold on the device (buffers, pipelines or modules) and closes the device. */
export async function releaseArtifact(plan: GpuArtifactPlan): Promise<void> {
  if (!running.has(plan)) return;
  running.delete(plan);
  if (plan.backend === 'webgpu') await (await webgpuRunner()).releaseWebGpu(plan);
  else (await cudaRunner()).releaseCuda(plan);
}

const webgpuRunner = () => import('./artifact-webgpu.ts');

/** The CUDA runner needs koffi, an optional dependency: without it, say what to install. */
async function cudaRunner(): Promise<typeof import('./artifact-cuda.ts')> {
  try {
    return await import('./artifact-cuda.ts');
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && /'koffi'/.test((e as Error).message)) {
      throw new CudaUnavailableError('a cuda artifact needs the optional package koffi (FFI to libcuda and NVRTC): npm install koffi');
    }
    throw e;
  }
}

// ---- checking a call ----

/** Checks inputs and parameters against the plan, binds the symbolic sizes and computes derived parameters. */
export function bindCall(plan: ArtifactPlan, inputs: Readonly<Record<string, HostTensor>>,
  params: Readonly<Record<string, HostTensor>>): BoundCall {
  const sizes: Record<string, number> = {};
  for (const spec of plan.inputs) check(plan, spec, inputs[spec.name], 'input', sizes);
  const resolved = new Map<string, HostTensor>();
  const param = (name: string): HostTensor => {
    let t = resolved.get(name);
    if (t) return t;
    const spec = plan.params.find((q) => q.name === name);
    if (!spec) throw new Error(`@${plan.name}: a kernel reads param ${name}, which the plan does not declare`);
    t = spec.derived ? derive(plan, spec, spec.derived.inputs.map(param)) : check(plan, spec, params[name], 'param', sizes);
    resolved.set(name, t);
    return t;
  };
  for (const p of plan.params) param(p.name);
  const bound = new Map(Object.entries(sizes));
  return { sizes, params: resolved, outputShapes: plan.outputs.map((o) => resolveShape(o.shape, bound)) };
}

/** Checks a tensor against its declared type, binding symbolic sizes on first sight. */
function check(plan: ArtifactPlan, spec: ArtifactTensor, t: HostTensor | undefined, kind: string, sizes: Record<string, number>): HostTensor {
  const want = `${spec.dtype}${formatShape(spec.shape)}`;
  if (!t) throw new Error(`@${plan.name}: ${kind} ${spec.name} (${want}) is missing`);
  const bad = () => new Error(`@${plan.name}: ${kind} ${spec.name} must be ${want}, got ${t.dtype}${formatShape(t.shape)}`);
  if (t.dtype !== spec.dtype || t.shape.length !== spec.shape.length) throw bad();
  spec.shape.forEach((d, i) => {
    if (typeof d === 'number' ? d !== t.shape[i] : (sizes[d] ??= t.shape[i]) !== t.shape[i]) throw bad();
  });
  if (t.data.length !== t.shape.reduce((a, b) => a * b, 1)) throw new Error(`@${plan.name}: ${kind} ${spec.name} has ${t.data.length} values for shape ${formatShape(t.shape)}`);
  return t;
}

/** Derived parameters, kept while the tensors they come from are the same objects (so GPUs upload them once). */
const derivedCache = new WeakMap<ArtifactParam, { from: readonly HostTensor[]; value: HostTensor }>();

function derive(plan: ArtifactPlan, spec: ArtifactParam, from: HostTensor[]): HostTensor {
  const cached = derivedCache.get(spec);
  if (cached && cached.from.every((t, i) => t === from[i])) return cached.value;
  const d = spec.derived!;
  const rule = evalRule(d.op);
  if (!rule) throw new Error(`@${plan.name}: param ${spec.name} is derived by op ${d.op}, which this tsfuse does not know`);
  const value = rule(from, d.attrs, { dtype: spec.dtype as DType, shape: spec.shape as number[] });
  derivedCache.set(spec, { from, value });
  return value;
}

// ---- buffers ----

/** A buffer's name in a run: `input:x`, `param:w`, `state:cache`, `output:0`, `temp:3`. */
export function bufferKey(b: Binding): string {
  switch (b.kind) {
    case 'input': case 'param': case 'state': return `${b.kind}:${b.name}`;
    case 'output': return `output:${b.index}`;
    case 'temp': return `temp:${b.slot}`;
    default: return b satisfies never;
  }
}

/**
 * Bytes each buffer other than a parameter needs at this call's sizes: the largest any kernel binds it with, and at
 * least the declared input, state or output (`bytes`: how the device stores `n` elements of a dtype).
 */
export function bufferBytes(plan: ArtifactPlan, call: BoundCall, bytes: (d: DType, n: number) => number): Map<string, number> {
  const need = new Map<string, number>();
  const want = (key: string, n: number) => need.set(key, Math.max(need.get(key) ?? 0, n));
  const bound = new Map(Object.entries(call.sizes));
  const declared = (t: Omit<ArtifactTensor, 'name'>) => bytes(t.dtype as DType, resolveShape(t.shape, bound).reduce((a, b) => a * b, 1));
  for (const t of plan.inputs) want(`input:${t.name}`, declared(t));
  for (const t of plan.states) want(`state:${t.name}`, declared(t));
  plan.outputs.forEach((t, i) => want(`output:${i}`, declared(t)));
  for (const k of plan.kernels) {
    for (const b of k.buffers) if (b.binding.kind !== 'param') want(bufferKey(b.binding), bytes(b.dtype as DType, evalSize(b.elems, call.sizes)));
  }
  return need;
}

// ---- the host runner ----

type KernelFn = (b: HostData[], sizes: Record<string, number>, round: JsKernelRuntime) => void;

const hostKernels = new WeakMap<CpuArtifactPlan, KernelFn[]>();

function runOnHost(plan: CpuArtifactPlan, call: BoundCall, inputs: Readonly<Record<string, HostTensor>>,
  states: Map<string, HostTensor>): HostTensor[] {
  let fns = hostKernels.get(plan);
  if (!fns) {
    // eslint-disable-next-line @typescript-eslint/no-implied-eval -- the kernels are tsfuse's own rendering
    fns = plan.kernels.map((k) => new Function('b', 'sizes', 'round', k.source) as KernelFn);
    hostKernels.set(plan, fns);
  }
  const bound = new Map(Object.entries(call.sizes));
  for (const s of plan.states) {
    if (!states.has(s.name)) states.set(s.name, allocHost(s.dtype as DType, resolveShape(s.shape, bound)));
  }
  const outputs = plan.outputs.map((o, i) => allocHost(o.dtype as DType, call.outputShapes[i]));
  const slots = new Map<number, ArrayBuffer>();
  const sizes = { ...call.sizes };
  plan.kernels.forEach((k, ki) => {
    const buffers = k.buffers.map((b): HostData => {
      const binding = b.binding;
      switch (binding.kind) {
        case 'input': return inputs[binding.name].data;
        case 'param': return call.params.get(binding.name)!.data;
        case 'state': return states.get(binding.name)!.data;
        case 'output': return outputs[binding.index].data;
        case 'temp': {
          // Temporaries live in memory-plan slots: one ArrayBuffer per slot, viewed as each kernel's dtype.
          const n = evalSize(b.elems, sizes);
          let buf = slots.get(binding.slot);
          if (!buf || buf.byteLength < n * 4) slots.set(binding.slot, (buf = new ArrayBuffer(Math.max(n * 4, buf?.byteLength ?? 0))));
          const View = allocData(b.dtype as DType, 0).constructor as new (b: ArrayBuffer, o: number, n: number) => HostData;
          return new View(buf, 0, n);
        }
        default: return binding satisfies never;
      }
    });
    fns[ki](buffers, sizes, { bf16: roundBf16, f16: roundF16, random: randomUniform });
  });
  return outputs;
}
