// Loading a Hugging Face Llama checkpoint: its config and weights, checked against each other, and each tensor
// scanned for NaN and infinities as it lands. The only Llama-specific part of the runtime; running it is the
// session's (runtime/session.ts).

import { DType } from '../ir/dtype.ts';
import { checkLlamaWeights, LlamaConfig, readEosTokenIds, readLlamaConfig } from './config.ts';
import { onFirstRead, readCheckpoint, TensorSource, WeightsError } from './safetensors.ts';
import { ScanKind, scanNonFinite } from './tensor-reader.ts';

export interface LoadedLlama {
  readonly cfg: LlamaConfig;
  readonly weights: TensorSource;
  /** The dtype the checkpoint stores its weights in; compute is f32. */
  readonly weightDType: DType;
  /** Tokens that end generation (generation_config.json's eos_token_id, else config.json's; none when absent). */
  readonly eosTokenIds?: readonly number[];
}

export interface LoadOptions {
  /** Hears a warning for each tensor holding NaN or infinite values, as it is read (default: stderr). */
  readonly warn?: (message: string) => void;
}

/**
 * Reads config.json and the safetensors weights of a checkpoint folder, checking every tensor against the config.
 * Each tensor is scanned for NaN and infinities when it is read: a warning names it (the model would run, but its
 * outputs would be NaN).
 */
export function loadLlama(dir: string, opts: LoadOptions = {}): LoadedLlama {
  const cfg = readLlamaConfig(dir);
  const weights = scanned(readCheckpoint(dir), opts.warn ?? ((m) => process.stderr.write(`tsfuse: warning: ${m}\n`)));
  checkLlamaWeights(cfg, weights);
  const weightDType = weights.info('model.embed_tokens.weight').dtype;
  for (const t of weights.tensors) {
    if (t.name.startsWith('model.') && t.dtype !== weightDType) {
      throw new WeightsError(`${t.file}: tensor '${t.name}' is ${t.dtype} but the embedding is ${weightDType}; mixed weight dtypes are not supported`);
    }
  }
  return { cfg, weights, weightDType, eosTokenIds: readEosTokenIds(dir, cfg) };
}

/**
 * A prompt of `promptTokens` and `newTokens` more must fit the model's positions (max_position_embeddings, as
 * Hugging Face's max_length counts them); checked before anything is allocated.
 */
export function checkLength(cfg: LlamaConfig, promptTokens: number, newTokens = 0): void {
  const total = promptTokens + newTokens;
  if (total > cfg.maxPositionEmbeddings) {
    const what = newTokens ? `${promptTokens} prompt tokens + ${newTokens} new tokens = ${total} positions` : `${promptTokens} tokens`;
    throw new RangeError(`${what} exceed the model's max_position_embeddings ${cfg.maxPositionEmbeddings} (${cfg.source})`);
  }
}

/**
 * The source with each tensor scanned for NaN and ±∞ the first time it is read (read all at once, each tensor comes
 * already scanned, by the threads that read it).
 */
function scanned(src: TensorSource, warn: (message: string) => void): TensorSource {
  return onFirstRead(src, (name, t) => {
    const bad = t.nonFinite !== undefined ? t.nonFinite : nonFinite(t.raw, t.dtype);
    if (bad) {
      warn(`tensor '${name}' in ${src.info(name).file} holds ${bad.nan} NaN and ${bad.inf} infinite values `
        + `(the first at element ${bad.first}): the model's outputs will be NaN or infinite`);
    }
  });
}

/** NaN and ±∞ among stored floats, counted from their exponent bits (all ones); undefined when there are none. */
export function nonFinite(raw: Uint8Array, dtype: DType): { nan: number; inf: number; first: number } | undefined {
  const kind = ({ [DType.F32]: 'f32', [DType.F16]: 'f16', [DType.BF16]: 'bf16' } as Partial<Record<DType, ScanKind>>)[dtype];
  return (kind && scanNonFinite(raw, kind)) ?? undefined;
}

export function checkTokens(cfg: LlamaConfig, tokens: readonly number[]): void {
  if (tokens.length === 0) throw new RangeError('no input tokens');
  tokens.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= cfg.vocabSize) {
      throw new RangeError(`token id ${t} at position ${i} is outside the vocabulary (0..${cfg.vocabSize - 1})`);
    }
  });
}
