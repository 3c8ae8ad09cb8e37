// `tsfuse generate`: a prompt as token ids or as text (through the checkpoint's tokenizer.json), tokens streamed as
// they are produced (as ids, or as decoded text) on stdout, and the timing at the end on stderr: where the start
// went (compile or the compile cache, weights read, device open, upload, first token), prefill, ms per token,
// tokens/s (with --json, one object on stdout holding both).

import { DeviceKind } from '../runtime/device.ts';
import { checkLength, LoadedLlama } from '../runtime/llama.ts';
import { Sampling, StartupTimings } from '../runtime/session.ts';
import { formatMegakernelDifference } from '../runtime/megakernel-bisect.ts';
import { kvCacheDType, openLlamaSession } from './open-session.ts';
import { DType } from '../ir/dtype.ts';
import { showProgress, step, withWeightProgress } from '../runtime/progress.ts';
import { loadTokenizer, TextStream, TextTokenizer } from '../runtime/tokenizer.ts';
import { loadLlama } from '../runtime/llama.ts';
import {
  backendOption, checkBackend, checkModelDir, defineCommand, jsonOption, megakernelFlags, megakernelOptionsOf, modelOption, nonNegative, parseIds,
  positiveInt, UsageError,
} from './cli-args.ts';
import type { MegakernelOptions } from '../backends/cuda/megakernel.ts';

export const generateCommand = defineCommand({
  synopsis: '--model DIR (--ids 5,9,13 | --prompt TEXT) [options]',
  about: 'Runs the prompt as one prefill step, then one decode step per new token, and prints the new token ids (or\n' +
    'the decoded text, for --prompt) on stdout as they come; the timing (prefill, ms/token, tokens/s) goes to stderr.\n' +
    'Greedy unless --temperature is above 0; the same --seed gives the same tokens on every backend.',
  options: {
    model: modelOption,
    ids: { type: 'string', value: '5,9,13', help: 'the prompt as comma-separated token ids' },
    prompt: { type: 'string', value: 'TEXT', help: "the prompt as text (needs the checkpoint's tokenizer.json)" },
    'max-new-tokens': { type: 'string', default: '32', value: 'N', help: 'how many tokens to generate' },
    backend: backendOption,
    temperature: { type: 'string', default: '0', value: 'T', help: 'sampling temperature; 0 is greedy' },
    'top-p': { type: 'string', default: '1', value: 'P', help: 'nucleus sampling: keep the smallest set of tokens with this much probability' },
    seed: { type: 'string', default: '0', value: 'N', help: 'seed of the sampler (a u32)' },
    json: { ...jsonOption, help: 'print one line of JSON at the end: tokens, text, prefillMs, msPerToken, tokensPerSecond, start (where the start went)' },
    'ignore-eos': { type: 'boolean', default: false, help: "go on past the model's end-of-sequence tokens (eos_token_id)" },
    'no-cache': { type: 'boolean', default: false, help: 'compile again rather than read the compile cache (TSFUSE_CACHE_DIR)' },
    'kv-dtype': { type: 'string', value: 'f32|bf16|f16', help: 'what the KV cache stores (default: bf16/f16 on cuda and webgpu for 16-bit weights, else f32)' },
    megakernel: { type: 'boolean', default: false, help: 'cuda: run each decode step as one persistent kernel' },
    ...megakernelFlags,
    'bisect-megakernel': { type: 'boolean', default: false, help: 'with --megakernel: instead of generating, run the prompt but its last token, then the step that takes it both as the megakernel and as its kernels one by one, and say where they first differ' },
  },
  async run(values) {
    if (values['no-cache']) process.env.TSFUSE_NO_CACHE = '1';
    if ((values.ids === undefined) === (values.prompt === undefined)) throw new UsageError('give one of --ids 5,9,13 or --prompt TEXT');
    const maxNew = positiveInt(values['max-new-tokens'], '--max-new-tokens');
    if (!/^\d+$/.test(values.seed)) throw new UsageError(`--seed must be a non-negative integer, got '${values.seed}'`);
    const sampling = {
      temperature: nonNegative(values.temperature, '--temperature'),
      topP: nonNegative(values['top-p'], '--top-p'),
      seed: Number(values.seed) >>> 0,
    };
    if (sampling.topP > 1) throw new UsageError(`--top-p must be between 0 and 1, got '${values['top-p']}'`);
    const backend = checkBackend(values.backend);
    const kv = values['kv-dtype'];
    if (kv !== undefined && !['f32', 'bf16', 'f16'].includes(kv)) throw new UsageError(`--kv-dtype must be f32, bf16 or f16, got '${kv}'`);
    let kvDType: DType | undefined;
    try {
      kvDType = kv === undefined ? undefined : kvCacheDType(backend, DType.F32, kv as DType);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    if (values.megakernel && backend !== 'cuda') throw new UsageError(`--megakernel runs on --backend cuda, not ${backend}`);
    if (values['bisect-megakernel'] && !values.megakernel) throw new UsageError('--bisect-megakernel bisects the megakernel: give --megakernel too');
    const megakernel = megakernelOptionsOf(values);
    const dir = checkModelDir(values.model);
    const model = loadLlama(dir);
    let tokenizer;
    if (values.prompt !== undefined) {
      tokenizer = loadTokenizer(dir);
      if (!tokenizer) throw new UsageError(`--prompt needs a tokenizer.json in ${dir} (or give the prompt as --ids)`);
    }
    const ids = tokenizer ? tokenizer.encode(values.prompt!) : parseIds(values.ids);
    if (ids.length === 0) throw new UsageError('--prompt encodes to no tokens');
    await runGenerate({ model, backend, ids, tokenizer, maxNewTokens: maxNew, sampling, json: values.json, ignoreEos: values['ignore-eos'], kvDType, megakernel: megakernel ?? false, bisectMegakernel: values['bisect-megakernel'] });
  },
});

export interface GenerateRequest {
  readonly model: LoadedLlama;
  readonly backend: DeviceKind;
  readonly ids: readonly number[];
  /** Present when the prompt was text: generated tokens are decoded with it. */
  readonly tokenizer?: TextTokenizer;
  readonly maxNewTokens: number;
  readonly sampling: Sampling;
  readonly json: boolean;
  readonly write?: (text: string) => void;
  /** Where statistics go (default stderr). */
  readonly writeStats?: (text: string) => void;
  /** Generate past the model's EOS tokens (else generation ends at the first, as Hugging Face's does). */
  readonly ignoreEos?: boolean;
  /** What the KV cache stores (default: open-session's kvCacheDType). */
  readonly kvDType?: DType;
  /** Run each decode step as one persistent kernel (cuda), with these options where given. */
  readonly megakernel?: boolean | MegakernelOptions;
  /** Instead of generating: where the megakernel's step after the prompt first differs from its kernels (with megakernel). */
  readonly bisectMegakernel?: boolean;
}

export interface GenerateTiming {
  /** From the start to the first new token: the prompt's forward pass. */
  readonly prefillMs: number;
  /** Mean time of each later token (NaN when only one was generated). */
  readonly msPerToken: number;
  readonly tokensPerSecond: number;
}

export async function runGenerate(req: GenerateRequest): Promise<void> {
  const write = req.write ?? ((s: string) => process.stdout.write(s));
  const writeStats = req.writeStats ?? ((s: string) => process.stderr.write(s));
  checkLength(req.model.cfg, req.ids.length, req.maxNewTokens);
  const { model, bar } = withWeightProgress(req.model, showProgress(req.json));
  let session;
  try {
    session = await openLlamaSession(model, {
      backend: req.backend, cacheLength: req.ids.length + req.maxNewTokens, sampling: (req.sampling.temperature ?? 0) > 0, kvDType: req.kvDType,
      megakernel: req.megakernel,
    });
  } finally {
    bar.stop();
  }
  if (req.bisectMegakernel) {
    try {
      const diff = await step('bisecting the megakernel', () => session.bisectMegakernel(req.ids));
      const kernels = session.program.module.graphs.find((g) => g.graph.name === 'decode')!.kernels.length;
      write(req.json ? JSON.stringify({ agrees: !diff, ...(diff ? { difference: diff } : {}) }) + '\n' : formatMegakernelDifference(diff, kernels) + '\n');
    } finally {
      session.close();
    }
    return;
  }
  const stream = req.tokenizer ? new TextStream(req.tokenizer) : undefined;
  const started = performance.now();
  let first = NaN;
  const onToken = (t: number) => {
    if (Number.isNaN(first)) {
      first = performance.now();
      bar.stop(); // weights read lazily during the prefill (host backends)
    }
    const piece = stream ? stream.push(t) : `${t} `;
    if (!req.json) write(piece);
  };
  let tokens: number[];
  let ended: number;
  try {
    // A spinner until the first token (the prompt's step; on WebGPU also its first shader compiles, seconds).
    tokens = await step('running the prompt', () => session.generate(req.ids, req.maxNewTokens, req.sampling, onToken,
      { stopTokens: req.ignoreEos ? [] : req.model.eosTokenIds }));
    // Before closing the session: freeing the device's memory took 60 ms on the H200, no part of any token.
    ended = performance.now();
  } finally {
    bar.stop();
    session.close();
  }
  const timing = timingOf(started, first, ended, tokens.length);
  const start = session.startup;
  if (req.json) {
    write(JSON.stringify({
      tokens, ...(stream ? { text: stream.text } : {}), promptTokens: req.ids.length,
      prefillMs: round(timing.prefillMs), msPerToken: round(timing.msPerToken), tokensPerSecond: round(timing.tokensPerSecond),
      ...(start ? { start: startJson(start) } : {}),
    }) + '\n');
    return;
  }
  const perToken = Number.isNaN(timing.msPerToken) ? 'one token'
    : `${timing.msPerToken.toFixed(2)} ms/token, ${timing.tokensPerSecond.toFixed(1)} tokens/s`;
  write('\n');
  // Time to the first token, part by part: compile (or the compile cache), weights read, device open, upload, the
  // prompt's pass.
  if (start) writeStats(`${formatStartup(start)}\n`);
  writeStats(`${tokens.length} tokens in ${(ended - started).toFixed(0)} ms: prefill ${timing.prefillMs.toFixed(1)} ms ` +
    `(${req.ids.length} prompt tokens), ${perToken}\n`);
}

/** The start as --json prints it: each time in ms (rounded to µs), and the compile cache's answer. */
export function startJson(s: StartupTimings): Record<string, number | string | null> {
  const { since: _, compileCache, ...times } = s;
  return { compileCache, ...Object.fromEntries(Object.entries(times).map(([k, v]) => [k, round(v as number)])) };
}

/** One line: where the start went, up to the first token (reading the weights overlaps opening the device). */
export function formatStartup(s: StartupTimings): string {
  const ms = (x: number) => `${x.toFixed(0)} ms`;
  const compile = { hit: 'warm: from the compile cache', miss: 'cold: compiled, now cached', off: 'cold: compiled, cache off' }[s.compileCache];
  const first = s.firstTokenMs !== undefined && s.totalMs !== undefined
    ? `; first token ${s.firstTokenMs.toFixed(1)} ms later, ${ms(s.totalMs)} from the start` : '';
  return `start: compile ${ms(s.compileMs)} (${compile}), weights read ${ms(s.readMs)}, device open ${ms(s.openMs)}, ` +
    `upload ${ms(s.uploadMs)} (weights, kernels); ready in ${ms(s.readyMs)}${first}`;
}

export function timingOf(started: number, first: number, ended: number, n: number): GenerateTiming {
  const prefillMs = first - started;
  const msPerToken = n > 1 ? (ended - first) / (n - 1) : NaN;
  return { prefillMs, msPerToken, tokensPerSecond: 1000 / msPerToken };
}

const round = (x: number) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : null);
