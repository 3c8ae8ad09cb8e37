// The CUDA renderer without a GPU: a small kernel as golden text, every kernel of the fixtures' compiled Llama
// graphs, a few hand-traced graphs and a spread of random graphs rendered as the runtime renders them (one
// module per graph) and, where nvcc is installed, compiled for sm_90a (the runtime's architecture for compute
// capability 9.0: its GEMM tiles use wgmma). TSFUSE_NVCC=0 skips the compiler. A source
// nvcc has compiled cleanly before (the same text, nvcc and flags) is not compiled again: a success is remembered in
// .cache/tsfuse/nvcc (TSFUSE_NO_CACHE=1: compile everything).

import { execFile, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cudaPrelude, renderCuda, renderCudaFunction, renderCudaModule } from '../../backends/cuda/render-cuda.ts';
import { add, f32, int, ivar, KernelIR, mul, ROW } from '../../backends/kernel-ir.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { arange, concat, param, trace, where } from '../../compiler/index.ts';
import { traceLlama } from '../../examples/llama.ts';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { CudaUnavailableError } from '../../runtime/cuda/errors.ts';
import { compileCuda } from '../../runtime/cuda/nvrtc.ts';
import { randomGraph } from './random-graph.ts';

const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));

/** A row-sum over a bf16 matrix times an f32 vector: the shape of a decode matrix-vector product. */
const matvec: KernelIR = {
  name: 'k0',
  kind: 'contraction',
  fused: ['%2: f32[4] = matmul %w, %x'],
  buffers: [
    { binding: { kind: 'param', name: 'w' }, dtype: DType.BF16, elems: int(64), written: false },
    { binding: { kind: 'input', name: 'x' }, dtype: DType.F32, elems: int(16), written: false },
    { binding: { kind: 'output', index: 0 }, dtype: DType.F32, elems: int(4), written: true },
  ],
  sizes: [],
  rows: int(4),
  body: [
    { k: 'coop', name: 'acc0', op: 'sum', v: 'k1', n: int(16), body: {
      k: 'binary', op: 'mul', t: 'f32',
      a: { k: 'load', buf: 0, index: add(ivar('k1'), mul(ivar(ROW), int(16))), t: 'f32' },
      b: { k: 'load', buf: 1, index: ivar('k1'), t: 'f32' },
    } },
    { k: 'store', buf: 2, v: 'i2', n: int(1), index: ivar(ROW), value: { k: 'binary', op: 'add', a: ivar('acc0'), b: f32(0.5), t: 'f32' } },
  ],
};

const matvecGolden = `// kernel k0: fuses
//   %2: f32[4] = matmul %w, %x
extern "C" __global__ void __launch_bounds__(TF_BLOCK) k0(const unsigned short* __restrict__ b0, const float* __restrict__ b1, float* __restrict__ b2) {
  __shared__ float tf_rf[TF_WARPS + 1];
  tf_grid_wait();
  tf_grid_release();
  const int tf_tid = threadIdx.x;
  const int tf_rows = 4;
  for (int row = blockIdx.x; row < tf_rows; row += gridDim.x) {
    float acc0_part = 0.0f;
    int acc0_from = 0;
    {
      const int t0 = (row * 16);
      const int acc0_vb0 = t0;
      const int acc0_vb1 = 0;
      if (((acc0_vb0 | acc0_vb1) & 7) == 0) {
        const int acc0_nv = 16 / 8;
        #pragma unroll 4
        for (int acc0_kv = tf_tid; acc0_kv < acc0_nv; acc0_kv += TF_BLOCK) {
          float acc0_w0[8];
          tf_ld8_bf16_once(b0 + acc0_vb0 + acc0_kv * 8, acc0_w0);
          float acc0_w1[8];
          tf_ld8_f32(b1 + acc0_vb1 + acc0_kv * 8, acc0_w1);
          #pragma unroll
          for (int acc0_j = 0; acc0_j < 8; acc0_j++) {
            const int k1 = acc0_kv * 8 + acc0_j;
            (void)k1;
            const float t1 = acc0_w0[acc0_j];
            const float t2 = acc0_w1[acc0_j];
            const float t3 = (t1 * t2);
            acc0_part += t3;
          }
        }
        acc0_from = acc0_nv * 8;
      }
    }
    for (int k1 = acc0_from + tf_tid; k1 < 16; k1 += TF_BLOCK) {
      const int t4 = (row * 16);
      const int t5 = (k1 + t4);
      const float t6 = tf_bf16(b0[t5]);
      const float t7 = b1[k1];
      const float t8 = (t6 * t7);
      acc0_part += t8;
    }
    const float acc0 = tf_block_sum(acc0_part, tf_rf);
    for (int i2 = tf_tid; i2 < 1; i2 += TF_BLOCK) {
      const float t9 = (acc0 + 0.5f);
      b2[row] = t9;
    }
  }
}
`;

test('a matrix-vector kernel renders as golden text: waiting for the previous kernel first, one block per row, 16-byte loads of the bf16 weights (read once: evicted from L2 first), block sum', () => {
  assert.fixture(renderCudaFunction(matvec).code, matvecGolden);
});

test('a standalone .cu file is the prelude and the kernel', () => {
  const cu = renderCuda(matvec);
  assert.ok(cu.startsWith(cudaPrelude));
  assert.ok(cu.endsWith(matvecGolden));
});

test('a misaligned or strided load is not vectorized; max and argmax reduce without it', () => {
  const strided: KernelIR = { ...matvec, body: [
    { k: 'coop', name: 'acc0', op: 'max', v: 'k1', n: int(16), body: { k: 'load', buf: 0, index: mul(ivar('k1'), int(4)), t: 'f32' } },
    { k: 'coop', name: 'acc1', op: 'argmax', v: 'k2', n: int(16), body: { k: 'load', buf: 1, index: ivar('k2'), t: 'f32' } },
    { k: 'store', buf: 2, v: 'i3', n: int(1), index: ivar(ROW), value: { k: 'cast', a: ivar('acc1'), t: 'f32' } },
  ] };
  const code = renderCudaFunction(strided).code;
  assert.not.match(code, 'tf_ld8');
  assert.match(code, 'const float acc0 = tf_block_max(acc0_part, tf_rf);');
  assert.match(code, 'const int acc1 = tf_block_argmax(acc1_best, acc1_part, tf_rf, tf_ri);');
  assert.match(code, '__shared__ int tf_ri[TF_WARPS + 1];');
});

test('row-local arrays beyond 48 KiB move to dynamic shared memory', () => {
  const big: KernelIR = { ...matvec, body: [
    { k: 'array', name: 'arr0', v: 'j0', n: 16384, value: f32(1) },
    { k: 'store', buf: 2, v: 'i1', n: int(1), index: ivar(ROW), value: { k: 'elem', array: 'arr0', index: int(3), t: 'f32' } },
  ] };
  const f = renderCudaFunction(big);
  assert.is(f.dynamicSharedBytes, 16384 * 4);
  assert.match(f.code, 'extern __shared__ __align__(16) unsigned char tf_smem[];');
  assert.match(f.code, 'float* const arr0 = reinterpret_cast<float*>(tf_smem + 0);');
});

// ---- whole graphs ----

interface Unit { readonly name: string; readonly source: string }
const units: Unit[] = [];

function renderGraphs(label: string, graphs: readonly Graph[], check?: (g: string, source: string, kernels: readonly KernelIR[]) => void, prefix = ''): void {
  const compiled = compileModule({ graphs: [...graphs] });
  for (const { graph, kernels } of compiled.graphs) {
    const fn = `${prefix}${graph.name}_`;
    const { source, functions } = renderCudaModule(kernels, fn);
    assert.is(functions.length, kernels.length);
    kernels.forEach((k, i) => {
      const code = functions[i].code;
      if (functions[i].name !== `${fn}${k.name}`) return; // shares the function of an equal kernel
      assert.ok(code.startsWith(`// kernel ${k.name}: fuses\n`), `${label} @${graph.name} ${k.name}: the comment comes first`);
      for (const line of k.fused) assert.ok(code.includes(`//   ${line}\n`), `${label} @${graph.name} ${k.name}: lists ${line}`);
      assert.match(code, new RegExp(`extern "C" __global__ void __launch_bounds__\\(TF_BLOCK(, [2-8])?\\) ${fn}${k.name}\\(`));
      // Overlapping its predecessor (sm_90), a kernel touches no buffer but its weights before it waits: once, or in
      // each of its three forms where a GEMM's short tile loads its first weights first (the row form, the short
      // tile, the other tiles). Attention's decode form over a cache this step updates waits in each of its two
      // forms, having read the graph's inputs (the position) and, past the L1, the cache (its keys and values): the
      // run the update writes it reads again after the wait.
      const body = code.slice(code.indexOf(') {\n') + 3);
      const short = body.includes('if (tf_m_total < ');
      const early = !!k.flash?.fresh && body.includes('bool tf_waited = false;');
      assert.is(body.split('tf_grid_wait();').length, short ? 4 : early ? 3 : 2, `${label} @${graph.name} ${k.name}: waits once in each form`);
      const before = body.slice(0, body.indexOf('tf_grid_wait();')).split('\n').filter((l) => !l.includes('tf_prefetch_l2(')).join('\n');
      const weights = new Set(k.buffers.flatMap((b, j) => (b.binding.kind === 'param' && !b.written ? [`b${j}`] : [])));
      const inputs = new Set(k.buffers.flatMap((b, j) => (b.binding.kind === 'input' ? [`b${j}`] : [])));
      const cache = new Set(k.flash?.fresh ? [k.flash.k, k.flash.v].flatMap((e) => (e.k === 'load' ? [`b${e.buf}`] : [])) : []);
      const used = [...before.matchAll(/\bb\d+\b/g)].map((m) => m[0])
        .filter((b) => !(short && weights.has(b)) && !(early && (inputs.has(b) || cache.has(b))));
      assert.equal(used, [], `${label} @${graph.name} ${k.name}: a buffer is used before the wait`);
      if (short) assert.match(before, /tf_w0\[0\]\[tf_u\] = tf_col_in \? (__ldg|tf_ld16_once)\(/, `${label} @${graph.name} ${k.name}: the short tile's first weights load before it waits`);
      if (early) {
        for (const b of cache) {
          assert.match(before, `__ldcg(reinterpret_cast<const uint4*>(${b} + `, `${label} @${graph.name} ${k.name}: ${b} read past the L1 before the wait`);
          assert.not.match(before, `__ldg(reinterpret_cast<const uint4*>(${b} + `, `${label} @${graph.name} ${k.name}: ${b} read through the L1 before the wait`);
        }
        const after = body.slice(body.indexOf('tf_grid_wait();'));
        assert.match(after, /if \(t\d+ >= t\d+ && t\d+ < t\d+\) tf_kr\[tf_u\] = __ldcg\(/, `${label} @${graph.name} ${k.name}: the fresh keys read again after the wait`);
        assert.match(after, /if \(t\d+ >= t\d+ && t\d+ < t\d+\) tf_vr\[tf_u\] = __ldcg\(/, `${label} @${graph.name} ${k.name}: the fresh values read again after the wait`);
      }
    });
    check?.(graph.name, source, kernels);
    units.push({ name: `${label}.${graph.name}`, source });
  }
}

for (const fixture of ['tiny-llama', 'tiny-llama3-bf16']) {
  test(`${fixture}: every kernel of the prefill and decode graphs renders; equal layers share a function`, () => {
    const model = loadLlama(path.join(fixtures, fixture));
    const module = traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength: 64 });
    renderGraphs(fixture, module.graphs, (g, source, kernels) => {
      const functions = source.match(/extern "C" __global__/g)!.length;
      assert.ok(functions < kernels.length, `@${g}: ${functions} functions for ${kernels.length} kernels`);
      // The weight streams of the matrix-vector products are read 16 bytes at a time.
      assert.match(source, model.weightDType === DType.BF16 ? 'tf_ld8_bf16(' : 'tf_ld8_f32(');
      // A contraction row's few outputs run one per warp, the warp sharing each dot product.
      assert.match(source, 'tf_warp_sum(');
      if (g === 'prefill') assert.match(source, 'const int sz_S)');
      // bf16 checkpoints' prompt projections: wgmma tiles on sm_90 (compiled below for sm_90a).
      if (g === 'prefill' && model.weightDType === DType.BF16) assert.match(source, 'tf_wgmma_n128(');
    });
  });
}

test('tiny-llama3-bf16 with a bf16 KV cache: decode attention reads the cache before it waits, the position\'s row again after', () => {
  const model = loadLlama(path.join(fixtures, 'tiny-llama3-bf16'));
  const module = traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength: 64, kvDType: DType.BF16 });
  renderGraphs('tiny-llama3-bf16-kv-bf16', module.graphs, (g, source) => {
    if (g === 'decode') assert.match(source, 'bool tf_waited = false;');
  }, 'kvbf16_');
});

test('a sine and a cosine of one angle (the rotary embedding) are one sincosf; a sine alone too', () => {
  const both = trace('rotate', [{ name: 'x', dtype: DType.F32, shape: [4, 8] }, { name: 'a', dtype: DType.F32, shape: [4, 8] }],
    (x, a) => x.mul(a.cos()).add(x.neg().mul(a.sin())));
  const once = trace('sine', [{ name: 'a', dtype: DType.F32, shape: [4, 8] }], (a) => a.sin().add(1));
  const code = (g: Graph) => compileModule({ graphs: [g] }).graphs[0].kernels.map((k) => renderCudaFunction(k).code).join('\n');
  const rotate = code(both);
  assert.is(rotate.match(/sincosf\(/g)?.length, 1, rotate);
  assert.not.match(rotate, /\b(sinf|cosf)\(/);
  assert.match(code(once), /float (t\d+), t\d+; sincosf\((t\d+|b\d+\[\w+\]), &\1, &t\d+\);/);
  renderGraphs('sincos', [both, once]);
});

test('tiny-llama with the sampler: the random op calls the prelude\'s tf_random', () => {
  const model = loadLlama(path.join(fixtures, 'tiny-llama'));
  const module = traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength: 64, sampling: true });
  renderGraphs('tiny-llama-sampling', module.graphs, (_g, source) => assert.match(source, 'tf_random('));
});

test('small traced graphs: argmax, softmax, gather, select, integer arithmetic, f16 weights, 16-bit rounding', () => {
  const graphs = [
    trace('argmax_rows', [{ name: 'x', dtype: DType.F32, shape: [3, 1000] }], (x) => [x.argmax(-1), x.max(-1)]),
    trace('softmax', [{ name: 'x', dtype: DType.F32, shape: ['S', 40] }], (x) => x.softmax(-1)),
    trace('embed_f16', [{ name: 'ids', dtype: DType.I32, shape: [5] }],
      (ids) => param('emb', DType.F16, [32, 24]).gather(ids).cast(DType.F32).matmul(param('w', DType.F16, [16, 24]).transpose())),
    trace('select_concat', [{ name: 'x', dtype: DType.F32, shape: [4, 6] }], (x) =>
      where(x.gt(0), concat([x.slice(1, 3), x.slice(1, 0, 3)], 1), x.neg().exp()).cast(DType.BF16)),
    trace('integers', [{ name: 'n', dtype: DType.I32, shape: [] }], (n) => {
      const i = arange(24).add(n);
      return [i.div(5), i.maximum(7).minimum(20), i.ge(10).and(i.lt(20)), i.cast(DType.F32).sqrt().floor()];
    }),
  ];
  renderGraphs('small', graphs);
  assert.ok(units.some((u) => u.source.includes('tf_round_bf16(') || u.source.includes('tf_to_bf16(')), 'a bf16 cast rounds');
});

test('200 random graphs render', () => {
  for (let seed = 0; seed < 200; seed++) {
    renderGraphs(`random${seed}`, [randomGraph(seed).graph], undefined, `r${seed}_`);
  }
});

// ---- compiled with nvcc, where there is one ----

function findNvcc(): string | undefined {
  if (process.env.TSFUSE_NVCC === '0') return undefined;
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/cuda/bin'];
  return dirs.map((d) => path.join(d, 'nvcc')).find((f) => fs.existsSync(f));
}

const nvcc = findNvcc();

test(`nvcc -arch=sm_90a compiles every rendered module${nvcc ? '' : ' (skipped: no nvcc)'}`, async () => {
  if (!nvcc) return;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-cuda-'));
  // Random graphs go in a few files rather than one per graph: nvcc's start-up dominates small files.
  const random = units.filter((u) => u.name.startsWith('random'));
  const files = [
    ...units.filter((u) => !u.name.startsWith('random')),
    ...[0, 1, 2, 3].map((part) => ({
      name: `random-part${part}`,
      // The prelude is include-guarded, so whole modules concatenate.
      source: random.filter((_, i) => i % 4 === part).map((u) => u.source).join('\n'),
    })),
  ];
  // sm_90a alone, as NVRTC compiles it (nvcc's -arch=sm_90a adds PTX for compute_90, which has no wgmma).
  const args = ['-gencode', 'arch=compute_90a,code=sm_90a', '-c'];
  const version = execFileSync(nvcc, ['--version'], { encoding: 'utf8' });
  const passedDir = path.join(fileURLToPath(new URL('../../', import.meta.url)), '.cache', 'tsfuse', 'nvcc');
  const remember = process.env.TSFUSE_NO_CACHE !== '1';
  const compile = (u: Unit) => new Promise<string | undefined>((resolve) => {
    const passed = path.join(passedDir, crypto.createHash('sha256').update(`${nvcc}\0${version}\0${args.join(' ')}\0${u.source}`).digest('hex'));
    if (remember && fs.existsSync(passed)) return resolve(undefined);
    const file = path.join(dir, `${u.name}.cu`);
    fs.writeFileSync(file, u.source);
    execFile(nvcc, [...args, '-o', path.join(dir, `${u.name}.o`), file], (err, _out, stderr) => {
      const bad = err ? `${u.name}.cu: ${stderr || err.message}` : stderr.includes('warning') ? `${u.name}.cu warns: ${stderr}` : undefined;
      if (!bad && remember) {
        fs.mkdirSync(passedDir, { recursive: true });
        fs.writeFileSync(passed, `${u.name}.cu\n`);
      }
      resolve(bad);
    });
  });
  const failures: string[] = [];
  // The longest first (nvcc's time grows with the source), so that the last to finish is a short one.
  const queue = [...files].sort((a, b) => b.source.length - a.source.length);
  await Promise.all([...Array(Math.min(4, os.cpus().length))].map(async () => {
    for (let u = queue.shift(); u; u = queue.shift()) {
      const bad = await compile(u);
      if (bad) failures.push(bad);
    }
  }));
  if (failures.length === 0) fs.rmSync(dir, { recursive: true });
  assert.equal(failures, [], `sources kept in ${dir}`);
});

// NVRTC runs without a GPU: where a libnvrtc loads, every module goes through it as the runtime sends it.
test('NVRTC compiles every rendered module for sm_90a, as the runtime does (skipped where no libnvrtc loads)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-nvrtc-'));
  try {
    const sources = [
      ...units.filter((u) => !u.name.startsWith('random')),
      { name: 'random', source: units.filter((u) => u.name.startsWith('random')).slice(0, 40).map((u) => u.source).join('\n') },
    ];
    for (const u of sources) {
      const image = compileCuda(u.source, 90, `${u.name}.cu`, dir);
      assert.ok(image.image.length > 0 && !image.cached, u.name);
    }
  } catch (e) {
    if (!(e instanceof CudaUnavailableError)) throw e;
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

test.run();
