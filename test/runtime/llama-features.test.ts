// Every LlamaConfig feature the math depends on, implemented: projection biases (attention_bias, mlp_bias), a
// head_dim other than hidden / heads, and the rope types default, linear, llama3 and dynamic, each checked against
// a plain float64 Llama forward pass written here from Hugging Face's modeling_llama (independent of the tensor
// API, the passes and the kernels), on small random checkpoints written with writeSafetensors. Also: a checkpoint
// with zero biases gives the fixture's Hugging Face logits, and checkpoints that do not match their config (missing,
// extra or misshapen tensors, another layer count) are refused with every tensor named.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { forwardLogits } from '../../compiler/open-session.ts';
import { DType } from '../../ir/dtype.ts';
import { expectedLlamaTensors, LlamaConfig, llamaConfigFromJson } from '../../runtime/config.ts';
import { DeviceKind } from '../../runtime/device.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { readSafetensors, TensorToWrite, WeightsError, writeSafetensors } from '../../runtime/safetensors.ts';
import { relativeError } from '../backends/compare.ts';
import { Rng } from '../backends/rng.ts';

const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-llama-features-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

// ---- a float64 Llama forward pass, as Hugging Face's LlamaForCausalLM computes it ----

type Weights = ReadonlyMap<string, Float64Array>;

/** y[s] = x[s]·Wᵀ + b for W [out, in]. */
function linear(x: Float64Array[], w: Float64Array, b: Float64Array | undefined, out: number): Float64Array[] {
  return x.map((row) => {
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let acc = b ? b[o] : 0;
      for (let i = 0; i < row.length; i++) acc += row[i] * w[o * row.length + i];
      y[o] = acc;
    }
    return y;
  });
}

function rmsNorm(x: Float64Array[], w: Float64Array, eps: number): Float64Array[] {
  return x.map((row) => {
    const ms = row.reduce((a, v) => a + v * v, 0) / row.length;
    const inv = 1 / Math.sqrt(ms + eps);
    return row.map((v, i) => v * inv * w[i]);
  });
}

/** inv_freq of each rotary pair, for a forward pass over `seqLen` positions (transformers' rope init functions). */
function inverseFrequencies(cfg: LlamaConfig, seqLen: number): number[] {
  const d = cfg.headDim;
  const r = cfg.rope;
  let base = r.theta;
  if (r.type === 'dynamic' && seqLen > r.originalMaxPositionEmbeddings) {
    base = r.theta * ((r.factor * seqLen) / r.originalMaxPositionEmbeddings - (r.factor - 1)) ** (d / (d - 2));
  }
  const inv = Array.from({ length: d / 2 }, (_, i) => 1 / base ** ((2 * i) / d));
  if (r.type === 'linear') return inv.map((f) => f / r.factor);
  if (r.type !== 'llama3') return inv;
  const lowWavelen = r.originalMaxPositionEmbeddings / r.lowFreqFactor;
  const highWavelen = r.originalMaxPositionEmbeddings / r.highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / r.factor;
    const smooth = (r.originalMaxPositionEmbeddings / wavelen - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
    return (1 - smooth) * (f / r.factor) + smooth * f;
  });
}

/** rotate_half rope on each head of rows [S, heads·d] at positions 0..S-1. */
function rope(x: Float64Array[], heads: number, d: number, inv: number[]): Float64Array[] {
  return x.map((row, pos) => {
    const out = new Float64Array(row.length);
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < d / 2; i++) {
        const [a, b] = [row[h * d + i], row[h * d + i + d / 2]];
        const [c, s] = [Math.cos(pos * inv[i]), Math.sin(pos * inv[i])];
        out[h * d + i] = a * c - b * s;
        out[h * d + i + d / 2] = b * c + a * s;
      }
    }
    return out;
  });
}

/** Logits [S, vocab] of one forward pass over `ids` from an empty cache. */
function referenceLogits(cfg: LlamaConfig, w: Weights, ids: number[]): Float64Array[] {
  const { hiddenSize: H, headDim: D, numHeads: NH, numKvHeads: NKV, intermediateSize: I, rmsNormEps: eps } = cfg;
  const get = (n: string) => {
    const t = w.get(n);
    if (!t) throw new Error(`reference: no tensor ${n}`);
    return t;
  };
  const bias = (n: string, on: boolean) => (on ? get(n) : undefined);
  const S = ids.length;
  const embed = get('model.embed_tokens.weight');
  let x = ids.map((id) => embed.slice(id * H, (id + 1) * H));
  const inv = inverseFrequencies(cfg, S);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const proj = (h: Float64Array[], n: string, out: number, on: boolean) => linear(h, get(`${p}.${n}.weight`), bias(`${p}.${n}.bias`, on), out);
    const h = rmsNorm(x, get(`${p}.input_layernorm.weight`), eps);
    const q = rope(proj(h, 'self_attn.q_proj', NH * D, cfg.attentionBias), NH, D, inv);
    const k = rope(proj(h, 'self_attn.k_proj', NKV * D, cfg.attentionBias), NKV, D, inv);
    const v = proj(h, 'self_attn.v_proj', NKV * D, cfg.attentionBias);
    const attn = Array.from({ length: S }, () => new Float64Array(NH * D));
    for (let head = 0; head < NH; head++) {
      const kv = Math.floor(head / (NH / NKV));
      for (let s = 0; s < S; s++) {
        const scores = Array.from({ length: s + 1 }, (_, t) => {
          let dot = 0;
          for (let i = 0; i < D; i++) dot += q[s][head * D + i] * k[t][kv * D + i];
          return dot / Math.sqrt(D);
        });
        const m = Math.max(...scores);
        const e = scores.map((z) => Math.exp(z - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let t = 0; t <= s; t++) for (let i = 0; i < D; i++) attn[s][head * D + i] += (e[t] / z) * v[t][kv * D + i];
      }
    }
    const o = proj(attn, 'self_attn.o_proj', H, cfg.attentionBias);
    x = x.map((row, s) => row.map((val, i) => val + o[s][i]));
    const h2 = rmsNorm(x, get(`${p}.post_attention_layernorm.weight`), eps);
    const gate = proj(h2, 'mlp.gate_proj', I, cfg.mlpBias);
    const up = proj(h2, 'mlp.up_proj', I, cfg.mlpBias);
    const act = gate.map((g, s) => g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * up[s][i]));
    const down = proj(act, 'mlp.down_proj', H, cfg.mlpBias);
    x = x.map((row, s) => row.map((val, i) => val + down[s][i]));
  }
  const head = get(cfg.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
  return linear(rmsNorm(x, get('model.norm.weight'), eps), head, undefined, cfg.vocabSize);
}

// ---- small random checkpoints ----

/** A Llama config.json: 2 layers, hidden 24, 3 heads of 10 (not 24 / 3) over 1 kv head, vocab 50. */
function smallConfig(changes: Record<string, unknown>): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu', vocab_size: 50, hidden_size: 24,
    intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 3, num_key_value_heads: 1, head_dim: 10,
    rms_norm_eps: 1e-5, max_position_embeddings: 64, tie_word_embeddings: false, attention_bias: false, mlp_bias: false,
    rope_theta: 10000, eos_token_id: 2, ...changes,
  };
}

/** Writes config.json and random f32 weights (biases, norms and all) into a new folder; returns it and the weights. */
function writeCheckpoint(name: string, json: Record<string, unknown>, seed: number, extra: Record<string, TensorToWrite> = {}): { dir: string; weights: Map<string, Float64Array> } {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(json));
  const cfg = llamaConfigFromJson(json, name);
  const rng = new Rng(seed);
  const tensors: Record<string, TensorToWrite> = {};
  const weights = new Map<string, Float64Array>();
  for (const t of expectedLlamaTensors(cfg)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    // Norm weights near 1, everything else (biases large enough to matter) around 0.
    const values = Float32Array.from({ length: n }, () => (t.name.endsWith('layernorm.weight') || t.name === 'model.norm.weight' ? 1 + 0.1 * rng.normal() : 0.3 * rng.normal()));
    tensors[t.name] = { dtype: DType.F32, shape: t.shape, data: values };
    weights.set(t.name, Float64Array.from(values));
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), { ...tensors, ...extra });
  return { dir, weights };
}

const ids = [3, 17, 42, 8, 0, 49, 21];

async function checkAgainstReference(name: string, json: Record<string, unknown>, backends: DeviceKind[] = ['cpu', 'reference']): Promise<void> {
  const { dir, weights } = writeCheckpoint(name, json, name.length * 7 + 1);
  const model = loadLlama(dir);
  const want = referenceLogits(model.cfg, weights, ids).flatMap((r) => [...r]);
  for (const backend of backends) {
    const got = await forwardLogits(model, ids, backend);
    const err = relativeError(got.data, want);
    const tolerance = backend === 'cpu' || backend === 'reference' ? 1e-5 : 1e-4;
    assert.ok(err < tolerance, `${name} on ${backend}: relative error ${err}`);
  }
}

test('attention and MLP biases, head_dim 10 ≠ 24 / 3, GQA: logits as the float64 reference computes them', async () => {
  await checkAgainstReference('biases', smallConfig({ attention_bias: true, mlp_bias: true }));
});

test('the biases matter: the same weights without them give other logits', async () => {
  const { dir, weights } = writeCheckpoint('biases-matter', smallConfig({ attention_bias: true, mlp_bias: true }), 99);
  const withBias = loadLlama(dir);
  const noBias = { ...withBias.cfg, attentionBias: false, mlpBias: false };
  const want = referenceLogits(withBias.cfg, weights, ids).flatMap((r) => [...r]);
  const without = referenceLogits(noBias, weights, ids).flatMap((r) => [...r]);
  assert.ok(relativeError(without, want) > 0.05, 'the biases change the reference logits');
  const got = await forwardLogits(withBias, ids, 'cpu');
  assert.ok(relativeError(got.data, want) < 1e-5);
});

test('rope types: linear, llama3, and dynamic past its original context (tied embeddings)', async () => {
  await checkAgainstReference('rope-linear', smallConfig({ rope_scaling: { rope_type: 'linear', factor: 4 }, tie_word_embeddings: true }));
  await checkAgainstReference('rope-llama3', smallConfig({
    rope_theta: 500000,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
  }));
  // Seven positions over an original context of 4: the base is stretched for this forward pass (which matters).
  const dynamic = smallConfig({ rope_scaling: { rope_type: 'dynamic', factor: 2, original_max_position_embeddings: 4 } });
  await checkAgainstReference('rope-dynamic', dynamic);
  const cfg = llamaConfigFromJson(dynamic, 'dynamic');
  const w = writeCheckpoint('rope-dynamic-2', dynamic, 5).weights;
  const stretched = referenceLogits(cfg, w, ids).flatMap((r) => [...r]);
  const plain = referenceLogits({ ...cfg, rope: { ...cfg.rope, type: 'default' } }, w, ids).flatMap((r) => [...r]);
  assert.ok(relativeError(plain, stretched) > 1e-3, 'the stretched base changes the logits');
  // Within the original context, dynamic is the default rope.
  await checkAgainstReference('rope-dynamic-within', smallConfig({ rope_parameters: { rope_type: 'dynamic', rope_theta: 10000, factor: 3 } }));
});

test('biases on webgpu too (fused into the projections\' epilogues)', async () => {
  const backends: DeviceKind[] = [];
  try {
    const { openDevice } = await import('../../runtime/devices/open.ts');
    (await openDevice('webgpu')).destroy();
    backends.push('webgpu');
  } catch {
    // no WebGPU here
  }
  if (backends.length) await checkAgainstReference('biases-gpu', smallConfig({ attention_bias: true, mlp_bias: true }), backends);
});

test('tiny-llama with zero biases added gives the fixture\'s Hugging Face logits', async () => {
  const src = path.join(fixtures, 'tiny-llama');
  const json = { ...JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')), attention_bias: true, mlp_bias: true };
  const dir = path.join(tmp, 'tiny-llama-zero-bias');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(json));
  const file = readSafetensors(path.join(src, 'model.safetensors'));
  const tensors: Record<string, TensorToWrite> = {};
  for (const t of file.tensors) tensors[t.name] = { dtype: t.dtype, shape: t.shape, data: file.tensor(t.name).data };
  const cfg = llamaConfigFromJson(json, 'zero-bias');
  for (const t of expectedLlamaTensors(cfg)) {
    if (t.name.endsWith('.bias')) tensors[t.name] = { dtype: DType.F32, shape: t.shape, data: new Float32Array(t.shape[0]) };
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  const golden = readSafetensors(path.join(src, 'golden.safetensors'));
  const goldenIds = [...golden.tensor('input_ids').data];
  const got = await forwardLogits(loadLlama(dir), goldenIds, 'cpu');
  assert.ok(relativeError(got.data, golden.tensor('logits').data) < 1e-4);
});

test('NaN and infinities in weights: a warning names each tensor as it is read (f32 and bf16)', async () => {
  const { dir } = writeCheckpoint('nan-weights', smallConfig({}), 6);
  const file = path.join(dir, 'model.safetensors');
  const st = readSafetensors(file);
  const tensors: Record<string, TensorToWrite> = {};
  for (const t of st.tensors) {
    const data = Float32Array.from(st.tensor(t.name).data);
    if (t.name === 'model.layers.1.mlp.up_proj.weight') data.set([NaN, 1, Infinity, NaN], 5);
    if (t.name === 'model.norm.weight') data[0] = -Infinity;
    tensors[t.name] = { dtype: DType.BF16, shape: t.shape, data };
  }
  writeSafetensors(file, tensors);
  const warnings: string[] = [];
  const model = loadLlama(dir, { warn: (m) => warnings.push(m) });
  const logits = await forwardLogits(model, ids, 'cpu');
  assert.ok([...logits.data].some(Number.isNaN), 'NaN weights give NaN logits');
  assert.equal(warnings.sort(), [
    `tensor 'model.layers.1.mlp.up_proj.weight' in ${file} holds 2 NaN and 1 infinite values (the first at element 5): the model's outputs will be NaN or infinite`,
    `tensor 'model.norm.weight' in ${file} holds 0 NaN and 1 infinite values (the first at element 0): the model's outputs will be NaN or infinite`,
  ]);
});

/** Expects loadLlama(dir) to throw a WeightsError mentioning every one of `parts`. */
function refuses(dir: string, ...parts: string[]): void {
  try {
    loadLlama(dir);
  } catch (e) {
    assert.instance(e, WeightsError);
    for (const part of parts) assert.ok((e as Error).message.includes(part), `message should mention ${JSON.stringify(part)}:\n${(e as Error).message}`);
    return;
  }
  throw new Error(`${dir} loaded, but should have been refused`);
}

test('checkpoints that do not match their config are refused, each tensor named', () => {
  const f32 = (shape: number[]): TensorToWrite => ({ dtype: DType.F32, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
  // Biases the config does not ask for, and a stray tensor.
  const extra = writeCheckpoint('extra', smallConfig({}), 1, {
    'model.layers.0.self_attn.q_proj.bias': f32([30]), 'model.layers.1.mlp.up_proj.bias': f32([40]), 'model.vision.weight': f32([2]),
  });
  refuses(extra.dir, "'model.layers.0.self_attn.q_proj.bias'", '(attention_bias is false)', "'model.layers.1.mlp.up_proj.bias'",
    '(mlp_bias is false)', "'model.vision.weight'", 'not part of the model');
  // A checkpoint of three layers under a config of two, and one of two under a config of three.
  const three = writeCheckpoint('three-layers', smallConfig({ num_hidden_layers: 3 }), 2);
  fs.writeFileSync(path.join(three.dir, 'config.json'), JSON.stringify(smallConfig({})));
  refuses(three.dir, 'holds 3 layers', "num_hidden_layers is 2");
  const two = writeCheckpoint('two-layers', smallConfig({}), 3);
  fs.writeFileSync(path.join(two.dir, 'config.json'), JSON.stringify(smallConfig({ num_hidden_layers: 3 })));
  refuses(two.dir, 'holds 2 layers', "num_hidden_layers is 3");
  // Biases asked for and missing.
  const missing = writeCheckpoint('missing-bias', smallConfig({}), 4);
  fs.writeFileSync(path.join(missing.dir, 'config.json'), JSON.stringify(smallConfig({ mlp_bias: true })));
  refuses(missing.dir, "missing tensor 'model.layers.0.mlp.gate_proj.bias' [40] (mlp_bias is true)");
  // Old exports' rotary tables are not part of the model either, but harmless: accepted.
  const inv = writeCheckpoint('inv-freq', smallConfig({}), 5, { 'model.layers.0.self_attn.rotary_emb.inv_freq': f32([5]) });
  loadLlama(inv.dir);
});

test.run();
