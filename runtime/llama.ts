// Loading a Hugging Face Llama checkpoint: its config and weights, checked against each other. The only
// Llama-specific part of the runtime; running it is the session's (runtime/session.ts).

import { DType } from '../ir/dtype.ts';
import { checkLlamaWeights, LlamaConfig, readEosTokenIds, readLlamaConfig } from './config.ts';
import { onFirstRead, readCheckpoint, TensorSource, WeightsError } from './safetensors.ts';

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

/** The source with each tensor scanned for NaN and ±∞ the first time it is read. */
function scanned(src: TensorSource, warn: (message: string) => void): TensorSource {
  return onFirstRead(src, (name, t) => {
    const bad = nonFinite(t.raw, t.dtype);
    if (bad) {
      warn(`tensor '${name}' in ${src.info(name).file} holds ${bad.nan} NaN and ${bad.inf} infinite values `
        + `(the first at element ${bad.first}): the model's outputs will be NaN or infinite`);
    }
  });
}

/** NaN and ±∞ among stored floats, counted from their exponent bits (all ones); undefined when there are none. */
export function nonFinite(raw: Uint8Array, dtype: DType): { nan: number; inf: number; first: number } | undefined {
  const half = dtype === DType.F16 || dtype === DType.BF16;
  if (!half && dtype !== DType.F32) return undefined;
  // The exponent and mantissa masks of one element.
  const [exp, mant] = dtype === DType.F32 ? [0x7f800000, 0x007fffff] : dtype === DType.BF16 ? [0x7f80, 0x007f] : [0x7c00, 0x03ff];
  const size = half ? 2 : 4;
  const n = Math.floor(raw.byteLength / size);
  // Elements in place where the bytes are aligned (safetensors data is), else copied once; little-endian hosts.
  const bytes = raw.byteOffset % size === 0 ? raw : raw.slice();
  const words = half ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint32Array(bytes.buffer, bytes.byteOffset, n);
  let nan = 0;
  let inf = 0;
  let first = -1;
  const count = (i: number) => {
    const v = words[i];
    if ((v & exp) !== exp) return;
    if (v & mant) nan++;
    else inf++;
    if (first < 0) first = i;
  };
  if (half && bytes.byteOffset % 4 === 0) {
    // Two halves per 32-bit word: one masked test finds the words worth a closer look (gigabytes of bf16 at load).
    const pairs = new Uint32Array(bytes.buffer, bytes.byteOffset, n >> 1);
    const both = (exp | (exp << 16)) >>> 0;
    const high = (exp << 16) >>> 0;
    for (let w = 0; w < pairs.length; w++) {
      const t = (pairs[w] & both) >>> 0;
      if (t >= high || (t & 0xffff) === exp) {
        count(2 * w);
        count(2 * w + 1);
      }
    }
    if (n & 1) count(n - 1);
  } else {
    for (let i = 0; i < n; i++) count(i);
  }
  return first < 0 ? undefined : { nan, inf, first };
}

export function checkTokens(cfg: LlamaConfig, tokens: readonly number[]): void {
  if (tokens.length === 0) throw new RangeError('no input tokens');
  tokens.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= cfg.vocabSize) {
      throw new RangeError(`token id ${t} at position ${i} is outside the vocabulary (0..${cfg.vocabSize - 1})`);
    }
  });
}
