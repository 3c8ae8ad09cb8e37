// `tsfuse compile`: runs the pass pipeline on the Llama graphs and shows what it did — IR after any pass, the
// compile report (kernels and bytes, fused vs one kernel per op), the fusion decisions, and the generated kernels.

import fs from 'node:fs';
import path from 'node:path';
import { printJs } from '../backends/cpu/render-js.ts';
import { printWgsl } from '../backends/wgsl/render-wgsl.ts';
import { cudaPrelude, printCudaFunction } from '../backends/cuda/render-cuda.ts';
import { cpuCaps, cudaCaps, DeviceCaps, webgpuCaps } from '../backends/device-caps.ts';
import { scheduleKernel, ScheduledKernel } from '../backends/schedule.ts';
import { formatSchedule } from '../backends/schedule-format.ts';
import { KernelIR } from '../backends/kernel-ir.ts';
import { DType } from '../ir/dtype.ts';
import { Module } from '../ir/graph.ts';
import { printModule } from '../ir/printer.ts';
import { builtinConfig, LlamaConfig } from '../runtime/config.ts';
import { traceLlama } from '../examples/llama.ts';
import { compileCached } from './compile-cache.ts';
import { kvCacheDType } from './kv-dtype.ts';
import type { DeviceKind } from '../runtime/device.ts';
import { compileModule } from './compile-module.ts';
import { defaultContext, PassContext } from './passes/context.ts';
import { passNames, prefusionPasses, runPipeline } from './passes/pipeline.ts';
import { formatReportTable, stepReport } from './report.ts';
import { loadLlama } from '../runtime/llama.ts';
import { step } from '../runtime/progress.ts';
import {
  backendOption, checkBackend, checkModelDir, defineCommand, jsonOption, modelOption, positiveInt, scriptLimitOptions, scriptLimits,
  UsageError,
} from './cli-args.ts';
import { writingFor } from './cli-files.ts';

/** Bad options of `tsfuse compile` (a usage error). */
export class CompileUsageError extends UsageError {}

const dumpIrHelp = 'print the fused IR; all: after every pass; after:PASS (e.g. after:fuse): after one pass';

export const compileCommand = defineCommand({
  synopsis: '(--model DIR | --config NAME | MODEL.ts) [options]',
  about: 'Runs the pass pipeline on the Llama prefill and decode graphs (a checkpoint, or a built-in config needing no\n' +
    'weights: llama-3.2-1b, llama-tiny) and prints a summary of the kernels, or what the options ask for. Given a\n' +
    'model script, traces its exported entry (inputs typed Tensor<dtype, shape>); --out writes the compiled artifact.\n' +
    'A model script is a program: compiling it runs it with your privileges, as node would; it runs first in a\n' +
    'worker thread, which is stopped past --timeout seconds or --max-memory MB of heap.',
  options: {
    model: modelOption,
    config: { type: 'string', value: 'NAME', help: 'a built-in config: llama-3.2-1b, llama-tiny' },
    backend: backendOption,
    json: { ...jsonOption, help: 'print the summary (and with --report the report) as one line of JSON' },
    report: { type: 'boolean', default: false, help: 'kernels and bytes per step, fused against one kernel per op' },
    'explain-fusion': { type: 'boolean', default: false, help: 'every fusion decision and every kernel boundary kept' },
    'dump-ir': { type: 'string', value: '[all|after:PASS]', help: dumpIrHelp },
    'dump-kernels': { type: 'string', value: 'DIR', help: 'write each kernel\'s source for the backend and its schedule (NAME.schedule)' },
    'dump-schedule': { type: 'boolean', default: false, help: 'print every kernel\'s schedule for the backend' },
    'cache-length': { type: 'string', value: 'N', help: 'KV-cache positions (default: the model\'s context, at most 2048)' },
    'kv-dtype': { type: 'string', value: 'f32|bf16|f16', help: 'what the KV cache stores (default: as generate: bf16/f16 on cuda for 16-bit weights, else f32)' },
    'prompt-length': { type: 'string', default: '32', value: 'N', help: 'prompt length S assumed in byte counts' },
    'no-cache': { type: 'boolean', default: false, help: 'compile again rather than read the compile cache (TSFUSE_CACHE_DIR)' },
    entry: { type: 'string', value: 'NAME', help: 'model scripts: the exported function to compile (default: the only one)' },
    out: { type: 'string', value: 'FILE', help: 'model scripts: write the compiled artifact for --backend here (FILE.ts, or FILE.js with FILE.d.ts)' },
    ...scriptLimitOptions,
  },
  positionals: true,
  async run(values, positionals) {
    if (values['no-cache']) process.env.TSFUSE_NO_CACHE = '1';
    const backend = checkBackend(values.backend);
    if (positionals.length > 1) throw new UsageError(`compile takes one model script, got ${positionals.join(' ')}`);
    if (positionals.length === 1) {
      if (values.model !== undefined || values.config !== undefined) throw new UsageError('give a model script or --model/--config, not both');
      for (const flag of ['report', 'explain-fusion', 'dump-schedule'] as const) {
        if (values[flag]) throw new UsageError(`--${flag} applies to --model/--config; for a model script use --dump-ir or --dump-kernels`);
      }
      if (values.out !== undefined) checkArtifactOut(values.out, positionals[0], backend);
      const { runScriptCompile } = await importScriptCompiler();
      const compileScript = () => runScriptCompile({
        script: positionals[0], entry: values.entry, backend, dumpIr: values['dump-ir'],
        dumpKernels: values['dump-kernels'], out: values.out, json: values.json, limits: scriptLimits(values),
      });
      // A spinner while the script is read, traced and written out (the passes show a bar), unless IR is printed.
      await (values['dump-ir'] === undefined ? step(`compiling ${positionals[0]}`, compileScript) : compileScript());
      return;
    }
    if (values.entry !== undefined || values.out !== undefined) throw new UsageError('--entry and --out need a model script: tsfuse compile MODEL.ts');
    if ((values.model === undefined) === (values.config === undefined)) throw new UsageError('give one of --model DIR or --config NAME (built-in: llama-3.2-1b)');
    const model = values.model !== undefined ? loadLlama(checkModelDir(values.model)) : undefined;
    const cfg = model?.cfg ?? builtinLlama(values.config!);
    const weightDType = model?.weightDType ?? DType.BF16;
    const kv = values['kv-dtype'];
    if (kv !== undefined && !['f32', 'bf16', 'f16'].includes(kv)) throw new UsageError(`--kv-dtype must be f32, bf16 or f16, got '${kv}'`);
    let kvDType: DType;
    try {
      kvDType = kvCacheDType(backend as DeviceKind, weightDType, kv as DType | undefined);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    runCompile({
      cfg,
      weightDType,
      kvDType,
      cacheLength: values['cache-length'] ? positiveInt(values['cache-length'], '--cache-length') : Math.min(cfg.maxPositionEmbeddings, 2048),
      backend,
      dumpIr: values['dump-ir'],
      dumpKernels: values['dump-kernels'],
      dumpSchedule: values['dump-schedule'],
      report: values.report,
      json: values.json,
      explainFusion: values['explain-fusion'],
      promptLength: positiveInt(values['prompt-length'], '--prompt-length'),
    });
  },
});

/**
 * --out names a module to write for a backend that runs kernels: TypeScript, or JavaScript with declarations
 * beside it; never the script being compiled, nor a folder.
 */
function checkArtifactOut(out: string, script: string, backend: string): void {
  const target = path.resolve(out);
  if (target === path.resolve(script)) throw new UsageError(`--out ${out} is the model script itself; choose another file`);
  if (fs.existsSync(target) && fs.statSync(target).isDirectory()) {
    throw new UsageError(`--out ${out} is a folder; name a file in it, such as ${path.join(out, 'model.ts')}`);
  }
  if (!/\.m?[jt]s$/.test(out) || /\.d\.m?ts$/.test(out)) {
    throw new UsageError(`--out ${out}: name the artifact FILE.ts or FILE.mts (TypeScript), or FILE.js or FILE.mjs (JavaScript, with its declarations written beside it)`);
  }
  if (backend === 'reference') throw new UsageError('--out writes compiled kernels, and the reference backend has none: use --backend cpu, webgpu or cuda');
}

/** The model-script compiler loads ts-morph, an optional dependency: say how to install it when it is missing. */
async function importScriptCompiler() {
  try {
    return await import('./cli-script.ts');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && /'ts-morph'/.test((e as Error).message)) {
      throw new UsageError('compiling a model script needs the optional package ts-morph: npm install ts-morph');
    }
    throw e;
  }
}

export interface CompileRequest {
  readonly cfg: LlamaConfig;
  readonly weightDType: DType;
  /** What the KV cache stores (as a session on the backend would). */
  readonly kvDType?: DType;
  readonly cacheLength: number;
  readonly backend: string;
  /** 'final', 'all', or 'after:<pass>'; undefined prints no IR. */
  readonly dumpIr?: string;
  readonly dumpKernels?: string;
  /** Print every kernel's schedule for the backend. */
  readonly dumpSchedule?: boolean;
  readonly report: boolean;
  readonly json: boolean;
  readonly explainFusion: boolean;
  /** Size assumed for the prefill's sequence length S in byte counts. */
  readonly promptLength: number;
}

/** Per backend, for --dump-kernels: the device kernels are scheduled for, and how a scheduled kernel prints. */
export const kernelRenderers: Record<string, { ext: string; device: DeviceCaps; print: (s: ScheduledKernel) => string }> = {
  cpu: { ext: 'js', device: cpuCaps, print: printJs },
  cuda: { ext: 'cu', device: cudaCaps(), print: (s) => `${cudaPrelude}\n${printCudaFunction(s).code}` },
  // As on a device with subgroups; the WebGPU runtime schedules again for its own device's features and limits.
  webgpu: { ext: 'wgsl', device: webgpuCaps({ subgroups: true }), print: (s) => printWgsl(s).code },
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
  // The options a session's trace has (compiler/open-session.ts), so that this compile warms the cache for it.
  const traceOpts = { weightDType: req.weightDType, cacheLength: req.cacheLength, sampling: false, kvDType: req.kvDType ?? DType.F32 };
  const trace = () => traceLlama(req.cfg, traceOpts);
  const after = (pass: string, m: Module) => {
    if (dump.all || dump.after === pass) process.stdout.write(`# after ${pass}\n${printModule(m)}\n`);
  };
  // Through the compile cache unless the passes themselves are to be shown (IR after a pass, fusion decisions).
  const watched = dump.all || dump.after !== undefined || req.explainFusion;
  const compileAll = () => {
    const traced = watched || req.report ? trace() : undefined;
    const cached = watched ? undefined : compileCached({ model: 'llama', cfg: req.cfg, ...traceOpts }, () => traced ?? trace(), { ctx });
    return { traced, cached, compiled: cached?.module ?? compileModule(traced!, { ctx, after }) };
  };
  // A spinner on a terminal, unless the IR printed after each pass would interleave with it.
  const printsPasses = dump.all || dump.after !== undefined;
  const { traced, cached, compiled } = printsPasses ? compileAll() : step(`compiling ${req.cfg.source}`, compileAll);
  const tracedNodes = (name: string) => cached?.tracedNodes[name] ?? traced?.graphs.find((g) => g.name === name)?.nodes.length;
  if (dump.final) process.stdout.write(printModule({ graphs: compiled.graphs.map((c) => c.graph) }));

  const kernels = compiled.graphs.map((c) => ({ name: c.graph.name, kernels: c.kernels }));
  if (req.dumpKernels) writeKernels(req.dumpKernels, req.backend, kernels);
  if (req.dumpSchedule) process.stdout.write(formatSchedules(req.backend, kernels));
  if (req.explainFusion) console.log(explained.join('\n'));
  const summary = {
    model: req.cfg.source, backend: req.backend, cacheLength: req.cacheLength, promptLength: req.promptLength,
    graphs: Object.fromEntries(compiled.graphs.map((c) => [c.graph.name, { nodes: tracedNodes(c.graph.name), kernels: c.kernels.length }])),
  };
  const shown = dump.final || dump.all || dump.after !== undefined || req.dumpSchedule || req.explainFusion;
  if (!req.report) {
    if (req.json) console.log(JSON.stringify(summary));
    else if (!shown) {
      console.log(`${req.cfg.source}: ` + compiled.graphs.map((c) => `@${c.graph.name} ${summary.graphs[c.graph.name].nodes} nodes → ${c.kernels.length} kernels`).join(', ') +
        ` (KV cache ${req.cacheLength} positions${req.dumpKernels ? `; kernels written to ${req.dumpKernels}` : ''})`);
    }
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

/** Writes each kernel's source, and its schedule as text (NAME.schedule), into `dir`. */
export function writeKernels(dir: string, backend: string, graphs: { name: string; kernels: readonly KernelIR[] }[]): void {
  const renderer = rendererFor(backend, '--dump-kernels');
  writingFor('--dump-kernels', dir, 'the kernels', () => {
    fs.mkdirSync(dir, { recursive: true });
    for (const g of graphs) {
      for (const k of g.kernels) {
        const scheduled = scheduleKernel(k, renderer.device);
        fs.writeFileSync(path.join(dir, `${g.name}.${k.name}.${renderer.ext}`), renderer.print(scheduled) + '\n');
        fs.writeFileSync(path.join(dir, `${g.name}.${k.name}.schedule`), formatSchedule(scheduled));
      }
    }
  });
}

/** Every kernel's schedule as text, graph by graph (--dump-schedule). */
export function formatSchedules(backend: string, graphs: { name: string; kernels: readonly KernelIR[] }[]): string {
  const renderer = rendererFor(backend, '--dump-schedule');
  return graphs.map((g) => `# graph @${g.name}\n${g.kernels.map((k) => formatSchedule(scheduleKernel(k, renderer.device))).join('')}`).join('\n');
}

function rendererFor(backend: string, flag: string) {
  const renderer = kernelRenderers[backend];
  if (!renderer) throw new CompileUsageError(`${flag}: no kernel renderer for backend '${backend}' (have ${Object.keys(kernelRenderers).join(', ')})`);
  return renderer;
}
