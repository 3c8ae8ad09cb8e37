// The decode form of attention (FlashPlan 'decode'): one query row a head over a cache's rows, lane groups of
// depth / 8 threads each taking a key at a time, 8 keys' loads at once, an online softmax per group, the groups
// merged at the end. CUDA runs it over bf16 and f16 caches (backends/cuda/flash.ts; a cache longer than a step is
// divided among workgroups whose last merges the chunks), WebGPU over all three (backends/wgsl/flash.ts). Heads 32,
// 64 and 128 deep (groups of 4, 8 and 16 lanes: a step of 512, 256 and 128 keys, so 1, 2 and 3 chunks on CUDA) over
// 300 positions, 256 deep over 600 (10 chunks, merged 8 at a time), an f16 cache of head 64, f32 caches of heads 64
// and 128; grouped-query heads (3 query heads a cache head), positions on both sides of a step's end, at the cache's
// end, and at −1 (no key visible: NaN, as the reference's softmax of −∞ everywhere gives, and the flash tiles; the
// row form gives 0 there, its loops bounded to no key: a known difference, checked where the decode form runs); NaN
// in the cache past the position, which no key loop may let in. The kernel keeps its row form too (the megakernel's
// tasks, the other devices). Every device against the reference interpreter (both read the same stored values),
// fresh random inputs, f32 arithmetic on both sides: 1e-5 relative.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { arange, trace, where } from '../../compiler/index.ts';
import { cudaCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { scheduleKernel } from '../../backends/schedule.ts';
import { printCudaMegakernel } from '../../backends/cuda/megakernel.ts';
import { scheduleMegakernel } from '../../backends/megakernel-schedule.ts';
import { formatSchedule } from '../../backends/schedule-format.ts';
import { DType } from '../../ir/dtype.ts';
import { roundBf16 } from '../../ir/half.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { Device, namedOutputKey } from '../../runtime/device.ts';
import { ParamStore } from '../../runtime/params.ts';
import { kernelDevices, onDevice } from '../runtime/fake-cuda/build.ts';
import { relativeError } from './compare.ts';
import { Rng } from './rng.ts';

const [KV_HEADS, PER_HEAD, TOKENS] = [2, 3, 300];
const POSITIONS = [-1, 0, 1, 127, 128, 255, 256, 299];
const seed = Number(process.env.DECODE_SEED ?? Date.now() % 1e9);
const rng = new Rng(seed);
const randoms = (n: number) => Array.from({ length: n }, () => roundBf16(rng.normal()));

function attention(D: number, kv: DType = DType.BF16, T = TOKENS, positions = POSITIONS) {
  const graph = trace('decode', [
    { name: 'q', dtype: DType.F32, shape: [KV_HEADS, PER_HEAD, 1, D] },
    { name: 'k', dtype: kv, shape: [KV_HEADS, 1, T, D] },
    { name: 'v', dtype: kv, shape: [KV_HEADS, 1, T, D] },
    { name: 'pos', dtype: DType.I32, shape: [] },
  ], (q, k, v, pos) => {
    const keys = k.cast(DType.F32).transpose();
    const scores = where(arange(T).reshape(1, -1).le(pos.reshape(1, 1)), q.matmul(keys).mul(1 / Math.sqrt(D)), -Infinity);
    return { y: scores.softmax(-1).matmul(v.cast(DType.F32)) };
  });
  const inputs = { q: randoms(KV_HEADS * PER_HEAD * D), k: randoms(KV_HEADS * T * D), v: randoms(KV_HEADS * T * D) };
  return { D, kv, T, positions, graph, compiled: compileModule({ graphs: [graph] }), reference: { graphs: [{ graph, kernels: [] }] }, inputs };
}
// And heads of 256 over 600 rows: 10 chunks of 64 on CUDA, which the last merges 8 at a time (two batches past
// position 511, one below), and on WebGPU, which merges them in a second dispatch (8 a round trip, online); heads of 128 over an f32 cache of
// 1,000 rows: 8 chunks of 128 on WebGPU; heads of 128 over 512 bf16 rows: 4 chunks, WebGPU's fewest, merged in one
// round trip of 4.
const CASES = [attention(32), attention(64), attention(128), attention(64, DType.F16), attention(64, DType.F32), attention(128, DType.F32),
  attention(256, DType.BF16, 600, [0, 511, 512, 599]), attention(128, DType.F32, 1000, [0, 127, 128, 895, 896, 999]),
  attention(128, DType.BF16, 512, [0, 127, 128, 383, 384, 511])];
type Case = (typeof CASES)[number];

async function outputs(device: Device, c: Case, lowered: Case['compiled'] | Case['reference'], nanPast: boolean): Promise<number[][]> {
  const program = await device.load(lowered, new ParamStore(() => { throw new Error('no params'); }), { maxSizes: {} });
  const T = c.T;
  const shape = [KV_HEADS, 1, T, c.D];
  try {
    program.write('input:q', hostTensor(DType.F32, [KV_HEADS, PER_HEAD, 1, c.D], c.inputs.q));
    const out: number[][] = [];
    for (const pos of c.positions) {
      // Row t of the cache is elements t·D … of each head's T·D.
      const past = (x: number, i: number) => (nanPast && Math.floor(i / c.D) % T > pos ? NaN : x);
      program.write('input:k', hostTensor(c.kv, shape, c.inputs.k.map(past)));
      program.write('input:v', hostTensor(c.kv, shape, c.inputs.v.map(past)));
      program.write('input:pos', hostTensor(DType.I32, [], [pos]));
      program.run('decode', {});
      out.push([...(await program.read(namedOutputKey(program.graph('decode'), 'y'), DType.F32, [KV_HEADS, PER_HEAD, 1, c.D])).data]);
    }
    return out;
  } finally {
    program.destroy();
  }
}

/** Whether `kind` runs the case in the decode form (where a row that sees no key is NaN, as the reference has it). */
const decodeForm = (kind: string, c: Case) => (kind === 'cuda' && c.kv !== DType.F32) || kind === 'webgpu';

const schedules = suite('decode form: where it runs');
schedules('CUDA runs one query row over 16-bit cache rows in the decode form, WebGPU over f32 and 16-bit ones; CUDA keeps the row form', () => {
  for (const c of CASES) {
    const [k] = c.compiled.graphs[0].kernels;
    // A step is 8 keys a group; a cache of 4 steps or more is divided, a second dispatch merging the chunks.
    const step = 8 * 256 / (c.D / 8);
    const chunks = Math.ceil(c.T / step) >= 4 ? ` and ${step} keys (${Math.ceil(c.T / step)} chunks, merged by a second dispatch, a workgroup a head, ${Math.min(8, Math.ceil(c.T / step))} chunks a round trip)` : '';
    assert.match(formatSchedule(scheduleKernel(k, webgpuCaps({ subgroups: false }))), `decode attention ${KV_HEADS * PER_HEAD} heads × 1 query over ${c.T} keys (head ${c.D}): a workgroup a head${chunks}, ${256 / (c.D / 8)} groups`);
  }
  for (const c of CASES.filter((x) => x.kv === DType.F32)) {
    const [k] = c.compiled.graphs[0].kernels;
    assert.not.match(formatSchedule(scheduleKernel(k, cudaCaps(90))), 'decode attention');
  }
  for (const c of CASES.filter((x) => x.kv !== DType.F32)) {
    const [k] = c.compiled.graphs[0].kernels;
    const cuda = formatSchedule(scheduleKernel(k, cudaCaps(90)));
    // A step is 8 keys a group (256 threads in groups of D / 8 lanes); a cache longer than a step is divided.
    const step = 8 * 2048 / c.D;
    const chunks = step < c.T ? ` and ${step} keys (${Math.ceil(c.T / step)} chunks, the last of a head to finish merging them in order)` : '';
    assert.match(cuda, `decode attention ${KV_HEADS * PER_HEAD} heads × 1 query over ${c.T} keys (head ${c.D}): a workgroup a head${chunks}, ${2048 / c.D} groups of ${c.D / 8} lanes`);
    assert.match(cuda, 'launched, the decode form below; in a megakernel, the rows above');
    assert.match(cuda, / sum<max\(min\(/, 'the row form is there too');
    // Keys and values that are inputs, not a state this step updates: nothing says which rows are safe to read
    // before the wait (FlashIR.fresh), so the kernel waits first.
    assert.is(c.compiled.graphs[0].kernels[0].flash?.fresh, undefined);
    assert.not.match(cuda, 'before the wait');
  }
});
schedules('a megakernel\'s attention over a long cache runs its chunks of keys as tasks, merging them through its scratch', () => {
  const [k] = CASES[1].compiled.graphs[0].kernels;
  const sk = scheduleKernel(k, { ...cudaCaps(90), dependentLaunch: false });
  assert.is(sk.flash?.keyChunks?.count, 2, '2 chunks of 256 keys');
  const s = scheduleMegakernel([sk], {}, { blocks: 8, processors: 4 });
  assert.is(s.rows[0], KV_HEADS * PER_HEAD * 2, 'a row a head and chunk');
  assert.equal(s.scratch, { workspaceFloats: sk.flash!.keyChunks!.workspaceFloats, counters: sk.flash!.keyChunks!.counters });
  const mk = printCudaMegakernel(s, 'mk', 2);
  assert.equal(mk.scratch, s.scratch);
  assert.match(mk.source, /static __device__ __noinline__ void tf_task0\([^)]*float\* __restrict__ tf_ws, unsigned\* __restrict__ tf_count, unsigned char\* const tf_pool/);
  assert.match(mk.source, /case 0: tf_task0\([^;]*tf_ws, tf_count, tf_pool, tf_first, tf_end\); break;/);
  // Over one step of keys: no chunks, no scratch.
  const [short] = CASES[0].compiled.graphs[0].kernels;
  const whole = scheduleMegakernel([scheduleKernel(short, { ...cudaCaps(90), dependentLaunch: false })], {}, { blocks: 8, processors: 4 });
  assert.is(whole.scratch, undefined);
  assert.not.match(printCudaMegakernel(whole, 'mk', 2).source, /tf_ws, tf_count, tf_pool/);
});
schedules.run();

for (const c of CASES) {
  let expected: number[][] | undefined;
  for (const kind of kernelDevices) {
    const s = suite(`decode form, head ${c.D}, ${c.kv} cache of ${c.T}, on ${kind}`);
    s(`positions ${c.positions.join(', ')}, NaN past the position: as the reference interpreter`, async () => {
      expected ??= await onDevice('reference', (ref) => outputs(ref, c, c.reference, false));
      await onDevice(kind, async (device) => {
        const got = await outputs(device, c, c.compiled, true);
        c.positions.forEach((pos, i) => {
          const [ours, ref] = [got[i], expected![i]];
          if (pos < 0 && !decodeForm(kind, c)) return;
          assert.equal(ours.map(Number.isNaN), ref.map(Number.isNaN), `at ${pos}: NaN where the reference has NaN (DECODE_SEED=${seed})`);
          if (pos < 0) return;
          const err = relativeError(ours, ref);
          assert.ok(err < 1e-5, `head ${c.D} at ${pos}: relative error ${err} (DECODE_SEED=${seed})`);
        });
      });
    });
    s.run();
  }
}
