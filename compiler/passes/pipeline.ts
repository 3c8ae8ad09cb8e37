// The pass pipeline: a readable list of named passes, run over every graph of a module, with the IR printable
// (and verifiable) after any of them.

import { Graph, Module } from '../../ir/graph.ts';
import { verifyGraph } from '../../ir/verify.ts';
import { concatProjections } from './concat-projections.ts';
import { constantTables } from './constant-tables.ts';
import { defaultContext, PassContext } from './context.ts';
import { cse } from './cse.ts';
import { dce } from './dce.ts';
import { decompose } from './decompose.ts';
import { foldConstants } from './fold-constants.ts';
import { fuse } from './fuse.ts';
import { planMemory } from './plan-memory.ts';
import { simplify } from './simplify.ts';
import { splitAttention } from './split-attention.ts';
import { splitReductions } from './split-reductions.ts';

export interface Pass {
  /** kebab-case, as --dump-ir=after:<name> spells it. */
  readonly name: string;
  readonly run: (g: Graph, ctx: PassContext) => Graph;
}

export const defaultPasses: readonly Pass[] = [
  { name: 'decompose', run: decompose },
  { name: 'fold-constants', run: foldConstants },
  { name: 'simplify', run: simplify },
  { name: 'cse', run: cse },
  { name: 'dce', run: dce },
  { name: 'constant-tables', run: (g) => dce(constantTables(g)) },
  { name: 'concat-projections', run: (g) => dce(concatProjections(g)) },
  { name: 'split-reductions', run: splitReductions },
  { name: 'split-attention', run: (g, ctx) => dce(splitAttention(g, ctx.splitAttentionFrom)) },
  { name: 'fuse', run: fuse },
  { name: 'plan-memory', run: planMemory },
];

/** Passes up to (not including) fusion: the graph the unfused baseline runs. */
export const prefusionPasses: readonly Pass[] = defaultPasses.slice(0, defaultPasses.findIndex((p) => p.name === 'fuse'));

export interface PipelineOptions {
  readonly passes?: readonly Pass[];
  readonly ctx?: PassContext;
  /** Run the verifier after every pass (tests do). */
  readonly verify?: boolean;
  /** Called after each pass with the module as it stands. */
  readonly after?: (pass: string, m: Module) => void;
}

export function runPipeline(m: Module, opts: PipelineOptions = {}): Module {
  const passes = opts.passes ?? defaultPasses;
  const ctx = opts.ctx ?? defaultContext;
  let cur = m;
  for (const pass of passes) {
    cur = { graphs: cur.graphs.map((g) => pass.run(g, ctx)) };
    if (opts.verify) for (const g of cur.graphs) verifyGraph(g);
    opts.after?.(pass.name, cur);
  }
  return cur;
}

export function passNames(passes: readonly Pass[] = defaultPasses): string[] {
  return passes.map((p) => p.name);
}

/** `passes` with `pass` inserted before or after the named one: how a user adds a pass of their own to compile(). */
export function insertPass(passes: readonly Pass[], where: { readonly before: string } | { readonly after: string }, pass: Pass): Pass[] {
  const anchor = 'before' in where ? where.before : where.after;
  const i = passes.findIndex((p) => p.name === anchor);
  if (i < 0) throw new Error(`insertPass: no pass named '${anchor}' (passes: ${passNames(passes).join(', ')})`);
  const at = 'before' in where ? i : i + 1;
  return [...passes.slice(0, at), pass, ...passes.slice(at)];
}
