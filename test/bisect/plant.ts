// Planting bugs for bisect's tests without touching the sources: a renderer's rule swapped for the length of a test
// (as a wrong line in a dialect table would be), or one kernel's IR rewritten after lowering (as a wrong lowering
// rule would have made it). Also the tiny Llama fixtures as bisect subjects, and what the tests expect of them,
// found in the compiled graph rather than written down (kernel numbers move when fusion changes).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KBuffer, KernelIR, KExpr, KStmt } from '../../backends/kernel-ir.ts';
import { BisectOptions, BisectReport, bisect } from '../../compiler/bisect.ts';
import { BisectSubject, llamaStep } from '../../compiler/cli-bisect.ts';
import { CompiledModule, compileModule } from '../../compiler/compile-module.ts';
import { Pass } from '../../compiler/passes/pipeline.ts';
import { traceLlama } from '../../examples/llama.ts';
import { Graph, Kernel, Node } from '../../ir/graph.ts';
import { Device } from '../../runtime/device.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { ParamStore } from '../../runtime/params.ts';

export const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));

/** Where the tests' culprits' sources go (removed when the process exits). */
export const sourceDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-bisect-test-'));
process.on('exit', () => fs.rmSync(sourceDir, { recursive: true, force: true }));

/** Replaces `table[key]` with `rule` while `body` runs (kernels compiled meanwhile print the planted rule). */
export async function withRule<T, K extends string>(table: Record<K, unknown>, key: K, rule: unknown, body: () => Promise<T>): Promise<T> {
  const saved = table[key];
  table[key] = rule;
  try {
    return await body();
  } finally {
    table[key] = saved;
  }
}

type Store = Extract<KStmt, { k: 'store' }>;

/** `m` with kernel `index` of graph `graph` rewritten: each store through `f` (a GEMM's or flash kernel's too). */
export function plantInStores(m: CompiledModule, graph: string, index: number, f: (s: Store, b: KBuffer) => Store): CompiledModule {
  type TileStore = { readonly buf: number; readonly index: KExpr; readonly value: KExpr };
  const tile = (k: KernelIR) => (st: TileStore): TileStore => {
    const { buf, index, value } = f({ k: 'store', v: 'tile', n: { k: 'const', value: 1, t: 'i32' }, ...st }, k.buffers[st.buf]);
    return { buf, index, value };
  };
  const rewrite = (k: KernelIR): KernelIR => ({
    ...k,
    body: k.body.map((s) => (s.k === 'store' ? f(s, k.buffers[s.buf]) : s)),
    ...(k.gemm ? { gemm: { ...k.gemm, stores: k.gemm.stores.map(tile(k)) } } : {}),
    ...(k.flash ? { flash: { ...k.flash, stores: k.flash.stores.map(tile(k)) } } : {}),
  });
  return { graphs: m.graphs.map((cg) => (cg.graph.name !== graph ? cg : { ...cg, kernels: cg.kernels.map((k, i) => (i === index ? rewrite(k) : k)) })) };
}

export const offset = (e: KExpr, by: number): KExpr => ({ k: 'binary', op: 'add', a: e, b: { k: 'const', value: by, t: 'i32' }, t: 'i32' });

export interface Fixture {
  readonly compiled: CompiledModule;
  readonly subject: BisectSubject;
  readonly graph: Graph;
}

/** A fixture's prefill of `ids`, or its `decodeAt`-th decode step, compiled with `passes`. */
export function llamaFixture(name: string, ids: number[], decodeAt = 0, passes?: readonly Pass[]): Fixture {
  const model = loadLlama(`${fixtures}/${name}`);
  // A cache longer than the steps need, so that a planted write one row too far stays inside it.
  const cacheLength = ids.length + decodeAt + 4;
  const module = traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength });
  const subject = llamaStep(module, new ParamStore((n) => model.weights.tensor(n)), ids, decodeAt, cacheLength);
  const compiled = compileModule(module, { passes });
  return { compiled, subject, graph: compiled.graphs.find((c) => c.graph.name === subject.graph)!.graph };
}

/** Loads `compiled` (default: the fixture's own) on `device` and bisects the fixture's step. */
export async function bisectOn(device: Device, f: Fixture, opts: BisectOptions & { compiled?: CompiledModule; passes?: readonly Pass[] } = {}): Promise<BisectReport> {
  const compiled = opts.compiled ?? f.compiled;
  const s = f.subject;
  const program = await device.load(compiled, s.params, { maxSizes: s.maxSizes });
  try {
    return await bisect({
      sourceDir, ...opts, compiled, program, graph: s.graph, inputs: s.inputs, states: s.states, params: s.params, step: s.step,
      traced: { module: s.module, passes: opts.passes },
    });
  } finally {
    program.destroy();
  }
}

/** The first kernel holding a node that `pick` chooses, its index, and that node with its printed name. */
export function find(g: Graph, pick: (n: Node, k: Kernel) => boolean): { kernel: Kernel; index: number; node: Node; name: string } {
  for (const [index, kernel] of g.kernels.entries()) {
    const node = kernel.nodes.find((n) => pick(n, kernel));
    if (node) return { kernel, index, node, name: `%${g.nodes.indexOf(node)}` };
  }
  throw new Error('no such node in the compiled graph');
}
