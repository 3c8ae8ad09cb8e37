// Wiring a model to a device (the layer above compiler/, backends/ and runtime/): trace the model into the
// generation graphs, compile them (or keep them unfused for the reference interpreter) through the compile cache,
// read the checkpoint's weights while the device opens, load the program with them, and hand back the one session
// every backend shares, with where its start went (session.startup).

import { LoweredModule } from '../backends/lowered.ts';
import { DType } from '../ir/dtype.ts';
import { traceLlama } from '../examples/llama.ts';
import { Module } from '../ir/graph.ts';
import { HostTensor } from '../ir/host-tensor.ts';
import { DeviceKind, deviceKinds, isDeviceKind } from '../runtime/device.ts';
import { DeviceOptions, openDevice } from '../runtime/devices/open.ts';
import { checkLength, LoadedLlama } from '../runtime/llama.ts';
import { ParamStore } from '../runtime/params.ts';
import { step } from '../runtime/progress.ts';
import { Session, SessionOptions, type StartupTimings } from '../runtime/session.ts';
import { CacheOptions, compileCached } from './compile-cache.ts';
import { kvCacheDType, sessionContext } from './session-choices.ts';
import { defaultContext, PassContext } from './passes/context.ts';

export { kvCacheDType, KvDTypeError } from './session-choices.ts';
import { compileModule } from './compile-module.ts';

export interface OpenSessionOptions extends DeviceOptions, SessionOptions {
  readonly backend: DeviceKind;
  /** Positions the KV cache holds: prompt plus new tokens, less one, must fit. */
  readonly cacheLength: number;
  /** Compile the sampler (temperature, top-p, seed) rather than the argmax. */
  readonly sampling?: boolean;
  /** What the KV cache stores (default: kvCacheDType's choice for the backend and the weights). */
  readonly kvDType?: DType;
  /** Where compiled modules are cached, and whether (default: compiler/compile-cache.ts's). */
  readonly compileCache?: CacheOptions;
  /** Hears how long the start took, once the program is on the device (also session.startup). */
  readonly onStart?: (t: StartTimings) => void;
}

/** Tokens one prompt step takes at most, unless the options say otherwise. */
export const DEFAULT_PROMPT_CHUNK = 1024;

/** Where a session's start went, in milliseconds (session.startup, before the first token). */
export type StartTimings = Readonly<Omit<StartupTimings, 'firstTokenMs' | 'totalMs'>>;

/** The module as a device runs it: compiled into kernels, or traced graphs for the reference interpreter. */
export function lowerFor(backend: DeviceKind, m: Module, ctx: PassContext = defaultContext): LoweredModule {
  return backend === 'reference' ? { graphs: m.graphs.map((graph) => ({ graph, kernels: [] })) } : compileModule(m, { ctx });
}

/** What loading a program does on each device, for the spinner of a long load. */
const loadingStep: Record<DeviceKind, string> = {
  cpu: 'loading the program', reference: 'loading the program',
  webgpu: 'uploading weights and compiling shaders', cuda: 'uploading weights and compiling kernels (NVRTC)',
};

export async function openLlamaSession(model: LoadedLlama, opts: OpenSessionOptions): Promise<Session> {
  const since = performance.now();
  // Positions past the model's own are refused before anything is traced or allocated.
  checkLength(model.cfg, opts.cacheLength);
  if (!isDeviceKind(opts.backend)) throw new RangeError(`unknown backend '${opts.backend as string}' (available: ${deviceKinds.join(', ')})`);
  if (opts.megakernel && opts.backend !== 'cuda') throw new Error(`--megakernel runs on the cuda backend only, not ${opts.backend}`);
  const kvDType = kvCacheDType(opts.backend, model.weightDType, opts.kvDType);
  const traceOpts = { weightDType: model.weightDType, cacheLength: opts.cacheLength, sampling: opts.sampling ?? false, kvDType };
  const trace = () => traceLlama(model.cfg, traceOpts);
  // Compiled through the compile cache: an unchanged model and options skip tracing and compiling.
  const ctx: PassContext = sessionContext(opts.backend, kvDType, model.cfg.headDim);
  const compiled = opts.backend === 'reference' ? undefined
    : step('compiling the model', () => compileCached({ model: 'llama', cfg: model.cfg, ...traceOpts }, trace, { ...opts.compileCache, ctx }));
  const lowered = compiled?.module ?? lowerFor(opts.backend, trace(), ctx);
  const compileMs = performance.now() - since;
  // The weights are read (large reads on libuv's threads, each tensor scanned as it lands) while the device opens.
  const params = new ParamStore((n) => model.weights.tensor(n));
  const reading = params.preload(lowered.graphs.map((g) => g.graph), model.weights);
  const opening = performance.now();
  let device;
  try {
    device = await openDevice(opts.backend, opts);
  } catch (e) {
    await reading.catch(() => {});
    throw e;
  }
  const openMs = performance.now() - opening;
  // The kernels compile while the weights are still being read.
  device.prepare?.(lowered);
  // A prompt runs in steps of at most this many tokens: every S-sized buffer (the prefill's logits are S × vocab)
  // is allocated for a chunk, not for the whole context.
  const promptChunk = Math.min(opts.promptChunk ?? DEFAULT_PROMPT_CHUNK, opts.cacheLength);
  try {
    await reading;
    const readMs = params.readMs;
    const loading = performance.now();
    const program = await step(loadingStep[opts.backend], () => device.load(lowered, params, { maxSizes: { S: promptChunk } }));
    // Host devices read what was not preloaded as they load: that counts as reading.
    const uploadMs = Math.max(0, performance.now() - loading - (params.readMs - readMs));
    const session = new Session(program, { ...opts, promptChunk });
    session.startup = {
      compileMs, compileCache: !compiled?.key ? 'off' : compiled.hit ? 'hit' : 'miss',
      readMs: params.readMs, openMs, uploadMs, readyMs: performance.now() - since, since,
    };
    opts.onStart?.({ ...session.startup });
    return session;
  } catch (e) {
    device.destroy();
    throw e;
  }
}

/** Logits at every position of one forward pass over `ids` (a session opened and closed for it). */
export async function forwardLogits(model: LoadedLlama, ids: readonly number[], backend: DeviceKind = 'cpu'): Promise<HostTensor> {
  const session = await openLlamaSession(model, { backend, cacheLength: ids.length });
  try {
    return await session.logits(ids);
  } finally {
    session.close();
  }
}

/** `maxNewTokens` greedy tokens after the prompt (a session opened and closed for it). */
export async function generateGreedy(model: LoadedLlama, prompt: readonly number[], maxNewTokens: number,
  backend: DeviceKind = 'cpu'): Promise<number[]> {
  const session = await openLlamaSession(model, { backend, cacheLength: prompt.length + maxNewTokens });
  try {
    return await session.generate(prompt, maxNewTokens);
  } finally {
    session.close();
  }
}
