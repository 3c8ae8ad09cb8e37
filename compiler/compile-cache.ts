// The compile cache: a compiled module (fused graphs, memory plans, kernel IR) kept on disk, so that a start whose
// model, options and tsfuse sources have not changed skips tracing and compiling. An entry is keyed by a hash of what
// the caller says decides the module (a model config and trace options), the compile context, the working directory
// (source lines in the IR are relative to it) and a hash of tsfuse's own sources. TSFUSE_CACHE_DIR moves the cache
// (entries go in its compile/ folder); TSFUSE_NO_CACHE=1 (the CLI's --no-cache) turns it off, and runs that log
// compiler decisions (TSFUSE_LOGS=fusion,kernels) compile. An entry that does not read back whole (a bad checksum,
// a format from another version) is ignored and written again.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FlashIR, GemmIR, KernelIR } from '../backends/kernel-ir.ts';
import { DType } from '../ir/dtype.ts';
import { Graph, Kernel, KernelAttrs, Module, Node, Value } from '../ir/graph.ts';
import { logsOn } from '../ir/logs.ts';
import { Attrs } from '../ir/ops.ts';
import { tensorType, TensorType } from '../ir/shape.ts';
import { CompiledGraph, CompiledModule, compileModule } from './compile-module.ts';
import { defaultContext, PassContext } from './passes/context.ts';

const FORMAT = 'tsfuse-compile-cache 2';
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface CacheOptions {
  /** Where entries go (default: $TSFUSE_CACHE_DIR/compile, else .cache/tsfuse/compile in the package). */
  readonly dir?: string;
  /** False skips the cache (default: unless TSFUSE_NO_CACHE=1). */
  readonly enabled?: boolean;
}

export interface CachedCompile {
  readonly module: CompiledModule;
  /** Nodes of each traced graph, by name (what a summary reports; a hit traces nothing to count them). */
  readonly tracedNodes: Readonly<Record<string, number>>;
  /** Whether the module came from the cache. */
  readonly hit: boolean;
  /** The entry's key (its file name in the cache folder); '' with the cache off. */
  readonly key: string;
}

export function compileCacheDir(): string {
  const base = process.env.TSFUSE_CACHE_DIR || path.join(root, '.cache', 'tsfuse');
  return path.join(base, 'compile');
}

export function compileCacheEnabled(): boolean {
  return process.env.TSFUSE_NO_CACHE !== '1';
}

/**
 * The compiled module of `trace()` with the default passes, from the cache when it holds it (then nothing is traced),
 * else compiled and stored. `what` is JSON data naming everything that decides the traced module (a model's config
 * and trace options); tsfuse's sources, the pass context's sizes and the working directory are added to it.
 */
export function compileCached(what: unknown, trace: () => Module, opts: CacheOptions & { readonly ctx?: PassContext } = {}): CachedCompile {
  const ctx = opts.ctx ?? defaultContext;
  const compile = () => {
    const traced = trace();
    const tracedNodes = Object.fromEntries(traced.graphs.map((g) => [g.name, g.nodes.length]));
    return { module: compileModule(traced, { ctx }), tracedNodes };
  };
  if (!(opts.enabled ?? compileCacheEnabled())) return { ...compile(), hit: false, key: '' };
  const key = cacheKey(what, ctx);
  const file = path.join(opts.dir ?? compileCacheDir(), `${key}.json`);
  // TSFUSE_LOGS=fusion,kernels print what compiling decides, as it decides it: those runs compile.
  const stored = logsOn('fusion') || logsOn('kernels') ? undefined : readEntry(file, key);
  if (stored) return { ...stored, hit: true, key };
  const compiled = compile();
  writeEntry(file, key, compiled);
  return { ...compiled, hit: false, key };
}

export function cacheKey(what: unknown, ctx: PassContext): string {
  const context = { dims: [...ctx.dims].sort(([a], [b]) => a.localeCompare(b)) };
  return sha256(JSON.stringify({ format: FORMAT, sources: sourcesHash(), cwd: process.cwd(), context, what }));
}

let sourcesMemo: string | undefined;

/** A hash of tsfuse's sources (what traces, compiles and lowers), read once per process. */
export function sourcesHash(): string {
  if (sourcesMemo) return sourcesMemo;
  const hash = crypto.createHash('sha256');
  const walk = (dir: string) => {
    const entries = fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const file = path.join(dir, e.name);
      if (e.isDirectory()) walk(file);
      else if (/\.(ts|js|mjs)$/.test(e.name)) hash.update(`${path.relative(root, file)}\0`).update(fs.readFileSync(file)).update('\0');
    }
  };
  for (const dir of ['ir', 'compiler', 'backends', 'examples', 'runtime']) {
    if (fs.existsSync(path.join(root, dir))) walk(path.join(root, dir));
  }
  sourcesMemo = hash.digest('hex');
  return sourcesMemo;
}

function sha256(text: string): string {
  return crypto.createHash('sha256').update(text).digest('hex');
}

// ---- entries: a header line (format, key, checksum of the rest), then the module as JSON ----

type Entry = Pick<CachedCompile, 'module' | 'tracedNodes'>;

function readEntry(file: string, key: string): Entry | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const newline = text.indexOf('\n');
    const [format, storedKey, checksum] = text.slice(0, newline).split('\t');
    const body = text.slice(newline + 1);
    if (format !== FORMAT || storedKey !== key || checksum !== sha256(body)) return undefined;
    const json = JSON.parse(body, revive) as ModuleJson;
    return { module: decodeModule(json), tracedNodes: json.tracedNodes };
  } catch {
    // Whatever does not read back is compiled again (and the entry rewritten).
    return undefined;
  }
}

function writeEntry(file: string, key: string, entry: Entry): void {
  try {
    const body = JSON.stringify({ ...encodeModule(entry.module), tracedNodes: entry.tracedNodes }, replace);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${FORMAT}\t${key}\t${sha256(body)}\n${body}`);
    fs.renameSync(tmp, file);
  } catch {
    // A cache that cannot be written (a read-only folder) only costs the next start its compile.
  }
}

/** JSON has no NaN, infinities or −0 (IR literals and kernel constants may be any of them). */
function replace(_key: string, v: unknown): unknown {
  return typeof v === 'number' && (!Number.isFinite(v) || Object.is(v, -0)) ? { $num: Object.is(v, -0) ? '-0' : String(v) } : v;
}

function revive(_key: string, v: unknown): unknown {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
  const n = (v as { $num?: unknown }).$num;
  return typeof n === 'string' && Object.keys(v).length === 1 ? (n === '-0' ? -0 : Number(n)) : v;
}

// ---- the module as JSON: values by index (inputs, params, states, then node results), kernel bodies shared ----

type TypeJson = [DType, (number | string)[]];
interface GraphJson {
  name: string;
  inputs: [string, TypeJson][];
  params: [string, TypeJson, [string, number[], Attrs]?][];
  states: [string, TypeJson][];
  nodes: [string, number[], Attrs, TypeJson, string?][];
  outputs: number[];
  outputNames: string[];
  stateUpdates: [number, number][];
  kernels: [string, number[], KernelAttrs][];
  plan: { slotOf: [number, number][]; slotBytes: number[]; peakBytes: number };
  kernelIR: KernelJson[];
}
/** A kernel with its body and tile forms by index into the module's lists (kernels alike share them). */
type KernelJson = Omit<KernelIR, 'body' | 'gemm' | 'flash'> & { body: number; gemm?: number; flash?: number };
interface ModuleJson {
  graphs: GraphJson[];
  bodies: KernelIR['body'][];
  gemms?: GemmIR[];
  flashes?: FlashIR[];
  tracedNodes: Record<string, number>;
}

const typeJson = (t: TensorType): TypeJson => [t.dtype, [...t.shape]];

function encodeModule(m: CompiledModule): Omit<ModuleJson, 'tracedNodes'> {
  const bodies: KernelIR['body'][] = [];
  const bodyIndex = new Map<KernelIR['body'], number>();
  const gemms: GemmIR[] = [];
  const flashes: FlashIR[] = [];
  /** The index of `x` in `list`, added at its first appearance (objects shared by alike kernels are stored once). */
  const indexIn = <T>(list: T[], x: T): number => {
    const i = list.indexOf(x);
    return i >= 0 ? i : list.push(x) - 1;
  };
  const graphs = m.graphs.map((c) => {
    const g = c.graph;
    const index = new Map<Value, number>();
    for (const v of [...g.inputs, ...g.params, ...g.states]) index.set(v, index.size);
    const nodeIndex = new Map<Node, number>();
    g.nodes.forEach((n, i) => {
      index.set(n.output, index.size);
      nodeIndex.set(n, i);
    });
    const ref = (v: Value) => {
      const i = index.get(v);
      if (i === undefined) throw new Error(`compile cache: @${g.name} refers to a value it does not define`);
      return i;
    };
    const json: GraphJson = {
      name: g.name,
      inputs: g.inputs.map((v) => [v.name!, typeJson(v.type)]),
      params: g.params.map((v) => {
        const d = g.derivations.get(v);
        return d ? [v.name!, typeJson(v.type), [d.op, d.inputs.map(ref), d.attrs]] : [v.name!, typeJson(v.type)];
      }),
      states: g.states.map((v) => [v.name!, typeJson(v.type)]),
      nodes: g.nodes.map((n) => {
        const node: GraphJson['nodes'][number] = [n.op, n.inputs.map(ref), n.attrs, typeJson(n.output.type)];
        if (n.loc !== undefined) node.push(n.loc);
        return node;
      }),
      outputs: g.outputs.map(ref),
      outputNames: [...g.outputNames],
      stateUpdates: g.stateUpdates.map((u) => [ref(u.state), ref(u.value)]),
      kernels: g.kernels.map((k) => [k.name, k.nodes.map((n) => nodeIndex.get(n)!), k.attrs]),
      plan: { slotOf: [...c.plan.slotOf].map(([v, s]) => [ref(v), s]), slotBytes: [...c.plan.slotBytes], peakBytes: c.plan.peakBytes },
      kernelIR: c.kernels.map((k): KernelJson => {
        let b = bodyIndex.get(k.body);
        if (b === undefined) bodyIndex.set(k.body, (b = bodies.push(k.body) - 1));
        const { gemm, flash, ...rest } = k;
        return { ...rest, body: b, ...(gemm ? { gemm: indexIn(gemms, gemm) } : {}), ...(flash ? { flash: indexIn(flashes, flash) } : {}) };
      }),
    };
    return json;
  });
  return { graphs, bodies, gemms, flashes };
}

function decodeModule(m: ModuleJson): CompiledModule {
  return { graphs: m.graphs.map((g) => decodeGraph(g, m)) };
}

function decodeGraph(j: GraphJson, m: ModuleJson): CompiledGraph {
  const g = new Graph(j.name);
  const values: Value[] = [];
  const type = ([dtype, shape]: TypeJson) => tensorType(dtype, shape);
  for (const [name, t] of j.inputs) values.push(g.addInput(name, type(t)));
  for (const [name, t, d] of j.params) {
    values.push(d ? g.addDerivedParam(name, d[0], d[1].map((i) => values[i]), d[2]) : g.addParam(name, type(t)));
  }
  for (const [name, t] of j.states) values.push(g.addState(name, type(t)));
  for (const [op, inputs, attrs, t, loc] of j.nodes) values.push(g.appendNode(op, inputs.map((i) => values[i]), attrs, type(t), loc));
  g.outputs = j.outputs.map((i) => values[i]);
  g.outputNames = [...j.outputNames];
  g.stateUpdates = j.stateUpdates.map(([s, v]) => ({ state: values[s], value: values[v] }));
  g.kernels = j.kernels.map(([name, nodes, attrs]): Kernel => ({ name, nodes: nodes.map((i) => g.nodes[i]), attrs }));
  const plan = {
    slotOf: new Map(j.plan.slotOf.map(([i, s]) => [values[i], s])),
    slotBytes: j.plan.slotBytes,
    peakBytes: j.plan.peakBytes,
  };
  const kernels = j.kernelIR.map(({ gemm, flash, ...k }): KernelIR => ({
    ...k,
    body: m.bodies[k.body],
    ...(gemm !== undefined ? { gemm: m.gemms![gemm] } : {}),
    ...(flash !== undefined ? { flash: m.flashes![flash] } : {}),
  }));
  return { graph: g, plan, kernels };
}
