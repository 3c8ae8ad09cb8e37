// Compiling a traced module: the pass pipeline, then the shared lowering of every kernel. Backends take the result.

import { LoweredKernels, lowerGraph } from '../backends/lower.ts';
import { LoweredGraph } from '../backends/lowered.ts';
import { Module } from '../ir/graph.ts';
import { log, logsOn } from '../ir/logs.ts';
import { defaultContext, PassContext } from './passes/context.ts';
import { Pass, runPipeline } from './passes/pipeline.ts';
import { computePlan, MemoryPlan } from './passes/plan-memory.ts';

/** A fused graph (every node in a kernel), its kernels and its memory plan. */
export interface CompiledGraph extends LoweredGraph {
  readonly plan: MemoryPlan;
}

export interface CompiledModule {
  readonly graphs: readonly CompiledGraph[];
}

export interface CompileOptions {
  readonly passes?: readonly Pass[];
  readonly ctx?: PassContext;
  readonly verify?: boolean;
  readonly after?: (pass: string, m: Module) => void;
}

export function compileModule(m: Module, opts: CompileOptions = {}): CompiledModule {
  let ctx = opts.ctx ?? defaultContext;
  // TSFUSE_LOGS=fusion: every fusion decision, as --explain-fusion prints them.
  if (logsOn('fusion') && !ctx.explain) ctx = { ...ctx, explain: (pass, line, graph) => log('fusion', `[${pass}] @${graph}: ${line}`) };
  const fused = runPipeline(m, { ...opts, ctx });
  // Kernels alike in every graph (the prompt and prefill graphs' layers) are lowered once for the module.
  const lowered: LoweredKernels = new Map();
  const compiled = {
    graphs: fused.graphs.map((graph) => {
      const plan = computePlan(graph, ctx);
      return { graph, plan, kernels: lowerGraph(graph, plan.slotOf, lowered) };
    }),
  };
  if (logsOn('kernels')) {
    for (const c of compiled.graphs) {
      log('kernels', `@${c.graph.name}: ${c.graph.nodes.length} nodes in ${c.kernels.length} kernels`);
      for (const k of c.kernels) log('kernels', `  ${k.name} (${k.kind}): ${k.fused.length} nodes: ${k.fused.map((l) => l.split(' = ')[1]?.split(' ')[0] ?? l).join(', ')}`);
    }
  }
  return compiled;
}
