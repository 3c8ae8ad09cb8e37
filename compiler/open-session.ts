// Wiring a model to a device (the layer above compiler/, backends/ and runtime/): trace the model into the
// generation graphs, compile them (or keep them unfused for the reference interpreter), open the device, load the
// program with the checkpoint's weights, and hand back the one session every backend shares.

import { LoweredModule } from '../backends/lowered.ts';
import { traceLlama } from '../examples/llama.ts';
import { Module } from '../ir/graph.ts';
import { HostTensor } from '../ir/host-tensor.ts';
import { DeviceKind } from '../runtime/device.ts';
import { DeviceOptions, openDevice } from '../runtime/devices/open.ts';
import { LoadedLlama } from '../runtime/llama.ts';
import { ParamStore } from '../runtime/params.ts';
import { Session, SessionOptions } from '../runtime/session.ts';
import { compileModule } from './compile-module.ts';

export interface OpenSessionOptions extends DeviceOptions, SessionOptions {
  readonly backend: DeviceKind;
  /** Positions the KV cache holds: prompt plus new tokens, less one, must fit. */
  readonly cacheLength: number;
  /** Compile the sampler (temperature, top-p, seed) rather than the argmax. */
  readonly sampling?: boolean;
}

/** The module as a device runs it: compiled into kernels, or traced graphs for the reference interpreter. */
export function lowerFor(backend: DeviceKind, m: Module): LoweredModule {
  return backend === 'reference' ? { graphs: m.graphs.map((graph) => ({ graph, kernels: [] })) } : compileModule(m);
}

export async function openLlamaSession(model: LoadedLlama, opts: OpenSessionOptions): Promise<Session> {
  const module = traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength: opts.cacheLength, sampling: opts.sampling });
  const lowered = lowerFor(opts.backend, module);
  const device = await openDevice(opts.backend, opts);
  try {
    const program = await device.load(lowered, new ParamStore((n) => model.weights.tensor(n)), { maxSizes: { S: opts.cacheLength } });
    return new Session(program, opts);
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
