// compile(): model code as a function that is traced on its first call with the inputs it is given, compiled for a
// backend, and reused on later calls while its guards hold (compiler/guards.ts); a failed guard compiles again.
//
// Dynamic dimensions are padded to buckets. An input axis declared dynamic is a symbol while tracing (`S`), and a
// call pads it with `padValue` up to the next bucket (powers of two by default), so that every size in a bucket
// runs one compiled graph, compiled for that bucket's size. The padding is masked like this:
//   - every output axis whose size is the symbol is sliced back to the real size, so padded rows never reach the
//     caller;
//   - model code that mixes positions along the axis (a sum or a mean over it, attention that is not causal) asks
//     for the real size with validLength('S'), an i32 scalar input, and masks with it:
//     `where(arange('S').lt(validLength('S')), x, 0)`;
//   - causal attention needs nothing: a padded position comes after every real one, so no real query sees it.
//     The KV cache entries it writes (past the real prompt) are overwritten by the decode step of that position
//     before any query reads them (a step writes its own key before attending).

import { Graph, Module, Value } from '../ir/graph.ts';
import { Op } from '../ir/ops.ts';
import { formatType } from '../ir/shape.ts';
import { DType } from '../ir/dtype.ts';
import { allocData, allocHost, HostTensor, hostTensor } from '../ir/host-tensor.ts';
import { isDType } from '../ir/dtype.ts';
import { Device, Program } from '../runtime/device.ts';
import { HostDevice } from '../runtime/devices/host.ts';
import { openDevice } from '../runtime/devices/open.ts';
import { runOnce } from '../runtime/executor.ts';
import { ParamStore } from '../runtime/params.ts';
import { compileModule, CompiledModule } from './compile-module.ts';
import {
  Buckets, CallSignature, DynamicAxes, firstFailure, GuardFailure, signatureKey, signatureOf,
} from './guards.ts';
import { PassContext } from './passes/context.ts';
import { Pass } from './passes/pipeline.ts';
import { padAxis, sliceAxis } from './padding.ts';
import { Tensor } from './tensor.ts';
import { trace, TraceError, validLengthInput } from './trace.ts';
import type { BisectReport } from './bisect.ts';
import type { BisectCallOptions } from './bisect-call.ts';
import { log } from '../ir/logs.ts';

export type { Buckets, DynamicAxes, GuardFailure } from './guards.ts';

/** cpu: fused kernels as JavaScript; reference: the interpreter, op by op on the traced graph; webgpu: WGSL; cuda. */
export type CompileBackend = 'cpu' | 'reference' | 'webgpu' | 'cuda';
/** The backends whose calls return at once (webgpu's return promises). */
export type HostBackend = 'cpu' | 'reference';

/** Parameters (weights) by name, or a function that loads one. */
export type ParamSource = Readonly<Record<string, HostTensor>> | ((name: string) => HostTensor);

export interface CompileFnOptions<B extends CompileBackend = HostBackend> {
  /** Default 'cpu'; may be changed later through `compiled.backend` (a guard). */
  readonly backend?: B;
  /** The traced graph's name (default: the function's name, else `main`). */
  readonly name?: string;
  /** Input names, in argument order (default: the function's parameter names, else x0, x1, …). */
  readonly inputs?: readonly string[];
  /** Dynamic axes per input: `{ tokens: { 0: 'S' } }`. */
  readonly dynamic?: Readonly<Record<string, DynamicAxes>>;
  /** Default 'pow2'. */
  readonly buckets?: Buckets;
  /** Value that pads a dynamic axis up to its bucket (default 0). */
  readonly padValue?: number;
  readonly params?: ParamSource;
  /** State tensors to use (and fill): pass one compiled function's `states` to another to share a KV cache. */
  readonly states?: Map<string, HostTensor>;
  /** The pass pipeline (default defaultPasses; insertPass() adds one of your own). */
  readonly passes?: readonly Pass[];
  /** Run the IR verifier after every pass. */
  readonly verify?: boolean;
  /** Called after each pass of each compilation with the module as it stands (to print the IR). */
  readonly after?: (pass: string, m: Module) => void;
  /** Fusion decisions and their reasons. */
  readonly explain?: (pass: string, line: string) => void;
}

/** One compilation: for which signature, and why (the first call, or the guard that failed). */
export interface CompileEvent {
  readonly key: string;
  /** undefined for the first compilation. */
  readonly failed?: GuardFailure;
  readonly ms: number;
}

export interface CompileStats {
  readonly calls: number;
  readonly compilations: number;
  readonly cacheHits: number;
  /** Every compilation in order; all but the first name the guard that failed. */
  readonly compiles: readonly CompileEvent[];
}

export interface CompiledEntry {
  readonly key: string;
  readonly signature: CallSignature;
  /** The traced graph (symbolic dims as symbols), before any pass. */
  readonly traced: Graph;
  /** The module after the pass pipeline, with kernels (absent for the reference backend). */
  readonly compiled?: CompiledModule;
}

type HostArgs<A extends readonly Tensor[]> = { [K in keyof A]: HostTensor };
export type HostResult<R> = R extends Tensor ? HostTensor : HostTensor[];
type Returned<B extends CompileBackend, T> = B extends HostBackend ? T : Promise<T>;

export interface CompiledFunction<A extends Tensor[], R extends Tensor | Tensor[], B extends CompileBackend> {
  (...inputs: HostArgs<A>): Returned<B, HostResult<R>>;
  /** The backend of the next call; changing it is a guard like any other (among host backends, or webgpu). */
  backend: B extends HostBackend ? HostBackend : B;
  readonly stats: CompileStats;
  /** State tensors (declared with state()) by name: kept across calls and shared by every compiled graph. */
  readonly states: Map<string, HostTensor>;
  /** Compiled graphs by cache key. */
  readonly cache: ReadonlyMap<string, CompiledEntry>;
  readonly inputNames: readonly string[];
  /**
   * Runs a call's kernels one at a time beside the reference interpreter (or `options.against`) and returns the
   * first kernel whose values differ, as data (compiler/bisect.ts). Compiles for the inputs as a call would;
   * leaves `states` as they were. Options may follow the inputs.
   */
  bisect(...inputs: [...HostArgs<A>, BisectCallOptions?]): Promise<BisectReport>;
}

interface Entry extends CompiledEntry {
  /** The entry loaded on its device; host devices load at once, GPUs with a promise. */
  readonly program: Program | Promise<Program>;
  /** fn returned one tensor, not an array: the call returns one too. */
  readonly single: boolean;
  /** Inputs that are indices (of a gather, of a state write), with the range their values must lie in. */
  readonly indexInputs: readonly IndexInput[];
}

interface IndexInput {
  readonly input: string;
  /** Values must lie in [0, limit). */
  readonly limit: number;
  readonly what: string;
}

/**
 * The inputs a gather reads its rows from, or a state write its position (directly or through views), with the
 * range their values must lie in where it is static: a call checks them on the host, so that an index out of range
 * is a named error on every backend (kernels on a GPU could only clamp it).
 */
function indexInputsOf(g: Graph): IndexInput[] {
  const found: IndexInput[] = [];
  const inputOf = (v: Value): Value | undefined => {
    while (v.producer && [Op.Reshape, Op.Permute, Op.Expand, Op.Slice].includes(v.producer.op as Op)) v = v.producer.inputs[0];
    return v.kind === 'input' ? v : undefined;
  };
  for (const n of g.nodes) {
    if (n.op === Op.Gather) {
      const [table, ids] = n.inputs;
      const input = inputOf(ids);
      const rows = table.type.shape[0];
      if (input && typeof rows === 'number') found.push({ input: input.name!, limit: rows, what: `a row of a table of ${rows} (gather)` });
    } else if (n.op === Op.UpdateSlice) {
      const [target, update, index] = n.inputs;
      const axis = n.attrs.axis as number;
      const [size, count] = [target.type.shape[axis], update.type.shape[axis]];
      const input = inputOf(index);
      if (input && typeof size === 'number' && typeof count === 'number') {
        found.push({ input: input.name!, limit: size - count + 1, what: `the position of a write of ${count} into ${size} along axis ${axis} of state '${target.name}'` });
      }
    }
  }
  return found;
}

function checkIndexInputs(graph: string, entry: Entry, args: Readonly<Record<string, HostTensor>>): void {
  for (const c of entry.indexInputs) {
    const t = args[c.input];
    if (!t) continue;
    for (let i = 0; i < t.data.length; i++) {
      const v = t.data[i];
      if (!(v >= 0 && v < c.limit)) {
        throw new RangeError(`@${graph}: input ${c.input}[${i}] = ${v} is out of range [0, ${c.limit}) for ${c.what}`);
      }
    }
  }
}

export function compile<A extends Tensor[], R extends Tensor | Tensor[], B extends CompileBackend = HostBackend>(
  fn: (...args: A) => R, options: CompileFnOptions<B> = {},
): CompiledFunction<A, R, B> {
  const names = options.inputs ?? parameterNames(fn);
  checkInputNames(names, options.inputs !== undefined);
  const graphName = sanitize(options.name ?? (fn.name || 'main'));
  const dynamic = options.dynamic ?? {};
  const buckets = options.buckets ?? 'pow2';
  for (const [input, axes] of Object.entries(dynamic)) {
    if (!names.includes(input)) throw new TraceError(`compile(): dynamic input '${input}' is not an input (inputs: ${names.join(', ')})`);
    for (const symbol of Object.values(axes)) checkSymbol(symbol, input);
  }
  let backend: CompileBackend = checkBackend(options.backend ?? 'cpu');
  const cache = new Map<string, Entry>();
  const states = options.states ?? new Map<string, HostTensor>();
  const compiles: CompileEvent[] = [];
  let calls = 0;
  let hits = 0;
  let last: Entry | undefined;

  const params = new ParamStore((name) => paramOf(name));
  const paramOf = (name: string): HostTensor => {
    const src = options.params;
    const t = typeof src === 'function' ? src(name) : src?.[name];
    if (!t) throw new TraceError(`compile(): no value for parameter '${name}' (give it in options.params)`);
    return t;
  };

  const build = (sig: CallSignature, key: string): Entry => {
    const started = performance.now();
    const specs = sig.inputs.map((s) => ({
      name: s.name, dtype: s.dtype, shape: s.dims.map((d) => (typeof d === 'number' ? d : d.symbol)),
    }));
    let single = false;
    const traced = trace(graphName, specs, (...args: Tensor[]) => {
      const r = (fn as unknown as (...a: Tensor[]) => Tensor | Tensor[])(...args);
      single = !Array.isArray(r);
      return r;
    });
    // Weights are checked against what the graph declares before anything runs on them.
    for (const v of traced.params) checkHostTensor(paramOf(v.name!), `compile(): parameter '${v.name}'`, formatType(v.type));
    // Passes weigh bytes at the bucket's size: the graph is compiled for it.
    const dims = new Map<string, number>();
    for (const s of sig.inputs) for (const d of s.dims) if (typeof d !== 'number') dims.set(d.symbol, d.bucket);
    const ctx: PassContext = { dims, explain: options.explain };
    const compiled = sig.backend === 'reference' ? undefined
      : compileModule({ graphs: [traced] }, { passes: options.passes, ctx, verify: options.verify, after: options.after });
    const lowered = compiled ?? { graphs: [{ graph: traced, kernels: [] }] };
    const load = (device: Device) => device.load(lowered, params, { maxSizes: Object.fromEntries(dims) });
    const program = sig.backend === 'cpu' || sig.backend === 'reference'
      ? load(new HostDevice(sig.backend)) as Program
      : sharedDevice(sig.backend as 'webgpu' | 'cuda').then(load);
    const failed = last ? firstFailure(last.signature, sig) : undefined;
    compiles.push({ key, failed, ms: performance.now() - started });
    log('recompiles', failed ? `@${graphName}: compiled again (${failed.message}), compilation ${compiles.length}` : `@${graphName}: compiled for ${key}`);
    return { key, signature: sig, traced, compiled, program, single, indexInputs: indexInputsOf(traced) };
  };

  const call = (...inputs: HostTensor[]): HostTensor | HostTensor[] | Promise<HostTensor | HostTensor[]> => {
    calls++;
    if (inputs.length !== names.length) {
      throw new TraceError(`@${graphName} takes ${names.length} inputs (${names.join(', ')}), got ${inputs.length}`);
    }
    inputs.forEach((t, i) => checkHostTensor(t, `@${graphName}: input ${names[i]}`));
    const sig = signatureOf(backend, names, inputs, dynamic, buckets);
    const key = signatureKey(sig);
    let entry = cache.get(key);
    if (entry) hits++;
    else cache.set(key, (entry = build(sig, key)));
    last = entry;
    const g = entry.traced;
    for (const s of g.states) {
      const have = states.get(s.name!);
      if (!have) states.set(s.name!, allocHost(s.type.dtype, s.type.shape as number[]));
      else checkHostTensor(have, `@${graphName}: state '${s.name}'`, formatType(s.type));
    }
    const { args, valid } = padInputs(sig, names, inputs, options.padValue ?? 0);
    for (const [symbol, n] of valid) args[validLengthInput(symbol)] = hostTensor(DType.I32, [], [n]);
    checkIndexInputs(graphName, entry, args);
    const finish = (outs: HostTensor[]) => {
      const sliced = outs.map((t, i) => sliceOutputs(t, g.outputs[i].type.shape, valid));
      return entry!.single ? sliced[0] : sliced;
    };
    const program = entry.program;
    if (program instanceof Promise) return program.then((p) => runOnce(p, graphName, args, states)).then(finish);
    const outs = runOnce(program, graphName, args, states);
    return outs instanceof Promise ? outs.then(finish) : finish(outs);
  };

  const bisect = async (...all: unknown[]): Promise<BisectReport> => {
    const { bisectCall, splitBisectArgs } = await import('./bisect-call.ts'); // loaded only when asked for
    const { inputs, options: opts } = splitBisectArgs(all, names.length);
    if (inputs.length !== names.length) throw new TraceError(`@${graphName} takes ${names.length} inputs (${names.join(', ')}), got ${inputs.length}`);
    const sig = signatureOf(backend, names, inputs, dynamic, buckets);
    const key = signatureKey(sig);
    const entry = cache.get(key) ?? build(sig, key);
    cache.set(key, entry);
    const { args, valid } = padInputs(sig, names, inputs, options.padValue ?? 0);
    for (const [symbol, n] of valid) args[validLengthInput(symbol)] = hostTensor(DType.I32, [], [n]);
    return bisectCall(entry, args, states, params, { ...opts, passes: options.passes });
  };

  const compiled = call as unknown as CompiledFunction<A, R, B>;
  Object.defineProperties(compiled, {
    backend: { get: () => backend, set: (b: CompileBackend) => { backend = checkBackend(b); }, enumerable: true },
    stats: {
      get: (): CompileStats => ({ calls, compilations: compiles.length, cacheHits: hits, compiles: [...compiles] }),
      enumerable: true,
    },
    states: { value: states, enumerable: true },
    cache: { value: cache, enumerable: true },
    inputNames: { value: names, enumerable: true },
    bisect: { value: bisect, enumerable: true },
  });
  return compiled;
}

const compileBackends: readonly CompileBackend[] = ['cpu', 'reference', 'webgpu', 'cuda'];
function checkBackend(b: string): CompileBackend {
  if (!(compileBackends as readonly string[]).includes(b)) throw new TraceError(`compile(): unknown backend '${b}' (backends: ${compileBackends.join(', ')})`);
  return b as CompileBackend;
}

/** GPU devices are opened once per process and shared by every compiled function. */
const gpus = new Map<string, Promise<Device>>();
function sharedDevice(kind: 'webgpu' | 'cuda'): Promise<Device> {
  const d = gpus.get(kind) ?? openDevice(kind);
  gpus.set(kind, d);
  return d;
}

/** Pads every dynamic axis up to its bucket; returns the inputs by name and the real size of each symbol. */
function padInputs(sig: CallSignature, names: readonly string[], inputs: readonly HostTensor[], padValue: number):
  { args: Record<string, HostTensor>; valid: Map<string, number> } {
  const args: Record<string, HostTensor> = {};
  const valid = new Map<string, number>();
  inputs.forEach((t, i) => {
    let padded = t;
    sig.inputs[i].dims.forEach((d, axis) => {
      if (typeof d === 'number') return;
      const n = t.shape[axis];
      const seen = valid.get(d.symbol);
      if (seen !== undefined && seen !== n) {
        throw new RangeError(`dynamic size ${d.symbol} is ${seen} in one input and ${n} in ${names[i]} (axis ${axis})`);
      }
      valid.set(d.symbol, n);
      padded = padAxis(padded, axis, d.bucket, padValue);
    });
    args[names[i]] = padded;
  });
  return { args, valid };
}

/** Slices each output axis whose size is a dynamic symbol back to the symbol's real size. */
function sliceOutputs(t: HostTensor, shape: readonly (number | string)[], valid: ReadonlyMap<string, number>): HostTensor {
  let out = t;
  shape.forEach((d, axis) => {
    const n = typeof d === 'string' ? valid.get(d) : undefined;
    if (n !== undefined) out = sliceAxis(out, axis, n);
  });
  return out;
}

/**
 * A host tensor as the backends read it: a dtype, whole non-negative sizes, and a typed array of the dtype's kind
 * with one element per entry (a short array would read past its end); `want` also fixes the type. Errors name it.
 */
function checkHostTensor(t: HostTensor, what: string, want?: string): void {
  if (typeof t !== 'object' || t === null || !Array.isArray(t.shape) || !ArrayBuffer.isView(t.data)) {
    throw new TypeError(`${what} is not a host tensor (make one with tensor(data, shape, dtype)), got ${describe(t)}`);
  }
  if (!isDType(String(t.dtype))) throw new TypeError(`${what} has an unknown dtype '${String(t.dtype)}'`);
  if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new RangeError(`${what} has a bad shape [${t.shape.join(', ')}]`);
  const kind = allocData(t.dtype, 0).constructor;
  if (t.data.constructor !== kind) throw new TypeError(`${what} is ${formatType(t)} but holds a ${t.data.constructor.name} (want a ${kind.name})`);
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.data.length !== n) throw new RangeError(`${what} is ${formatType(t)} (${n} elements) but holds ${t.data.length} values`);
  if (want !== undefined && formatType(t) !== want) throw new RangeError(`${what} must be ${want}, got ${formatType(t)}`);
}

function describe(x: unknown): string {
  if (x === null || typeof x !== 'object') return typeof x === 'string' ? JSON.stringify(x) : String(x);
  return Array.isArray(x) ? 'an array' : `an object with keys ${Object.keys(x).join(', ') || '(none)'}`;
}

/**
 * Input names become the graph's input names: identifiers, distinct, one per parameter. (A bundler or minifier may
 * rename the function's parameters, and these names are what `dynamic` and the error messages use: give
 * `options.inputs` to fix them.)
 */
function checkInputNames(names: readonly string[], explicit: boolean): void {
  const where = explicit ? 'options.inputs' : 'the parameter names';
  if (!Array.isArray(names) || !names.every((n) => typeof n === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(n))) {
    throw new TraceError(`compile(): ${where} must be identifiers, got ${JSON.stringify(names)}`);
  }
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw new TraceError(`compile(): ${where} name '${dup}' twice`);
}

/** A symbolic size is an identifier (kernels name it in their own namespace, so any identifier is safe). */
function checkSymbol(symbol: unknown, input: string): void {
  if (typeof symbol !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(symbol)) {
    throw new TraceError(`compile(): the dynamic size of input '${input}' must be named by an identifier, got ${JSON.stringify(symbol)}`);
  }
}

/** `(x, w) => …` → ['x', 'w']: the parameter names of a plain parameter list, else x0, x1, …. */
function parameterNames(fn: (...args: never[]) => unknown): string[] {
  const src = Function.prototype.toString.call(fn);
  const m = /^(?:async\s*)?(?:function\b[^(]*)?\(([^)]*)\)/.exec(src) ?? /^(?:async\s+)?([A-Za-z_$][\w$]*)\s*=>/.exec(src);
  const list = m ? m[1].split(',').map((s) => s.trim()).filter(Boolean) : [];
  const ok = list.length === fn.length && list.every((s) => /^[A-Za-z_$][\w$]*$/.test(s));
  return ok ? list : Array.from({ length: fn.length }, (_, i) => `x${i}`);
}

function sanitize(name: string): string {
  const s = name.replace(/[^A-Za-z0-9_.]/g, '_');
  return /^[A-Za-z_]/.test(s) ? s : `f_${s}`;
}
