// Hugging Face Llama config.json → LlamaConfig, checked up front so a bad or unsupported config fails with the key
// and file at fault, plus the tensor names and shapes a checkpoint for that config must hold.

import fs from 'node:fs';
import path from 'node:path';
import { formatShape } from '../ir/shape.ts';
import { checkRegularFile } from './files.ts';
import { WeightsError, type TensorSource } from './safetensors.ts';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export type RopeType = 'default' | 'llama3' | 'linear' | 'dynamic';

export interface RopeConfig {
  readonly theta: number;
  readonly type: RopeType;
  /** Context stretch for `linear`, `llama3` and `dynamic`; 1 for `default`. */
  readonly factor: number;
  /** `llama3` only (1 and 1 otherwise): wavelength band edges, in units of the original context. */
  readonly lowFreqFactor: number;
  readonly highFreqFactor: number;
  /** `llama3` and `dynamic` (where longer sequences start to stretch the base); the model's max positions otherwise. */
  readonly originalMaxPositionEmbeddings: number;
}

export interface LlamaConfig {
  /** The file (or built-in name) the config came from, for messages. */
  readonly source: string;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly rmsNormEps: number;
  readonly maxPositionEmbeddings: number;
  readonly tieWordEmbeddings: boolean;
  /** Biases in the q, k, v and o projections (`attention_bias`). */
  readonly attentionBias: boolean;
  /** Biases in the gate, up and down projections (`mlp_bias`). */
  readonly mlpBias: boolean;
  /** The dtype the checkpoint was saved in, as HF spells it ("bfloat16"). */
  readonly torchDtype: string;
  readonly bosTokenId: number | null;
  /** Any of these ends generation; configs give one id or a list. */
  readonly eosTokenIds: readonly number[];
  readonly rope: RopeConfig;
}

/** Reads `config.json` from a checkpoint directory, or the given file. */
export function readLlamaConfig(dirOrFile: string): LlamaConfig {
  const file = isDirectory(dirOrFile) ? path.join(dirOrFile, 'config.json') : dirOrFile;
  checkRegularFile(file, 'a config.json', (m) => new ConfigError(m));
  let obj: unknown;
  try {
    obj = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`${file}: cannot read config: ${(e as Error).message}`);
  }
  return llamaConfigFromJson(obj, file);
}

export function llamaConfigFromJson(obj: unknown, source: string): LlamaConfig {
  if (!isObject(obj)) throw new ConfigError(`${source}: config is not a JSON object`);
  const f = new Fields(obj, source);
  const modelType = f.str('model_type');
  if (modelType !== 'llama') throw f.error('model_type', `'${modelType}' is not a Llama model (expected 'llama')`);
  refuseWhatChangesTheMath(f, obj);

  const hiddenSize = f.int('hidden_size');
  const numHeads = f.int('num_attention_heads');
  const numKvHeads = f.int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw f.error('num_key_value_heads', `num_attention_heads ${numHeads} is not divisible by ${numKvHeads}`);
  }
  if (!f.has('head_dim') && hiddenSize % numHeads !== 0) {
    throw f.error('num_attention_heads', `hidden_size ${hiddenSize} is not divisible by ${numHeads}, and no head_dim is given`);
  }
  const maxPositionEmbeddings = f.int('max_position_embeddings');
  return {
    source,
    vocabSize: f.int('vocab_size'),
    hiddenSize,
    intermediateSize: f.int('intermediate_size'),
    numLayers: f.int('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim: f.int('head_dim', hiddenSize / numHeads),
    rmsNormEps: f.num('rms_norm_eps'),
    maxPositionEmbeddings,
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    attentionBias: f.bool('attention_bias', false),
    mlpBias: f.bool('mlp_bias', false),
    // Transformers 5 writes `dtype`; earlier versions `torch_dtype`. Unset means weights load as float32.
    torchDtype: f.has('dtype') ? f.str('dtype') : f.str('torch_dtype', 'float32'),
    bosTokenId: f.has('bos_token_id') ? f.tokenIds('bos_token_id')[0] : null,
    eosTokenIds: f.has('eos_token_id') ? f.tokenIds('eos_token_id') : [],
    rope: readRope(f, maxPositionEmbeddings),
  };
}

/** Architectures whose forward pass is the one examples/llama.ts computes. */
const ARCHITECTURES = ['LlamaForCausalLM', 'LlamaModel'];

/**
 * Config keys that would change the computation and that tsfuse does not implement are refused, each by name, so
 * that no checkpoint runs with part of its math silently dropped. (Keys that change nothing at inference, such as
 * attention_dropout, initializer_range, use_cache or pretraining_tp, are accepted as they are.)
 */
function refuseWhatChangesTheMath(f: Fields, obj: Record<string, unknown>): void {
  if (f.has('architectures')) {
    const arch = obj.architectures;
    if (!Array.isArray(arch) || !arch.every((a) => typeof a === 'string')) {
      throw f.error('architectures', `expected a list of names, got ${JSON.stringify(arch)}`);
    }
    const unknown = arch.filter((a) => !ARCHITECTURES.includes(a));
    if (unknown.length) throw f.error('architectures', `unsupported architecture ${unknown.map((a) => `'${a}'`).join(', ')} (supported: ${ARCHITECTURES.join(', ')})`);
  }
  const act = f.str('hidden_act', 'silu');
  if (act !== 'silu') throw f.error('hidden_act', `unsupported activation '${act}' (only 'silu' is implemented)`);
  if (f.has('partial_rotary_factor') && obj.partial_rotary_factor !== 1) {
    throw f.error('partial_rotary_factor', `${JSON.stringify(obj.partial_rotary_factor)} is not supported (rotary embeddings over the whole head only)`);
  }
  if (f.has('quantization_config')) throw f.error('quantization_config', 'quantized checkpoints are not supported');
}

/**
 * Rope comes in two spellings: classic `rope_theta` beside `rope_scaling` (null when unscaled, with `type` in older
 * files), and Transformers 5's `rope_parameters`, which holds the theta itself.
 */
function readRope(f: Fields, maxPositionEmbeddings: number): RopeConfig {
  const params = f.object('rope_parameters');
  if (params) return ropeFrom(params, params.num('rope_theta'), maxPositionEmbeddings);
  const theta = f.num('rope_theta', 10000); // LlamaConfig's default
  const scaling = f.object('rope_scaling');
  return scaling ? ropeFrom(scaling, theta, maxPositionEmbeddings) : unscaled(theta, maxPositionEmbeddings);
}

function ropeFrom(p: Fields, theta: number, maxPositionEmbeddings: number): RopeConfig {
  const key = p.has('rope_type') || !p.has('type') ? 'rope_type' : 'type';
  const type = p.str(key, 'default');
  switch (type) {
    case 'default':
      return unscaled(theta, maxPositionEmbeddings);
    case 'linear':
      return { ...unscaled(theta, maxPositionEmbeddings), type, factor: p.num('factor') };
    case 'dynamic':
      // Dynamic NTK scaling: past the original context the base grows with the sequence (examples/llama.ts).
      return {
        ...unscaled(theta, maxPositionEmbeddings), type, factor: p.num('factor'),
        originalMaxPositionEmbeddings: p.int('original_max_position_embeddings', maxPositionEmbeddings),
      };
    case 'llama3': {
      const rope: RopeConfig = {
        theta, type, factor: p.num('factor'), lowFreqFactor: p.num('low_freq_factor'),
        highFreqFactor: p.num('high_freq_factor'), originalMaxPositionEmbeddings: p.int('original_max_position_embeddings'),
      };
      // The frequency blend divides by their difference.
      if (rope.highFreqFactor <= rope.lowFreqFactor) {
        throw p.error('high_freq_factor', `${rope.highFreqFactor} must exceed low_freq_factor ${rope.lowFreqFactor}`);
      }
      return rope;
    }
    default:
      throw p.error(key, `unsupported rope type '${type}' (supported: default, linear, dynamic, llama3)`);
  }
}

function unscaled(theta: number, maxPositionEmbeddings: number): RopeConfig {
  return {
    theta, type: 'default', factor: 1, lowFreqFactor: 1, highFreqFactor: 1,
    originalMaxPositionEmbeddings: maxPositionEmbeddings,
  };
}

/** Typed access to one JSON object's keys; errors carry the file and the dotted key. null counts as absent. */
class Fields {
  constructor(private readonly obj: Record<string, unknown>, private readonly source: string, private readonly prefix = '') {}

  error(key: string, msg: string): ConfigError {
    return new ConfigError(`${this.source}: ${this.prefix}${key}: ${msg}`);
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  private get<T>(key: string, fallback: T | undefined, ok: (v: unknown) => boolean, want: string): T {
    if (!this.has(key)) {
      if (fallback === undefined) throw this.error(key, 'missing');
      return fallback;
    }
    const v = this.obj[key];
    if (!ok(v)) throw this.error(key, `expected ${want}, got ${JSON.stringify(v)}`);
    return v as T;
  }

  /** A positive integer. */
  int(key: string, fallback?: number): number {
    return this.get(key, fallback, (v) => Number.isSafeInteger(v) && (v as number) > 0, 'a positive integer');
  }

  /** A positive number. */
  num(key: string, fallback?: number): number {
    return this.get(key, fallback, (v) => typeof v === 'number' && v > 0 && Number.isFinite(v), 'a positive number');
  }

  bool(key: string, fallback?: boolean): boolean {
    return this.get(key, fallback, (v) => typeof v === 'boolean', 'true or false');
  }

  str(key: string, fallback?: string): string {
    return this.get(key, fallback, (v) => typeof v === 'string', 'a string');
  }

  tokenIds(key: string): number[] {
    const v = this.obj[key];
    const ids = Array.isArray(v) ? v : [v];
    if (ids.length === 0 || !ids.every((id) => Number.isSafeInteger(id) && id >= 0)) {
      throw this.error(key, `expected a token id or a list of them, got ${JSON.stringify(v)}`);
    }
    return ids;
  }

  object(key: string): Fields | null {
    if (!this.has(key)) return null;
    const v = this.obj[key];
    if (!isObject(v)) throw this.error(key, `expected an object, got ${JSON.stringify(v)}`);
    return new Fields(v, this.source, `${this.prefix}${key}.`);
  }
}

/**
 * The token ids that end generation, as Hugging Face's generate takes them: `eos_token_id` (one id or a list) of
 * generation_config.json when the folder has one and it says, else config.json's. Ids outside the vocabulary could
 * never be chosen (generation would silently never stop): they are refused.
 */
export function readEosTokenIds(dir: string, cfg: LlamaConfig): number[] {
  const file = path.join(dir, 'generation_config.json');
  let ids = [...cfg.eosTokenIds];
  let source = `${cfg.source}: eos_token_id`;
  if (checkRegularFile(file, 'a generation_config.json', (m) => new ConfigError(m), true)) {
    let obj: unknown;
    try {
      obj = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new ConfigError(`${file}: cannot read generation config: ${(e as Error).message}`);
    }
    if (!isObject(obj)) throw new ConfigError(`${file}: generation config is not a JSON object`);
    const f = new Fields(obj, file);
    if (f.has('eos_token_id')) {
      ids = f.tokenIds('eos_token_id');
      source = `${file}: eos_token_id`;
    }
  }
  const outside = ids.filter((id) => id >= cfg.vocabSize);
  if (outside.length) throw new ConfigError(`${source}: ${outside.join(', ')} outside the vocabulary (0..${cfg.vocabSize - 1})`);
  return ids;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isDirectory(p: string): boolean {
  return fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
}

// ---------------------------------------------------------------------------------------------------------------
// Built-in configs, so benchmarks can build a model of the real size without downloading one.

/** meta-llama/Llama-3.2-1B's config.json. */
const llama32_1bJson = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 128256,
  hidden_size: 2048,
  intermediate_size: 8192,
  num_hidden_layers: 16,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 64,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 131072,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  bos_token_id: 128000,
  eos_token_id: 128001,
  rope_theta: 500000,
  rope_scaling: {
    rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192,
  },
};

export const LLAMA_3_2_1B: LlamaConfig = llamaConfigFromJson(llama32_1bJson, 'builtin:llama-3.2-1b');

/** A small Llama-3-shaped config (GQA, llama3 rope, tied) for quick benchmark runs and tests on slow devices. */
const llamaTinyJson = {
  ...llama32_1bJson, vocab_size: 4096, hidden_size: 256, intermediate_size: 704, num_hidden_layers: 2,
  num_attention_heads: 8, num_key_value_heads: 2, head_dim: 32, max_position_embeddings: 2048,
  // Llama 3's special tokens are past this vocabulary: no EOS (random weights have no end of text anyway).
  bos_token_id: null, eos_token_id: null,
};

const builtins: Record<string, LlamaConfig> = {
  'llama-3.2-1b': LLAMA_3_2_1B,
  'llama-tiny': llamaConfigFromJson(llamaTinyJson, 'builtin:llama-tiny'),
};

export function builtinConfig(name: string): LlamaConfig {
  const cfg = Object.hasOwn(builtins, name.toLowerCase()) ? builtins[name.toLowerCase()] : undefined;
  if (!cfg) throw new ConfigError(`unknown built-in config '${name}' (known: ${Object.keys(builtins).join(', ')})`);
  return cfg;
}

/** A built-in config as Hugging Face's config.json spells it (a fresh copy), for writing checkpoints of its shape. */
export function builtinConfigJson(name: string): Record<string, unknown> {
  builtinConfig(name); // the same error for an unknown name
  const json: Record<string, object> = { 'llama-3.2-1b': llama32_1bJson, 'llama-tiny': llamaTinyJson };
  return structuredClone(json[name.toLowerCase()]) as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------------------------
// The checkpoint a config implies.

export interface ExpectedTensor {
  readonly name: string;
  readonly shape: readonly number[];
}

/** Hugging Face tensor names and shapes, in model order; weights are [out, in] as nn.Linear stores them. */
export function expectedLlamaTensors(cfg: LlamaConfig): ExpectedTensor[] {
  const { vocabSize: V, hiddenSize: H, intermediateSize: I, headDim: D } = cfg;
  const [Q, KV] = [cfg.numHeads * D, cfg.numKvHeads * D];
  const out: ExpectedTensor[] = [{ name: 'model.embed_tokens.weight', shape: [V, H] }];
  const linear = (name: string, outputs: number, inputs: number, bias: boolean) => {
    out.push({ name: `${name}.weight`, shape: [outputs, inputs] });
    if (bias) out.push({ name: `${name}.bias`, shape: [outputs] });
  };
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    out.push({ name: `${p}.input_layernorm.weight`, shape: [H] });
    linear(`${p}.self_attn.q_proj`, Q, H, cfg.attentionBias);
    linear(`${p}.self_attn.k_proj`, KV, H, cfg.attentionBias);
    linear(`${p}.self_attn.v_proj`, KV, H, cfg.attentionBias);
    linear(`${p}.self_attn.o_proj`, H, Q, cfg.attentionBias);
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [H] });
    linear(`${p}.mlp.gate_proj`, I, H, cfg.mlpBias);
    linear(`${p}.mlp.up_proj`, I, H, cfg.mlpBias);
    linear(`${p}.mlp.down_proj`, H, I, cfg.mlpBias);
  }
  out.push({ name: 'model.norm.weight', shape: [H] });
  if (!cfg.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [V, H] });
  return out;
}

/** Tensors a checkpoint may hold that the model does not read: rotary tables older exports saved. */
const IGNORED_TENSORS = /(^|\.)rotary_emb\.inv_freq$/;

/**
 * Throws one WeightsError listing every missing tensor, every tensor the config does not read (with the config
 * key that would read it where there is one: a layer past num_hidden_layers, a bias without attention_bias or
 * mlp_bias) and every shape that disagrees with the config.
 */
export function checkLlamaWeights(cfg: LlamaConfig, checkpoint: TensorSource): void {
  const problems: string[] = [];
  const expected = expectedLlamaTensors(cfg);
  const wanted = new Set(expected.map((t) => t.name));
  // Layers the checkpoint holds, against num_hidden_layers.
  const layers = new Set<number>();
  for (const t of checkpoint.tensors) {
    const m = /^model\.layers\.(\d+)\./.exec(t.name);
    if (m) layers.add(Number(m[1]));
  }
  const held = layers.size ? Math.max(...layers) + 1 : 0;
  if (held !== cfg.numLayers) {
    const which = held === 0 ? 'no layers' : `${held} layer${held === 1 ? '' : 's'} (model.layers.0-${held - 1})`;
    problems.push(`the checkpoint holds ${which}, the config's num_hidden_layers is ${cfg.numLayers}`);
  }
  for (const want of expected) {
    if (!checkpoint.has(want.name)) {
      // Whole layers past the checkpoint's are said once above.
      const layer = /^model\.layers\.(\d+)\./.exec(want.name);
      if (layer && Number(layer[1]) >= held) continue;
      const key = /\.bias$/.test(want.name) ? (/\.mlp\./.test(want.name) ? ' (mlp_bias is true)' : ' (attention_bias is true)') : '';
      problems.push(`missing tensor '${want.name}' ${formatShape(want.shape)}${key}`);
      continue;
    }
    const got = checkpoint.info(want.name);
    if (formatShape(got.shape) !== formatShape(want.shape)) {
      problems.push(`tensor '${want.name}': expected shape ${formatShape(want.shape)}, found ${formatShape(got.shape)} `
        + `in ${got.file}`);
    }
  }
  const extra = checkpoint.tensors.filter((t) => !wanted.has(t.name) && !IGNORED_TENSORS.test(t.name));
  for (const t of extra) {
    const layer = /^model\.layers\.(\d+)\./.exec(t.name);
    if (layer && Number(layer[1]) >= cfg.numLayers) continue; // said once above
    const why = /\.(q|k|v|o)_proj\.bias$/.test(t.name) ? ' (attention_bias is false)'
      : /\.mlp\.\w+_proj\.bias$/.test(t.name) ? ' (mlp_bias is false)'
        : t.name === 'lm_head.weight' && cfg.tieWordEmbeddings ? ' (tie_word_embeddings is true)' : '';
    problems.push(`tensor '${t.name}' in ${t.file} is not part of the model${why}`);
  }
  if (problems.length > 0) {
    throw new WeightsError(`${checkpoint.location} does not match the config ${cfg.source}:\n  ${problems.join('\n  ')}`);
  }
}
