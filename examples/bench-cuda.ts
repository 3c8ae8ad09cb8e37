// The CUDA decode benchmark, `npm run bench -- --backend cuda --config llama-3.2-1b [--compare hf]`: random bf16
// weights of the config's shape written as a Hugging Face checkpoint, loaded by tsfuse (and, with --compare hf, by
// transformers in a child process, examples/bench-hf.py, on the same weights and prompt, one after the other on the
// same GPU); prints one Markdown report for BENCHMARKS.md: speed, bandwidth, and how far the two agree.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { builtinConfigJson, LlamaConfig } from '../runtime/config.ts';
import { loadLlama } from '../runtime/llama.ts';
import type { KernelTime } from '../runtime/device.ts';
import { openLlamaSession } from '../compiler/open-session.ts';
import { checkpointMetadata, randomBf16Weights, writeBf16Checkpoint } from './random-checkpoint.ts';

/** A problem with the benchmark's setup (options, python, checkpoint folder): reported in one line. */
export class BenchError extends Error {
  override name = 'BenchError';
}

export interface CudaBenchOptions {
  /** The built-in config's name. */
  readonly config: string;
  readonly promptLength: number;
  readonly newTokens: number;
  /** Timed runs per measurement; the best counts, on both sides. */
  readonly runs: number;
  readonly compare?: string;
  readonly checkpointDir?: string;
  readonly seed: number;
  readonly python: string;
  readonly hfTimeoutS: number;
  readonly profile: boolean;
  /** The command line as typed, for the report. */
  readonly command: string;
}

/** What the tsfuse side measured. Times in ms; "events" are CUDA events on the session's stream. */
export interface TsfuseResult {
  readonly device: string;
  readonly setupMs: number;
  readonly modulesCompiled: number;
  readonly decodeEventMs: number;
  readonly decodeWallMs: number;
  readonly replayMs: number;
  readonly prefillEventMs: number;
  readonly prefillWallMs: number;
  readonly kernelsPerToken: number;
  readonly copyBandwidth: number;
  readonly weightBytes: number;
  readonly tokens: readonly number[];
  readonly logits: Float32Array;
  readonly deterministic: boolean;
}

/** What examples/bench-hf.py wrote (its JSON, with the logits files read in). */
export interface HfResult {
  readonly versions: { torch: string; transformers: string; gpu: string; cuda: string | null };
  readonly load_s: number;
  readonly warmup_s: number[];
  readonly decode_ms_per_token_wall: number;
  readonly decode_ms_per_token_event: number;
  readonly prefill_wall_ms: number;
  readonly prefill_event_ms: number;
  readonly tokens: number[];
  readonly tokens_f32?: number[];
  logitsBf16: Float32Array;
  logitsF32?: Float32Array;
}

const log = (msg: string) => console.error(`bench: ${msg}`);

export async function benchCuda(cfg: LlamaConfig, o: CudaBenchOptions): Promise<number> {
  if (o.newTokens < 2) throw new BenchError('--new-tokens must be at least 2');
  if (o.compare !== undefined && o.compare !== 'hf') throw new BenchError(`--compare '${o.compare}': only 'hf' is known`);
  // Fail before writing gigabytes: the driver opens, and the Python side imports and finds a GPU.
  const { CudaDriver } = await import('../runtime/cuda/driver.ts');
  CudaDriver.open().destroy();
  if (o.compare) {
    const v = await runPython(o, ['--check'], true);
    log(`Hugging Face side: ${v.trim()}`);
  }

  const dir = prepareCheckpoint(cfg, o);
  const prompt = Array.from({ length: o.promptLength }, (_, i) => (i * 7919 + 13) % cfg.vocabSize);
  const ts = await runTsfuse(dir, prompt, o);
  let hf: HfResult | undefined;
  let hfFailure: string | undefined;
  if (o.compare) {
    try {
      hf = await runHf(dir, prompt, o);
    } catch (e) {
      if (!(e instanceof BenchError)) throw e;
      hfFailure = e.message;
    }
  }
  console.log(report(ts, hf, o, dir));
  if (hfFailure) {
    log(`the Hugging Face side failed: ${hfFailure}`);
    return 1;
  }
  return 0;
}

/** The checkpoint folder: reused when this benchmark wrote it with the same config and seed, else written. */
export function prepareCheckpoint(cfg: LlamaConfig, o: CudaBenchOptions): string {
  const dir = path.resolve(o.checkpointDir ?? path.join(os.tmpdir(), `tsfuse-bench-${o.config}-seed${o.seed}`));
  const tag = `${o.config} seed ${o.seed}`;
  const meta = checkpointMetadata(dir);
  if (meta?.tsfuse_random === tag) {
    log(`reusing the random checkpoint in ${dir}`);
    return dir;
  }
  if (fs.existsSync(path.join(dir, 'model.safetensors')) && meta?.tsfuse_random === undefined) {
    throw new BenchError(`${dir} holds a model.safetensors this benchmark did not write; choose another --checkpoint-dir`);
  }
  const t0 = performance.now();
  const weights = randomBf16Weights(cfg, o.seed);
  writeBf16Checkpoint(dir, builtinConfigJson(o.config), weights, { tsfuse_random: tag });
  log(`wrote random bf16 weights (${o.config}, seed ${o.seed}) to ${dir} in ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
  return dir;
}

async function runTsfuse(dir: string, prompt: number[], o: CudaBenchOptions): Promise<TsfuseResult> {
  const { CudaProgram } = await import('../runtime/devices/cuda.ts');
  const model = loadLlama(dir);
  const N = o.newTokens;
  let t = performance.now();
  const session = await openLlamaSession(model, { backend: 'cuda', cacheLength: prompt.length + N });
  const program = session.program as InstanceType<typeof CudaProgram>;
  try {
    const setupMs = performance.now() - t;
    const modulesCompiled = [...program.images.values()].filter((i) => !i.cached).length;
    log(`tsfuse ready in ${(setupMs / 1e3).toFixed(1)} s on ${session.device.description} (${modulesCompiled} modules compiled, the rest cached)`);
    const first = await session.generate(prompt, N); // warm-up
    await session.generate(prompt, 1);
    let deterministic = true;
    const best = { decodeEvent: Infinity, prefillEvent: Infinity, wall1: Infinity, wallN: Infinity };
    let tokens = first;
    for (let r = 0; r < o.runs; r++) {
      t = performance.now();
      await session.generate(prompt, 1);
      best.wall1 = Math.min(best.wall1, performance.now() - t);
      best.prefillEvent = Math.min(best.prefillEvent, (await session.lastTimings())!.prefillMs);
      t = performance.now();
      tokens = await session.generate(prompt, N);
      best.wallN = Math.min(best.wallN, performance.now() - t);
      best.decodeEvent = Math.min(best.decodeEvent, (await session.lastTimings())!.decodeMsPerToken);
      if (tokens.join() !== first.join()) deterministic = false;
    }
    // The cache holds P + N positions, as HF's static cache does: one warm-up step (the graph is warm by now), N − 1 timed.
    const replay = await session.timeDecode(N - 1, { warmup: 1, startPos: prompt.length });
    const logits = (await session.logits(prompt)).data as Float32Array;
    const copyBandwidth = program.device.copyBandwidth();
    if (o.profile) {
      const inOrder = await session.profileDecode(prompt.length);
      const line = (k: (typeof inOrder)[number]) => `  ${k.kernel.padEnd(5)} ${(k.us / 1e3).toFixed(4)} ms  ${(k.bytes / k.us / 1e3).toFixed(0).padStart(5)} GB/s  ${k.last.slice(0, 70)}`;
      console.error('one layer of the decode step, in order (launched one by one):');
      for (const k of inOrder.slice(6, 12)) console.error(line(k));
      console.error('slowest decode kernels:');
      for (const k of [...inOrder].sort((a, b) => b.us - a.us).slice(0, 6)) console.error(line(k));
      console.error(`sum of the kernels launched one by one: ${(inOrder.reduce((t, k) => t + k.us, 0) / 1e3).toFixed(3)} ms`);
      printPrefillProfile(await session.profilePrefill(prompt));
    }
    return {
      device: session.device.description, setupMs, modulesCompiled,
      decodeEventMs: best.decodeEvent, decodeWallMs: (best.wallN - best.wall1) / (N - 1), replayMs: replay.msPerToken,
      prefillEventMs: best.prefillEvent, prefillWallMs: best.wall1, kernelsPerToken: session.decodeKernels(),
      copyBandwidth, weightBytes: model.weights.tensors.reduce((s, w) => s + w.byteLength, 0),
      tokens, logits, deterministic,
    };
  } finally {
    session.close();
  }
}

/** The prefill's kernels by kind (time summed), and the slowest ones. */
function printPrefillProfile(kernels: readonly KernelTime[]): void {
  const byKind = new Map<string, { us: number; count: number }>();
  for (const k of kernels) {
    const e = byKind.get(k.kind) ?? { us: 0, count: 0 };
    byKind.set(k.kind, { us: e.us + k.us, count: e.count + 1 });
  }
  const total = kernels.reduce((t, k) => t + k.us, 0);
  console.error(`prefill kernels launched one by one: ${(total / 1e3).toFixed(3)} ms in ${kernels.length} kernels; by kind:`);
  for (const [kind, e] of [...byKind].sort((a, b) => b[1].us - a[1].us)) {
    console.error(`  ${kind.padEnd(12)} ${(e.us / 1e3).toFixed(3).padStart(8)} ms  ${e.count} kernels`);
  }
  const tflops = (k: KernelTime) => (k.flops ? `${(k.flops / k.us / 1e6).toFixed(0).padStart(4)} TFLOP/s` : ''.padStart(12));
  console.error('slowest prefill kernels (GEMMs with their achieved TFLOP/s):');
  for (const k of [...kernels].sort((a, b) => b.us - a.us).slice(0, 10)) {
    console.error(`  ${k.kernel.padEnd(5)} ${k.kind.padEnd(12)} ${(k.us / 1e3).toFixed(4)} ms ${tflops(k)}  ${k.last.slice(0, 60)}`);
  }
  const gemms = kernels.filter((k) => k.flops);
  const [flops, us] = [gemms.reduce((t, k) => t + k.flops!, 0), gemms.reduce((t, k) => t + k.us, 0)];
  if (gemms.length) console.error(`GEMM kernels: ${gemms.length}, ${(us / 1e3).toFixed(3)} ms, ${(flops / 1e12).toFixed(3)} TFLOP at ${(flops / us / 1e6).toFixed(0)} TFLOP/s`);
}

export async function runHf(dir: string, prompt: number[], o: CudaBenchOptions): Promise<HfResult> {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-bench-hf-'));
  try {
    const resultFile = path.join(out, 'result.json');
    await runPython(o, ['--model', dir, '--prompt-ids', prompt.join(','), '--new-tokens', String(o.newTokens),
      '--runs', String(o.runs), '--out', resultFile], false);
    const r = JSON.parse(fs.readFileSync(resultFile, 'utf8')) as HfResult & Record<string, { file: string } | undefined>;
    r.logitsBf16 = readF32(path.join(out, r.logits_bf16!.file));
    if (r.logits_f32) r.logitsF32 = readF32(path.join(out, r.logits_f32.file));
    return r;
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

function readF32(file: string): Float32Array {
  return new Float32Array(new Uint8Array(fs.readFileSync(file)).buffer);
}

/** Runs examples/bench-hf.py; its stderr (progress, errors) shows as it comes. Resolves to its stdout. */
function runPython(o: CudaBenchOptions, args: string[], quiet: boolean): Promise<string> {
  const script = fileURLToPath(new URL('./bench-hf.py', import.meta.url));
  const env = { HF_HUB_OFFLINE: '1', TRANSFORMERS_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false', ...process.env };
  return new Promise((resolve, reject) => {
    const child = spawn(o.python, [script, ...args], {
      env, stdio: ['ignore', 'pipe', quiet ? 'pipe' : 'inherit'], timeout: o.hfTimeoutS * 1000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => { stdout += d; });
    child.stderr?.on('data', (d) => { stderr += d; });
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(new BenchError(e.code === 'ENOENT'
        ? `cannot run '${o.python}': not found (pass --python PATH, or leave out --compare to run tsfuse alone)`
        : `cannot run '${o.python}': ${e.message}`));
    });
    child.on('close', (code, signal) => {
      if (code === 0) return resolve(stdout);
      const last = stderr.trim().split('\n').filter((l) => l.startsWith('bench-hf:')).pop() ?? stderr.trim().split('\n').pop();
      reject(new BenchError(signal
        ? `${path.basename(script)} stopped by ${signal}${signal === 'SIGTERM' ? ` (after --hf-timeout ${o.hfTimeoutS} s?)` : ''}`
        : `${path.basename(script)} exited with status ${code}${last ? `: ${last}` : ''}${quiet ? '' : ' (its output is above)'}`));
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The report.

/** ‖a − b‖ / ‖b‖, in double precision. */
export function relativeDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new BenchError(`logits of ${a.length} and ${b.length} values cannot be compared`);
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}

/** How many rows of two [rows, vocab] logit matrices have the same argmax. */
export function argmaxAgreement(a: Float32Array, b: Float32Array, vocab: number): number {
  const argmax = (x: Float32Array, r: number) => {
    let best = r * vocab;
    for (let i = best + 1; i < (r + 1) * vocab; i++) if (x[i] > x[best]) best = i;
    return best;
  };
  let same = 0;
  for (let r = 0; r < a.length / vocab; r++) if (argmax(a, r) === argmax(b, r)) same++;
  return same;
}

export function leadingEqual(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

export function report(ts: TsfuseResult, hf: HfResult | undefined, o: CudaBenchOptions, dir: string): string {
  const N = o.newTokens;
  const P = o.promptLength;
  const vocab = ts.logits.length / P;
  const ms = (x: number) => x.toFixed(3);
  const tbs = (x: number) => `${(x / 1e12).toFixed(2)} TB/s`;
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
  const bw = (msPerToken: number) => ts.weightBytes / (msPerToken / 1e3);
  const rows: string[][] = [
    ['decode ms per token, CUDA events', ms(ts.decodeEventMs), hf ? ms(hf.decode_ms_per_token_event) : '', hf ? ratio(hf.decode_ms_per_token_event, ts.decodeEventMs) : ''],
    [`decode ms per token, wall clock (T${N} − T1) / ${N - 1}`, ms(ts.decodeWallMs), hf ? ms(hf.decode_ms_per_token_wall) : '', hf ? ratio(hf.decode_ms_per_token_wall, ts.decodeWallMs) : ''],
    ['decode tokens/s (events)', (1e3 / ts.decodeEventMs).toFixed(0), hf ? (1e3 / hf.decode_ms_per_token_event).toFixed(0) : '', ''],
    [`decode ms per token, ${N - 1} graph replays back to back`, ms(ts.replayMs), '—', ''],
    ['kernels per token', String(ts.kernelsPerToken), '—', ''],
    [`weight bandwidth (${(ts.weightBytes / 1e9).toFixed(3)} GB per token, events)`, tbs(bw(ts.decodeEventMs)), hf ? tbs(bw(hf.decode_ms_per_token_event)) : '', ''],
    [`fraction of copy bandwidth (${tbs(ts.copyBandwidth)}, this run)`, pct(bw(ts.decodeEventMs) / ts.copyBandwidth), hf ? pct(bw(hf.decode_ms_per_token_event) / ts.copyBandwidth) : '', ''],
    [`prefill ${P} tokens + first token, ms (events)`, ms(ts.prefillEventMs), hf ? ms(hf.prefill_event_ms) : '', hf ? ratio(hf.prefill_event_ms, ts.prefillEventMs) : ''],
    ['prefill + first token, ms (wall clock, generate 1 token)', ms(ts.prefillWallMs), hf ? ms(hf.prefill_wall_ms) : '', hf ? ratio(hf.prefill_wall_ms, ts.prefillWallMs) : ''],
    ['setup', `${(ts.setupMs / 1e3).toFixed(1)} s (${ts.modulesCompiled} modules compiled)`,
      hf ? `load ${hf.load_s.toFixed(1)} s, warm-up ${hf.warmup_s.map((s) => s.toFixed(1)).join(' + ')} s (torch.compile)` : '', ''],
  ];
  const lines = [
    `### ${o.config}, random bf16 weights, batch 1 — ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
    '',
    `- GPU: ${ts.device}${hf ? ` (torch: ${hf.versions.gpu})` : ''}`,
    `- command: \`${o.command}\``,
    `- ${P}-token prompt, ${N} new tokens, greedy; best of ${o.runs} runs after warm-up; weights ${dir}`,
  ];
  if (hf) {
    lines.push(`- Hugging Face: transformers ${hf.versions.transformers}, torch ${hf.versions.torch} (CUDA ${hf.versions.cuda}), `
      + '`LlamaForCausalLM` bf16, `generate(cache_implementation="static")` (decode compiled by torch.compile), in the same run');
  }
  lines.push('', table(hf ? ['', 'tsfuse (CUDA)', 'HF + torch.compile', 'HF / tsfuse'] : ['', 'tsfuse (CUDA)'],
    hf ? rows : rows.map((r) => r.slice(0, 2))));
  if (hf) {
    const agree: string[][] = [
      [`prefill logits ‖tsfuse − HF‖ / ‖HF‖ (${P} × ${vocab})`, relativeDifference(ts.logits, hf.logitsBf16).toExponential(2),
        hf.logitsF32 ? relativeDifference(ts.logits, hf.logitsF32).toExponential(2) : '—'],
      ['prefill positions with the same argmax', `${argmaxAgreement(ts.logits, hf.logitsBf16, vocab)} / ${P}`,
        hf.logitsF32 ? `${argmaxAgreement(ts.logits, hf.logitsF32, vocab)} / ${P}` : '—'],
      ['leading generated tokens equal', `${leadingEqual(ts.tokens, hf.tokens)} / ${N}`,
        hf.tokens_f32 ? `${leadingEqual(ts.tokens, hf.tokens_f32)} / ${N}` : '—'],
    ];
    lines.push('', table(['agreement, tsfuse against', 'HF bf16 (timed model)', 'HF float32 (same weights upcast)'], agree));
    lines.push('', `tsfuse tokens: ${ts.tokens.slice(0, 8).join(' ')} …; HF bf16: ${hf.tokens.slice(0, 8).join(' ')} …`
      + (hf.tokens_f32 ? `; HF f32: ${hf.tokens_f32.slice(0, 8).join(' ')} …` : ''));
  }
  if (!ts.deterministic) lines.push('', 'note: tsfuse generated different tokens in different runs');
  return lines.join('\n');
}

function table(head: string[], rows: string[][]): string {
  const all = [head, ...rows];
  const w = head.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  const line = (r: string[]) => `| ${r.map((x, c) => (c === 0 ? x.padEnd(w[c]) : x.padStart(w[c]))).join(' | ')} |`;
  return [line(head), `| ${w.map((n, c) => (c === 0 ? '-'.repeat(n) : `${'-'.repeat(n - 1)}:`)).join(' | ')} |`, ...rows.map(line)].join('\n');
}
