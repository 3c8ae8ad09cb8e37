// Loading a Hugging Face Llama checkpoint and running it: prefill over the prompt, then greedy decode steps.

import { DType } from '../ir/dtype.ts';
import { Module } from '../ir/graph.ts';
import { interpret } from '../backends/reference/interpreter.ts';
import { traceLlama } from '../examples/llama.ts';
import { checkLlamaWeights, LlamaConfig, readLlamaConfig } from './config.ts';
import { allocHost, HostTensor, hostTensor } from '../ir/host-tensor.ts';
import { readCheckpoint, TensorSource, WeightsError } from './safetensors.ts';
import { compileModule } from '../compiler/compile-module.ts';
import { CpuExecutor } from './cpu.ts';
import { GraphExecutor } from './executor.ts';

export interface LoadedLlama {
  readonly cfg: LlamaConfig;
  readonly weights: TensorSource;
  /** The dtype the checkpoint stores its weights in; compute is f32. */
  readonly weightDType: DType;
}

/** Reads config.json and the safetensors weights of a checkpoint folder, checking every tensor against the config. */
export function loadLlama(dir: string): LoadedLlama {
  const cfg = readLlamaConfig(dir);
  const weights = readCheckpoint(dir);
  checkLlamaWeights(cfg, weights);
  const weightDType = weights.info('model.embed_tokens.weight').dtype;
  for (const t of weights.tensors) {
    if (t.name.startsWith('model.') && t.dtype !== weightDType) {
      throw new WeightsError(`${t.file}: tensor '${t.name}' is ${t.dtype} but the embedding is ${weightDType}; mixed weight dtypes are not supported`);
    }
  }
  return { cfg, weights, weightDType };
}

/** One step of the model: logits f32[S, vocab] and the greedy next token after each position, i32[S]. */
export interface StepResult {
  readonly logits: HostTensor;
  readonly next: HostTensor;
}

/** The backends that run on the host, step by step (runner.ts adds the device backends). */
export type HostBackend = 'cpu' | 'reference';

/** Runs the model's graphs with the KV cache in host memory: fused JS kernels (cpu) or op by op (reference). */
export class LlamaSession {
  readonly module: Module;
  private readonly executor: GraphExecutor;
  private readonly states = new Map<string, HostTensor>();

  constructor(readonly model: LoadedLlama, readonly cacheLength: number, backend: HostBackend = 'cpu') {
    this.module = traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength });
    const loadParam = (name: string) => model.weights.tensor(name);
    this.executor = backend === 'reference'
      ? referenceExecutor(this.module, loadParam)
      : new CpuExecutor(compileModule(this.module), loadParam);
    for (const g of this.module.graphs) {
      for (const s of g.states) {
        if (!this.states.has(s.name!)) this.states.set(s.name!, allocHost(s.type.dtype, s.type.shape as number[]));
      }
    }
  }

  /** Runs `tokens` at positions pos.. through the model (the prefill graph for several tokens, decode for one). */
  step(tokens: readonly number[], pos: number): StepResult {
    checkTokens(this.model.cfg, tokens);
    if (pos + tokens.length > this.cacheLength) {
      throw new RangeError(`positions up to ${pos + tokens.length} do not fit a KV cache of ${this.cacheLength}`);
    }
    const graph = tokens.length === 1 ? 'decode' : 'prefill';
    const inputs = { tokens: hostTensor(DType.I32, [tokens.length], tokens), pos: hostTensor(DType.I32, [], [pos]) };
    const [logits, next] = this.executor.run(graph, inputs, this.states);
    return { logits, next };
  }
}

/** The reference interpreter as an executor; weights decoded once and kept. */
function referenceExecutor(m: Module, loadParam: (name: string) => HostTensor): GraphExecutor {
  const params = new Map<string, HostTensor>();
  const param = (name: string) => {
    if (!params.has(name)) params.set(name, loadParam(name));
    return params.get(name)!;
  };
  return {
    run: (name, inputs, states) => interpret(m.graphs.find((g) => g.name === name)!, { inputs, param, states }),
  };
}

export function checkTokens(cfg: LlamaConfig, tokens: readonly number[]): void {
  if (tokens.length === 0) throw new RangeError('no input tokens');
  tokens.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= cfg.vocabSize) {
      throw new RangeError(`token id ${t} at position ${i} is outside the vocabulary (0..${cfg.vocabSize - 1})`);
    }
  });
}

/** Greedy decoding: the prompt in one prefill step, then one decode step per new token. */
export function generateGreedy(model: LoadedLlama, prompt: readonly number[], maxNewTokens: number,
  onToken: (t: number) => void = () => {}, backend: HostBackend = 'cpu'): number[] {
  const runner = new LlamaSession(model, prompt.length + maxNewTokens, backend);
  const out: number[] = [];
  let { next } = runner.step(prompt, 0);
  let token = next.data[prompt.length - 1];
  for (let i = 0; i < maxNewTokens; i++) {
    out.push(token);
    onToken(token);
    if (i + 1 === maxNewTokens) break;
    ({ next } = runner.step([token], prompt.length + i));
    token = next.data[0];
  }
  return out;
}

/** Logits at every position of one forward pass over `ids` with an empty cache. */
export function forwardLogits(model: LoadedLlama, ids: readonly number[], backend: HostBackend = 'cpu'): HostTensor {
  return new LlamaSession(model, ids.length, backend).step(ids, 0).logits;
}
