// Finding the kernel that went wrong. The compiled program runs one kernel at a time on its device, and the
// reference interpreter (or the same module on another device) runs beside it on the same inputs, weights and state;
// before each kernel the values it reads are compared, after it the values it writes (every value that crosses a
// kernel boundary). The first kernel whose writes differ beyond the tolerance is the culprit: reported with the IR
// nodes it fused and their model lines, the relative error, the worst element, whether its inputs agreed, and its
// generated source. On request the culprit is compiled again with every value inside it as an extra output, which
// names the first IR node that goes wrong. When every kernel agrees with the compiled graph, the compiled graph is
// checked against the traced one, and a disagreement is traced to the first pass that introduced it.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { renderJs } from '../backends/cpu/render-js.ts';
import { renderCuda } from '../backends/cuda/render-cuda.ts';
import { narrowActivations } from '../backends/schedule.ts';
import { cudaCaps } from '../backends/device-caps.ts';
import { KernelIR } from '../backends/kernel-ir.ts';
import { lowerGraph } from '../backends/lower.ts';
import { narrowWgsl, renderWgsl, wgslFeatures } from '../backends/wgsl/render-wgsl.ts';
import { allocHost, HostTensor } from '../ir/host-tensor.ts';
import { Graph, Kernel, kernelIO, KernelKind, Module, Node, Value } from '../ir/graph.ts';
import { Op } from '../ir/ops.ts';
import { kernelNodeLines } from '../ir/printer.ts';
import { numel, resolveShape } from '../ir/shape.ts';
import { BufferKey, Device, outputKey, Program, Sizes } from '../runtime/device.ts';
import { bindSizes } from '../runtime/executor.ts';
import { ParamStore } from '../runtime/params.ts';
import { compareTensors, defaultTolerance, Difference, Tolerance, toleranceFor } from './bisect-compare.ts';
import { checkPasses, interpretAll, PassReport, withOutputs } from './bisect-reference.ts';
import { CompiledGraph, CompiledModule } from './compile-module.ts';
import { defaultContext, PassContext } from './passes/context.ts';
import { Pass } from './passes/pipeline.ts';
import { computePlan } from './passes/plan-memory.ts';

export type { PassReport, ResultCheck } from './bisect-reference.ts';
export { formatBisectReport } from './bisect-format.ts';

export interface BisectOptions {
  /** 'reference' (default): the interpreter, op by op on the compiled graph; or the same module loaded on another device. */
  readonly against?: 'reference' | Program;
  /** Relative error allowed for f32 values (default 1e-4 on the host, 1e-3 where a GPU takes part; see bisect-compare.ts). */
  readonly tolerance?: Tolerance;
  /** Also compare every value inside the first kernel that differs (compiled again with them as extra outputs). */
  readonly inside?: boolean;
  /** Where the culprit's generated source is written (default: a new folder in the system's temp folder). */
  readonly sourceDir?: string;
  /** Which step this is, for the report (`decode step 3 after a prompt of 3 tokens, at position 5`). */
  readonly step?: string;
  /** The module as traced and how it was compiled: when every kernel agrees, the passes are checked too. */
  readonly traced?: { readonly module: Module; readonly passes?: readonly Pass[]; readonly ctx?: PassContext };
}

export interface BisectRequest extends BisectOptions {
  /** The module `program` was loaded from: its memory plans say which buffer holds each value. */
  readonly compiled: CompiledModule;
  readonly program: Program;
  readonly graph: string;
  readonly inputs: Readonly<Record<string, HostTensor>>;
  /** State before the step, by name; a missing one starts at zero. */
  readonly states?: ReadonlyMap<string, HostTensor>;
  readonly params: ParamStore;
}

/** One value compared: which, where it lives, and how far apart the two sides are. */
export interface ValueCheck extends Difference {
  /** As the IR dump names it: `%35`, `%tokens`. */
  readonly value: string;
  /** dtype and the shape it has in this run: `f32[3,352]`. */
  readonly type: string;
  /** The op that computes it (absent for inputs and state). */
  readonly op?: string;
  /** The model line that created it. */
  readonly loc?: string;
  /** The buffer it was read from on the device (absent for values inside a kernel). */
  readonly buffer?: BufferKey;
}

/** An IR node a kernel fused: how it prints, and the model line that created it. */
export interface FusedNode {
  readonly value: string;
  readonly op: string;
  readonly text: string;
  readonly loc?: string;
}

export interface InsideReport {
  /** The values inside the kernel, in node order (its writes among them), from the compilations that reproduced the difference. */
  readonly checks: readonly ValueCheck[];
  /** Whether every compilation with extra outputs still wrote values that differ (false: extra stores changed how it runs, or one failed). */
  readonly reproduced: boolean;
  /** Why a value could not be made an output, where one could not. */
  readonly error?: string;
}

export interface KernelReport {
  /** `k5`: the name in dumps, --dump-kernels files and generated code. */
  readonly kernel: string;
  /** Its place in execution order (0-based). */
  readonly index: number;
  readonly kind: KernelKind;
  readonly nodes: readonly FusedNode[];
  /** The values it reads (weights aside), compared before it ran. */
  readonly inputs: readonly ValueCheck[];
  readonly inputsAgree: boolean;
  /** The values it writes, compared after it ran. */
  readonly outputs: readonly ValueCheck[];
  /** The node to look at first: the first inside the kernel that differs (with `inside`), else the first write that differs. */
  readonly suspect: FusedNode & { readonly check: ValueCheck; readonly found: 'inside' | 'written' };
  readonly inside?: InsideReport;
  /** The kernel's generated source for each device that ran it. */
  readonly sources: readonly { readonly backend: string; readonly file: string }[];
}

export interface BisectReport {
  readonly graph: string;
  readonly step?: string;
  readonly backend: string;
  /** The device, in words. */
  readonly device: string;
  readonly against: string;
  readonly tolerance: Tolerance;
  readonly sizes: Sizes;
  readonly kernels: number;
  /** Kernels run and compared (up to and including the culprit). */
  readonly kernelsChecked: number;
  readonly valuesChecked: number;
  readonly agrees: boolean;
  /** The agreeing value with the largest relative error: how much margin the tolerance had. */
  readonly closest?: ValueCheck;
  readonly culprit?: KernelReport;
  /** When every kernel agrees: the compiled graph against the traced one, and the pass that made them differ. */
  readonly passes?: PassReport;
}

/** Values inside a kernel larger than this are not made extra outputs (a cast of a whole weight matrix). */
const INSIDE_LIMIT = 1 << 22;

export async function bisect(req: BisectRequest): Promise<BisectReport> {
  const cg = compiledGraph(req.compiled, req.graph);
  const g = cg.graph;
  if (req.program.graph(g.name) !== g) throw new Error(`bisect: the program was not loaded from this compiled module (@${g.name} differs)`);
  const against = req.against ?? 'reference';
  if (against !== 'reference' && against.graph(g.name) !== g) {
    throw new Error('bisect: --against must run the same compiled module as the program under test');
  }
  const sizes = bindSizes(g, req.inputs);
  const states = initialStates(g, req.states, sizes);
  const tolerance = req.tolerance ?? defaultTolerance(req.program.device.kind, against === 'reference' ? 'reference' : against.device.kind);
  const names = valueNames(g);
  const reference = against === 'reference' ? interpretAll(g, req.inputs, states, req.params) : undefined;
  const left = deviceSide(req.program, cg, sizes, req.inputs, states);
  const right = reference ? referenceSide(reference) : deviceSide(against as Program, cg, sizes, req.inputs, states);

  let valuesChecked = 0;
  let closest: ValueCheck | undefined;
  /** Compares what both sides hold of `values`; `boundary`: values crossing kernel boundaries, counted in the report. */
  const compare = async (values: readonly Value[], l: Side, r: Side, boundary = true): Promise<ValueCheck[]> => {
    const got = await Promise.all(values.map((v) => l.read(v)));
    const want = await Promise.all(values.map((v) => r.read(v)));
    const checks: ValueCheck[] = [];
    values.forEach((v, i) => {
      const [a, b] = [got[i], want[i]];
      if (!a || !b) return;
      const c: ValueCheck = {
        value: names(v), type: `${v.type.dtype}[${b.shape.join(',')}]`, op: v.producer?.op, loc: v.producer?.loc,
        buffer: l.buffer(v), ...compareTensors(a, b, toleranceFor(v.type.dtype, tolerance)),
      };
      checks.push(c);
      if (!boundary) return;
      valuesChecked++;
      if (c.agrees && c.relErr > 0 && (!closest || c.relErr > closest.relErr)) closest = c;
    });
    return checks;
  };

  const base = {
    graph: g.name, step: req.step, backend: req.program.device.kind, device: req.program.device.description,
    against: against === 'reference' ? 'reference' : against.device.kind, tolerance, sizes, kernels: g.kernels.length,
  };
  // A state updated in place holds its new value once the kernel writing it has run: later reads of the old value
  // cannot be checked against the buffer.
  const updated = new Set<string>();
  for (let i = 0; i < g.kernels.length; i++) {
    const k = g.kernels[i];
    const io = kernelIO(g, k);
    const inputs = await compare(io.reads.filter((v) => v.kind !== 'param' && !(v.kind === 'state' && updated.has(v.name!))), left, right);
    left.run(i, i + 1);
    right.run(i, i + 1);
    const outputs = await compare(io.writes, left, right);
    for (const v of io.writes) if (v.producer?.op === Op.UpdateSlice) updated.add(stateOf(v).name!);
    if (outputs.every((c) => c.agrees)) continue;

    const nodes = fusedNodes(g, k, names);
    const inside = req.inside
      ? await lookInside(req, cg, k, i, sizes, states, reference, compare, names, new Set(outputs.map((c) => c.value)))
      : undefined;
    const firstInside = inside?.checks.find((c) => !c.agrees);
    const check = firstInside ?? outputs.find((c) => !c.agrees)!;
    const node = nodes.find((n) => n.value === check.value)!;
    const sources = writeSources(req, against, g.name, cg.kernels, i);
    return {
      ...base, kernelsChecked: i + 1, valuesChecked, agrees: false, closest,
      culprit: {
        kernel: k.name, index: i, kind: k.attrs.kind, nodes, inputs, inputsAgree: inputs.every((c) => c.agrees), outputs,
        suspect: { ...node, check, found: firstInside ? 'inside' : 'written' }, inside, sources,
      },
    };
  }
  const passes = reference && req.traced
    ? checkPasses({ ...req.traced, compiled: g, reference, inputs: req.inputs, states, params: req.params, tolerance })
    : undefined;
  return {
    ...base, kernelsChecked: g.kernels.length, valuesChecked, agrees: passes?.agrees ?? true, closest, passes,
  };
}

function compiledGraph(m: CompiledModule, name: string): CompiledGraph {
  const cg = m.graphs.find((c) => c.graph.name === name);
  if (!cg) throw new Error(`bisect: no graph @${name} (the module has ${m.graphs.map((c) => '@' + c.graph.name).join(', ')})`);
  if (cg.graph.kernels.length === 0) throw new Error(`bisect: @${name} has no kernels (it was not compiled)`);
  return cg;
}

function initialStates(g: Graph, given: ReadonlyMap<string, HostTensor> | undefined, sizes: Sizes): Map<string, HostTensor> {
  const bindings = new Map(Object.entries(sizes));
  return new Map(g.states.map((v) => [v.name!, given?.get(v.name!) ?? allocHost(v.type.dtype, resolveShape(v.type.shape, bindings))]));
}

/** How the IR dump names each value: declared names, node results numbered in order (as ir/printer.ts does). */
function valueNames(g: Graph): (v: Value) => string {
  const names = new Map<Value, string>();
  for (const v of [...g.inputs, ...g.params, ...g.states]) names.set(v, `%${v.name}`);
  g.nodes.forEach((n, i) => names.set(n.output, `%${i}`));
  return (v) => names.get(v) ?? '%?';
}

function fusedNodes(g: Graph, k: Kernel, names: (v: Value) => string): FusedNode[] {
  const lines = kernelNodeLines(g, k);
  return k.nodes.map((n: Node, i) => ({ value: names(n.output), op: n.op, text: lines[i], loc: n.loc }));
}

/** The state an in-place update writes (through chains of updates). */
function stateOf(v: Value): Value {
  return v.producer?.op === Op.UpdateSlice ? stateOf(v.producer.inputs[0]) : v;
}

// ---- the two sides ----

interface Side {
  /** Queues kernels [from, to) (the reference has computed everything already). */
  run(from: number, to: number): void;
  /** The value as this side holds it now; undefined where it is in no buffer (weights, values inside kernels). */
  read(v: Value): HostTensor | Promise<HostTensor> | undefined;
  buffer(v: Value): BufferKey | undefined;
}

/** The buffer that holds `v` on a device, as lowering binds it (backends/lower.ts), or undefined. */
function bufferOf(g: Graph, slotOf: ReadonlyMap<Value, number>, v: Value): BufferKey | undefined {
  switch (v.kind) {
    case 'input': case 'state': return `${v.kind}:${v.name}`;
    case 'param': return undefined;
    case 'node': {
      if (v.producer!.op === Op.UpdateSlice) return `state:${stateOf(v).name}`;
      const out = g.outputs.indexOf(v);
      if (out >= 0) return outputKey(g, out);
      const slot = slotOf.get(v);
      return slot === undefined ? undefined : `temp:${g.name}:${slot}`;
    }
    default: return v.kind satisfies never;
  }
}

function deviceSide(program: Program, cg: CompiledGraph, sizes: Sizes, inputs: Readonly<Record<string, HostTensor>>,
  states: ReadonlyMap<string, HostTensor>): Side {
  const g = cg.graph;
  for (const v of g.inputs) if (program.has(`input:${v.name}`)) program.write(`input:${v.name}`, inputs[v.name!]);
  for (const v of g.states) program.write(`state:${v.name}`, states.get(v.name!)!);
  const bindings = new Map(Object.entries(sizes));
  const buffer = (v: Value) => bufferOf(g, cg.plan.slotOf, v);
  return {
    run: (from, to) => program.run(g.name, sizes, { from, to }),
    read: (v) => {
      const key = buffer(v);
      return key && program.has(key) ? program.read(key, v.type.dtype, resolveShape(v.type.shape, bindings)) : undefined;
    },
    buffer,
  };
}

function referenceSide(values: ReadonlyMap<Value, HostTensor>): Side {
  return { run: () => {}, read: (v) => values.get(v), buffer: () => undefined };
}

// ---- inside a kernel ----

type Compare = (values: readonly Value[], l: Side, r: Side, boundary: boolean) => Promise<ValueCheck[]>;

/**
 * The culprit compiled again with the values inside it as extra graph outputs (the rest of the graph as it was),
 * run up to and including it on the same device (and on the other side's, when that is a device), and every value
 * compared. A device may refuse that many outputs in one kernel (WebGPU's storage buffers per shader): the values
 * are then split in halves, each half a compilation of its own. Lowering writes the extra outputs like any other,
 * which may change how the kernel splits into rows; only compilations whose writes still differ as they did are
 * believed (`reproduced`: all of them did).
 */
async function lookInside(req: BisectRequest, cg: CompiledGraph, k: Kernel, index: number, sizes: Sizes,
  states: ReadonlyMap<string, HostTensor>, reference: ReadonlyMap<Value, HostTensor> | undefined, compare: Compare,
  names: (v: Value) => string, writtenNames: ReadonlySet<string>): Promise<InsideReport> {
  const g = cg.graph;
  const written = kernelIO(g, k).writes;
  const bindings = new Map(Object.entries(sizes));
  const extra = k.nodes.map((n) => n.output).filter((v) => !written.includes(v) && v.producer!.op !== Op.Const &&
    v.producer!.op !== Op.UpdateSlice && numel(resolveShape(v.type.shape, bindings)) <= INSIDE_LIMIT);
  const found = new Map<string, ValueCheck>();
  let reproduced = true;
  let error: string | undefined;

  const variant = async (batch: readonly Value[]): Promise<ValueCheck[]> => {
    const g2 = withOutputs(g, batch, batch.map((_, i) => `bisect.${i}`));
    const plan = computePlan(g2, defaultContext);
    const module: CompiledModule = { graphs: [{ graph: g2, plan, kernels: lowerGraph(g2, plan.slotOf) }] };
    const programs: Program[] = [];
    const side = async (device: Device) => {
      const p = await device.load(module, req.params, { maxSizes: sizes });
      programs.push(p);
      const s = deviceSide(p, module.graphs[0], sizes, req.inputs, states);
      s.run(0, index + 1);
      return s;
    };
    try {
      const left = await side(req.program.device);
      const right = reference ? referenceSide(reference) : await side((req.against as Program).device);
      return await compare([...written, ...batch], left, right, false);
    } finally {
      for (const p of programs) p.destroy();
    }
  };
  const probe = async (batch: readonly Value[]): Promise<void> => {
    let checks: ValueCheck[];
    try {
      checks = await variant(batch);
    } catch (e) {
      if (batch.length > 1) {
        const half = Math.ceil(batch.length / 2);
        await probe(batch.slice(0, half));
        await probe(batch.slice(half));
      } else {
        reproduced = false;
        error ??= (e as Error).message.split('\n')[0];
      }
      return;
    }
    if (!checks.some((c) => !c.agrees && writtenNames.has(c.value))) {
      reproduced = false;
      return;
    }
    for (const c of checks) found.set(c.value, { ...c, buffer: undefined });
  };
  await probe(extra);
  const checks = k.nodes.flatMap((n) => found.get(names(n.output)) ?? []);
  return { checks, reproduced: reproduced && checks.length > 0, ...(error ? { error } : {}) };
}

// ---- generated source ----

/**
 * Kernel `i` of a graph's `kernels` as the device renders it (WebGPU: as scheduled for the adapter's features, one
 * binding per buffer; the GPUs: with the graph's temporaries that matrix units read stored 16-bit, narrowActivations).
 */
export function kernelSource(device: Device, kernels: readonly KernelIR[], i: number): { ext: string; code: string } | undefined {
  const k = kernels[i];
  switch (device.kind) {
    case 'cpu': return { ext: 'js', code: renderJs(k) };
    case 'webgpu': {
      const gpu = (device as { gpu?: Parameters<typeof wgslFeatures>[0] }).gpu;
      const features = gpu ? wgslFeatures(gpu) : {};
      return { ext: 'wgsl', code: renderWgsl(narrowWgsl(kernels, features)[i], features).code };
    }
    case 'cuda': return { ext: 'cu', code: renderCuda(narrowActivations(kernels, cudaCaps())[i]) };
    case 'reference': return undefined;
    default: return device.kind satisfies never;
  }
}

function writeSources(req: BisectRequest, against: 'reference' | Program, graph: string, kernels: readonly KernelIR[], i: number): { backend: string; file: string }[] {
  const k = kernels[i];
  const devices = [req.program.device, ...(against === 'reference' || against.device.kind === req.program.device.kind ? [] : [against.device])];
  const dir = req.sourceDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-bisect-'));
  fs.mkdirSync(dir, { recursive: true });
  return devices.flatMap((d) => {
    const src = kernelSource(d, kernels, i);
    if (!src) return [];
    const file = path.join(dir, `${graph}.${k.name}.${src.ext}`);
    fs.writeFileSync(file, src.code.endsWith('\n') ? src.code : `${src.code}\n`);
    return [{ backend: d.kind, file }];
  });
}
