// The CUDA decode benchmark, `npm run bench -- --backend cuda --config llama-3.2-1b [--compare hf,torch]`: random
// bf16 weights of the config's shape written as a Hugging Face checkpoint, loaded by tsfuse and, with --compare, by
// each peer in a child process on the same weights and prompt, one after the other on the same GPU: `hf` is
// transformers + torch.compile (examples/bench-hf.py), `torch` a lean PyTorch Llama under torch.compile with CUDA
// graphs (examples/bench-torch.py). Prints one Markdown report for BENCHMARKS.md: speed, bandwidth, and how far
// each peer agrees with tsfuse; --profile adds each kernel's time and bandwidth, --trace FILE a Chrome trace (with
// --megakernel both come from the step's timeline: each task's wait and run, a track per block).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { builtinConfigJson, LlamaConfig } from '../runtime/config.ts';
import type { DType } from '../ir/dtype.ts';
import { loadLlama } from '../runtime/llama.ts';
import type { KernelTime } from '../runtime/device.ts';
import { ChromeTrace, chromeTrace, profileTable, traceText, TraceTrack } from '../runtime/trace.ts';
import { timelineTable, timelineTrace } from '../runtime/megakernel-timeline.ts';
import { StepTimeline, stepTimelineTable, stepTimelineTrace } from '../runtime/step-timeline.ts';
import { openLlamaSession } from '../compiler/open-session.ts';
import type { Session } from '../runtime/session.ts';
import type { CudaProgram } from '../runtime/devices/cuda.ts';
import { kernelsAlike } from '../backends/megakernel-schedule.ts';
import { describeFileError, isFileSystemError } from '../compiler/cli-files.ts';
import { fnv1a } from '../compiler/fnv.ts';
import { checkpointMetadata, randomBf16Weights, writeBf16Checkpoint } from './random-checkpoint.ts';

/** A problem with the benchmark's setup (options, python, checkpoint folder): reported in one line. */
export class BenchError extends Error {
  override name = 'BenchError';
}

/** The implementations `--compare` runs beside tsfuse, each a Python script of the same shape and output. */
export const peers = {
  hf: { script: 'bench-hf.py', column: 'HF + torch.compile', short: 'HF' },
  torch: { script: 'bench-torch.py', column: 'lean torch.compile', short: 'torch' },
} as const;
export type Peer = keyof typeof peers;

/** `--compare hf,torch` as a list of peers; anything else is a BenchError naming what is known. */
export function parseCompare(value: string | undefined): Peer[] {
  if (value === undefined) return [];
  const names = value.split(',').map((n) => n.trim());
  const unknown = names.filter((n) => !Object.hasOwn(peers, n));
  if (unknown.length) {
    throw new BenchError(`--compare ${value}: unknown peer ${unknown.map((n) => `'${n}'`).join(', ')} (known: ${Object.keys(peers).join(', ')}; several as hf,torch)`);
  }
  if (new Set(names).size !== names.length) throw new BenchError(`--compare ${value}: a peer named twice`);
  return names as Peer[];
}

export interface CudaBenchOptions {
  /** The built-in config's name. */
  readonly config: string;
  readonly promptLength: number;
  readonly newTokens: number;
  /** Timed runs per measurement; the best counts, on both sides. */
  readonly runs: number;
  /** Peers to run after tsfuse, in this order. */
  readonly compare?: readonly Peer[];
  readonly checkpointDir?: string;
  readonly seed: number;
  readonly python: string;
  /** Seconds each peer's script may take. */
  readonly hfTimeoutS: number;
  readonly profile: boolean;
  /** tsfuse's KV-cache positions (default: prompt + new tokens, as the peers' static caches). */
  readonly cacheLength?: number;
  /** What tsfuse's KV cache stores (default: compiler/open-session.ts kvCacheDType's choice). */
  readonly kvDType?: DType;
  /** Where a Chrome trace of one decode step goes (checkTraceFile first). */
  readonly trace?: string;
  /** The command line as typed, for the report. */
  readonly command: string;
  /** Run the decode step as one persistent kernel. */
  readonly megakernel?: boolean;
  /** Weight bytes each megakernel task prefetches at most (default the scheduler's). */
  readonly megakernelPrefetch?: number;
  /** Blocks each multiprocessor runs (default the megakernel's). */
  readonly megakernelBlocks?: number;
  /** --megakernel-stream: the megakernel streams its rows' weights through shared memory. */
  readonly megakernelStream?: boolean;
  /** --megakernel-without-waits: kernels (indices in the decode graph) whose tasks a timing runs without waiting. */
  readonly megakernelWithoutWaits?: readonly number[];
  /** Print a decode step and the prompt as they ran, from the kernels' stamps (the device opened with stamps). */
  readonly timeline?: boolean;
}

/** What the tsfuse side measured. Times in ms; "events" are CUDA events on the session's stream. */
export interface TsfuseResult {
  readonly device: string;
  readonly setupMs: number;
  readonly modulesCompiled: number;
  readonly decodeEventMs: number;
  readonly decodeWallMs: number;
  readonly replayMs: number;
  /** --megakernel: a decode step with none of the megakernel's tasks waiting for their inputs (timing only). */
  readonly withoutWaitsMs?: number;
  /** --megakernel-without-waits: a decode step with those kernels' tasks (and those alike) not waiting (timing only). */
  readonly withoutWaitsOf?: { readonly kernels: readonly number[]; readonly alike: readonly number[]; readonly ms: number };
  readonly prefillEventMs: number;
  readonly prefillWallMs: number;
  readonly kernelsPerToken: number;
  readonly copyBandwidth: number;
  readonly weightBytes: number;
  readonly tokens: readonly number[];
  readonly logits: Float32Array;
  readonly deterministic: boolean;
  readonly cacheLength: number;
  readonly kvDType: string;
}

/** What a peer's script (examples/bench-hf.py, bench-torch.py) wrote: its JSON, with the logits files read in. */
export interface PeerResult {
  readonly versions: { torch: string; transformers?: string; gpu: string; cuda: string | null };
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

export interface PeerRun {
  readonly peer: Peer;
  readonly result: PeerResult;
}

const log = (msg: string) => console.error(`bench: ${msg}`);

export async function benchCuda(cfg: LlamaConfig, o: CudaBenchOptions): Promise<number> {
  if (o.newTokens < 2) throw new BenchError('--new-tokens must be at least 2');
  const compare = o.compare ?? [];
  if (o.trace !== undefined) checkTraceFile(o.trace);
  // Fail before writing gigabytes: the driver opens, and each peer's Python imports and finds a GPU.
  const { CudaDriver } = await import('../runtime/cuda/driver.ts');
  CudaDriver.open().destroy();
  for (const peer of compare) {
    const v = await runPython(o, peer, ['--check'], true);
    log(`${peers[peer].column} side: ${v.trim()}`);
  }

  const dir = prepareCheckpoint(cfg, o);
  const prompt = Array.from({ length: o.promptLength }, (_, i) => (i * 7919 + 13) % cfg.vocabSize);
  const ts = await runTsfuse(dir, prompt, o);
  const runs: PeerRun[] = [];
  const failures: string[] = [];
  for (const peer of compare) {
    try {
      runs.push({ peer, result: await runPeer(peer, dir, prompt, o) });
    } catch (e) {
      if (!(e instanceof BenchError)) throw e;
      failures.push(`the ${peers[peer].column} side failed: ${e.message}`);
    }
  }
  console.log(report(ts, runs, o, dir));
  for (const f of failures) log(f);
  return failures.length ? 1 : 0;
}

/** Refuses a --trace path that cannot be written (a folder, a missing folder, no permission) before anything runs. */
export function checkTraceFile(file: string): void {
  const fail = (why: string) => new BenchError(`--trace ${file}: cannot write the trace: ${why}`);
  try {
    const st = fs.statSync(file, { throwIfNoEntry: false });
    if (st?.isDirectory()) throw fail(`${file} is a folder, expected a file`);
    const dir = path.dirname(path.resolve(file));
    if (!fs.statSync(dir).isDirectory()) throw fail(`${dir} is a file, expected a folder`);
    fs.accessSync(st ? file : dir, fs.constants.W_OK);
  } catch (e) {
    if (isFileSystemError(e)) throw fail(describeFileError(e, file));
    throw e;
  }
}

/** Writes a Chrome / Perfetto trace of one profiled step. */
export function writeTrace(file: string, track: TraceTrack, about: Record<string, string>): void {
  writeTraceFile(file, chromeTrace([track], about), `a trace of ${track.kernels.length} kernels`);
}

/** Writes the Chrome / Perfetto trace of a stamped step (--timeline). */
function writeStampedTrace(file: string, trace: ChromeTrace, t: StepTimeline): void {
  const blocks = t.kernels.reduce((n, k) => n + k.blocks.length, 0);
  writeTraceFile(file, trace, `the stamped decode step: ${t.kernels.length} kernels on the stream, ${blocks} blocks by multiprocessor`);
}

/** Writes the Chrome / Perfetto trace of a megakernel step's timeline. */
function writeTimelineTrace(file: string, trace: ChromeTrace, tasks: number): void {
  writeTraceFile(file, trace, `a timeline of ${tasks} megakernel tasks, a track per block, by multiprocessor`);
}

/** Writes a trace, saying what it holds; a file that cannot be written is the option's error. */
function writeTraceFile(file: string, trace: ChromeTrace, what: string): void {
  try {
    fs.writeFileSync(file, traceText(trace));
  } catch (e) {
    if (isFileSystemError(e)) throw new BenchError(`--trace ${file}: cannot write the trace: ${describeFileError(e, file)}`);
    throw e;
  }
  log(`wrote ${what} to ${file} (open it in https://ui.perfetto.dev or chrome://tracing)`);
}

/** What a trace says about itself: the command and how its kernels were timed. */
export function traceAbout(command: string, how: string): Record<string, string> {
  return { command, timing: how, date: new Date().toISOString() };
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
  const cacheLength = o.cacheLength ?? prompt.length + N;
  if (cacheLength < prompt.length + N) throw new BenchError(`--cache-length ${cacheLength}: the prompt and the new tokens take ${prompt.length + N} positions`);
  // With --megakernel, --profile and --trace read the step's timeline (each task's times), which the kernel then
  // records every step: its timings include that.
  const timeline = !!o.megakernel && (o.profile || o.trace !== undefined);
  const megakernel = o.megakernel ? { timeline, prefetchBytes: o.megakernelPrefetch, blocksPerProcessor: o.megakernelBlocks, streamWeights: o.megakernelStream } : undefined;
  const session = await openLlamaSession(model, { backend: 'cuda', cacheLength, kvDType: o.kvDType, megakernel, stamps: o.timeline });
  const program = session.program as InstanceType<typeof CudaProgram>;
  try {
    const setupMs = performance.now() - t;
    const modulesCompiled = [...program.images.values()].filter((i) => !i.cached).length;
    log(`tsfuse ready in ${(setupMs / 1e3).toFixed(1)} s on ${session.device.description} (${modulesCompiled} NVRTC units compiled, the rest cached)`);
    const alike = o.megakernelWithoutWaits ? megakernelKernelsAlike(program, o.megakernelWithoutWaits) : undefined;
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
    const steps = timeline ? await program.megakernelTimeline('decode') : undefined;
    const logits = (await session.logits(prompt)).data as Float32Array;
    const copyBandwidth = program.device.copyBandwidth();
    const stamped = o.timeline ? await printStepTimelines(session, prompt, copyBandwidth) : undefined;
    if (stamped && o.trace !== undefined) {
      const how = 'the replayed decode step, each kernel from its last block\'s return from the wait (or its predecessor\'s end) to its last block\'s end, from the blocks\' stamps (%globaltimer)';
      writeStampedTrace(o.trace, stepTimelineTrace(stamped, session.device.description, copyBandwidth, traceAbout(o.command, how)), stamped);
    } else if (steps) {
      const how = 'the last replayed decode step of the megakernel, each task\'s times on its block (%globaltimer), recorded every step';
      console.error(`${how}:`);
      for (const line of timelineTable(steps, copyBandwidth)) console.error(`  ${line}`);
      if (o.trace !== undefined) writeTimelineTrace(o.trace, timelineTrace(steps, session.device.description, traceAbout(o.command, how)), steps.tasks.length);
    } else if (o.profile || o.trace !== undefined) {
      const kernels = await session.profileDecode(prompt.length);
      const how = 'the decode step\'s kernels launched one by one, each between two CUDA events (a replayed step overlaps their edges)';
      if (o.profile) {
        console.error(`${how}; copy bandwidth ${(copyBandwidth / 1e12).toFixed(2)} TB/s:`);
        for (const line of profileTable(kernels, copyBandwidth)) console.error(`  ${line}`);
        printPrefillProfile(await session.profilePrefill(prompt));
      }
      if (o.trace !== undefined) {
        writeTrace(o.trace, { device: session.device.description, queue: 'cuda stream', kernels, copyBandwidth }, traceAbout(o.command, how));
      }
    }
    // Last, since it leaves the cache cleared: the megakernel's step with none of its tasks waiting, as many steps
    // as fit beside the position a task may read one ahead.
    const floorSteps = Math.min(N - 1, cacheLength - prompt.length - 2);
    const withoutWaits = o.megakernel && floorSteps > 0 ? (await session.timeDecodeWithoutWaits(floorSteps, { warmup: 1, startPos: prompt.length })).msPerToken : undefined;
    const withoutWaitsOf = alike && floorSteps > 0
      ? { kernels: o.megakernelWithoutWaits!, alike, ms: (await session.timeDecodeWithoutWaits(floorSteps, { warmup: 1, startPos: prompt.length, kernels: alike })).msPerToken }
      : undefined;
    return {
      device: session.device.description, setupMs, modulesCompiled, withoutWaitsMs: withoutWaits, ...(withoutWaitsOf ? { withoutWaitsOf } : {}),
      decodeEventMs: best.decodeEvent, decodeWallMs: (best.wallN - best.wall1) / (N - 1), replayMs: replay.msPerToken,
      prefillEventMs: best.prefillEvent, prefillWallMs: best.wall1, kernelsPerToken: session.decodeKernels(),
      copyBandwidth, weightBytes: model.weights.tensors.reduce((s, w) => s + w.byteLength, 0),
      tokens, logits, deterministic, cacheLength,
      kvDType: String(session.program.graph('decode').states.find((v) => v.name?.startsWith('cache.k.'))?.type.dtype ?? '?'),
    };
  } finally {
    session.close();
  }
}

/** The decode step's and the prompt's timelines from the stamps (on stderr); the decode step's, for a trace. */
async function printStepTimelines(session: Session, prompt: readonly number[], copyBandwidth: number): Promise<StepTimeline> {
  const decode = await session.decodeTimeline(prompt.length);
  console.error(`the decode step at position ${prompt.length}, replayed, as its kernels ran (µs from its first block's start; stamps add a barrier and an atomic a block):`);
  for (const line of stepTimelineTable(decode, copyBandwidth)) console.error(`  ${line}`);
  const promptSteps = await session.promptTimeline(prompt);
  console.error(`the ${prompt.length}-token prompt, its last step replayed, as its kernels ran:`);
  for (const line of stepTimelineTable(promptSteps, copyBandwidth)) console.error(`  ${line}`);
  return decode;
}

/** The prefill's kernels by kind (time summed), and the slowest ones (on stderr). */
export function printPrefillProfile(kernels: readonly KernelTime[]): void {
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
  // Every layer's GEMMs alike (the same FLOPs and bytes): one row each, averaged over the layers.
  const byShape = new Map<string, KernelTime[]>();
  for (const k of gemms) byShape.set(`${k.flops}:${k.bytes}`, [...(byShape.get(`${k.flops}:${k.bytes}`) ?? []), k]);
  console.error('GEMMs by shape (mean over the kernels alike):');
  for (const ks of byShape.values()) {
    const mean = ks.reduce((t, k) => t + k.us, 0) / ks.length;
    const k = ks[0];
    console.error(`  ${String(ks.length).padStart(3)} × ${(mean / 1e3).toFixed(4)} ms ${(k.flops! / mean / 1e6).toFixed(0).padStart(4)} TFLOP/s ${(k.bytes / mean / 1e6).toFixed(2).padStart(5)} TB/s  ${k.last.slice(0, 60)}`);
  }
  const [flops, us] = [gemms.reduce((t, k) => t + k.flops!, 0), gemms.reduce((t, k) => t + k.us, 0)];
  if (gemms.length) console.error(`GEMM kernels: ${gemms.length}, ${(us / 1e3).toFixed(3)} ms, ${(flops / 1e12).toFixed(3)} TFLOP at ${(flops / us / 1e6).toFixed(0)} TFLOP/s`);
}

export async function runPeer(peer: Peer, dir: string, prompt: number[], o: CudaBenchOptions): Promise<PeerResult> {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), `tsfuse-bench-${peer}-`));
  try {
    const resultFile = path.join(out, 'result.json');
    await runPython(o, peer, ['--model', dir, '--prompt-ids', prompt.join(','), '--new-tokens', String(o.newTokens),
      '--runs', String(o.runs), '--out', resultFile], false);
    const r = JSON.parse(fs.readFileSync(resultFile, 'utf8')) as PeerResult & Record<string, { file: string } | undefined>;
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

/** Runs a peer's script; its stderr (progress, errors) shows as it comes. Resolves to its stdout. */
function runPython(o: CudaBenchOptions, peer: Peer, args: string[], quiet: boolean): Promise<string> {
  const script = fileURLToPath(new URL(`./${peers[peer].script}`, import.meta.url));
  const name = path.basename(script, '.py');
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
      const last = stderr.trim().split('\n').filter((l) => l.startsWith(`${name}:`)).pop() ?? stderr.trim().split('\n').pop();
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

/** The largest |a − b| over two equally long arrays. */
export function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new BenchError(`logits of ${a.length} and ${b.length} values cannot be compared`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

/** One row of the speed table: tsfuse's value, then each peer's and (where it means something) peer / tsfuse. */
interface SpeedRow {
  readonly label: string;
  readonly ts: string;
  readonly peer?: (r: PeerResult) => string;
  readonly ratio?: (r: PeerResult) => string;
}

export function report(ts: TsfuseResult, runs: readonly PeerRun[], o: CudaBenchOptions, dir: string): string {
  const N = o.newTokens;
  const P = o.promptLength;
  const vocab = ts.logits.length / P;
  const ms = (x: number) => x.toFixed(3);
  const tbs = (x: number) => `${(x / 1e12).toFixed(2)} TB/s`;
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
  const bw = (msPerToken: number) => ts.weightBytes / (msPerToken / 1e3);
  const speed: SpeedRow[] = [
    { label: 'decode ms per token, CUDA events', ts: ms(ts.decodeEventMs), peer: (r) => ms(r.decode_ms_per_token_event), ratio: (r) => ratio(r.decode_ms_per_token_event, ts.decodeEventMs) },
    { label: `decode ms per token, wall clock (T${N} − T1) / ${N - 1}`, ts: ms(ts.decodeWallMs), peer: (r) => ms(r.decode_ms_per_token_wall), ratio: (r) => ratio(r.decode_ms_per_token_wall, ts.decodeWallMs) },
    { label: 'decode tokens/s (events)', ts: (1e3 / ts.decodeEventMs).toFixed(0), peer: (r) => (1e3 / r.decode_ms_per_token_event).toFixed(0) },
    { label: `decode ms per token, ${N - 1} graph replays back to back`, ts: ms(ts.replayMs) },
    ...(ts.withoutWaitsMs === undefined ? [] : [{ label: 'the megakernel\'s step with no task waiting (timing only)', ts: ms(ts.withoutWaitsMs) }]),
    ...(ts.withoutWaitsOf === undefined ? [] : [{ label: withoutWaitsLabel(ts.withoutWaitsOf), ts: ms(ts.withoutWaitsOf.ms) }]),
    { label: 'kernels per token', ts: String(ts.kernelsPerToken) },
    { label: `weight bandwidth (${(ts.weightBytes / 1e9).toFixed(3)} GB per token, events)`, ts: tbs(bw(ts.decodeEventMs)), peer: (r) => tbs(bw(r.decode_ms_per_token_event)) },
    { label: `fraction of copy bandwidth (${tbs(ts.copyBandwidth)}, this run)`, ts: pct(bw(ts.decodeEventMs) / ts.copyBandwidth), peer: (r) => pct(bw(r.decode_ms_per_token_event) / ts.copyBandwidth) },
    { label: `prefill ${P} tokens + first token, ms (events)`, ts: ms(ts.prefillEventMs), peer: (r) => ms(r.prefill_event_ms), ratio: (r) => ratio(r.prefill_event_ms, ts.prefillEventMs) },
    { label: 'prefill + first token, ms (wall clock, generate 1 token)', ts: ms(ts.prefillWallMs), peer: (r) => ms(r.prefill_wall_ms), ratio: (r) => ratio(r.prefill_wall_ms, ts.prefillWallMs) },
    {
      label: 'setup', ts: `${(ts.setupMs / 1e3).toFixed(1)} s (${ts.modulesCompiled} NVRTC units compiled)`,
      peer: (r) => `load ${r.load_s.toFixed(1)} s, warm-up ${r.warmup_s.map((x) => x.toFixed(1)).join(' + ')} s (torch.compile)`,
    },
  ];
  const head = ['', 'tsfuse (CUDA)', ...runs.flatMap(({ peer }) => [peers[peer].column, `${peers[peer].short} / tsfuse`])];
  const rows = speed.map((row) => [row.label, row.ts, ...runs.flatMap(({ result: r }) => [row.peer?.(r) ?? '—', row.ratio?.(r) ?? ''])]);

  const lines = [
    `### ${o.config}, random bf16 weights, batch 1 — ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
    '',
    `- GPU: ${ts.device}${runs.length ? ` (torch: ${runs[0].result.versions.gpu})` : ''}`,
    `- command: \`${o.command}\``,
    `- ${P}-token prompt, ${N} new tokens, greedy; best of ${o.runs} runs after warm-up; weights ${dir}`,
    `- tsfuse: KV cache of ${ts.cacheLength} positions in ${ts.kvDType}`,
  ];
  for (const { peer, result: { versions: v } } of runs) {
    lines.push(peer === 'hf'
      ? `- Hugging Face: transformers ${v.transformers}, torch ${v.torch} (CUDA ${v.cuda}), `
        + '`LlamaForCausalLM` bf16, `generate(cache_implementation="static")` (decode compiled by torch.compile), in the same run'
      : `- lean torch: a Llama in a few dozen lines of PyTorch (examples/bench-torch.py), torch ${v.torch} (CUDA ${v.cuda}), bf16, `
        + 'static KV cache, decode step under `torch.compile(mode="reduce-overhead")` (CUDA graphs), prefill eager, in the same run');
  }
  lines.push('', table(head, rows));
  if (runs.length) {
    const against = (label: string, logits: Float32Array, tokens: readonly number[] | undefined) => [label,
      relativeDifference(ts.logits, logits).toExponential(2), maxAbsDifference(ts.logits, logits).toExponential(2),
      `${argmaxAgreement(ts.logits, logits, vocab)} / ${P}`, tokens ? `${leadingEqual(ts.tokens, tokens)} / ${N}` : '—'];
    const agree = runs.flatMap(({ peer, result: r }) => [
      against(`${peers[peer].short} bf16 (the timed model)`, r.logitsBf16, r.tokens),
      ...(r.logitsF32 ? [against(`${peers[peer].short} float32 (the same weights upcast)`, r.logitsF32, r.tokens_f32)] : []),
    ]);
    lines.push('', table(['tsfuse against', `prefill logits ‖tsfuse − it‖ / ‖it‖ (${P} × ${vocab})`, 'largest difference',
      'positions with the same argmax', 'leading generated tokens equal'], agree));
    lines.push('', [`tsfuse tokens: ${ts.tokens.slice(0, 8).join(' ')} …`, ...runs.flatMap(({ peer, result: r }) => [
      `${peers[peer].short} bf16: ${r.tokens.slice(0, 8).join(' ')} …`,
      ...(r.tokens_f32 ? [`${peers[peer].short} f32: ${r.tokens_f32.slice(0, 8).join(' ')} …`] : []),
    ])].join('; '));
  }
  lines.push('', `tsfuse's ${ts.tokens.length} generated tokens: fingerprint ${tokensFingerprint(ts.tokens)} (equal tokens give equal fingerprints: `
    + 'compare the megakernel\'s with the launched step\'s, or two builds)');
  if (!ts.deterministic) lines.push('', 'note: tsfuse generated different tokens in different runs');
  return lines.join('\n');
}

/** FNV-1a (32 bits) over the token ids' little-endian bytes: a short name for a sequence of generated tokens. */
export function tokensFingerprint(tokens: readonly number[]): string {
  return fnv1a(tokens.flatMap((t) => [0, 8, 16, 24].map((shift) => (t >>> shift) & 0xff)));
}

function table(head: string[], rows: string[][]): string {
  const all = [head, ...rows];
  const w = head.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  const line = (r: string[]) => `| ${r.map((x, c) => (c === 0 ? x.padEnd(w[c]) : x.padStart(w[c]))).join(' | ')} |`;
  return [line(head), `| ${w.map((n, c) => (c === 0 ? '-'.repeat(n) : `${'-'.repeat(n - 1)}:`)).join(' | ')} |`, ...rows.map(line)].join('\n');
}

/**
 * The kernels --megakernel-without-waits asks for (numbers in the decode step, as --profile's table has them) with
 * every kernel of the same code: checked before anything is timed, a number the step does not have refused by name.
 */
function megakernelKernelsAlike(program: CudaProgram, kernels: readonly number[]): number[] {
  const schedule = program.megakernelSchedule('decode');
  if (!schedule) throw new BenchError('--megakernel-without-waits: the decode step does not run as a megakernel');
  try {
    return kernelsAlike(schedule, kernels);
  } catch (e) {
    if (e instanceof RangeError) throw new BenchError(`--megakernel-without-waits: ${e.message} (--profile's table numbers them)`);
    throw e;
  }
}

/** The report's row for it: the kernels asked for, and how many more share their code. */
export function withoutWaitsLabel(w: NonNullable<TsfuseResult['withoutWaitsOf']>): string {
  const more = w.alike.length - new Set(w.kernels).size;
  return `the megakernel's step with kernel${w.kernels.length === 1 ? '' : 's'} ${w.kernels.join(', ')}${more > 0 ? ` and the ${more} alike` : ''} not waiting (timing only)`;
}
