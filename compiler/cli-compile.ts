// `tsfuse compile`: runs the pass pipeline on the Llama graphs and shows what it did — IR after any pass, the
// compile report (kernels and bytes, fused vs one kernel per op), the fusion decisions, and the generated kernels.

import fs from 'node:fs';
import path from 'node:path';
import { renderJs } from '../backends/cpu/render-js.ts';
import { renderWgsl } from '../backends/wgsl/render-wgsl.ts';
import { renderCuda } from '../backends/cuda/render-cuda.ts';
import { KernelIR } from '../backends/kernel-ir.ts';
import { DType } from '../ir/dtype.ts';
import { Module } from '../ir/graph.ts';
import { printModule } from '../ir/printer.ts';
import { builtinConfig, LlamaConfig } from '../runtime/config.ts';
import { traceLlama } from '../examples/llama.ts';
import { compileModule } from './compile-module.ts';
import { defaultContext, PassContext } from './passes/context.ts';
import { passNames, prefusionPasses, runPipeline } from './passes/pipeline.ts';
import { formatReportTable, stepReport } from './report.ts';

export class CompileUsageError extends Error {}

export interface CompileRequest {
  readonly cfg: LlamaConfig;
  readonly weightDType: DType;
  readonly cacheLength: number;
  readonly backend: string;
  /** 'final', 'all', or 'after:<pass>'; undefined prints no IR. */
  readonly dumpIr?: string;
  readonly dumpKernels?: string;
  readonly report: boolean;
  readonly json: boolean;
  readonly explainFusion: boolean;
  /** Size assumed for the prefill's sequence length S in byte counts. */
  readonly promptLength: number;
}

/** Kernel source per backend, for --dump-kernels; GPU backends add theirs. */
export const kernelRenderers: Record<string, { ext: string; render: (k: KernelIR) => string }> = {
  cpu: { ext: 'js', render: renderJs },
  cuda: { ext: 'cu', render: renderCuda },
  // As on a device with subgroups; the WebGPU runtime renders again for its own device's features and limits.
  webgpu: { ext: 'wgsl', render: (k) => renderWgsl(k, { subgroups: true }).code },
};

export function builtinLlama(name: string): LlamaConfig {
  try {
    return builtinConfig(name);
  } catch (e) {
    throw new CompileUsageError((e as Error).message);
  }
}

export function runCompile(req: CompileRequest): void {
  const passes = passNames();
  const dump = parseDump(req.dumpIr, passes);
  const explained: string[] = [];
  const ctx: PassContext = {
    dims: new Map([['S', req.promptLength]]),
    explain: req.explainFusion ? (pass, line) => explained.push(`[${pass}] ${line}`) : undefined,
  };
  const traced = traceLlama(req.cfg, { weightDType: req.weightDType, cacheLength: req.cacheLength });
  const after = (pass: string, m: Module) => {
    if (dump.all || dump.after === pass) process.stdout.write(`# after ${pass}\n${printModule(m)}\n`);
  };
  const compiled = compileModule(traced, { ctx, after });
  if (dump.final) process.stdout.write(printModule({ graphs: compiled.graphs.map((c) => c.graph) }));

  if (req.dumpKernels) writeKernels(req.dumpKernels, req.backend, compiled.graphs.map((c) => ({ name: c.graph.name, kernels: c.kernels })));
  if (req.explainFusion) console.log(explained.join('\n'));
  if (!req.report) return;

  const unfused = runPipeline(traced, { passes: prefusionPasses, ctx: defaultContext });
  const reports = Object.fromEntries(compiled.graphs.map((c, i) =>
    [c.graph.name, stepReport(c.graph, unfused.graphs[i], c.plan.peakBytes, ctx.dims)]));
  if (req.json) {
    console.log(JSON.stringify({
      model: req.cfg.source, cacheLength: req.cacheLength, promptLength: req.promptLength, ...reports,
    }));
    return;
  }
  console.log(`compile report: ${req.cfg.source}, KV cache ${req.cacheLength} positions, prefill of S=${req.promptLength} tokens`);
  for (const [name, r] of Object.entries(reports)) console.log(`\n${formatReportTable(name, r)}`);
}

export function parseDump(spec: string | undefined, passes: string[]): { final: boolean; all: boolean; after?: string } {
  if (spec === undefined) return { final: false, all: false };
  if (spec === 'final' || spec === '') return { final: true, all: false };
  if (spec === 'all') return { final: false, all: true };
  const m = /^after:(.+)$/.exec(spec);
  if (!m || !passes.includes(m[1])) {
    throw new CompileUsageError(`--dump-ir=${spec}: expected all or after:<pass>, with a pass among ${passes.join(', ')}`);
  }
  return { final: false, all: false, after: m[1] };
}

export function writeKernels(dir: string, backend: string, graphs: { name: string; kernels: readonly KernelIR[] }[]): void {
  const renderer = kernelRenderers[backend];
  if (!renderer) throw new CompileUsageError(`--dump-kernels: no kernel renderer for backend '${backend}' (have ${Object.keys(kernelRenderers).join(', ')})`);
  fs.mkdirSync(dir, { recursive: true });
  for (const g of graphs) {
    for (const k of g.kernels) fs.writeFileSync(path.join(dir, `${g.name}.${k.name}.${renderer.ext}`), renderer.render(k) + '\n');
  }
}
