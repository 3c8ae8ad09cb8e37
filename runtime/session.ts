// One model session for every device: logits of a prompt, generation, and the timings the benchmarks want,
// written once over a loaded program and the generation contract (compiler/generation.ts), by name:
//   graphs  prefill (tokens i32[S]) and decode (tokens i32[1]); optionally prompt (as prefill, with the last
//           position's logits alone), which generate runs instead of prefill;
//   inputs  tokens, pos — and temperature, top_p, seed when the program samples;
//   outputs logits f32[S, vocab], next i32[1];
//   state   history i32[capacity]: each chosen token at its position; next_pos i32[1]: where the next step runs.
// A step's chosen token and position are copied into the next step's inputs on the device, and the decode step is
// recorded once and replayed, so nothing in the loop waits for the host; the history is read back now and then,
// asynchronously, only to report tokens.

import { DType } from '../ir/dtype.ts';
import { Graph } from '../ir/graph.ts';
import { HostTensor, hostTensor } from '../ir/host-tensor.ts';
import { Device, KernelTime, Mark, namedOutputKey, Program, Recording, Sizes } from './device.ts';
import type { MegakernelDifference } from './megakernel-bisect.ts';
import type { StepTimeline } from './step-timeline.ts';

export interface Sampling {
  /** 0 (the default) is greedy. */
  readonly temperature?: number;
  /** Keep the most likely tokens holding this much of the probability mass (default 1: all). */
  readonly topP?: number;
  readonly seed?: number;
}

/** Prompt lengths a session keeps recordings of (Session.promptStep): each holds a CUDA graph of the prompt's kernels. */
export const PROMPT_RECORDINGS = 8;

export interface SessionOptions {
  /** Decode steps between asynchronous reads of the history (default: 1 on host devices, 16 on GPUs). */
  readonly readEvery?: number;
  /**
   * Prompt tokens one step takes at most (default: the whole capacity): a longer prompt runs as several steps,
   * each appending its keys and values to the cache. The program's buffers must hold S = this many.
   */
  readonly promptChunk?: number;
}

export interface GenerateOptions {
  /**
   * Tokens that end generation (a model's EOS ids): the first one chosen is the last token returned (and heard by
   * onToken), as Hugging Face's generate stops. The device may have run a few steps past it; they are dropped.
   */
  readonly stopTokens?: Iterable<number>;
}

/** What the last generate() measured on the device's queue. */
export interface Timings {
  readonly prefillMs: number;
  /** Decode steps after the prefill (the first new token comes from the prefill). */
  readonly decodeSteps: number;
  readonly decodeMsPerToken: number;
}

/**
 * Where a session's start went, in milliseconds, as a plain object (openLlamaSession fills it in, the first
 * generate() adds its first token). Reading weights overlaps opening the device, so the parts may sum to more
 * than `readyMs`.
 */
export interface StartupTimings {
  /** Tracing and compiling (a miss, or the cache off), or reading the compiled module from the compile cache (a hit). */
  compileMs: number;
  compileCache: 'hit' | 'miss' | 'off';
  /** Reading the weights from the checkpoint into host memory (host devices: their first reads). */
  readMs: number;
  /** Opening the device. */
  openMs: number;
  /** Loading the program on the device: weights uploaded, kernels compiled or read from their cache (NVRTC, shaders). */
  uploadMs: number;
  /** From the start of opening the session until it was ready. */
  readyMs: number;
  /** The first generate(): from its call to its first token on the host (the prompt's step). */
  firstTokenMs?: number;
  /** From the start of opening the session to the first generate()'s first token. */
  totalMs?: number;
  /** performance.now() when opening the session began. */
  readonly since: number;
}

/** Reads of the history a generation with stop tokens keeps in flight (each `readEvery` decode steps apart). */
const STOP_LOOKAHEAD = 4;

/** A program that breaks the contract: names what is missing. */
export class ContractError extends Error {}

/** A program whose kernels stamp their blocks (the cuda device opened with stamps). */
interface StampingProgram {
  clearStamps(): void;
  stepTimeline(sizes: Sizes): Promise<StepTimeline>;
}

export class Session {
  /** Whether the program samples (temperature, top_p and seed are inputs) or chooses greedily. */
  readonly samples: boolean;
  readonly vocab: number;
  /** Positions the state holds: a prompt plus new tokens, less one, must fit. */
  readonly capacity: number;
  private readonly decodeStep: Recording;
  /** The prompt's last step recorded by graph and length (promptStep), and the lengths seen once so far. */
  private readonly promptSteps = new Map<string, Recording>();
  private readonly promptLengthsSeen = new Set<string>();
  private readonly readEvery: number;
  /** The graph generate runs a prompt of several tokens with: prompt where the program has it, else prefill. */
  private readonly promptGraph: 'prompt' | 'prefill';
  private readonly promptChunk: number;
  private lastMarks?: { start: Mark; afterPrefill: Mark; end: Mark; decodeSteps: number };
  /** Where the start went (set by whoever opened the session); the first generate() adds its first token. */
  startup?: StartupTimings;

  constructor(readonly program: Program, opts: SessionOptions = {}) {
    const [prefill, decode] = [this.graph('prefill'), this.graph('decode')];
    const prompt = this.optionalGraph('prompt');
    this.promptGraph = prompt ? 'prompt' : 'prefill';
    for (const g of [prefill, decode, ...(prompt ? [prompt] : [])]) {
      for (const name of ['tokens', 'pos']) if (!g.inputs.some((v) => v.name === name)) throw new ContractError(`graph @${g.name} has no input %${name}`);
      for (const name of ['logits', 'next']) namedOutputKey(g, name);
      for (const name of ['history', 'next_pos']) if (!g.states.some((v) => v.name === name)) throw new ContractError(`graph @${g.name} has no state %${name}`);
    }
    this.samples = prefill.inputs.some((v) => v.name === 'temperature');
    const logits = prefill.output('logits')!.type.shape;
    this.vocab = logits[logits.length - 1] as number;
    const history = prefill.states.find((v) => v.name === 'history')!.type.shape[0] as number;
    this.capacity = history - 1;
    const host = program.device.kind === 'cpu' || program.device.kind === 'reference';
    this.readEvery = opts.readEvery ?? (host ? 1 : 16);
    this.promptChunk = opts.promptChunk ?? this.capacity;
    if (!Number.isInteger(this.promptChunk) || this.promptChunk < 1) throw new RangeError(`prompt chunk must be a whole number ≥ 1, got ${opts.promptChunk}`);
    // The decode step, recorded once: every buffer it touches stays where it is for the session's life.
    this.decodeStep = program.record(() => this.step('decode', {}));
  }

  get device(): Device {
    return this.program.device;
  }

  /** Logits at every position of one forward pass over `ids` with an empty cache. */
  async logits(ids: readonly number[]): Promise<HostTensor> {
    this.checkTokens(ids);
    this.checkFits(ids.length);
    this.reset();
    const rows = new Float32Array(ids.length * this.vocab);
    for (let start = 0; start < ids.length; start += this.promptChunk) {
      const chunk = ids.slice(start, start + this.promptChunk);
      const graph = this.writePrompt(chunk, {}, start);
      this.program.run(graph, this.sizes(graph, chunk.length));
      const logits = await this.program.read(namedOutputKey(this.graph(graph), 'logits'), DType.F32, [chunk.length, this.vocab]);
      rows.set(logits.data as Float32Array, start * this.vocab);
    }
    return hostTensor(DType.F32, [ids.length, this.vocab], rows);
  }

  /**
   * Up to `maxNewTokens` tokens after the prompt, fewer when one of `opts.stopTokens` comes first. The prefill and
   * one replay of the decode step per token are queued ahead of the reads of the history (every few steps), which
   * `onToken` hears as they land; with stop tokens, at most STOP_LOOKAHEAD reads' worth of steps are queued past
   * the last read the host has seen, so the device stays busy and stops soon after a stop token.
   */
  async generate(prompt: readonly number[], maxNewTokens: number, sampling: Sampling = {}, onToken?: (t: number) => void,
    opts: GenerateOptions = {}): Promise<number[]> {
    this.checkTokens(prompt);
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new RangeError(`max new tokens must be a whole number ≥ 0, got ${maxNewTokens}`);
    if (maxNewTokens === 0) return [];
    this.checkFits(prompt.length + maxNewTokens - 1);
    const called = performance.now();
    this.reset();
    const start = this.program.mark();
    this.runPrompt(prompt, sampling);
    const afterPrefill = this.program.mark();
    const stop = new Set(opts.stopTokens ?? []);
    const tokens: number[] = [];
    let stopped = false;
    const deliver = (h: HostTensor, upTo: number) => {
      for (let i = tokens.length; i < upTo && !stopped; i++) {
        const t = h.data[prompt.length + i];
        if (this.startup && this.startup.firstTokenMs === undefined) {
          const now = performance.now();
          Object.assign(this.startup, { firstTokenMs: now - called, totalMs: now - this.startup.since });
        }
        tokens.push(t);
        onToken?.(t);
        stopped = stop.has(t);
      }
    };
    // Host devices answer at once: their tokens are heard as they come. GPU reads land later, in order.
    const reads: { upTo: number; history: Promise<HostTensor> }[] = [];
    const readHistory = (upTo: number) => {
      const h = this.program.read('state:history', DType.I32, [this.capacity + 1]);
      if (h instanceof Promise) reads.push({ upTo, history: h });
      else deliver(h, upTo);
    };
    readHistory(1);
    let steps = 1;
    for (; steps < maxNewTokens && !stopped; steps++) {
      this.program.replay(this.decodeStep);
      if ((steps + 1) % this.readEvery === 0 || steps + 1 === maxNewTokens) readHistory(steps + 1);
      // With stop tokens, hear the oldest read before queueing further ahead of it.
      while (stop.size > 0 && reads.length > STOP_LOOKAHEAD && !stopped) {
        const r = reads.shift()!;
        deliver(await r.history, r.upTo);
      }
    }
    const end = this.program.mark();
    for (const r of reads) deliver(await r.history, r.upTo);
    this.lastMarks = { start, afterPrefill, end, decodeSteps: steps - 1 };
    return tokens;
  }

  /** What the last generate() took on the device's queue (read only when asked: reading marks takes round trips). */
  async lastTimings(): Promise<Timings | undefined> {
    const m = this.lastMarks;
    if (!m) return undefined;
    return {
      prefillMs: await this.program.elapsedMs(m.start, m.afterPrefill),
      decodeSteps: m.decodeSteps,
      decodeMsPerToken: m.decodeSteps > 0 ? (await this.program.elapsedMs(m.afterPrefill, m.end)) / m.decodeSteps : 0,
    };
  }

  /**
   * Milliseconds per decode step over `steps` back-to-back replays (after `warmup` more), from position
   * `startPos` with an otherwise empty cache: what the device takes per token, with no host work in it.
   */
  async timeDecode(steps: number, opts: { warmup?: number; startPos?: number } = {}): Promise<{ msPerToken: number; steps: number; kernelsPerStep: number }> {
    const warmup = this.prepareTimedDecode(steps, opts, 0);
    for (let i = 0; i < warmup; i++) this.program.replay(this.decodeStep);
    const start = this.program.mark();
    for (let i = 0; i < steps; i++) this.program.replay(this.decodeStep);
    const end = this.program.mark();
    return { msPerToken: (await this.program.elapsedMs(start, end)) / steps, steps, kernelsPerStep: this.decodeKernels() };
  }

  /**
   * The megakernel's decode step timed with none of its tasks waiting for their inputs (CudaProgram.timeWithoutWaits),
   * or only those of `kernels` (indices in the decode graph), from position `startPos`: the step as if that
   * synchronisation cost nothing, beside timeDecode's the real one. The cache is cleared after (the steps write
   * garbage into it). CUDA programs loaded with the megakernel only.
   */
  async timeDecodeWithoutWaits(steps: number, opts: { warmup?: number; startPos?: number; kernels?: readonly number[] } = {}): Promise<{ msPerToken: number; steps: number }> {
    const p = this.program as Program & { timeWithoutWaits?: (graph: string, steps: number, warmup: number, kernels?: readonly number[]) => Promise<number> };
    if (!p.timeWithoutWaits) throw new ContractError(`timing the decode step without waits needs the cuda device opened with the megakernel; this is ${this.device.description}`);
    // A task that does not wait may read the position its step's last task already advanced: one more.
    const warmup = this.prepareTimedDecode(steps, opts, 1);
    try {
      return { msPerToken: await p.timeWithoutWaits('decode', steps, warmup, opts.kernels), steps };
    } finally {
      this.reset();
    }
  }

  /**
   * Before timing `steps` decode steps after a warm-up (3 by default) from position startPos (0): refused where they
   * and `beyond` more positions would run past the cache; the cache cleared, the position written. The warm-up's steps.
   */
  private prepareTimedDecode(steps: number, opts: { warmup?: number; startPos?: number }, beyond: number): number {
    const warmup = opts.warmup ?? 3;
    const startPos = opts.startPos ?? 0;
    this.checkFits(startPos + warmup + steps + beyond);
    this.reset();
    this.writePrompt([0], {}, startPos);
    return warmup;
  }

  /** Each decode kernel's time, launched one by one at position `startPos`, for finding the slow ones. */
  async profileDecode(startPos = 0): Promise<KernelTime[]> {
    this.checkFits(startPos + 1);
    this.writePrompt([0], {}, startPos);
    return this.program.profile('decode', {});
  }

  /**
   * Each kernel's time of the steps generate runs `prompt` with (from an empty cache), launched one by one: one
   * step per chunk of at most promptChunk tokens, their kernels in order (a 2,048-token prompt in chunks of 1,024
   * gives each kernel twice).
   */
  async profilePrefill(prompt: readonly number[]): Promise<KernelTime[]> {
    this.checkTokens(prompt);
    this.checkFits(prompt.length);
    this.reset();
    const times: KernelTime[] = [];
    for (let start = 0; start < prompt.length; start += this.promptChunk) {
      const chunk = prompt.slice(start, start + this.promptChunk);
      const graph = this.writePrompt(chunk, {}, start, this.promptGraph);
      times.push(...(await this.program.profile(graph, this.sizes(graph, chunk.length))));
    }
    return times;
  }

  /**
   * The decode step at position `startPos` as it runs inside generate (the recording replayed, after one replay to
   * warm it), each kernel's blocks from their stamps (runtime/step-timeline.ts). CUDA programs opened with stamps.
   */
  async decodeTimeline(startPos = 0): Promise<StepTimeline> {
    const p = this.stampingProgram();
    this.checkFits(startPos + 2);
    this.reset();
    this.writePrompt([0], {}, startPos);
    this.program.replay(this.decodeStep);
    p.clearStamps();
    this.program.replay(this.decodeStep);
    return p.stepTimeline({});
  }

  /**
   * The last step of `prompt` (its last chunk of at most promptChunk tokens) as generate runs it the second time
   * its length comes (replayed from a recording), each kernel's blocks from their stamps. CUDA programs opened with
   * stamps.
   */
  async promptTimeline(prompt: readonly number[]): Promise<StepTimeline> {
    const p = this.stampingProgram();
    this.checkTokens(prompt);
    this.checkFits(prompt.length);
    for (let run = 0; run < 3; run++) {
      this.reset();
      this.runPrompt(prompt, {}, () => {
        if (run === 2) p.clearStamps();
      });
    }
    const last = Math.floor((prompt.length - 1) / this.promptChunk) * this.promptChunk;
    return p.stepTimeline(this.sizes(this.promptGraph, prompt.length - last));
  }

  private stampingProgram(): StampingProgram {
    const p = this.program as Program & Partial<StampingProgram>;
    if (!p.clearStamps || !p.stepTimeline) throw new ContractError(`a step's timeline needs the cuda device opened with stamps; this is ${this.device.description}`);
    return p as StampingProgram;
  }

  /**
   * Where the megakernel's decode step first differs from the decode graph's kernels run one by one
   * (runtime/megakernel-bisect.ts): the prompt but its last token run as generate runs it, then the step that takes
   * the last token, both ways from the same state. Undefined where every kernel's writes agree. CUDA programs
   * loaded with the megakernel only; the cache is left as the prompt left it.
   */
  async bisectMegakernel(prompt: readonly number[]): Promise<MegakernelDifference | undefined> {
    const p = this.program as Program & { bisectMegakernel?: (graph: string, sizes: Sizes) => MegakernelDifference | undefined };
    if (!p.bisectMegakernel) throw new ContractError(`bisecting a megakernel needs the cuda device opened with the megakernel; this is ${this.device.description}`);
    if (prompt.length === 0) throw new ContractError('bisecting a megakernel needs a prompt of at least one token');
    this.checkTokens(prompt);
    this.checkFits(prompt.length);
    this.reset();
    if (prompt.length > 1) this.runPrompt(prompt.slice(0, -1), {});
    const graph = this.writePrompt(prompt.slice(-1), {}, prompt.length - 1);
    return p.bisectMegakernel(graph, this.sizes(graph, 1));
  }

  decodeKernels(): number {
    return this.program.kernelCount('decode');
  }

  close(): void {
    this.program.destroy();
    this.program.device.destroy();
  }

  // ---- internals ----

  private optionalGraph(name: string): Graph | undefined {
    try {
      return this.program.graph(name);
    } catch {
      return undefined;
    }
  }

  private graph(name: string): Graph {
    try {
      return this.program.graph(name);
    } catch {
      throw new ContractError(`the program has no graph @${name}: a session runs @prefill and @decode`);
    }
  }

  /** The graph's symbolic sizes for a prompt of `length` tokens (S, from tokens: i32[S]). */
  private sizes(graph: string, length: number): Record<string, number> {
    const d = this.graph(graph).inputs.find((v) => v.name === 'tokens')!.type.shape[0];
    return typeof d === 'string' ? { [d]: length } : {};
  }

  /**
   * Queues the prompt in steps of at most promptChunk tokens, each at its position (appending to the cache); the
   * last one's chosen token and next position become the first decode step's inputs. `beforeLastStep` is called
   * as the last step is about to be queued.
   */
  private runPrompt(prompt: readonly number[], sampling: Sampling, beforeLastStep?: () => void): void {
    for (let start = 0; start < prompt.length; start += this.promptChunk) {
      const chunk = prompt.slice(start, start + this.promptChunk);
      const graph = this.writePrompt(chunk, sampling, start, this.promptGraph);
      if (start + chunk.length < prompt.length) {
        this.program.run(graph, this.sizes(graph, chunk.length));
      } else {
        beforeLastStep?.();
        this.promptStep(graph, chunk.length);
      }
    }
  }

  /**
   * The prompt's last step: recorded the second time its length comes (a CUDA graph on CUDA; prepared commands on
   * WebGPU) and replayed from then on. Launching a 1B model's 135 prompt kernels one by one from the host had cost
   * the H200 0.1–0.2 ms of a 16- to 512-token prompt (BENCHMARKS.md, tenth session). A length seen once runs as it
   * is, so that a prompt of a new length never waits for a recording; at most PROMPT_RECORDINGS lengths are kept.
   */
  private promptStep(graph: string, length: number): void {
    const key = `${graph}:${length}`;
    let recorded = this.promptSteps.get(key);
    if (!recorded && this.promptLengthsSeen.has(key) && this.promptSteps.size < PROMPT_RECORDINGS) {
      recorded = this.program.record(() => this.step(graph, this.sizes(graph, length)));
      this.promptSteps.set(key, recorded);
    }
    this.promptLengthsSeen.add(key);
    if (recorded) this.program.replay(recorded);
    else this.step(graph, this.sizes(graph, length));
  }

  /** Prompt lengths whose last step replays a recording (promptStep). */
  get recordedPromptLengths(): number {
    return this.promptSteps.size;
  }

  /** Runs a step and feeds its chosen token and next position back as the next step's inputs. */
  private step(graph: string, sizes: Readonly<Record<string, number>>): void {
    const g = this.graph(graph);
    this.program.run(graph, sizes);
    this.program.copy(namedOutputKey(g, 'next'), 'input:tokens', DType.I32, 1);
    this.program.copy('state:next_pos', 'input:pos', DType.I32, 1);
  }

  /** Writes the prompt, its position and the sampling inputs; returns the graph that runs it. */
  private writePrompt(ids: readonly number[], sampling: Sampling, pos = 0, many: 'prompt' | 'prefill' = 'prefill'): string {
    const p = this.program;
    p.write('input:tokens', hostTensor(DType.I32, [ids.length], ids));
    p.write('input:pos', hostTensor(DType.I32, [], [pos]));
    const temperature = sampling.temperature ?? 0;
    if (this.samples) {
      p.write('input:temperature', hostTensor(DType.F32, [], [temperature]));
      p.write('input:top_p', hostTensor(DType.F32, [], [sampling.topP ?? 1]));
      p.write('input:seed', hostTensor(DType.I32, [], [sampling.seed ?? 0]));
    } else if (temperature > 0) {
      throw new ContractError('this program chooses tokens greedily: open the session with sampling to use a temperature');
    }
    return ids.length === 1 ? 'decode' : many;
  }

  private reset(): void {
    const states = new Set<string>();
    for (const name of ['prefill', 'decode']) for (const v of this.graph(name).states) states.add(`state:${v.name}`);
    for (const key of states) this.program.zero(key);
  }

  private checkTokens(tokens: readonly number[]): void {
    if (tokens.length === 0) throw new RangeError('no input tokens');
    tokens.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= this.vocab) {
        throw new RangeError(`token id ${t} at position ${i} is outside the vocabulary (0..${this.vocab - 1})`);
      }
    });
  }

  private checkFits(lastPos: number): void {
    if (lastPos > this.capacity) throw new RangeError(`positions up to ${lastPos} do not fit a KV cache of ${this.capacity}`);
  }
}
