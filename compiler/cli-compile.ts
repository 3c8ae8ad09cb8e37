// `tsfuse compile --model/--config` past a warm summary (compiler/cli-compile-command.ts answers that): runs the pass
// pipeline on the Llama graphs and shows what it did — IR after any pass, the compile report (kernels and bytes, fused
// vs one kernel per op), the fusion decisions, and the generated kernels.

import fs from 'node:fs';
import path from 'node:path';
import { printJs } from '../backends/cpu/render-js.ts';
import { printWgsl } from '../backends/wgsl/render-wgsl.ts';
import { cudaPrelude, printCudaFunction } from '../backends/cuda/render-cuda.ts';
import { graphAsRun, MegakernelOptions, renderCudaMegakernel } from '../backends/cuda/megakernel.ts';
import { cpuCaps, cudaCaps, DeviceCaps, webgpuCaps } from '../backends/device-caps.ts';
import { scheduleKernels, ScheduledKernel, ScheduleOptions } from '../backends/schedule.ts';
import { formatSchedule } from '../backends/schedule-format.ts';
import { KernelIR } from '../backends/kernel-ir.ts';
import { Module } from '../ir/graph.ts';
import { printModule } from '../ir/printer.ts';
import { traceLlama } from '../examples/llama.ts';
import { compileCached } from './compile-cache.ts';
import { compileModule } from './compile-module.ts';
import { defaultContext, PassContext } from './passes/context.ts';
import { passNames, prefusionPasses, runPipeline } from './passes/pipeline.ts';
import { formatReportTable, stepReport } from './report.ts';
import { step } from '../runtime/progress.ts';
import {
  CompileRequest, CompileUsageError, compileSummary, llamaCacheWhat, llamaPassContext, llamaTraceOptions, printSummary,
} from './cli-compile-command.ts';
import { writingFor } from './cli-files.ts';

/** Per backend, for --dump-kernels: the device kernels are scheduled for, and how a scheduled kernel prints. */
export const kernelRenderers: Record<string, { ext: string; device: DeviceCaps; print: (s: ScheduledKernel) => string }> = {
  cpu: { ext: 'js', device: cpuCaps, print: printJs },
  cuda: { ext: 'cu', device: cudaCaps(), print: (s) => `${cudaPrelude}\n${printCudaFunction(s).code}` },
  // As on a device with subgroups; the WebGPU runtime schedules again for its own device's features and limits.
  webgpu: { ext: 'wgsl', device: webgpuCaps({ subgroups: true }), print: (s) => printWgsl(s).code },
};

export function runCompile(req: CompileRequest): void {
  const passes = passNames();
  const dump = parseDump(req.dumpIr, passes);
  const explained: Explanation[] = [];
  const ctx: PassContext = {
    ...llamaPassContext(req),
    explain: req.explainFusion ? (pass, line, graph) => explained.push({ pass, line, graph }) : undefined,
  };
  const trace = () => traceLlama(req.cfg, llamaTraceOptions(req));
  const after = (pass: string, m: Module) => {
    if (dump.all || dump.after === pass) process.stdout.write(`# after ${pass}\n${printModule(m)}\n`);
  };
  // Through the compile cache unless the passes themselves are to be shown (IR after a pass, fusion decisions).
  const watched = dump.all || dump.after !== undefined || req.explainFusion;
  const compileAll = () => {
    const traced = watched || req.report ? trace() : undefined;
    const cached = watched ? undefined : compileCached(llamaCacheWhat(req), () => traced ?? trace(), { ctx });
    return { traced, cached, compiled: cached?.module ?? compileModule(traced!, { ctx, after }) };
  };
  // A spinner on a terminal, unless the IR printed after each pass would interleave with it.
  const printsPasses = dump.all || dump.after !== undefined;
  const { traced, cached, compiled } = printsPasses ? compileAll() : step(`compiling ${req.cfg.source}`, compileAll);
  const tracedNodes = (name: string) => cached?.tracedNodes[name] ?? traced?.graphs.find((g) => g.name === name)?.nodes.length;
  if (dump.final) process.stdout.write(printModule({ graphs: compiled.graphs.map((c) => c.graph) }));

  const megakernel = req.megakernel;
  const kernels = compiled.graphs.map((c) => ({ name: c.graph.name, ...graphAsRun(c, kernelRenderers.cuda.device, megakernel) }));
  const dumpOptions: DumpOptions = { subgroupMatrix: req.subgroupMatrix };
  if (req.dumpKernels) writeKernels(req.dumpKernels, req.backend, kernels, dumpOptions);
  if (megakernel) writeMegakernel(req.dumpKernels, compiled, megakernel);
  if (req.dumpSchedule) process.stdout.write(formatSchedules(req.backend, kernels, dumpOptions));
  if (req.explainFusion) process.stdout.write(formatExplanations(explained));
  const summary = compileSummary(req, compiled, tracedNodes);
  if (!req.report) {
    printSummary(req, summary, dump.final || dump.all || dump.after !== undefined || !!req.dumpSchedule || req.explainFusion);
    return;
  }

  const reports = step('counting kernels and bytes against one kernel per op', () => {
    const unfused = runPipeline(traced!, { passes: prefusionPasses, ctx: defaultContext });
    return Object.fromEntries(compiled.graphs.map((c, i) => [c.graph.name, stepReport(c.graph, unfused.graphs[i], c.plan.peakBytes, ctx.dims)]));
  });
  if (req.json) {
    console.log(JSON.stringify({ ...summary, ...reports }));
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

/** What a dump is rendered for, beyond the backend: WebGPU with f16 subgroup matrices. */
export interface DumpOptions {
  readonly subgroupMatrix?: boolean;
}

/**
 * A graph's kernels to dump, and what their schedule takes (`opts`: with --megakernel, its graph's as the megakernel
 * runs them, graphAsRun; the CLI gives --megakernel with cuda only).
 */
export interface DumpedGraph {
  readonly name: string;
  readonly kernels: readonly KernelIR[];
  readonly opts?: ScheduleOptions;
}

/** Writes each kernel's source, and its schedule as text (NAME.schedule), into `dir`. */
export function writeKernels(dir: string, backend: string, graphs: readonly DumpedGraph[], opts: DumpOptions = {}): void {
  const renderer = rendererFor(backend, '--dump-kernels', opts);
  writingFor('--dump-kernels', dir, 'the kernels', () => {
    fs.mkdirSync(dir, { recursive: true });
    for (const g of graphs) {
      for (const scheduled of scheduleKernels(g.kernels, renderer.device, g.opts)) {
        const name = scheduled.kernel.name;
        fs.writeFileSync(path.join(dir, `${g.name}.${name}.${renderer.ext}`), renderer.print(scheduled) + '\n');
        fs.writeFileSync(path.join(dir, `${g.name}.${name}.schedule`), formatSchedule(scheduled));
      }
    }
  });
}

/** A pass's explanation of one decision (PassContext.explain). */
export interface Explanation {
  readonly pass: string;
  readonly line: string;
  readonly graph: string;
}

/**
 * Explanations under their graph's name, in the order they came; a decision repeated word for word in a graph (every
 * layer's alike) printed once, with how many times it was made.
 */
export function formatExplanations(explained: readonly Explanation[]): string {
  const graphs = new Map<string, Map<string, number>>();
  for (const e of explained) {
    const lines = graphs.get(e.graph) ?? graphs.set(e.graph, new Map()).get(e.graph)!;
    const text = `[${e.pass}] ${e.line}`;
    lines.set(text, (lines.get(text) ?? 0) + 1);
  }
  return [...graphs].map(([graph, lines]) => `@${graph}\n${[...lines].map(([text, n]) => `  ${text}${n > 1 ? ` (×${n})` : ''}\n`).join('')}`).join('');
}

/**
 * The decode step as one persistent kernel, as the CUDA device of kernelRenderers renders it: its task summary
 * printed; with a folder, its source (decode.megakernel.cu) and its task list (decode.megakernel.tasks) written there.
 */
function writeMegakernel(dir: string | undefined, module: Parameters<typeof renderCudaMegakernel>[0], opts: MegakernelOptions): void {
  const mk = renderCudaMegakernel(module, kernelRenderers.cuda.device, opts);
  process.stdout.write(mk.tasks.slice(0, mk.tasks.indexOf('\n') + 1));
  if (dir === undefined) return;
  writingFor('--dump-kernels', dir, 'the megakernel', () => {
    fs.writeFileSync(path.join(dir, `${mk.graph}.megakernel.cu`), mk.kernel.source);
    fs.writeFileSync(path.join(dir, `${mk.graph}.megakernel.tasks`), mk.tasks);
  });
}

/** Every kernel's schedule as text, graph by graph (--dump-schedule). */
export function formatSchedules(backend: string, graphs: readonly DumpedGraph[], opts: DumpOptions = {}): string {
  const renderer = rendererFor(backend, '--dump-schedule', opts);
  return graphs.map((g) => `# graph @${g.name}\n${scheduleKernels(g.kernels, renderer.device, g.opts).map(formatSchedule).join('')}`).join('\n');
}

function rendererFor(backend: string, flag: string, opts: DumpOptions = {}) {
  const renderer = kernelRenderers[backend];
  if (!renderer) throw new CompileUsageError(`${flag}: no kernel renderer for backend '${backend}' (have ${Object.keys(kernelRenderers).join(', ')})`);
  // The H200's Dawn offers 48 KiB of workgroup memory; the runtime schedules again for its own adapter's.
  return opts.subgroupMatrix ? { ...renderer, device: webgpuCaps({ subgroups: true, subgroupMatrix: { workgroupBytes: 49152 } }) } : renderer;
}
