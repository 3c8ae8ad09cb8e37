// Llama on CUDA: prefill and decode graphs compiled to CUDA C (NVRTC, cached on disk), weights and KV cache on
// the device, and a decode loop that never waits for the GPU: the decode step (the graph's kernels and the
// next-token kernel, which feeds the chosen token back and advances the position on the device) is captured once
// as a CUDA graph and replayed per token; the host reads the token history back asynchronously into pinned
// memory, only to report it.

import { compileModule, CompiledModule } from '../../compiler/compile-module.ts';
import { cudaPrelude } from '../../backends/cuda/render-cuda.ts';
import { NEXT_TOKEN_KERNEL, NEXT_TOKEN_PARAMS_BYTES, nextTokenCuda, nextTokenParamsBytes } from '../../backends/cuda/next-token.ts';
import { CUDA_BLOCK } from '../../backends/cuda/render-cuda.ts';
import { traceLlama } from '../../examples/llama.ts';
import { DType } from '../../ir/dtype.ts';
import { HostTensor } from '../../ir/host-tensor.ts';
import { checkTokens, LoadedLlama } from '../llama.ts';
import { CudaDriver, DevicePtr, Handle, KernelArgs } from './driver.ts';
import { CudaProgram, KernelProfile } from './program.ts';

export interface Sampling {
  /** 0 (the default) is greedy. */
  readonly temperature?: number;
  readonly topP?: number;
  readonly seed?: number;
}

export interface CudaOptions {
  /** Where compiled modules are cached (default .cache/tsfuse/cuda in the project). */
  readonly cacheDir?: string;
  /** Decode steps between asynchronous read-backs of the token history (default 16). */
  readonly readbackEvery?: number;
  /** libcuda names or paths to try (tests point this at a missing file). */
  readonly libraries?: readonly string[];
}

/** What the last generate() measured with CUDA events on the stream. */
export interface CudaTimings {
  readonly prefillMs: number;
  /** Decode steps after the prefill (the first new token comes from the prefill). */
  readonly decodeSteps: number;
  readonly decodeMsPerToken: number;
}

export class CudaLlama {
  lastTimings?: CudaTimings;
  private readonly history: DevicePtr;
  private readonly hostHistory: { ptr: Handle; view: ArrayBuffer };
  private readonly params: { prefill: DevicePtr; decode: DevicePtr };
  private readonly nextToken: Handle;
  private readonly nextArgs = new Map<string, KernelArgs>();
  private readonly decodeStep: Handle;
  private destroyed = false;

  private constructor(
    readonly cuda: CudaDriver,
    readonly model: LoadedLlama,
    readonly compiled: CompiledModule,
    readonly program: CudaProgram,
    readonly cacheLength: number,
    readonly opts: CudaOptions,
  ) {
    // history[0] counts the tokens chosen so far; they follow it.
    const historyBytes = 4 * (cacheLength + 2);
    this.history = cuda.alloc(historyBytes);
    this.hostHistory = cuda.allocHost(historyBytes);
    this.params = { prefill: cuda.alloc(NEXT_TOKEN_PARAMS_BYTES), decode: cuda.alloc(NEXT_TOKEN_PARAMS_BYTES) };
    this.nextToken = program.loadExtra(`${cudaPrelude}\n${nextTokenCuda}`, [NEXT_TOKEN_KERNEL], 'next-token').get(NEXT_TOKEN_KERNEL)!;
    // The decode step, recorded once: every buffer it touches stays where it is for the session's life.
    this.decodeStep = cuda.capture(() => {
      program.enqueue('decode');
      this.enqueueNextToken('decode', 'decode');
    });
  }

  /** Opens the device, compiles (or reads from the cache) every kernel, and uploads the weights. */
  static async create(model: LoadedLlama, cacheLength: number, opts: CudaOptions = {}): Promise<CudaLlama> {
    const cuda = CudaDriver.open(opts.libraries);
    try {
      const module = traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength });
      const compiled = compileModule(module);
      const program = new CudaProgram(cuda, compiled, (n) => model.weights.tensor(n), { maxSizes: { S: cacheLength }, cacheDir: opts.cacheDir });
      return new CudaLlama(cuda, model, compiled, program, cacheLength, opts);
    } catch (e) {
      cuda.destroy();
      throw e;
    }
  }

  /** Logits at every position of one forward pass over `ids` with an empty cache. */
  async logits(ids: readonly number[]): Promise<HostTensor> {
    checkTokens(this.model.cfg, ids);
    this.checkFits(ids.length);
    this.program.resetState();
    this.writeInputs(ids, 0);
    const graph = ids.length === 1 ? 'decode' : 'prefill';
    this.program.enqueue(graph, { S: ids.length });
    const vocab = this.model.cfg.vocabSize;
    const data = new Float32Array(ids.length * vocab);
    this.cuda.download(data, this.program.buffer(graph, { kind: 'output', index: 0 }));
    return { dtype: DType.F32, shape: [ids.length, vocab], data };
  }

  /**
   * Generates `maxNewTokens` after the prompt. Everything is queued at once (the prefill, then one graph replay
   * per token), with an asynchronous copy of the history every few steps; `onToken` hears tokens as those copies
   * land, while the GPU runs on.
   */
  async generate(prompt: readonly number[], maxNewTokens: number, sampling: Sampling = {}, onToken?: (t: number) => void): Promise<number[]> {
    checkTokens(this.model.cfg, prompt);
    this.checkFits(prompt.length + maxNewTokens - 1);
    this.program.resetState();
    this.startHistory(sampling, prompt.length);
    this.writeInputs(prompt, 0);
    const first = prompt.length === 1 ? 'decode' : 'prefill';
    const events = [this.cuda.event(), this.cuda.event(), this.cuda.event()];
    const pending: { event: Handle; upTo: number }[] = [];
    const readBack = (upTo: number) => {
      this.cuda.downloadAsync(this.hostHistory.ptr, this.history, 4 * (upTo + 1));
      const event = this.cuda.event();
      this.cuda.record(event);
      pending.push({ event, upTo });
    };
    try {
      this.cuda.record(events[0]);
      this.program.enqueue(first, { S: prompt.length });
      this.enqueueNextToken(first, 'prefill');
      this.cuda.record(events[1]);
      readBack(1);
      const every = this.opts.readbackEvery ?? 16;
      for (let step = 1; step < maxNewTokens; step++) {
        this.cuda.replay(this.decodeStep);
        if (step % every === 0 && step + 1 < maxNewTokens) readBack(step + 1);
      }
      this.cuda.record(events[2]);
      if (maxNewTokens > 1) readBack(maxNewTokens);

      const tokens: number[] = [];
      const h = new Int32Array(this.hostHistory.view);
      for (const p of pending) {
        while (!this.cuda.done(p.event)) await new Promise((r) => setImmediate(r));
        for (let i = tokens.length; i < Math.min(p.upTo, maxNewTokens); i++) {
          tokens.push(h[i + 1]);
          onToken?.(h[i + 1]);
        }
      }
      const decodeSteps = maxNewTokens - 1;
      this.lastTimings = {
        prefillMs: this.cuda.elapsed(events[0], events[1]),
        decodeSteps,
        decodeMsPerToken: decodeSteps > 0 ? this.cuda.elapsed(events[1], events[2]) / decodeSteps : 0,
      };
      return tokens;
    } finally {
      this.cuda.synchronize();
      for (const e of [...events, ...pending.map((p) => p.event)]) this.cuda.destroyEvent(e);
    }
  }

  /**
   * Milliseconds per decode step, timed with CUDA events around `steps` back-to-back replays of the captured
   * step (after `warmup` more), starting at position `startPos` with an otherwise empty cache. The measure a
   * benchmark wants: what the device takes per token, with no host work in it.
   */
  decodeStepsTimed(steps: number, opts: { warmup?: number; startPos?: number } = {}): { msPerToken: number; steps: number; kernelsPerStep: number } {
    const warmup = opts.warmup ?? 3;
    const startPos = opts.startPos ?? 0;
    this.checkFits(startPos + warmup + steps);
    this.program.resetState();
    this.startHistory({}, 1);
    this.writeInputs([0], startPos);
    for (let i = 0; i < warmup; i++) this.cuda.replay(this.decodeStep);
    const [start, end] = [this.cuda.event(), this.cuda.event()];
    try {
      this.cuda.record(start);
      for (let i = 0; i < steps; i++) this.cuda.replay(this.decodeStep);
      this.cuda.record(end);
      return { msPerToken: this.cuda.elapsed(start, end) / steps, steps, kernelsPerStep: this.decodeKernels() };
    } finally {
      this.cuda.synchronize();
      this.cuda.destroyEvent(start);
      this.cuda.destroyEvent(end);
    }
  }

  /** Each decode kernel's device time (launched one by one, at position `startPos`), for finding the slow ones. */
  profileDecode(startPos = 0): KernelProfile[] {
    this.checkFits(startPos + 1);
    this.writeInputs([0], startPos);
    return this.program.profile('decode');
  }

  /** Kernels per decode step: the graph's and the next-token kernel. */
  decodeKernels(): number {
    return this.program.kernelCount('decode') + 1;
  }

  /** The device, for reports: name and compute capability. */
  deviceName(): string {
    const { name, computeCapability: cc } = this.cuda.info;
    return `${name} (sm_${cc})`;
  }

  /**
   * Device-to-device copy bandwidth in bytes per second, counting the bytes read and written, measured on the
   * session's stream (what "fraction of copy bandwidth" is relative to).
   */
  copyBandwidth(bytes = 1 << 30, repeats = 10): number {
    return this.cuda.copyBandwidth(bytes, repeats);
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.cuda.synchronize();
    this.cuda.destroyGraph(this.decodeStep);
    this.program.destroy();
    this.cuda.free(this.history);
    this.cuda.free(this.params.prefill);
    this.cuda.free(this.params.decode);
    this.cuda.freeHost(this.hostHistory.ptr);
    this.cuda.destroy();
  }

  private checkFits(lastPos: number): void {
    if (lastPos > this.cacheLength) throw new RangeError(`positions up to ${lastPos} do not fit a KV cache of ${this.cacheLength}`);
  }

  private writeInputs(ids: readonly number[], pos: number): void {
    this.cuda.upload(this.program.buffer('prefill', { kind: 'input', name: 'tokens' }), Int32Array.from(ids));
    this.cuda.upload(this.program.buffer('prefill', { kind: 'input', name: 'pos' }), new Int32Array([pos]));
  }

  /** Sampling parameters of the first step (after a prompt of `promptLength`) and of decode steps; no tokens yet. */
  private startHistory(s: Sampling, promptLength: number): void {
    const common = {
      vocab: this.model.cfg.vocabSize, temperature: s.temperature ?? 0, topP: s.topP ?? 1, seed: s.seed ?? 0,
      capacity: this.cacheLength + 1,
    };
    this.cuda.upload(this.params.prefill, nextTokenParamsBytes({ ...common, row: promptLength - 1, advance: promptLength }));
    this.cuda.upload(this.params.decode, nextTokenParamsBytes({ ...common, row: 0, advance: 1 }));
    this.cuda.fill(this.history, 0, 4);
  }

  /** The next-token kernel after `graph`, reading its outputs, with the parameters of `params`. */
  private enqueueNextToken(graph: string, params: 'prefill' | 'decode'): void {
    const key = `${graph}:${params}`;
    let args = this.nextArgs.get(key);
    if (!args) {
      const p = this.program;
      args = this.cuda.kernelArgs([
        p.buffer(graph, { kind: 'output', index: 1 }),
        p.buffer(graph, { kind: 'output', index: 0 }),
        p.buffer(graph, { kind: 'input', name: 'tokens' }),
        p.buffer(graph, { kind: 'input', name: 'pos' }),
        this.history,
        this.params[params],
      ]);
      this.nextArgs.set(key, args);
    }
    this.cuda.launch(this.nextToken, 1, CUDA_BLOCK, args);
  }
}
