// Llama as ordinary model code against the tensor API: embedding, RMSNorm, rotary embeddings (llama3 scaling too),
// grouped-query attention over a KV cache, SwiGLU MLP, final norm and LM head. Prefill (S tokens) and decode
// (one token) are the same function traced with a symbolic or a static sequence length.

import { arange, concat, param, scalar, state, Tensor, where } from '../compiler/index.ts';
import { lastPosition, traceGeneration } from '../compiler/generation.ts';
import { DType } from '../ir/dtype.ts';
import { Module } from '../ir/graph.ts';
import { builtinConfig, type LlamaConfig } from '../runtime/config.ts';

export interface LlamaTraceOptions {
  /** Dtype of the checkpoint's weights; they stay in it and are widened to f32 where they are used. */
  readonly weightDType: DType;
  /** Positions the KV cache holds: prompt plus generated tokens must fit. */
  readonly cacheLength: number;
  /** Choose tokens by temperature and top-p sampling (else greedily). */
  readonly sampling?: boolean;
  /**
   * Dtype the KV cache stores (default f32): bf16 or f16 halve what attention reads; keys and values are rounded
   * to it as they are written and widened to f32 where they are read.
   */
  readonly kvDType?: DType;
}

/**
 * The prefill graph (symbolic sequence length S) and the decode graph (one token), over shared weights and cache,
 * each ending with the choice of the next token (compiler/generation.ts).
 */
export function traceLlama(cfg: LlamaConfig, opts: LlamaTraceOptions): Module {
  return traceGeneration((tokens, pos, rows) => llamaForward(cfg, opts, tokens, pos, rows), opts);
}

/**
 * Entry points for `tsfuse compile examples/llama.ts --entry tinyPrefill` (or tinyDecode): the built-in llama-tiny
 * config with f32 weights and a KV cache of 256 positions, the inputs' dtypes and shapes declared in the signature.
 */
export function tinyPrefill(tokens: Tensor<'i32', ['S']>, pos: Tensor<'i32', []>): Tensor {
  return llamaForward(builtinConfig('llama-tiny'), tinyOptions, tokens, pos);
}

export function tinyDecode(tokens: Tensor<'i32', [1]>, pos: Tensor<'i32', []>): Tensor {
  return llamaForward(builtinConfig('llama-tiny'), tinyOptions, tokens, pos);
}

const tinyOptions: LlamaTraceOptions = { weightDType: DType.F32, cacheLength: 256 };

/**
 * Runs tokens i32[S] at positions pos..pos+S-1 through the model, writing their keys and values into the cache.
 * Returns the logits f32[S, vocab]; with `rows` 'last', the last position's, f32[1, vocab] (final norm and LM
 * head run for that row alone).
 */
export function llamaForward(cfg: LlamaConfig, opts: LlamaTraceOptions, tokens: Tensor, pos: Tensor, rows: 'all' | 'last' = 'all'): Tensor {
  const { hiddenSize: hidden, headDim, numHeads, numKvHeads, rmsNormEps: eps } = cfg;
  const seq = tokens.dim(0);
  const weights = new Map<string, Tensor>();
  const weight = (name: string, ...shape: number[]) => {
    if (!weights.has(name)) weights.set(name, param(name, opts.weightDType, shape));
    return weights.get(name)!;
  };
  /** x·Wᵀ (+ b where the config has biases: attention_bias, mlp_bias); fusion puts the bias in the epilogue. */
  const linear = (x: Tensor, name: string, out: number, inp: number, bias = false) => {
    const y = x.matmul(weight(`${name}.weight`, out, inp).transpose());
    return bias ? y.add(weight(`${name}.bias`, out).cast(DType.F32)) : y;
  };
  const norm = (x: Tensor, name: string) => rmsNorm(x, weight(name, hidden), eps);
  const [attnBias, mlpBias] = [cfg.attentionBias, cfg.mlpBias];

  const kv = opts.kvDType ?? DType.F32;
  if (![DType.F32, DType.BF16, DType.F16].includes(kv)) throw new Error(`KV cache dtype ${kv}: expected f32, bf16 or f16`);
  const toCache = (x: Tensor) => (kv === DType.F32 ? x : x.cast(kv));
  const fromCache = (x: Tensor) => (kv === DType.F32 ? x : x.cast(DType.F32));

  const positions = arange(seq).add(pos);
  const rotary = rotaryTables(cfg, positions);

  let x = weight('model.embed_tokens.weight', cfg.vocabSize, hidden).gather(tokens).cast(DType.F32);
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    const h = norm(x, `${p}.input_layernorm.weight`);
    const q = linear(h, `${p}.self_attn.q_proj`, numHeads * headDim, hidden, attnBias).reshape(seq, numHeads, headDim);
    const k = linear(h, `${p}.self_attn.k_proj`, numKvHeads * headDim, hidden, attnBias).reshape(seq, numKvHeads, headDim);
    const v = linear(h, `${p}.self_attn.v_proj`, numKvHeads * headDim, hidden, attnBias).reshape(seq, numKvHeads, headDim);
    const cacheShape = [opts.cacheLength, numKvHeads, headDim];
    const keys = state(`cache.k.${i}`, kv, cacheShape).write(toCache(applyRotary(k, rotary)), pos, 0);
    const values = state(`cache.v.${i}`, kv, cacheShape).write(toCache(v), pos, 0);
    const attn = attention(applyRotary(q, rotary), fromCache(keys), fromCache(values), positions, numKvHeads);
    x = x.add(linear(attn.reshape(seq, numHeads * headDim), `${p}.self_attn.o_proj`, hidden, numHeads * headDim, attnBias));

    const h2 = norm(x, `${p}.post_attention_layernorm.weight`);
    const gate = linear(h2, `${p}.mlp.gate_proj`, cfg.intermediateSize, hidden, mlpBias);
    const up = linear(h2, `${p}.mlp.up_proj`, cfg.intermediateSize, hidden, mlpBias);
    x = x.add(linear(gate.silu().mul(up), `${p}.mlp.down_proj`, hidden, cfg.intermediateSize, mlpBias));
  }
  if (rows === 'last' && seq !== 1) x = x.gather(lastPosition(seq));
  const head = cfg.tieWordEmbeddings ? 'model.embed_tokens' : 'lm_head';
  const logits = linear(norm(x, 'model.norm.weight'), head, cfg.vocabSize, hidden);
  return logits;
}

/** x / rms(x) * weight, in f32. */
export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  const inv = x.pow(2).mean(-1, { keepdims: true }).add(eps).rsqrt();
  return x.mul(inv).mul(weight.cast(DType.F32));
}

interface Rotary { cos: Tensor; sin: Tensor }

/** cos and sin of the rotary angles, [S, 1, headDim], computed from the positions in the graph. */
function rotaryTables(cfg: LlamaConfig, positions: Tensor): Rotary {
  const half = cfg.headDim / 2;
  const exponent = arange(half, DType.F32).mul(2).div(cfg.headDim);
  // Dynamic scaling stretches the base by the sequence's length: the last position + 1.
  const base = cfg.rope.type === 'dynamic' ? dynamicBase(cfg, positions.max(0).add(1)) : scalar(cfg.rope.theta);
  let invFreq = base.pow(exponent).recip();
  if (cfg.rope.type === 'llama3') invFreq = llama3Frequencies(cfg.rope, invFreq);
  else if (cfg.rope.type === 'linear') invFreq = invFreq.div(cfg.rope.factor);
  const angles = positions.cast(DType.F32).reshape(-1, 1).mul(invFreq.reshape(1, half));
  const both = concat([angles, angles], 1).reshape(positions.dim(0), 1, cfg.headDim);
  return { cos: both.cos(), sin: both.sin() };
}

/**
 * Dynamic NTK scaling (Hugging Face's 'dynamic' rope): over a sequence of length L past the original context C, the
 * base becomes θ · (factor · L / C − (factor − 1))^(d / (d − 2)); within it, θ. Keys in the cache keep the angles
 * they were written with, as Hugging Face's cache keeps them.
 */
function dynamicBase(cfg: LlamaConfig, length: Tensor): Tensor {
  const { theta, factor, originalMaxPositionEmbeddings: context } = cfg.rope;
  const d = cfg.headDim;
  const stretch = length.cast(DType.F32).mul(factor / context).sub(factor - 1).pow(d / (d - 2));
  return where(length.gt(context), stretch.mul(theta), theta);
}

/** Llama 3's frequency scaling: long wavelengths divided by the factor, a smooth blend in between. */
function llama3Frequencies(rope: LlamaConfig['rope'], invFreq: Tensor): Tensor {
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: context } = rope;
  const lowFreqWavelen = context / lowFreqFactor;
  const highFreqWavelen = context / highFreqFactor;
  const wavelen = scalar(2 * Math.PI).div(invFreq);
  const scaled = where(wavelen.gt(lowFreqWavelen), invFreq.div(factor), invFreq);
  const smooth = scalar(context).div(wavelen).sub(lowFreqFactor).div(highFreqFactor - lowFreqFactor);
  const smoothed = scalar(1).sub(smooth).mul(scaled).div(factor).add(smooth.mul(scaled));
  const medium = wavelen.lt(highFreqWavelen).not().and(wavelen.gt(lowFreqWavelen).not());
  return where(medium, smoothed, scaled);
}

/** x * cos + rotate_half(x) * sin over the last axis of x [S, heads, headDim]. */
function applyRotary(x: Tensor, { cos, sin }: Rotary): Tensor {
  const half = (x.dim(-1) as number) / 2;
  const rotated = concat([x.slice(-1, half).neg(), x.slice(-1, 0, half)], -1);
  return x.mul(cos).add(rotated.mul(sin));
}

/**
 * Causal grouped-query attention of q [S, heads, d] over the whole cache [T, kvHeads, d]: a key at cache position
 * t is visible to the query at position p when t <= p, so unwritten cache slots are never read.
 */
function attention(q: Tensor, keys: Tensor, values: Tensor, positions: Tensor, kvHeads: number): Tensor {
  const [seq, heads, d] = [q.dim(0), q.dim(1) as number, q.dim(2) as number];
  const group = heads / kvHeads;
  const cacheLen = keys.dim(0);
  // Heads h = kv * group + j share kv head `kv`: [kvHeads, group, S, d] against a cache broadcast over the group.
  const qg = q.reshape(seq, kvHeads, group, d).permute(1, 2, 0, 3);
  const keysT = keys.permute(1, 2, 0).reshape(kvHeads, 1, d, cacheLen);
  const scores = qg.matmul(keysT).mul(1 / Math.sqrt(d));
  const visible = arange(cacheLen).reshape(1, -1).le(positions.reshape(-1, 1));
  const probs = where(visible, scores, -Infinity).softmax(-1);
  const out = probs.matmul(values.permute(1, 0, 2).reshape(kvHeads, 1, cacheLen, d));
  return out.permute(2, 0, 1, 3).reshape(seq, heads, d);
}
