import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  builtinConfig, ConfigError, expectedLlamaTensors, LLAMA_3_2_1B, llamaConfigFromJson, readLlamaConfig,
} from '../../runtime/config.ts';
import { fixturesDir } from '../fixtures-dir.ts';

const fixtures = fixturesDir + '/';
const configFile = (name: string) => path.join(fixtures, name, 'config.json');
const tinyJson: Record<string, unknown> = JSON.parse(fs.readFileSync(configFile('tiny-llama'), 'utf8'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-config-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** tiny-llama's config.json with some keys changed (undefined deletes a key). */
function tinyWith(changes: Record<string, unknown>): Record<string, unknown> {
  const obj = { ...tinyJson, ...changes };
  for (const [k, v] of Object.entries(changes)) if (v === undefined) delete obj[k];
  return obj;
}

/** Expects a ConfigError whose message mentions every one of `parts`. */
function throwsNaming(fn: () => unknown, ...parts: string[]): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, ConfigError);
    const msg = (e as Error).message;
    for (const part of parts) assert.ok(msg.includes(part), `message should mention ${JSON.stringify(part)}: ${msg}`);
    return;
  }
  throw new Error('expected a ConfigError, but nothing was thrown');
}

test('tiny-llama: rope_parameters form, GQA, explicit head_dim, separate lm_head', () => {
  const cfg = readLlamaConfig(path.join(fixtures, 'tiny-llama'));
  assert.equal(cfg, {
    source: configFile('tiny-llama'),
    vocabSize: 512, hiddenSize: 128, intermediateSize: 352, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 32,
    rmsNormEps: 1e-5, maxPositionEmbeddings: 512, tieWordEmbeddings: false, attentionBias: false, mlpBias: false,
    torchDtype: 'float32', bosTokenId: 1, eosTokenIds: [2],
    rope: { theta: 10000, type: 'default', factor: 1, lowFreqFactor: 1, highFreqFactor: 1, originalMaxPositionEmbeddings: 512 },
  });
  assert.ok(expectedLlamaTensors(cfg).some((t) => t.name === 'lm_head.weight'));
});

test('tiny-llama3: classic rope_theta + rope_scaling form, llama3 scaling, tied embeddings', () => {
  const cfg = readLlamaConfig(configFile('tiny-llama3'));
  assert.equal(cfg.rope, {
    theta: 500000, type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64,
  });
  assert.is(cfg.tieWordEmbeddings, true);
  assert.equal([cfg.numHeads, cfg.numKvHeads, cfg.headDim], [6, 2, 32]);
  assert.not.ok(expectedLlamaTensors(cfg).some((t) => t.name === 'lm_head.weight'));
});

test('tiny-llama3-bf16: the rope_parameters form gives the same rope as the classic form', () => {
  const bf16 = readLlamaConfig(path.join(fixtures, 'tiny-llama3-bf16'));
  const f32 = readLlamaConfig(path.join(fixtures, 'tiny-llama3'));
  assert.equal(bf16.rope, f32.rope);
  assert.is(bf16.torchDtype, 'bfloat16');
  assert.equal({ ...bf16, source: '', torchDtype: '' }, { ...f32, source: '', torchDtype: '' });
});

test('defaults: kv heads, head_dim from hidden/heads, rope theta, untied, dtype; torch_dtype and eos lists', () => {
  const cfg = llamaConfigFromJson(tinyWith({
    num_key_value_heads: undefined, head_dim: undefined, rope_parameters: undefined, tie_word_embeddings: undefined,
    dtype: undefined, eos_token_id: [2, 7], bos_token_id: null,
  }), 'test');
  assert.equal([cfg.numKvHeads, cfg.headDim, cfg.rope.theta, cfg.rope.type], [4, 32, 10000, 'default']);
  assert.equal([cfg.tieWordEmbeddings, cfg.torchDtype, cfg.eosTokenIds, cfg.bosTokenId], [false, 'float32', [2, 7], null]);
  assert.is(llamaConfigFromJson(tinyWith({ dtype: undefined, torch_dtype: 'float16' }), 'test').torchDtype, 'float16');
});

test('an explicit head_dim wins over hidden/heads and sets the attention shapes', () => {
  const cfg = llamaConfigFromJson(tinyWith({ head_dim: 64 }), 'test');
  assert.is(cfg.headDim, 64);
  const shapes = new Map(expectedLlamaTensors(cfg).map((t) => [t.name, t.shape]));
  assert.equal(shapes.get('model.layers.0.self_attn.q_proj.weight'), [256, 128]);
  assert.equal(shapes.get('model.layers.0.self_attn.k_proj.weight'), [128, 128]);
  assert.equal(shapes.get('model.layers.0.self_attn.o_proj.weight'), [128, 256]);
  // head_dim also lifts the divisibility requirement on hidden_size.
  assert.is(llamaConfigFromJson(tinyWith({ hidden_size: 100, head_dim: 32 }), 'test').headDim, 32);
});

test('classic rope_scaling: null means unscaled, and older files say `type`', () => {
  const classic = { rope_parameters: undefined, rope_theta: 20000 };
  const none = llamaConfigFromJson(tinyWith({ ...classic, rope_scaling: null }), 'test');
  assert.equal([none.rope.theta, none.rope.type, none.rope.factor], [20000, 'default', 1]);
  const linear = llamaConfigFromJson(tinyWith({ ...classic, rope_scaling: { type: 'linear', factor: 2 } }), 'test');
  assert.equal([linear.rope.theta, linear.rope.type, linear.rope.factor], [20000, 'linear', 2]);
});

test('biases, dynamic rope and keys that change nothing at inference', () => {
  const cfg = llamaConfigFromJson(tinyWith({ attention_bias: true, mlp_bias: true, pretraining_tp: 2, attention_dropout: 0.1 }), 'test');
  assert.equal([cfg.attentionBias, cfg.mlpBias], [true, true]);
  const names = expectedLlamaTensors(cfg).map((t) => t.name);
  for (const n of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) assert.ok(names.includes(`model.layers.1.self_attn.${n}.bias`), n);
  for (const n of ['gate_proj', 'up_proj', 'down_proj']) assert.ok(names.includes(`model.layers.1.mlp.${n}.bias`), n);
  const shapes = new Map(expectedLlamaTensors(cfg).map((t) => [t.name, t.shape]));
  assert.equal([shapes.get('model.layers.0.self_attn.k_proj.bias'), shapes.get('model.layers.0.mlp.down_proj.bias')], [[64], [128]]);
  const dynamic = llamaConfigFromJson(tinyWith({ rope_parameters: { rope_type: 'dynamic', rope_theta: 1e4, factor: 2 } }), 'test');
  assert.equal(dynamic.rope, { theta: 1e4, type: 'dynamic', factor: 2, lowFreqFactor: 1, highFreqFactor: 1, originalMaxPositionEmbeddings: 512 });
});

test('LLAMA_3_2_1B is the real model, and builtinConfig finds it', () => {
  assert.equal({ ...LLAMA_3_2_1B, source: '' }, {
    source: '', vocabSize: 128256, hiddenSize: 2048, intermediateSize: 8192, numLayers: 16, numHeads: 32, numKvHeads: 8,
    headDim: 64, rmsNormEps: 1e-5, maxPositionEmbeddings: 131072, tieWordEmbeddings: true, attentionBias: false,
    mlpBias: false, torchDtype: 'bfloat16',
    bosTokenId: 128000, eosTokenIds: [128001],
    rope: { theta: 500000, type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
  });
  assert.is(builtinConfig('llama-3.2-1b'), LLAMA_3_2_1B);
  const tensors = expectedLlamaTensors(LLAMA_3_2_1B);
  assert.is(tensors.length, 1 + 16 * 9 + 1);
  const params = tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  assert.is(params, 1_235_814_400); // Llama-3.2-1B's published parameter count
  throwsNaming(() => builtinConfig('llama-9b'), "'llama-9b'", 'llama-3.2-1b');
  throwsNaming(() => builtinConfig('constructor'), "'constructor'");
  throwsNaming(() => builtinConfig('__proto__'), "'__proto__'");
});

test('errors name the key and the file', () => {
  const cases: [string, Record<string, unknown>, string[]][] = [
    ['missing key', { vocab_size: undefined }, ['vocab_size: missing']],
    ['wrong type', { hidden_size: '128' }, ['hidden_size: expected a positive integer, got "128"']],
    ['not llama', { model_type: 'mistral' }, ['model_type', "'mistral'"]],
    ['hidden by heads', { head_dim: undefined, hidden_size: 130 }, ['num_attention_heads', 'hidden_size 130', 'head_dim']],
    ['heads by kv heads', { num_key_value_heads: 3 }, ['num_key_value_heads', 'num_attention_heads 4', '3']],
    ['unsupported rope', { rope_parameters: { rope_type: 'yarn', rope_theta: 1e4, factor: 4 } }, ['rope_parameters.rope_type', "'yarn'"]],
    ['rope without theta', { rope_parameters: { rope_type: 'default' } }, ['rope_parameters.rope_theta: missing']],
    ['old-style unsupported rope', { rope_parameters: undefined, rope_scaling: { type: 'longrope', factor: 2 } }, ['rope_scaling.type', "'longrope'"]],
    ['activation', { hidden_act: 'gelu' }, ['hidden_act', "'gelu'", "'silu'"]],
    ['architecture', { architectures: ['MistralForCausalLM'] }, ['architectures', "'MistralForCausalLM'"]],
    ['partial rotary', { partial_rotary_factor: 0.5 }, ['partial_rotary_factor', '0.5']],
    ['quantized', { quantization_config: { quant_method: 'gptq' } }, ['quantization_config', 'quantized']],
    ['bias flag', { attention_bias: 'yes' }, ['attention_bias: expected true or false']],
    ['llama3 without factors', { rope_parameters: { rope_type: 'llama3', rope_theta: 5e5, factor: 8 } }, ['rope_parameters.low_freq_factor: missing']],
    ['llama3 band reversed', {
      rope_parameters: { rope_type: 'llama3', rope_theta: 5e5, factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 64 },
    }, ['rope_parameters.high_freq_factor']],
    ['bad eos', { eos_token_id: 'end' }, ['eos_token_id']],
  ];
  for (const [label, changes, parts] of cases) {
    const file = path.join(tmp, `${label.replaceAll(' ', '-')}.json`);
    fs.writeFileSync(file, JSON.stringify(tinyWith(changes)));
    throwsNaming(() => readLlamaConfig(file), file, ...parts);
  }
  const broken = path.join(tmp, 'broken.json');
  fs.writeFileSync(broken, '{"vocab_size": ');
  throwsNaming(() => readLlamaConfig(broken), broken, 'cannot read config');
  throwsNaming(() => readLlamaConfig(tmp), path.join(tmp, 'config.json'), 'cannot open: no such file');
  throwsNaming(() => llamaConfigFromJson([1], 'builtin:x'), 'builtin:x', 'not a JSON object');
});

test.run();
