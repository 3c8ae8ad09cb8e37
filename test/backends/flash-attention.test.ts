// Attention over many query rows runs as flash-attention tiles (KernelIR.flash): lowering picks it out, and every
// device computes what the reference interpreter does (softmax written out whole) for query rows below, at and
// past a tile (1, 7, 64, 130), keys past a tile's width, a causal bound that starts at a position inside the cache
// (pos), heads broadcast over a group (as grouped-query attention reads one K and V per group), and a row whose
// keys are all masked (NaN, as the reference's softmax of −∞ everywhere gives). Fresh random inputs; f32 tolerance
// 1e-4 relative (the online softmax sums in another order). With keys and values in bf16 memory (a bf16 KV cache)
// CUDA runs bf16 matrix instructions, rounding the queries and the probabilities to bf16: 1e-2 relative there.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { arange, trace, where } from '../../compiler/index.ts';
import { DType } from '../../ir/dtype.ts';
import { roundBf16 } from '../../ir/half.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { Device, namedOutputKey } from '../../runtime/device.ts';
import { ParamStore } from '../../runtime/params.ts';
import { kernelDevices, onDevice } from '../runtime/fake-cuda/build.ts';
import { relativeError } from './compare.ts';
import { Rng } from './rng.ts';

const [GROUPS, PER_GROUP, D, T] = [2, 3, 16, 300];
/**
 * Causal attention over T keys, keys and values stored as `kv`; keys as [D, T] (transposed), or as [T, D] like a KV
 * cache's rows (`cacheRows`: read 16 bytes at a time where they are bf16).
 */
const attention = (kv: DType, cacheRows: boolean) => trace('attn', [
  { name: 'q', dtype: DType.F32, shape: [GROUPS, PER_GROUP, 'S', D] },
  { name: 'k', dtype: kv, shape: cacheRows ? [GROUPS, 1, T, D] : [GROUPS, 1, D, T] },
  { name: 'v', dtype: kv, shape: [GROUPS, 1, T, D] },
  { name: 'pos', dtype: DType.I32, shape: [] },
], (q, k, v, pos) => {
  const seq = q.dim(2);
  const visible = arange(seq).add(pos).reshape(-1, 1);
  const keys = cacheRows ? k.cast(DType.F32).transpose() : k.cast(DType.F32);
  const scores = where(arange(T).reshape(1, -1).le(visible), q.mul(0.5).matmul(keys).mul(0.25), -Infinity);
  return { y: scores.softmax(-1).matmul(v.cast(DType.F32)) };
});
const VARIANTS = ([[DType.F32, false], [DType.BF16, false], [DType.BF16, true]] as const).map(([kv, cacheRows]) => {
  const graph = attention(kv, cacheRows);
  const name = `${kv}${cacheRows ? ', keys as cache rows' : ''}`;
  return { kv, cacheRows, name, compiled: compileModule({ graphs: [graph] }), reference: { graphs: [{ graph, kernels: [] }] }, tolerance: kv === DType.BF16 ? 1e-2 : 1e-4 };
});
type Variant = (typeof VARIANTS)[number];

const seed = Number(process.env.FLASH_SEED ?? Date.now() % 1e9);
const rng = new Rng(seed);
const randoms = (n: number) => Array.from({ length: n }, () => rng.normal());
/** Query rows, and the position of the first (−1: the first row sees no key at all). */
const CASES: [number, number][] = [[1, 0], [7, 40], [64, 0], [130, 150], [5, -1]];
// Values a bf16 memory holds exactly, so that both variants read the same numbers.
const kv = { k: randoms(GROUPS * D * T).map(roundBf16), v: randoms(GROUPS * T * D).map(roundBf16) };
const qs = CASES.map(([s]) => randoms(GROUPS * PER_GROUP * s * D));

async function outputs(device: Device, variant: Variant, lowered: Variant['compiled'] | Variant['reference']): Promise<number[][]> {
  const program = await device.load(lowered, new ParamStore(() => { throw new Error('no params'); }), { maxSizes: { S: 130 } });
  try {
    program.write('input:k', hostTensor(variant.kv, variant.cacheRows ? [GROUPS, 1, T, D] : [GROUPS, 1, D, T], kv.k));
    program.write('input:v', hostTensor(variant.kv, [GROUPS, 1, T, D], kv.v));
    const out: number[][] = [];
    for (const [c, [s, pos]] of CASES.entries()) {
      program.write('input:q', hostTensor(DType.F32, [GROUPS, PER_GROUP, s, D], qs[c]));
      program.write('input:pos', hostTensor(DType.I32, [], [pos]));
      program.run('attn', { S: s });
      out.push([...(await program.read(namedOutputKey(program.graph('attn'), 'y'), DType.F32, [GROUPS, PER_GROUP, s, D])).data]);
    }
    return out;
  } finally {
    program.destroy();
  }
}

const basics = suite('flash-attention lowering');
basics('attention of many query rows lowers to one flash kernel with the causal bound found', () => {
  for (const { compiled } of VARIANTS) {
    const [k] = compiled.graphs[0].kernels;
    assert.is(compiled.graphs[0].kernels.length, 1);
    assert.ok(k.flash, 'a flash kernel');
    assert.is(k.flash!.batch, GROUPS * PER_GROUP);
    assert.ok(k.flash!.limit, 'the causal bound');
  }
});
basics.run();

for (const variant of VARIANTS) {
  let expected: number[][] | undefined;
  for (const kind of kernelDevices) {
    const s = suite(`flash attention on ${kind}, keys and values ${variant.name}`);
    s(`query rows ${CASES.map(([q]) => q).join(', ')} over ${T} keys match the reference interpreter`, async () => {
      expected ??= await onDevice('reference', (ref) => outputs(ref, variant, variant.reference));
      await onDevice(kind, async (device) => {
        const got = await outputs(device, variant, variant.compiled);
        CASES.forEach(([rows, pos], c) => {
          const [ours, ref] = [got[c], expected![c]];
          // A row that sees no key is NaN in both; the others are compared as a whole.
          const finite = ref.map((x, i) => (Number.isNaN(x) ? -1 : i)).filter((i) => i >= 0);
          assert.equal(ours.map(Number.isNaN), ref.map(Number.isNaN), `rows ${rows} at ${pos}: NaN where the reference has NaN`);
          const err = relativeError(finite.map((i) => ours[i]), finite.map((i) => ref[i]));
          assert.ok(err < variant.tolerance, `rows ${rows} at ${pos}: relative error ${err} (FLASH_SEED=${seed})`);
        });
      });
    });
    s.run();
  }
}
