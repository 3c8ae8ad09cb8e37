// The tsfuse command line: generate, logits, trace, inspect. Errors go to stderr as one readable line, exit code 1.

import fs from 'node:fs';
import { parseArgs, ParseArgsConfig } from 'node:util';
import { InterpretError } from '../backends/reference/interpreter.ts';
import { GraphError } from '../ir/graph.ts';
import { IrParseError, parseModule } from '../ir/parser.ts';
import { printModule } from '../ir/printer.ts';
import { verifyModule, VerifyError } from '../ir/verify.ts';
import { traceLlama } from '../examples/llama.ts';
import { ConfigError } from '../runtime/config.ts';
import { loadLlama } from '../runtime/llama.ts';
import { DeviceKind, deviceKinds, isDeviceKind } from '../runtime/device.ts';
import { openLlamaSession } from './open-session.ts';
import { WebGpuUnavailableError } from '../runtime/webgpu/device.ts';
import { CudaUnavailableError } from '../runtime/cuda/errors.ts';
import { WeightsError } from '../runtime/safetensors.ts';
import { TraceError } from './trace.ts';
import { builtinLlama, CompileUsageError, runCompile } from './cli-compile.ts';
import { ScriptError } from './script-error.ts';
import { runGenerate } from './cli-generate.ts';
import { showProgress, withWeightProgress } from '../runtime/progress.ts';
import { loadTokenizer, TokenizerError } from '../runtime/tokenizer.ts';
import { LoweringError } from '../backends/lower.ts';
import { DType } from '../ir/dtype.ts';

class UsageError extends Error {}

const usage = `usage: tsfuse <command> [options]

commands:
  generate --model DIR (--ids 5,9,13 | --prompt TEXT) [--max-new-tokens N] [--backend cpu|reference|webgpu|cuda] [--json]
           [--temperature T] [--top-p P] [--seed N]
      decoding after the prompt; streams the new token ids, or text when the prompt is text (needs the checkpoint's
      tokenizer.json); ends with prefill time, ms per token and tokens/s
  logits   --model DIR --ids 5,9,13 [--backend cpu|reference|webgpu|cuda] [--json]
      logits at every prompt position, from one forward pass with an empty cache
  compile  (--model DIR | --config llama-3.2-1b) [--report] [--json] [--explain-fusion] [--dump-schedule]
           [--dump-ir[=all|after:PASS]] [--dump-kernels DIR] [--backend cpu|cuda] [--cache-length N] [--prompt-length N]
      runs the pass pipeline; --report: kernels and bytes per step, fused vs one kernel per op; --dump-kernels
      writes each kernel and its schedule (NAME.schedule), --dump-schedule prints the schedules
  compile  MODEL.ts [--entry NAME] [--backend cpu|cuda] [--dump-ir[=all|after:PASS]] [--dump-kernels DIR] [--out FILE] [--json]
      traces an exported entry of a model script (inputs typed Tensor<dtype, shape>) and compiles it;
      --out writes the compiled artifact: a TypeScript module with the kernels and a typed run(inputs, params)
  trace    --model DIR [--dump-ir] [--cache-length N]
      traces the Llama prefill and decode graphs; --dump-ir prints them as IR text
  inspect  FILE.ir [--stats]
      parses and verifies an IR text file and prints it back (--stats: op counts)`;

const modelOptions = {
  model: { type: 'string' },
  ids: { type: 'string' },
  backend: { type: 'string', default: 'cpu' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const satisfies ParseArgsConfig['options'];

type Handler = (args: string[]) => void | Promise<void>;

const commands: Record<string, Handler> = {
  async generate(args) {
    const { values } = parse(args, {
      ...modelOptions,
      'max-new-tokens': { type: 'string', default: '32' },
      temperature: { type: 'string', default: '0' },
      'top-p': { type: 'string', default: '1' },
      seed: { type: 'string', default: '0' },
      prompt: { type: 'string' },
    });
    if ((values.ids === undefined) === (values.prompt === undefined)) throw new UsageError('give one of --ids 5,9,13 or --prompt TEXT');
    const maxNew = positiveInt(values['max-new-tokens'], '--max-new-tokens');
    const sampling = {
      temperature: nonNegative(values.temperature, '--temperature'),
      topP: nonNegative(values['top-p'], '--top-p'),
      seed: Number(values.seed) >>> 0,
    };
    const backend = checkBackend(values.backend);
    const model = loadModel(values.model);
    let tokenizer;
    if (values.prompt !== undefined) {
      tokenizer = loadTokenizer(values.model!);
      if (!tokenizer) throw new UsageError(`--prompt needs a tokenizer.json in ${values.model} (or give the prompt as --ids)`);
    }
    const ids = tokenizer ? tokenizer.encode(values.prompt!) : parseIds(values.ids);
    if (ids.length === 0) throw new UsageError('--prompt encodes to no tokens');
    await runGenerate({ model, backend, ids, tokenizer, maxNewTokens: maxNew, sampling, json: values.json });
  },

  async logits(args) {
    const { values } = parse(args, modelOptions);
    const ids = parseIds(values.ids);
    const backend = checkBackend(values.backend);
    const { model, bar } = withWeightProgress(loadModel(values.model), showProgress(values.json));
    const session = await openLlamaSession(model, { backend, cacheLength: ids.length });
    const logits = await session.logits(ids);
    bar.stop();
    session.close();
    const [rows, vocab] = logits.shape;
    const table = Array.from({ length: rows }, (_, r) => Array.from(logits.data.subarray(r * vocab, (r + 1) * vocab)));
    if (values.json) {
      console.log(JSON.stringify({ logits: table }));
    } else {
      table.forEach((row, i) => {
        const best = row.indexOf(Math.max(...row));
        console.log(`position ${i} (token ${ids[i]}): argmax ${best} (${row[best].toFixed(4)}), first ${row.slice(0, 4).map((v) => v.toFixed(4)).join(' ')} ...`);
      });
    }
  },

  trace(args) {
    const { values } = parse(args, {
      model: modelOptions.model, 'dump-ir': { type: 'boolean', default: false }, 'cache-length': { type: 'string' },
    });
    const model = loadModel(values.model);
    const cacheLength = values['cache-length'] ? positiveInt(values['cache-length'], '--cache-length')
      : Math.min(model.cfg.maxPositionEmbeddings, 2048);
    const module = traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength });
    verifyModule(module);
    if (values['dump-ir']) process.stdout.write(printModule(module));
    else for (const g of module.graphs) console.log(`@${g.name}: ${g.nodes.length} nodes, ${g.params.length} params, ${g.states.length} state tensors`);
  },

  async compile(args) {
    const { values, positionals } = parse(args, {
      entry: { type: 'string' },
      out: { type: 'string' },
      model: modelOptions.model,
      config: { type: 'string' },
      backend: modelOptions.backend,
      json: modelOptions.json,
      report: { type: 'boolean', default: false },
      'explain-fusion': { type: 'boolean', default: false },
      'dump-ir': { type: 'string' },
      'dump-kernels': { type: 'string' },
      'dump-schedule': { type: 'boolean', default: false },
      'cache-length': { type: 'string' },
      'prompt-length': { type: 'string', default: '32' },
    }, true);
    if (positionals.length > 1) throw new UsageError(`compile takes one model script, got ${positionals.join(' ')}`);
    if (positionals.length === 1) {
      if (values.model !== undefined || values.config !== undefined) throw new UsageError('give a model script or --model/--config, not both');
      const { runScriptCompile } = await import('./cli-script.ts'); // ts-morph loads only for scripts
      await runScriptCompile({
        script: positionals[0], entry: values.entry, backend: checkBackend(values.backend), dumpIr: values['dump-ir'],
        dumpKernels: values['dump-kernels'], out: values.out, json: values.json,
      });
      return;
    }
    if (values.entry !== undefined || values.out !== undefined) throw new UsageError('--entry and --out need a model script: tsfuse compile MODEL.ts');
    if ((values.model === undefined) === (values.config === undefined)) throw new UsageError('give one of --model DIR or --config NAME (built-in: llama-3.2-1b)');
    checkBackend(values.backend);
    const model = values.model !== undefined ? loadModel(values.model) : undefined;
    const cfg = model?.cfg ?? builtinLlama(values.config!);
    runCompile({
      cfg,
      weightDType: model?.weightDType ?? DType.BF16,
      cacheLength: values['cache-length'] ? positiveInt(values['cache-length'], '--cache-length') : Math.min(cfg.maxPositionEmbeddings, 2048),
      backend: values.backend,
      dumpIr: values['dump-ir'],
      dumpKernels: values['dump-kernels'],
      dumpSchedule: values['dump-schedule'],
      report: values.report,
      json: values.json,
      explainFusion: values['explain-fusion'],
      promptLength: positiveInt(values['prompt-length'], '--prompt-length'),
    });
  },

  inspect(args) {
    const { values, positionals } = parse(args, { stats: { type: 'boolean', default: false } }, true);
    if (positionals.length !== 1) throw new UsageError('inspect takes one IR file');
    const file = positionals[0];
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const module = parseModule(text, file);
    if (!values.stats) {
      process.stdout.write(printModule(module));
      return;
    }
    for (const g of module.graphs) {
      const counts = new Map<string, number>();
      for (const n of g.nodes) counts.set(n.op, (counts.get(n.op) ?? 0) + 1);
      console.log(`@${g.name}: ${g.nodes.length} nodes`);
      for (const [op, n] of [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))) console.log(`  ${op.padEnd(14)} ${n}`);
    }
  },
};

function parse<O extends ParseArgsConfig['options']>(args: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function required(v: string | undefined, flag: string): string {
  if (v === undefined) throw new UsageError(`${flag} is required`);
  return v;
}

/** Checks that the folder exists first, so a typo reads as one, not as a failed read of config.json. */
function loadModel(dir: string | undefined) {
  const model = required(dir, '--model');
  let isDir: boolean;
  try {
    isDir = fs.statSync(model).isDirectory();
  } catch {
    throw new UsageError(`--model ${model}: no such directory`);
  }
  if (!isDir) throw new UsageError(`--model ${model}: not a directory (give the checkpoint folder)`);
  return loadLlama(model);
}

function parseIds(text: string | undefined): number[] {
  const ids = required(text, '--ids').split(',').map((s) => s.trim());
  const bad = ids.find((s) => !/^\d+$/.test(s));
  if (bad !== undefined) throw new UsageError(`--ids must be comma-separated token ids, got '${bad}'`);
  return ids.map(Number);
}

function positiveInt(text: string, flag: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new UsageError(`${flag} must be a positive integer, got '${text}'`);
  return Number(text);
}

function checkBackend(name: string): DeviceKind {
  if (!isDeviceKind(name)) throw new UsageError(`unknown backend '${name}' (available: ${deviceKinds.join(', ')})`);
  return name;
}

function nonNegative(text: string, flag: string): number {
  const v = Number(text);
  if (!Number.isFinite(v) || v < 0) throw new UsageError(`${flag} must be a non-negative number, got '${text}'`);
  return v;
}

/** Errors that describe bad input: printed as they are, without a stack. */
const userErrors = [UsageError, ScriptError, TokenizerError, WebGpuUnavailableError, CudaUnavailableError, CompileUsageError, LoweringError, TraceError, ConfigError, WeightsError, IrParseError, VerifyError, GraphError, InterpretError, RangeError];

async function main(argv: string[]): Promise<number> {
  // A bare --dump-ir means the final IR; parseArgs wants a value for a string option.
  const [command, ...rest] = argv.map((a) => (a === '--dump-ir' && argv[0] === 'compile' ? '--dump-ir=final' : a));
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    console.log(usage);
    return command ? 0 : 1;
  }
  const handler = commands[command];
  try {
    if (!handler) throw new UsageError(`unknown command '${command}'\n\n${usage}`);
    if (rest.includes('--help') || rest.includes('-h')) {
      console.log(usage);
      return 0;
    }
    await handler(rest);
    return 0;
  } catch (e) {
    if (userErrors.some((cls) => e instanceof cls)) {
      console.error(`tsfuse ${command}: ${(e as Error).message}`);
    } else {
      console.error(`tsfuse ${command}: internal error: ${(e as Error).message}`);
      if (process.env.TSFUSE_DEBUG) console.error((e as Error).stack);
      else console.error('(set TSFUSE_DEBUG=1 for the stack trace)');
    }
    return 1;
  }
}

// `tsfuse ... | head` closes the pipe early: that is the reader's choice, not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});
process.exitCode = await main(process.argv.slice(2));
