// Entries of the compile cache on disk (compiler/compile-cache.ts compiles on a miss): where they go, their keys, and
// a compiled module written as JSON and read back. It imports no pass, lowering or tracing, so a warm start loads
// nothing of the compiler it skips. An entry is keyed by a hash of what the caller says decides the module (a model
// config and trace options), the compile context, the working directory (source lines in the IR are relative to
// it), tsfuse's version and a hash of its own sources. TSFUSE_CACHE_DIR moves the cache (entries go in its compile/
// folder); TSFUSE_NO_CACHE=1 (the CLI's --no-cache) turns it off, and runs that log compiler decisions
// (TSFUSE_LOGS=fusion,kernels) compile. An entry that does not read back whole (a bad checksum, a format from
// another version) is ignored and written again.
//
// A warm start is one file read and one JSON.parse: no reviver (it made reading five times slower), so the few
// numbers JSON cannot hold (NaN, ±∞, −0) are listed apart by their place in the entry and put back after parsing;
// value types and source lines, repeated on every node, are stored once each in tables.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FlashIR, GemmIR, KBuffer, KernelIR, KExpr } from '../backends/kernel-ir.ts';
import type { DType } from '../ir/dtype.ts';
import { Graph, Kernel, KernelAttrs, Node, Value } from '../ir/graph.ts';
import { logsOn } from '../ir/logs.ts';
import type { Attrs } from '../ir/ops.ts';
import { tensorType, TensorType } from '../ir/shape.ts';
import type { CompiledGraph, CompiledModule } from './compile-module.ts';
import { defaultContext, PassContext } from './passes/context.ts';

const FORMAT = 'tsfuse-compile-cache 4';
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

/** Where a module whose traced module `what` decides is stored, or undefined where the cache is off. */
export function entryFor(what: unknown, opts: CacheOptions & { readonly ctx?: PassContext } = {}): { key: string; file: string } | undefined {
  if (!(opts.enabled ?? compileCacheEnabled())) return undefined;
  const key = cacheKey(what, opts.ctx ?? defaultContext);
  return { key, file: path.join(opts.dir ?? compileCacheDir(), `${key}.json`) };
}

/**
 * The compiled module `what` decides, from the cache, or undefined: not there (or not whole), the cache off, or a
 * run whose compiler decisions are logged (TSFUSE_LOGS=fusion,kernels print them as compiling decides them).
 */
export function findCompiled(what: unknown, opts: CacheOptions & { readonly ctx?: PassContext } = {}): CachedCompile | undefined {
  return readCompiled(entryFor(what, opts));
}

/** The module stored at `entry` (from entryFor), as findCompiled reads it. */
export function readCompiled(entry: { key: string; file: string } | undefined): CachedCompile | undefined {
  if (!entry || logsOn('fusion') || logsOn('kernels')) return undefined;
  const stored = readEntry(entry.file, entry.key);
  return stored && { ...stored, hit: true, key: entry.key };
}

export function cacheKey(what: unknown, ctx: PassContext): string {
  const context = { dims: [...ctx.dims].sort(([a], [b]) => a.localeCompare(b)), splitAttentionFrom: String(ctx.splitAttentionFrom ?? 'default'),
    cacheWrites: ctx.cacheWrites ?? 'own kernel' };
  return sha256(JSON.stringify({ format: FORMAT, version: tsfuseVersion(), sources: sourcesHash(), cwd: process.cwd(), context, what }));
}

let versionMemo: string | undefined;

/** tsfuse's version, from its package.json (beside the sources in a checkout, above dist/ in the package). */
export function tsfuseVersion(): string {
  if (versionMemo !== undefined) return versionMemo;
  for (const file of [path.join(root, 'package.json'), path.join(root, '..', 'package.json')]) {
    try {
      const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'tsfuse') return (versionMemo = String(pkg.version));
    } catch {
      // not this one
    }
  }
  return (versionMemo = 'unknown');
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

function sha256(text: string | Uint8Array): string {
  return crypto.createHash('sha256').update(text).digest('hex');
}

// ---- entries: a header line (format, key, checksum of the rest), then the module as JSON ----

export type Entry = Pick<CachedCompile, 'module' | 'tracedNodes'>;

function readEntry(file: string, key: string): Entry | undefined {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  try {
    const newline = bytes.indexOf(10);
    if (newline < 0) return undefined;
    const [format, storedKey, checksum] = bytes.toString('utf8', 0, newline).split('\t');
    const body = bytes.subarray(newline + 1);
    if (format !== FORMAT || storedKey !== key || checksum !== sha256(body)) return undefined;
    const json = JSON.parse(body.toString('utf8')) as ModuleJson;
    restoreSpecials(json, json.specials);
    return { module: decodeModule(json), tracedNodes: json.tracedNodes };
  } catch {
    // Whatever does not read back is compiled again (and the entry rewritten).
    return undefined;
  }
}

/** Stores `entry` whole (written aside, then renamed), or nothing where the folder cannot be written. */
export function writeEntry(file: string, key: string, entry: Entry): void {
  try {
    const json = { ...encodeModule(entry.module), tracedNodes: entry.tracedNodes, specials: [] as Special[] };
    json.specials = findSpecials(json);
    // JSON.stringify writes NaN and ±∞ as null and −0 as 0; `specials` puts them back.
    const body = JSON.stringify(json);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${FORMAT}\t${key}\t${sha256(body)}\n${body}`);
    fs.renameSync(tmp, file);
  } catch {
    // A cache that cannot be written (a read-only folder) only costs the next start its compile.
  }
}

/** A number JSON cannot hold (NaN, ±∞, −0): where it is in the entry (keys and indices from the top), and its text. */
type Special = [(string | number)[], string];

const isSpecial = (v: unknown): v is number => typeof v === 'number' && (!Number.isFinite(v) || Object.is(v, -0));

/** Every special number inside `root`, by path, in the order JSON.stringify meets them. */
function findSpecials(root: unknown): Special[] {
  const found: Special[] = [];
  const at: (string | number)[] = [];
  const walk = (v: unknown) => {
    if (isSpecial(v)) {
      found.push([[...at], Object.is(v, -0) ? '-0' : String(v)]);
    } else if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        at.push(i);
        walk(v[i]);
        at.pop();
      }
    } else if (v !== null && typeof v === 'object') {
      for (const k of Object.keys(v)) {
        at.push(k);
        walk((v as Record<string, unknown>)[k]);
        at.pop();
      }
    }
  };
  walk(root);
  return found;
}

function restoreSpecials(root: unknown, specials: readonly Special[]): void {
  for (const [at, text] of specials) {
    let holder = root as Record<string | number, unknown>;
    for (const k of at.slice(0, -1)) holder = holder[k] as Record<string | number, unknown>;
    holder[at[at.length - 1]] = text === '-0' ? -0 : Number(text);
  }
}

// ---- the module as JSON: values by index (inputs, params, states, then node results), kernel bodies, row counts,
// buffer sizes, size names and tile forms shared as in the module, value types and source lines by index into the
// module's tables ----

type TypeJson = [DType, (number | string)[]];
interface GraphJson {
  name: string;
  inputs: [string, number][];
  params: [string, number, [string, number[], Attrs]?][];
  states: [string, number][];
  /** op, operands, attributes, type (index into `types`), source line (index into `locs`). */
  nodes: [string, number[], Attrs, number, number?][];
  outputs: number[];
  outputNames: string[];
  stateUpdates: [number, number][];
  kernels: [string, number[], KernelAttrs][];
  plan: { slotOf: [number, number][]; slotBytes: number[]; peakBytes: number };
  kernelIR: KernelJson[];
}
/**
 * A kernel with its body, rows, buffer sizes, size names and tile forms by index into the module's lists: kernels
 * lowered once share these objects, and read back they share them again (the scheduler knows alike kernels by them
 * and schedules and prints each once: without it a warm --dump-kernels cost more than a cold one).
 */
type KernelJson = Omit<KernelIR, 'body' | 'rows' | 'sizes' | 'buffers' | 'gemm' | 'flash'> & {
  body: number; rows: number; sizes: number; buffers: (Omit<KBuffer, 'elems'> & { elems: number })[]; gemm?: number; flash?: number;
};
interface ModuleJson {
  graphs: GraphJson[];
  bodies: KernelIR['body'][];
  /** Kernels' row counts and buffers' element counts. */
  exprs: KExpr[];
  sizes: KernelIR['sizes'][];
  gemms?: GemmIR[];
  flashes?: FlashIR[];
  types: TypeJson[];
  locs: string[];
  tracedNodes: Record<string, number>;
  specials: Special[];
}

/** A table of distinct values (alike by `keyOf`), each stored once; the entry refers to them by index. */
function table<T>(keyOf: (x: T) => string) {
  const list: T[] = [];
  const index = new Map<string, number>();
  return {
    list,
    add(x: T): number {
      const k = keyOf(x);
      let i = index.get(k);
      if (i === undefined) index.set(k, (i = list.push(x) - 1));
      return i;
    },
  };
}

/** Objects stored once each, by identity; the entry refers to them by index. */
function sharedObjects<T>() {
  const list: T[] = [];
  const index = new Map<T, number>();
  return {
    list,
    add(x: T): number {
      let i = index.get(x);
      if (i === undefined) index.set(x, (i = list.push(x) - 1));
      return i;
    },
  };
}

function encodeModule(m: CompiledModule): Omit<ModuleJson, 'tracedNodes' | 'specials'> {
  const types = table((t: TypeJson) => `${t[0]}[${t[1].join(',')}]`);
  const locs = table((l: string) => l);
  const typeJson = (t: TensorType) => types.add([t.dtype, [...t.shape]]);
  const bodies = sharedObjects<KernelIR['body']>();
  const exprs = sharedObjects<KExpr>();
  const sizes = sharedObjects<KernelIR['sizes']>();
  const gemms = sharedObjects<GemmIR>();
  const flashes = sharedObjects<FlashIR>();
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
        if (n.loc !== undefined) node.push(locs.add(n.loc));
        return node;
      }),
      outputs: g.outputs.map(ref),
      outputNames: [...g.outputNames],
      stateUpdates: g.stateUpdates.map((u) => [ref(u.state), ref(u.value)]),
      kernels: g.kernels.map((k) => [k.name, k.nodes.map((n) => nodeIndex.get(n)!), k.attrs]),
      plan: { slotOf: [...c.plan.slotOf].map(([v, s]) => [ref(v), s]), slotBytes: [...c.plan.slotBytes], peakBytes: c.plan.peakBytes },
      kernelIR: c.kernels.map((k): KernelJson => {
        const { gemm, flash, ...rest } = k;
        return {
          ...rest, body: bodies.add(k.body), rows: exprs.add(k.rows), sizes: sizes.add(k.sizes),
          buffers: k.buffers.map((b) => ({ ...b, elems: exprs.add(b.elems) })),
          ...(gemm ? { gemm: gemms.add(gemm) } : {}), ...(flash ? { flash: flashes.add(flash) } : {}),
        };
      }),
    };
    return json;
  });
  return {
    graphs, bodies: bodies.list, exprs: exprs.list, sizes: sizes.list, gemms: gemms.list, flashes: flashes.list,
    types: types.list, locs: locs.list,
  };
}

function decodeModule(m: ModuleJson): CompiledModule {
  // One type object per distinct type, shared by the values that have it (types are never changed in place).
  const types = m.types.map(([dtype, shape]) => tensorType(dtype, shape));
  return { graphs: m.graphs.map((g) => decodeGraph(g, m, types)) };
}

function decodeGraph(j: GraphJson, m: ModuleJson, types: readonly TensorType[]): CompiledGraph {
  const g = new Graph(j.name);
  const values: Value[] = [];
  const type = (i: number) => types[i];
  for (const [name, t] of j.inputs) values.push(g.addInput(name, type(t)));
  for (const [name, t, d] of j.params) {
    values.push(d ? g.addDerivedParam(name, d[0], d[1].map((i) => values[i]), d[2]) : g.addParam(name, type(t)));
  }
  for (const [name, t] of j.states) values.push(g.addState(name, type(t)));
  for (const [op, inputs, attrs, t, loc] of j.nodes) {
    values.push(g.appendNode(op, inputs.map((i) => values[i]), attrs, type(t), loc === undefined ? undefined : m.locs[loc]));
  }
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
    rows: m.exprs[k.rows],
    sizes: m.sizes[k.sizes],
    buffers: k.buffers.map((b) => ({ ...b, elems: m.exprs[b.elems] })),
    ...(gemm !== undefined ? { gemm: m.gemms![gemm] } : {}),
    ...(flash !== undefined ? { flash: m.flashes![flash] } : {}),
  }));
  return { graph: g, plan, kernels };
}
