// A decode step's cache writes without a kernel of their own (PassContext.cacheWrites). 'attention', which CUDA
// sessions set: fusion joins the write of one position into the attention kernel that reads the cache, and each form
// of that kernel reads the new rows from the update rather than from memory (CUDA's decode form computes them after
// its wait and puts them in place of what it loaded; the row form selects them). 'after-attention', which WebGPU
// sessions set: attention computes the new rows the same way but only reads the cache, and the write joins the
// projection of attention's result. Grouped-query heads (3 query heads a
// cache head), heads of 64 over 300 cache rows (two chunks on CUDA), a new key row that reads itself at other
// positions (a rotate-half, as the rotary embedding does) and is rounded to bf16. Several steps in a row, each
// reading what the steps before wrote, across the chunks' boundary; the rows from the first step's position on start
// as NaN, so that a new row read back from memory before it is written shows. Every device against the reference
// interpreter (the unfused graph), fresh random inputs: outputs within 1e-5 relative, the cache after each step
// equal (the same bf16 values written).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { arange, concat, state, trace, where } from '../../compiler/index.ts';
import { defaultContext } from '../../compiler/passes/context.ts';
import { cudaCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { renderCudaMegakernel } from '../../backends/cuda/megakernel.ts';
import { renderCudaModule } from '../../backends/cuda/render-cuda.ts';
import { scheduleKernel } from '../../backends/schedule.ts';
import { formatSchedule } from '../../backends/schedule-format.ts';
import { DType } from '../../ir/dtype.ts';
import { roundBf16 } from '../../ir/half.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { Device, namedOutputKey } from '../../runtime/device.ts';
import { ParamStore } from '../../runtime/params.ts';
import { LoweredModule } from '../../backends/lowered.ts';
import { kernelDevices, onDevice } from '../runtime/fake-cuda/build.ts';
import { relativeError } from './compare.ts';
import { Rng } from './rng.ts';

const [KV_HEADS, PER_HEAD, D, T, OUT] = [2, 3, 64, 300, 48];
const HEADS = KV_HEADS * PER_HEAD;
const seed = Number(process.env.CACHE_WRITE_SEED ?? Date.now() % 1e9);
const rng = new Rng(seed);
const randoms = (n: number) => Array.from({ length: n }, () => roundBf16(rng.normal()));

function graph(kv: DType) {
  return trace('decode', [
    { name: 'q', dtype: DType.F32, shape: [KV_HEADS, PER_HEAD, 1, D] },
    { name: 'k', dtype: DType.F32, shape: [1, KV_HEADS, D] },
    { name: 'v', dtype: DType.F32, shape: [1, KV_HEADS, D] },
    { name: 'pos', dtype: DType.I32, shape: [] },
    { name: 'wo', dtype: DType.F32, shape: [HEADS * D, OUT] },
  ], (q, k, v, pos, wo) => {
    const half = D / 2;
    const rotated = k.add(concat([k.slice(2, half, D).neg(), k.slice(2, 0, half)], 2).mul(0.5));
    const keys = state('cache.k', kv, [T, KV_HEADS, D]).write(rotated.cast(kv), pos, 0);
    const values = state('cache.v', kv, [T, KV_HEADS, D]).write(v.cast(kv), pos, 0);
    const kt = keys.cast(DType.F32).permute(1, 2, 0).reshape(KV_HEADS, 1, D, T);
    const vt = values.cast(DType.F32).permute(1, 0, 2).reshape(KV_HEADS, 1, T, D);
    const scores = where(arange(T).reshape(1, -1).le(pos.reshape(1, 1)), q.matmul(kt).mul(1 / Math.sqrt(D)), -Infinity);
    return { y: scores.softmax(-1).matmul(vt).reshape(1, HEADS * D).matmul(wo) };
  });
}

const lines: string[] = [];
const explain = (_: string, line: string) => lines.push(line);
const graphs = Object.fromEntries([DType.BF16, DType.F32].map((kv) => {
  const g = graph(kv);
  const joined = compileModule({ graphs: [g] }, { ctx: { ...defaultContext, cacheWrites: 'attention', explain } });
  const after = compileModule({ graphs: [g] }, { ctx: { ...defaultContext, cacheWrites: 'after-attention', explain } });
  return [kv, { joined, after, apart: compileModule({ graphs: [g] }), reference: { graphs: [{ graph: g, kernels: [] }] } }];
}));
const { joined, after, apart } = graphs[DType.BF16];

/**
 * Four query rows a head over a cache of `kv` written at `positions` positions from `pos`, the keys serving as values
 * too (no causal mask: only which kernels read and write the cache matters here).
 */
function queriesOverCache(name: string, positions: number, kv: DType) {
  return trace(name, [
    { name: 'k', dtype: DType.F32, shape: [positions, KV_HEADS, D] },
    { name: 'q', dtype: DType.F32, shape: [KV_HEADS, 1, 4, D] },
    { name: 'pos', dtype: DType.I32, shape: [] },
  ], (k, q, pos) => {
    const keys = state('cache.k', kv, [T, KV_HEADS, D]).write(kv === DType.F32 ? k : k.cast(kv), pos, 0);
    const kt = (kv === DType.F32 ? keys : keys.cast(DType.F32)).permute(1, 2, 0).reshape(KV_HEADS, 1, D, T);
    return { y: q.matmul(kt).softmax(-1).matmul(kt.permute(0, 1, 3, 2)) };
  });
}

const fusion = suite('cache writes in attention: fusion and schedule');
fusion('the write of one position joins the attention kernel that reads it, and only where the context asks', () => {
  assert.equal(joined.graphs[0].kernels.map((k) => k.kind), ['attention', 'contraction']);
  assert.equal(apart.graphs[0].kernels.map((k) => k.kind), ['state-write', 'attention', 'contraction']);
  assert.ok(lines.some((l) => l.startsWith('merged: the cache writes of one position (bf16[1,2,64] into %cache.k, bf16[1,2,64] into %cache.v) join the attention kernel that reads them')), lines.join('\n'));
  const [k] = joined.graphs[0].kernels;
  assert.is(k.flash?.updates?.length, 2, 'both writes are the flash form\'s');
  assert.ok(k.flash?.fresh?.k?.value && k.flash.fresh.v?.value, 'their rows computed');
  const cuda = formatSchedule(scheduleKernel(k, cudaCaps(90)));
  assert.match(cuda, 'decode attention 6 heads × 1 query over 300 keys (head 64): a workgroup a head and 256 keys (2 chunks');
  // An even share a head (6 heads: 22 of the 128 elements each), on the threads the query leaves idle (a thread an
  // element of the head's 64).
  assert.match(cuda, 'this step\'s new key and value rows computed here, their cache writes shared among the heads (a head 22 elements of each, on its threads from 64, which the query leaves idle); the first step\'s keys and values loaded before the wait, the new rows computed after it');
  // The row form shares the write out among its rows (6 heads: 22 of the 128 elements a row).
  assert.match(cuda, /store b\d+ over i\d+<min\(22, 128-\(row\*22\)\)/);
  // WebGPU's decode form reads every key and value from memory through a read-only binding: a kernel that writes
  // the cache runs the row form there (it is not the sessions' choice on WebGPU: compiler/session-choices.ts).
  const [f32] = graphs[DType.F32].joined.graphs[0].kernels;
  const wgsl = formatSchedule(scheduleKernel(f32, webgpuCaps({ subgroups: true })));
  assert.not.match(wgsl, 'decode attention');
  assert.match(wgsl, /store b\d+ over i\d+<min\(22, 128-\(row\*22\)\)/);
});
fusion('CUDA\'s decode form loads each step of keys and values once, the computed rows put in place of the loaded ones', () => {
  // Launched on sm_90, the first step's loads go before the wait; in a megakernel of one block a multiprocessor, the
  // task has waited before it starts: either way they are issued before the query and the new rows are computed, and
  // not again after them (a second round trip on the step's critical path). Under 4 blocks' register cap they are
  // issued after the rows (FlashPlan.keysAfterRows), once. One unconditional load of each for the first step, one for
  // the next chunk's (300 keys: two chunks), and the computed row put in place after each.
  const forms = [
    ['launched', renderCudaModule(joined.graphs[0].kernels.slice(0, 1), '', cudaCaps(90)).source, '__ldcg', true],
    ['megakernel', renderCudaMegakernel(joined, cudaCaps(90), { blocksPerProcessor: 1 }).kernel.source, '__ldg', true],
    ['megakernel, 4 blocks', renderCudaMegakernel(joined, cudaCaps(90), { blocksPerProcessor: 4 }).kernel.source, '__ldg', false],
  ] as const;
  for (const [form, source, first, before] of forms) {
    const body = source.slice(source.indexOf('uint4 tf_kr['));
    for (const r of ['kr', 'vr']) {
      const loads = [...body.matchAll(new RegExp(`^ *(if \\([^)]*\\) )?tf_${r}\\[tf_u\\] = (__ldg|__ldcg)\\(`, 'gm'))];
      assert.equal(loads.map((m) => [!!m[1], m[2]]), [[false, first], [false, '__ldg']], `${form}: tf_${r} loads`);
      const computed = body.split(`tf_${r}[tf_u] = tf_pack_bf16x8(tf_${r === 'kr' ? 'ks' : 'vs'} + tf_part)`).length - 1;
      assert.is(computed, 2, `${form}: the computed ${r === 'kr' ? 'key' : 'value'} row put in place after each step's loads`);
    }
    const rows = body.indexOf('__syncthreads();');
    assert.is(rows > body.indexOf(`tf_kr[tf_u] = ${first}(`), before, `${form}: the first keys issued ${before ? 'before' : 'after'} the new rows are computed`);
  }
  assert.match(formatSchedule(scheduleKernel(joined.graphs[0].kernels[0], cudaCaps(90), { registersPerThread: 64 })), 'the first step\'s keys and values loaded after the new rows (a register cap)');
});
fusion('after attention: attention computes the new rows and reads the cache read-only; the write joins the projection after it', () => {
  assert.equal(after.graphs[0].kernels.map((k) => k.kind), ['attention', 'contraction']);
  for (const cache of ['k', 'v']) {
    assert.ok(lines.some((l) => l.startsWith(`merged: the cache write of one position (bf16[1,2,64] into %cache.${cache}) joins the contraction kernel after the attention kernel`)), lines.join('\n'));
  }
  const [attention, projection] = after.graphs[0].kernels;
  assert.is(attention.flash?.updates, undefined, 'attention stores nothing but its result');
  assert.ok(attention.flash?.fresh?.k?.value && attention.flash.fresh.v?.value, 'the new rows computed');
  assert.ok(attention.buffers.filter((b) => b.binding.kind === 'state').every((b) => !b.written), 'the cache read-only in attention');
  assert.ok(projection.buffers.some((b) => b.binding.kind === 'state' && b.written), 'the projection writes the cache');
  for (const kv of [DType.BF16, DType.F32]) {
    const wgsl = formatSchedule(scheduleKernel(graphs[kv].after.graphs[0].kernels[0], webgpuCaps({ subgroups: true })));
    assert.match(wgsl, 'decode attention 6 heads × 1 query over 300 keys (head 64)', `${kv}: ${wgsl}`);
    assert.match(wgsl, 'this step\'s new key and value rows computed here', `${kv}: ${wgsl}`);
  }
  // The projection's rows (24 of 2 outputs) share the write out: 6 of the 128 elements a row.
  assert.match(formatSchedule(scheduleKernel(projection, webgpuCaps({ subgroups: true }))), /store b\d+ over i\d+<min\(6, 128-\(row\*6\)\)/);
});
fusion('a prompt\'s write of several positions stays a kernel of its own', () => {
  const prompt = queriesOverCache('prompt', 4, DType.BF16);
  for (const cacheWrites of ['attention', 'after-attention'] as const) {
    const c = compileModule({ graphs: [prompt] }, { ctx: { ...defaultContext, cacheWrites } });
    assert.equal(c.graphs[0].kernels.map((k) => k.kind), ['state-write', 'attention'], cacheWrites);
  }
});
fusion('several query rows over a cache updated at one position: no tile form reads the update in place of memory', () => {
  // After attention, the attention kernel reads a copy of the update; only the decode forms compute new rows, so
  // four query rows run the row form (which selects the update where it covers the index).
  const few = queriesOverCache('few', 1, DType.F32);
  const c = compileModule({ graphs: [few] }, { ctx: { ...defaultContext, cacheWrites: 'after-attention' } });
  const attention = c.graphs[0].kernels.find((k) => k.kind === 'attention')!;
  assert.is(attention.flash, undefined, 'the row form');
  assert.ok(attention.buffers.some((b) => b.binding.kind === 'state' && !b.written), 'the cache read, not written, there');
});
fusion.run();

const STARTS = [0, 254];
const STEPS = 4;
const ROW = KV_HEADS * D;
const randomCache = () => randoms(T * ROW);
// Per cache dtype and first position: the cache before the first step and each step's inputs. (The reference reads
// finite values past the position, which its masked softmax multiplies by 0; the devices read NaN there.)
const cases = [DType.BF16, DType.F32].flatMap((kv) => STARTS.map((first) => ({
  kv,
  first,
  k: randomCache(),
  v: randomCache(),
  wo: randoms(HEADS * D * OUT).map((x) => x / 16),
  steps: Array.from({ length: STEPS }, () => ({ q: randoms(HEADS * D), k: randoms(ROW), v: randoms(ROW) })),
})));

/** Each step's output and cache (keys, then values) after it. */
async function run(device: Device, lowered: LoweredModule, c: (typeof cases)[number], nanPast: boolean): Promise<{ y: number[]; k: number[]; v: number[] }[]> {
  const program = await device.load(lowered, new ParamStore(() => { throw new Error('no params'); }), { maxSizes: {} });
  const cacheShape = [T, KV_HEADS, D];
  const past = (x: number, i: number) => (nanPast && Math.floor(i / ROW) >= c.first ? NaN : x);
  try {
    program.write('state:cache.k', hostTensor(c.kv, cacheShape, c.k.map(past)));
    program.write('state:cache.v', hostTensor(c.kv, cacheShape, c.v.map(past)));
    program.write('input:wo', hostTensor(DType.F32, [HEADS * D, OUT], c.wo));
    const out = [];
    for (let s = 0; s < STEPS; s++) {
      const step = c.steps[s];
      program.write('input:q', hostTensor(DType.F32, [KV_HEADS, PER_HEAD, 1, D], step.q));
      program.write('input:k', hostTensor(DType.F32, [1, KV_HEADS, D], step.k));
      program.write('input:v', hostTensor(DType.F32, [1, KV_HEADS, D], step.v));
      program.write('input:pos', hostTensor(DType.I32, [], [c.first + s]));
      program.run('decode', {});
      const y = await program.read(namedOutputKey(program.graph('decode'), 'y'), DType.F32, [1, OUT]);
      const [k, v] = [await program.read('state:cache.k', c.kv, cacheShape), await program.read('state:cache.v', c.kv, cacheShape)];
      out.push({ y: [...y.data], k: [...k.data], v: [...v.data] });
    }
    return out;
  } finally {
    program.destroy();
  }
}

const bits = (xs: number[]) => xs.map((x) => (Number.isNaN(x) ? 'NaN' : x));

for (const c of cases) {
  const compiled = graphs[c.kv];
  let expected: Awaited<ReturnType<typeof run>> | undefined;
  for (const [kind, mode] of kernelDevices.flatMap((x) => (['joined', 'after'] as const).map((m) => [x, m] as const))) {
    const s = suite(`cache writes ${mode === 'joined' ? 'in' : 'after'} attention, ${c.kv} cache, steps from ${c.first}, on ${kind}`);
    s(`${STEPS} steps: outputs and cache as the reference interpreter's`, async () => {
      expected ??= await onDevice('reference', (ref) => run(ref, compiled.reference, c, false));
      await onDevice(kind, async (device) => {
        const got = await run(device, compiled[mode], c, true);
        got.forEach((step, i) => {
          const want = expected![i];
          const at = c.first + i;
          const err = relativeError(step.y, want.y);
          assert.ok(err < 1e-5, `step at ${at}: relative error ${err} (CACHE_WRITE_SEED=${seed})`);
          // Rows up to the position as the reference's; past it, untouched (NaN).
          for (const [name, ours, ref] of [['keys', step.k, want.k], ['values', step.v, want.v]] as const) {
            assert.equal(bits(ours.slice(0, (at + 1) * ROW)), bits(ref.slice(0, (at + 1) * ROW)), `${name} up to ${at} after its step (CACHE_WRITE_SEED=${seed})`);
            assert.ok(ours.slice((at + 1) * ROW).every(Number.isNaN), `${name} past ${at} untouched`);
          }
        });
      });
    });
    s.run();
  }
}
