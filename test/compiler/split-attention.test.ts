// split-attention: attention over a long cache becomes per-chunk statistics and an exact combination; the result
// equals the unsplit softmax·V on the reference interpreter and on the fused CPU kernels, masked chunks included.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { interpret } from '../../backends/reference/interpreter.ts';
import { arange, trace, where } from '../../compiler/index.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { decompose } from '../../compiler/passes/decompose.ts';
import { execFileSync } from 'node:child_process';
import { cacheKey } from '../../compiler/compile-cache-entry.ts';
import { sessionContext } from '../../compiler/session-choices.ts';
import { splitAttention, SPLIT_ATTENTION_AT } from '../../compiler/passes/split-attention.ts';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { verifyGraph } from '../../ir/verify.ts';
import { runOnCpu } from '../backends/run-cpu.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { mismatch } from '../backends/compare.ts';
import { Rng } from '../backends/rng.ts';

/** One query row (decode) by default: only those are split. */
function attention(cache: number, visible: number, rows = 1): Graph {
  return trace('attention', [
    { name: 'q', dtype: DType.F32, shape: [2, rows, 8] },
    { name: 'k', dtype: DType.F32, shape: [2, 8, cache] },
    { name: 'v', dtype: DType.F32, shape: [2, cache, 8] },
  ], (q, k, v) => where(arange(cache).reshape(1, -1).le(visible), q.matmul(k).mul(0.35), -Infinity).softmax(-1).matmul(v));
}

function inputs(cache: number): Record<string, HostTensor> {
  const rng = new Rng(3);
  const r = (shape: number[]) => hostTensor(DType.F32, shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()));
  return { q: r([2, 1, 8]), k: r([2, 8, cache]), v: r([2, cache, 8]) };
}

const run = (g: Graph, x: Record<string, HostTensor>) => interpret(g, { inputs: x, param: () => { throw new Error('no params'); }, states: new Map() })[0];

test('a long cache is split into chunks with per-chunk statistics; a short one, or many query rows, left alone', () => {
  const long = splitAttention(decompose(attention(SPLIT_ATTENTION_AT, 700)));
  verifyGraph(long);
  assert.ok(long.nodes.some((n) => n.op === 'max' && (n.attrs.axes as number[])[0] === 1), 'chunk maxima combined over the chunk axis');
  const short = decompose(attention(512, 300));
  assert.is(splitAttention(short), short, 'no rewrite below the threshold');
  const prompt = decompose(attention(SPLIT_ATTENTION_AT, 700, 3));
  assert.is(splitAttention(prompt), prompt, 'no rewrite for several query rows');
  const unsplit = decompose(attention(SPLIT_ATTENTION_AT * 2, 700));
  assert.is(splitAttention(unsplit, Infinity), unsplit, 'no rewrite from Infinity');
  assert.is.not(splitAttention(unsplit, 512), unsplit, 'a rewrite from a lower threshold');
});

test('sessions split long caches except where decode attention walks the whole cache in its decode form, and cache the choice', () => {
  assert.is(sessionContext('cuda', DType.BF16, 64).splitAttentionFrom, Infinity);
  assert.is(sessionContext('cuda', DType.F16, 64).splitAttentionFrom, Infinity);
  assert.is(sessionContext('cuda', DType.BF16, 64).cacheWrites, 'attention');
  // WebGPU's f32 cache: the WGSL decode form takes heads of 8 to 256 in powers of two.
  for (const head of [8, 64, 128, 256]) assert.is(sessionContext('webgpu', DType.F32, head).splitAttentionFrom, Infinity, `webgpu, head ${head}`);
  for (const head of [48, 96, 512]) assert.is(sessionContext('webgpu', DType.F32, head).splitAttentionFrom, undefined, `webgpu, head ${head}`);
  assert.is(sessionContext('webgpu', DType.F32, 64).cacheWrites, 'after-attention');
  assert.is(sessionContext('webgpu', DType.BF16, 48).cacheWrites, undefined, 'no decode form for heads of 48');
  for (const [backend, kv] of [['cuda', DType.F32], ['cpu', DType.F32]] as const) {
    assert.is(sessionContext(backend, kv, 64).splitAttentionFrom, undefined, `${backend}, ${kv}`);
    assert.is(sessionContext(backend, kv, 64).cacheWrites, undefined, `${backend}, ${kv}`);
  }
  const dims = new Map([['S', 32]]);
  assert.is.not(cacheKey('m', { dims, splitAttentionFrom: Infinity }), cacheKey('m', { dims }), 'the compile cache keys the choice');
  assert.is.not(cacheKey('m', { dims, cacheWrites: 'attention' }), cacheKey('m', { dims }), 'and the cache writes\' place');
  assert.is.not(cacheKey('m', { dims, cacheWrites: 'after-attention' }), cacheKey('m', { dims, cacheWrites: 'attention' }));
  const modules = (backend: string) => execFileSync(process.execPath, ['bin/tsfuse.mjs', 'compile', '--config', 'llama-3.2-1b', '--backend', backend, '--no-cache', '--json'], { encoding: 'utf8' });
  const decodeKernels = (backend: string) => (JSON.parse(modules(backend)) as { graphs: Record<string, { kernels: number }> }).graphs.decode.kernels;
  assert.is(decodeKernels('cuda'), 16 * 5 + 3, 'CUDA: 5 kernels a layer over the 2,048-position cache (the cache write inside attention)');
  assert.is(decodeKernels('webgpu'), 16 * 5 + 3, 'WebGPU: 5 kernels a layer (its decode form walks the whole cache; the cache write inside the output projection)');
  assert.is(decodeKernels('cpu'), 16 * 8 + 3, 'the CPU: the attention chunks and two combine kernels a layer');
});

for (const [cache, visible] of [[1024, 1023], [2048, 700], [1280, 0]] as const) {
  test(`split attention over ${cache} positions (${visible + 1} visible) equals softmax·V, reference and fused CPU`, () => {
    const g = attention(cache, visible);
    const x = inputs(cache);
    const want = run(g, x);
    const split = splitAttention(decompose(g));
    assert.is(mismatch(run(split, x), want), undefined, 'reference interpreter on the split graph');
    const compiled = compileModule({ graphs: [g] });
    assert.ok(compiled.graphs[0].graph.kernels.length <= 3, 'chunks, statistics, combination');
    const got = runOnCpu(compiled, 'attention', x, () => { throw new Error('no params'); })[0];
    assert.is(mismatch(got, want), undefined, 'fused CPU kernels');
  });
}

test.run();
