// `tsfuse bisect`: finds the first kernel whose values differ from the reference interpreter's (or another
// backend's), for a Llama checkpoint, a built-in config with random weights, a model script or an IR file; for the
// prefill step or a decode step N tokens in. Prints the report (compiler/bisect-format.ts) or its JSON; exits 1
// when something differs.

import { interpret } from '../backends/reference/interpreter.ts';
import { lowerGraph } from '../backends/lower.ts';
import { randomBf16Weights } from '../examples/random-checkpoint.ts';
import { traceLlama } from '../examples/llama.ts';
import { DType, isFloat } from '../ir/dtype.ts';
import { Graph, Module } from '../ir/graph.ts';
import { allocData, allocHost, HostTensor, hostTensor } from '../ir/host-tensor.ts';
import { parseModule } from '../ir/parser.ts';
import { numel, resolveShape } from '../ir/shape.ts';
import { builtinConfig } from '../runtime/config.ts';
import { Device, DeviceKind, Program } from '../runtime/device.ts';
import { openDevice } from '../runtime/devices/open.ts';
import { checkTokens, loadLlama } from '../runtime/llama.ts';
import { ParamStore } from '../runtime/params.ts';
import { bisect, BisectReport, formatBisectReport } from './bisect.ts';
import {
  backendOption, checkBackend, checkModelDir, defineCommand, jsonOption, modelOption, parseIds, positiveInt, scriptLimitOptions,
  scriptLimits, UsageError,
} from './cli-args.ts';
import { CompiledModule, compileModule } from './compile-module.ts';
import { HISTORY, NEXT_POS } from './generation.ts';
import type { ScriptLimits } from './script-limits.ts';
import { readTextFile } from './cli-files.ts';
import { defaultContext } from './passes/context.ts';
import { computePlan } from './passes/plan-memory.ts';

/** Something differs: the report is printed, and this one line ends the run with exit code 1. */
export class DivergenceFound extends UsageError {}

/** What bisect runs: a traced module (or one already fused), a graph of it, its inputs, state and weights. */
export interface BisectSubject {
  readonly module: Module;
  readonly graph: string;
  readonly inputs: Record<string, HostTensor>;
  readonly states: Map<string, HostTensor>;
  readonly params: ParamStore;
  readonly maxSizes: Record<string, number>;
  /** Which step this is, for the report. */
  readonly step?: string;
}

export const bisectCommand = defineCommand({
  synopsis: '(--model DIR --ids 5,9,13 | --config NAME | MODEL.ts | FILE.ir) [--backend B] [--against B] [--step prefill|decode]',
  about: `Runs the compiled program one kernel at a time beside the reference interpreter (or another backend, --against)
on the same inputs, weights and state, compares every value that crosses a kernel boundary, and reports the first
kernel whose values differ beyond the tolerance: the IR nodes it fused with their model lines, the relative error,
the worst element, whether its inputs agreed, and its generated source. --inside also compares every value inside
that kernel. When every kernel agrees, the compiled graph is checked against the traced one pass by pass.
Exit code 0 when everything agrees, 1 when something differs. Model scripts and IR files run on random inputs
(integer scalars 0) and random weights; --config on random bf16 weights.`,
  positionals: true,
  options: {
    model: modelOption,
    ids: { type: 'string', value: 'IDS', help: 'the prompt as token ids, comma-separated (--config: default 1..8)' },
    config: { type: 'string', value: 'NAME', help: 'a built-in Llama config (llama-tiny, llama-3.2-1b) with random bf16 weights' },
    entry: { type: 'string', value: 'NAME', help: 'the entry point of a model script (default: its first)' },
    graph: { type: 'string', value: 'NAME', help: 'the graph of an IR file (default: its first)' },
    dims: { type: 'string', value: 'S=8,...', help: 'sizes of the symbolic dimensions of a script or IR file (default 8)' },
    backend: backendOption,
    against: { type: 'string', default: 'reference', value: 'NAME', help: 'what to compare with: reference (the interpreter) or a backend' },
    tolerance: { type: 'string', value: 'X', help: 'relative error allowed for f32 values (default 1e-4 on the host, 1e-3 with a GPU)' },
    step: { type: 'string', default: 'prefill', value: 'prefill|decode', help: 'the step of a Llama model' },
    'decode-at': { type: 'string', value: 'N', help: 'the N-th decode step after the prompt (implies --step decode; default 1)' },
    inside: { type: 'boolean', default: false, help: 'compare every value inside the kernel that differs (compiled with extra outputs)' },
    out: { type: 'string', value: 'DIR', help: "where the culprit's generated source is written (default: a new temp folder)" },
    seed: { type: 'string', default: '1', value: 'N', help: 'seed of random weights and inputs' },
    json: jsonOption,
    ...scriptLimitOptions,
  },
  async run(values, positionals) {
    const given = [values.model !== undefined, values.config !== undefined, positionals.length > 0].filter(Boolean).length;
    if (given !== 1 || positionals.length > 1) throw new UsageError('give one of --model DIR, --config NAME, a model script or an IR file');
    const backend = checkBackend(values.backend);
    if (backend === 'reference') throw new UsageError('--backend reference has no kernels to bisect (compare with it: --against reference)');
    const against = values.against === 'reference' ? 'reference' : checkBackend(values.against);
    const tolerance = values.tolerance === undefined ? undefined : parseTolerance(values.tolerance);
    const seed = positiveInt(values.seed, '--seed');
    const step = values['decode-at'] !== undefined ? 'decode' : values.step;
    if (step !== 'prefill' && step !== 'decode') throw new UsageError(`--step must be prefill or decode, got '${step}'`);
    const decodeAt = values['decode-at'] !== undefined ? positiveInt(values['decode-at'], '--decode-at') : step === 'decode' ? 1 : 0;

    let subject: BisectSubject;
    if (positionals.length === 0) {
      const model = values.model !== undefined ? loadLlama(checkModelDir(values.model)) : undefined;
      const cfg = model?.cfg ?? configByName(values.config!);
      const ids = values.ids !== undefined ? parseIds(values.ids) : model ? parseIds(undefined) : [1, 2, 3, 4, 5, 6, 7, 8];
      checkTokens(cfg, ids);
      const weights = model?.weights ?? randomBf16Weights(cfg, seed);
      const cacheLength = ids.length + decodeAt;
      const module = traceLlama(cfg, { weightDType: model?.weightDType ?? DType.BF16, cacheLength });
      subject = llamaStep(module, new ParamStore((n) => weights.tensor(n)), ids, decodeAt, cacheLength);
    } else {
      if (values['decode-at'] !== undefined || values.step !== 'prefill') throw new UsageError('--step and --decode-at are for Llama models (--model, --config)');
      const file = positionals[0];
      const module = file.endsWith('.ir') ? { graphs: parseModule(readTextFile(file, 'an IR file'), file).graphs } : await scriptModule(file, values.entry, scriptLimits(values));
      const name = values.graph ?? module.graphs[0]?.name;
      const g = module.graphs.find((x) => x.name === name);
      if (!g) throw new UsageError(`${file} has no graph @${name} (it has ${module.graphs.map((x) => '@' + x.name).join(', ')})`);
      subject = randomSubject(module, g, parseDims(values.dims), seed);
    }

    const report = await bisectSubject(subject, { backend, against, tolerance, inside: values.inside, sourceDir: values.out });
    if (values.json) console.log(JSON.stringify(report));
    else process.stdout.write(formatBisectReport(report));
    if (!report.agrees) throw new DivergenceFound(verdict(report));
  },
});

export interface SubjectOptions {
  readonly backend: DeviceKind;
  readonly against: DeviceKind | 'reference';
  readonly tolerance?: number;
  readonly inside?: boolean;
  readonly sourceDir?: string;
}

/** Compiles the subject (a module already fused is lowered as it is), loads it on the devices and bisects it. */
export async function bisectSubject(s: BisectSubject, opts: SubjectOptions): Promise<BisectReport> {
  const fused = s.module.graphs.some((g) => g.kernels.length > 0);
  const compiled: CompiledModule = fused
    ? { graphs: s.module.graphs.map((graph) => { const plan = computePlan(graph, defaultContext); return { graph, plan, kernels: lowerGraph(graph, plan.slotOf) }; }) }
    : compileModule(s.module);
  const devices: Device[] = [];
  const load = async (kind: DeviceKind): Promise<Program> => {
    const device = await openDevice(kind);
    devices.push(device);
    return device.load(compiled, s.params, { maxSizes: s.maxSizes });
  };
  try {
    const program = await load(opts.backend);
    const against = opts.against === 'reference' ? 'reference' : await load(opts.against);
    return await bisect({
      compiled, program, graph: s.graph, inputs: s.inputs, states: s.states, params: s.params, against,
      tolerance: opts.tolerance, inside: opts.inside, sourceDir: opts.sourceDir, step: s.step, traced: fused ? undefined : { module: s.module },
    });
  } finally {
    for (const d of devices) d.destroy();
  }
}

/**
 * A step of the generation contract (compiler/generation.ts): the prefill of `ids`, or the `decodeAt`-th decode step
 * after it, its state made by the reference interpreter running the steps before it (the same state for both sides).
 */
export function llamaStep(module: Module, params: ParamStore, ids: readonly number[], decodeAt: number, cacheLength: number): BisectSubject {
  const graph = (name: string) => module.graphs.find((g) => g.name === name)!;
  const states = new Map(graph('prefill').states.map((v) => [v.name!, allocHost(v.type.dtype, v.type.shape as number[])]));
  let inputs: Record<string, HostTensor> = { tokens: hostTensor(DType.I32, [ids.length], ids), pos: hostTensor(DType.I32, [], [0]) };
  const maxSizes = { S: Math.max(ids.length, 1) };
  for (let step = 0; step < decodeAt; step++) {
    const g = graph(step === 0 ? 'prefill' : 'decode');
    const outs = interpret(g, { inputs, param: (n) => params.tensor(g, n), states });
    const next = outs[g.outputNames.indexOf('next')];
    inputs = { tokens: next, pos: hostTensor(DType.I32, [], [states.get(NEXT_POS)!.data[0]]) };
  }
  if (!states.has(HISTORY) || inputs.pos.data[0] + inputs.tokens.shape[0] > cacheLength) {
    throw new Error(`bisect: a cache of ${cacheLength} positions does not hold the step at position ${inputs.pos.data[0]}`);
  }
  const pos = inputs.pos.data[0];
  const prompt = `a prompt of ${ids.length} token${ids.length === 1 ? '' : 's'}`;
  const step = decodeAt === 0 ? prompt : `decode step ${decodeAt} after ${prompt}, at position ${pos}`;
  return { module, graph: decodeAt === 0 ? 'prefill' : 'decode', inputs, states, params, maxSizes, step };
}

/** Random inputs and weights for a graph: floats in [-1, 1) (weights scaled by 1/√fan-in), integers in [0, 4) (scalars 0), state zero. */
export function randomSubject(module: Module, g: Graph, dims: ReadonlyMap<string, number>, seed: number): BisectSubject {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  const sized = (shape: readonly (number | string)[]) => shape.map((d) => (typeof d === 'number' ? d : dims.get(d) ?? 8));
  const fill = (dtype: DType, shape: number[], scale: number): HostTensor => {
    const data = allocData(dtype, numel(shape));
    for (let i = 0; i < data.length; i++) {
      data[i] = isFloat(dtype) ? (2 * next() - 1) * scale : dtype === DType.Bool ? Number(next() < 0.5) : shape.length === 0 ? 0 : Math.floor(4 * next());
    }
    return hostTensor(dtype, shape, data);
  };
  const inputs = Object.fromEntries(g.inputs.map((v) => [v.name!, fill(v.type.dtype, sized(v.type.shape), 1)]));
  const weights = new Map<string, HostTensor>();
  const params = new ParamStore((name) => {
    const v = g.params.find((p) => p.name === name)!;
    const shape = sized(v.type.shape);
    let t = weights.get(name);
    if (!t) weights.set(name, (t = fill(v.type.dtype, shape, shape.length >= 2 ? 1 / Math.sqrt(shape[shape.length - 1]) : 1)));
    return t;
  });
  const bindings = new Map<string, number>();
  for (const v of g.inputs) v.type.shape.forEach((d, i) => { if (typeof d === 'string') bindings.set(d, inputs[v.name!].shape[i]); });
  const states = new Map(g.states.map((v) => [v.name!, allocHost(v.type.dtype, resolveShape(v.type.shape, bindings))]));
  return { module, graph: g.name, inputs, states, params, maxSizes: Object.fromEntries(bindings) };
}

/** The one line that ends a run where something differs (on stderr, after the report). */
export function verdict(r: BisectReport): string {
  const against = r.against === 'reference' ? 'the reference interpreter' : r.against;
  if (r.culprit) {
    const bad = r.culprit.outputs.find((c) => !c.agrees)!;
    return `kernel ${r.culprit.kernel} (${r.culprit.kind}) of @${r.graph} differs from ${against}: relative error ${bad.relErr.toExponential(2)} in ${bad.value}` +
      `${r.culprit.suspect.loc ? `; suspect ${r.culprit.suspect.value} = ${r.culprit.suspect.op} at ${r.culprit.suspect.loc}` : ''}`;
  }
  return `every kernel of @${r.graph} agrees, but the compiled graph differs from the traced one${r.passes?.pass ? ` after pass ${r.passes.pass}` : ''}`;
}

function configByName(name: string) {
  try {
    return builtinConfig(name);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function parseTolerance(text: string): number {
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v < 0) throw new UsageError(`--tolerance must be a non-negative number, got '${text}'`);
  return v;
}

function parseDims(text: string | undefined): Map<string, number> {
  const dims = new Map<string, number>();
  for (const part of (text ?? '').split(',').filter(Boolean)) {
    const m = /^\s*([A-Za-z_]\w*)\s*=\s*(\d+)\s*$/.exec(part);
    if (!m || Number(m[2]) < 1) throw new UsageError(`--dims takes NAME=SIZE pairs like S=8,T=4, got '${part}'`);
    dims.set(m[1], Number(m[2]));
  }
  return dims;
}

async function scriptModule(file: string, entry: string | undefined, limits: ScriptLimits): Promise<Module> {
  const { traceScript } = await import('./script.ts'); // ts-morph loads only for scripts
  return { graphs: [(await traceScript(file, entry, limits)).graph] };
}
