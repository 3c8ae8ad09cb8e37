// `tsfuse compile`: its options, and the start of a run. A plain summary whose module is in the compile cache is
// answered here, loading no tracer, pass, lowering or printer (a warm start); anything else runs in
// compiler/cli-compile.ts, loaded only then.

import fs from 'node:fs';
import path from 'node:path';
import { DType } from '../ir/dtype.ts';
import { builtinConfig, LlamaConfig } from '../runtime/config.ts';
import type { MegakernelOptions } from '../backends/cuda/megakernel.ts';
import type { DeviceKind } from '../runtime/device.ts';
import { step } from '../runtime/progress.ts';
import {
  backendOption, checkBackend, checkModelDir, defineCommand, jsonOption, megakernelFlags, megakernelOptionsOf, modelOption, positiveInt, scriptLimitOptions,
  scriptLimits, UsageError,
} from './cli-args.ts';
import { findCompiled } from './compile-cache-entry.ts';
import type { CompiledModule } from './compile-module.ts';
import { kvCacheDType, sessionContext } from './session-choices.ts';
import type { PassContext } from './passes/context.ts';
import { withoutOptimizingTier } from './optimizing-tier.ts';

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
    megakernel: { type: 'boolean', default: false, help: 'cuda: the decode step as one persistent kernel; with --dump-kernels, its source and task list too' },
    ...megakernelFlags,
    'subgroup-matrix': { type: 'boolean', default: false, help: 'webgpu: dump kernels and schedules as for an adapter with f16 subgroup matrices (48 KiB of workgroup memory, as Dawn offers on the H200)' },
    'cache-length': { type: 'string', value: 'N', help: 'KV-cache positions (default: the model\'s context, at most 2048)' },
    'kv-dtype': { type: 'string', value: 'f32|bf16|f16', help: 'what the KV cache stores (default: as generate: bf16/f16 on cuda and webgpu for 16-bit weights, else f32)' },
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
      for (const flag of ['report', 'explain-fusion', 'dump-schedule', 'megakernel', 'subgroup-matrix'] as const) {
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
    if (values['subgroup-matrix'] && backend !== 'webgpu') throw new UsageError(`--subgroup-matrix needs --backend webgpu, not ${backend}`);
    if (values['subgroup-matrix'] && !values['dump-kernels'] && !values['dump-schedule']) throw new UsageError('--subgroup-matrix shapes what --dump-kernels and --dump-schedule show; give one of them');
    if (values.entry !== undefined || values.out !== undefined) throw new UsageError('--entry and --out need a model script: tsfuse compile MODEL.ts');
    if (values.megakernel && backend !== 'cuda') throw new UsageError(`--megakernel needs --backend cuda, not ${backend}`);
    if ((values.model === undefined) === (values.config === undefined)) throw new UsageError('give one of --model DIR or --config NAME (built-in: llama-3.2-1b)');
    const model = values.model !== undefined ? (await import('../runtime/llama.ts')).loadLlama(checkModelDir(values.model)) : undefined;
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
    const cacheLength = values['cache-length'] ? positiveInt(values['cache-length'], '--cache-length') : Math.min(cfg.maxPositionEmbeddings, 2048);
    // As generate refuses a request past the model's positions, a cache longer than them is refused here.
    if (cacheLength > cfg.maxPositionEmbeddings) throw new UsageError(`--cache-length ${cacheLength}: more than the model's max_position_embeddings ${cfg.maxPositionEmbeddings} (${cfg.source})`);
    const req: CompileRequest = {
      cfg,
      weightDType,
      kvDType,
      cacheLength,
      backend,
      dumpIr: values['dump-ir'],
      dumpKernels: values['dump-kernels'],
      dumpSchedule: values['dump-schedule'],
      report: values.report,
      json: values.json,
      explainFusion: values['explain-fusion'],
      promptLength: positiveInt(values['prompt-length'], '--prompt-length'),
      megakernel: megakernelOptionsOf(values),
      subgroupMatrix: values['subgroup-matrix'],
    };
    const summaryOnly = req.dumpIr === undefined && !req.dumpKernels && !req.dumpSchedule && !req.report && !req.explainFusion && !req.megakernel;
    const cached = summaryOnly ? findCompiled(llamaCacheWhat(req), { ctx: llamaPassContext(req) }) : undefined;
    if (cached) {
      printSummary(req, compileSummary(req, cached.module, (name) => cached.tracedNodes[name]), false);
      return;
    }
    const { runCompile } = await import('./cli-compile.ts');
    withoutOptimizingTier(() => runCompile(req));
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
  /** Render the decode step as one persistent CUDA kernel, so: its task summary, and with dumpKernels its source and task list. */
  readonly megakernel?: MegakernelOptions;
  /** WebGPU: dump kernels and schedules as for an adapter with f16 subgroup matrices. */
  readonly subgroupMatrix?: boolean;
}

/** The options a session's trace has (compiler/open-session.ts), so that a compile warms the cache for it. */
export function llamaTraceOptions(req: CompileRequest) {
  return { weightDType: req.weightDType, cacheLength: req.cacheLength, sampling: false, kvDType: req.kvDType ?? DType.F32 };
}

/** What names the request's module in the compile cache (as open-session.ts names a session's). */
export function llamaCacheWhat(req: CompileRequest) {
  return { model: 'llama', cfg: req.cfg, ...llamaTraceOptions(req) };
}

/**
 * The passes' context as a session on the backend has it (compiler/open-session.ts), so that a compile warms the
 * cache for it: S, the prompt length of the byte counts, and where attention is split.
 */
export function llamaPassContext(req: CompileRequest): PassContext {
  return sessionContext(req.backend as DeviceKind, req.kvDType ?? DType.F32, req.cfg.headDim, new Map([['S', req.promptLength]]));
}

export function builtinLlama(name: string): LlamaConfig {
  try {
    return builtinConfig(name);
  } catch (e) {
    throw new CompileUsageError((e as Error).message);
  }
}

export interface CompileSummary {
  readonly model: string;
  readonly backend: string;
  readonly cacheLength: number;
  readonly promptLength: number;
  /** Nodes traced and kernels compiled, graph by graph. */
  readonly graphs: Readonly<Record<string, { nodes: number | undefined; kernels: number }>>;
}

export function compileSummary(req: CompileRequest, compiled: CompiledModule, tracedNodes: (graph: string) => number | undefined): CompileSummary {
  return {
    model: req.cfg.source, backend: req.backend, cacheLength: req.cacheLength, promptLength: req.promptLength,
    graphs: Object.fromEntries(compiled.graphs.map((c) => [c.graph.name, { nodes: tracedNodes(c.graph.name), kernels: c.kernels.length }])),
  };
}

/** The summary as JSON, or as one line unless something else was `shown` (IR, schedules, fusion decisions). */
export function printSummary(req: CompileRequest, summary: CompileSummary, shown: boolean): void {
  if (req.json) console.log(JSON.stringify(summary));
  else if (!shown) {
    console.log(`${req.cfg.source}: ` + Object.entries(summary.graphs).map(([name, g]) => `@${name} ${g.nodes} nodes → ${g.kernels} kernels`).join(', ') +
      ` (KV cache ${req.cacheLength} positions${req.dumpKernels ? `; kernels written to ${req.dumpKernels}` : ''})`);
  }
}
