// Next-token selection as graph ops (compiler/next-token.ts): the `random` op computes the reference's bits in
// every kernel, its numbers look uniform and independent, and the sampler keeps the top-p mass and draws from
// it in proportion (checked by counting draws over many seeds), the same on the cpu kernels and the reference.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compile } from '../../compiler/compile.ts';
import { greedyToken, sampledToken } from '../../compiler/next-token.ts';
import { random, Tensor } from '../../compiler/tensor.ts';
import { DType } from '../../ir/dtype.ts';
import { hostTensor, HostTensor } from '../../ir/host-tensor.ts';
import { randomUniform } from '../../ir/random.ts';

const i32 = (values: number[], shape = [values.length]) => hostTensor(DType.I32, shape, values);
const f32 = (values: number[], shape = [values.length]) => hostTensor(DType.F32, shape, values);

const keys = [0, 1, -1, 11, 2147483647, -2147483648, 123456789];

test('random: the cpu kernels give the reference bits for extreme keys and 4096 counters', () => {
  const counters = Array.from({ length: 4096 }, (_, i) => i * 7919 - 1000);
  for (const backend of ['cpu', 'reference'] as const) {
    const f = compile((key: Tensor, counter: Tensor) => random(key, counter), { backend });
    for (const k of keys) {
      const got = f(i32([k], []), i32(counters)) as HostTensor;
      const want = counters.map((c) => randomUniform(k, c));
      assert.equal(Array.from(got.data), want, `${backend}, key ${k}`);
    }
  }
});

test('random: uniform in [0, 1), neighbouring counters and seeds uncorrelated', () => {
  const n = 100000;
  const xs = Array.from({ length: n }, (_, c) => randomUniform(11, c));
  const ys = Array.from({ length: n }, (_, c) => randomUniform(12, c));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  assert.ok(Math.abs(mean - 0.5) < 0.005, `mean ${mean}`);
  // Correlation of independent uniforms has standard deviation 1/sqrt(n) ≈ 0.003: allow 4 of them.
  const corr = (a: number[], b: number[]) => a.reduce((s, x, i) => s + (x - 0.5) * (b[i] - 0.5), 0) / a.length * 12;
  assert.ok(Math.abs(corr(xs.slice(1), xs.slice(0, -1))) < 0.013, 'lag-1 correlation');
  assert.ok(Math.abs(corr(xs, ys)) < 0.013, 'correlation between seeds 11 and 12');
  const bins = new Array(10).fill(0);
  for (const x of xs) bins[Math.floor(x * 10)]++;
  // Each bin holds 10000 ± 95 (binomial): allow 5 standard deviations.
  assert.ok(bins.every((b) => Math.abs(b - n / 10) < 475), bins.join(' '));
});

const logits = [2.0, 1.0, 0.5, 0.0, -1.0, -3.0, 1.5, 0.25];
const softmax = (l: number[], t: number) => {
  const e = l.map((x) => Math.exp((x - Math.max(...l)) / t));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
};

function draws(backend: 'cpu' | 'reference', t: number, topP: number, n: number): number[] {
  const f = compile((l: Tensor, temperature: Tensor, p: Tensor, seed: Tensor, counter: Tensor) =>
    sampledToken(l, temperature, p, seed, counter), { backend });
  const counts = new Array(logits.length).fill(0);
  for (let seed = 0; seed < n; seed++) {
    const tok = f(f32(logits), f32([t], []), f32([topP], []), i32([seed], []), i32([17], [])) as HostTensor;
    counts[tok.data[0]]++;
  }
  return counts;
}

test('sampling draws tokens in proportion to softmax(logits / T)', () => {
  const n = 4000;
  const counts = draws('cpu', 0.9, 1, n);
  const p = softmax(logits, 0.9);
  counts.forEach((c, i) => {
    const sd = Math.sqrt(n * p[i] * (1 - p[i]));
    assert.ok(Math.abs(c - n * p[i]) < 5 * sd + 1, `token ${i}: ${c} draws, expected ${(n * p[i]).toFixed(0)} ± ${sd.toFixed(0)}`);
  });
});

test('top-p keeps the smallest most-likely set holding p of the mass, renormalised', () => {
  const n = 2000;
  const p = softmax(logits, 1);
  // Sorted: token 0 (0.39), 6 (0.24), 1 (0.14), … — top-p 0.6 needs tokens 0 and 6 (0.63).
  const counts = draws('cpu', 1, 0.6, n);
  const kept = p[0] + p[6];
  counts.forEach((c, i) => {
    if (i !== 0 && i !== 6) return assert.is(c, 0, `token ${i} is outside the top-p set`);
    const q = p[i] / kept;
    const sd = Math.sqrt(n * q * (1 - q));
    assert.ok(Math.abs(c - n * q) < 5 * sd, `token ${i}: ${c} of ${n}, expected ${(n * q).toFixed(0)}`);
  });
  assert.equal(draws('cpu', 1, 1e-6, 50).map((c, i) => (c ? i : -1)).filter((i) => i >= 0), [0], 'a tiny top-p is greedy');
});

test('the cpu kernels and the reference draw the same tokens for the same seeds', () => {
  assert.equal(draws('cpu', 0.7, 0.9, 300), draws('reference', 0.7, 0.9, 300));
});

test('greedy: the first maximum', () => {
  const f = compile((l: Tensor) => greedyToken(l));
  assert.equal(Array.from((f(f32([1, 3, 3, 2])) as HostTensor).data), [1]);
});

test('webgpu draws the same tokens as the reference for the same seeds (skipped without an adapter)', async () => {
  const f = compile((l: Tensor, temperature: Tensor, p: Tensor, seed: Tensor, counter: Tensor) =>
    sampledToken(l, temperature, p, seed, counter), { backend: 'webgpu' });
  const ref = compile((l: Tensor, temperature: Tensor, p: Tensor, seed: Tensor, counter: Tensor) =>
    sampledToken(l, temperature, p, seed, counter), { backend: 'reference' });
  for (let seed = 0; seed < 40; seed++) {
    const args = [f32(logits), f32([0.8], []), f32([0.95], []), i32([seed], []), i32([seed * 3], [])] as const;
    let got: HostTensor;
    try {
      got = await f(...args) as HostTensor;
    } catch (e) {
      if ((e as Error).name === 'WebGpuUnavailableError' || /no WebGPU adapter/.test((e as Error).message)) return;
      throw e;
    }
    assert.is(got.data[0], (ref(...args) as HostTensor).data[0], `seed ${seed}`);
  }
});

test.run();
