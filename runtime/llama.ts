// Loading a Hugging Face Llama checkpoint: its config and weights, checked against each other. The only
// Llama-specific part of the runtime; running it is the session's (runtime/session.ts).

import { DType } from '../ir/dtype.ts';
import { checkLlamaWeights, LlamaConfig, readLlamaConfig } from './config.ts';
import { readCheckpoint, TensorSource, WeightsError } from './safetensors.ts';

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

export function checkTokens(cfg: LlamaConfig, tokens: readonly number[]): void {
  if (tokens.length === 0) throw new RangeError('no input tokens');
  tokens.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= cfg.vocabSize) {
      throw new RangeError(`token id ${t} at position ${i} is outside the vocabulary (0..${cfg.vocabSize - 1})`);
    }
  });
}
