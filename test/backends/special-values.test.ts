// Special values on every backend: a table of cases (NaN, ±∞, empty reductions, i32 wrapping and division, casts
// out of range, pow of negative bases, 16-bit overflow), each with the result the README's Numerics section
// defines, written by hand. Every case runs on the reference interpreter, the CPU kernels, WebGPU (lavapipe
// without a GPU) and CUDA (the CPU fake of test/runtime/fake-cuda where g++ is present), and must give exactly
// that result (NaN equal to NaN; a few transcendental cases within a tolerance).
//
//   CASE='argmax' npm test -- special-values      only the cases whose name matches

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { arange, Tensor, trace, where } from '../../compiler/index.ts';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { HostTensor, hostTensor, roundBf16, roundF16 } from '../../ir/host-tensor.ts';
import { Device, DeviceKind } from '../../runtime/device.ts';
import { openDevice } from '../../runtime/devices/open.ts';
import { runOnce } from '../../runtime/executor.ts';
import { ParamStore } from '../../runtime/params.ts';
import { buildFakeCuda, fakeCudaEnabled, useFakeCuda } from '../runtime/fake-cuda/build.ts';

const INF = Infinity;
const I32_MIN = -2147483648;
const I32_MAX = 2147483647;

interface Input {
  readonly dtype: DType;
  readonly shape: number[];
  readonly values: number[];
}

interface Case {
  readonly name: string;
  readonly inputs: Input[];
  readonly fn: (...xs: Tensor[]) => Tensor;
  /** The result as the README defines it (its dtype is the graph's; shapes are checked by count). */
  readonly want: number[];
  /** Relative tolerance for f32 results (transcendental functions are not correctly rounded on GPUs). */
  readonly rtol?: number;
  /**
   * The result where a GPU compiler fuses a product and a sum into one multiply-add (the README's known limits:
   * NVRTC and NVIDIA's Vulkan compiler do), accepted on the GPU backends besides `want`.
   */
  readonly contracted?: number[];
}

const f32 = (...values: number[]): Input => ({ dtype: DType.F32, shape: [values.length], values });
const i32 = (...values: number[]): Input => ({ dtype: DType.I32, shape: [values.length], values });
const rows = (dtype: DType, data: number[][]): Input => ({ dtype, shape: [data.length, data[0]?.length ?? 0], values: data.flat() });
/** A long row (so that reductions run cooperatively on GPUs): `fill` everywhere but at the given positions. */
const longRow = (n: number, fill: number, at: Record<number, number>): Input =>
  ({ dtype: DType.F32, shape: [1, n], values: Array.from({ length: n }, (_, i) => at[i] ?? fill) });

const cases: Case[] = [
  // literals: WGSL has no NaN or ∞ literals, they are made at run time
  { name: 'mul by a NaN literal', inputs: [f32(1, -2, 0)], fn: (x) => x.mul(NaN), want: [NaN, NaN, NaN] },
  { name: 'add an ∞ literal', inputs: [f32(1, -INF, NaN)], fn: (x) => x.add(INF), want: [INF, NaN, NaN] },
  { name: 'NaN literal plus ∞ literal', inputs: [f32(1, 2)], fn: (x) => x.mul(NaN).add(x.add(INF)), want: [NaN, NaN] },
  { name: 'sub a −∞ literal', inputs: [f32(1, -INF)], fn: (x) => x.sub(-INF), want: [INF, NaN] },
  { name: 'where with ∞ and NaN literals', inputs: [f32(1, -1, 0)], fn: (x) => where(x.gt(0), INF, where(x.lt(0), -INF, NaN)), want: [INF, -INF, NaN] },
  // IEEE arithmetic
  { name: 'overflow to ∞, ∞ − ∞', inputs: [f32(3e38, -3e38, INF)], fn: (x) => x.mul(x.abs().add(1)).sub(x.abs().mul(0).add(INF)), want: [NaN, -INF, NaN], contracted: [-INF, -INF, NaN] },
  { name: 'division by zero', inputs: [f32(1, -1, 0, NaN), f32(0, 0, 0, 0)], fn: (x, y) => x.div(y), want: [INF, -INF, NaN, NaN] },
  { name: '0 × ∞ through a runtime zero', inputs: [f32(0, 0, 2), f32(INF, -INF, INF)], fn: (x, y) => x.mul(y), want: [NaN, NaN, INF] },
  { name: 'matmul: 0 × ∞ is NaN (no zero skipping)', inputs: [rows(DType.F32, [[0, 1], [1, 0]]), rows(DType.F32, [[INF, 1], [2, 3]])], fn: (x, w) => x.matmul(w), want: [NaN, 3, INF, 1] },
  { name: 'unary functions at the edges', inputs: [f32(0, -1, INF, -INF, NaN)],
    fn: (x) => x.log().add(0), want: [-INF, NaN, INF, NaN, NaN] },
  { name: 'exp, sqrt, rsqrt, recip', inputs: [f32(INF, -INF, 0, -1)],
    fn: (x) => x.exp().add(x.sqrt().mul(2)).add(x.abs().rsqrt()).add(x.recip().mul(0.5)), want: [INF, NaN, INF, NaN] },
  { name: 'tanh, sigmoid, silu saturate', inputs: [f32(INF, -INF, 100, -100, -1000)],
    fn: (x) => x.tanh().add(x.sigmoid().mul(10)), want: [11, -1, 11, -1, -1] },
  { name: 'silu at ±∞ and far out', inputs: [f32(INF, -INF, -1000, NaN)], fn: (x) => x.silu(), want: [INF, NaN, -0, NaN] },
  { name: 'floor and neg of specials', inputs: [f32(NaN, -INF, 2.5, -0.5)], fn: (x) => x.floor().neg(), want: [NaN, INF, -2, 1] },
  // NaN through maximum / max / argmax (PyTorch: NaN wins)
  { name: 'maximum and minimum propagate NaN', inputs: [f32(NaN, 1, NaN, -INF, 2), f32(1, NaN, NaN, -INF, 3)],
    fn: (x, y) => x.maximum(y).add(x.minimum(y).mul(10)), want: [NaN, NaN, NaN, -INF, 23] },
  { name: 'max over rows with NaN and −∞', inputs: [rows(DType.F32, [[1, NaN, 3], [-INF, -INF, -INF], [1, 5, 2], [NaN, INF, 0]])],
    fn: (x) => x.max(1), want: [NaN, -INF, 5, NaN] },
  { name: 'argmax: first NaN, else first maximum', inputs: [rows(DType.F32, [[1, NaN, 3], [NaN, NaN, 1], [-INF, -INF, -INF], [2, 5, 5], [3, INF, NaN]])],
    fn: (x) => x.argmax(1), want: [1, 0, 0, 1, 2] },
  { name: 'max of a long row with a NaN', inputs: [longRow(3000, 1, { 5: 7, 2900: NaN })], fn: (x) => x.max(1), want: [NaN] },
  { name: 'max of a long row of −∞', inputs: [longRow(3000, -INF, {})], fn: (x) => x.max(1), want: [-INF] },
  { name: 'argmax of a long row: the first NaN', inputs: [longRow(20000, 0, { 17: 9, 1234: NaN, 15000: NaN, 19999: 10 })], fn: (x) => x.argmax(1), want: [1234] },
  { name: 'argmax of a long row: the first maximum', inputs: [longRow(20000, -1, { 300: 4, 4000: 4, 19000: 3 })], fn: (x) => x.argmax(1), want: [300] },
  { name: 'argmax of a long row of −∞', inputs: [longRow(5000, -INF, {})], fn: (x) => x.argmax(1), want: [0] },
  { name: 'softmax with NaN, ∞ and all −∞', inputs: [rows(DType.F32, [[NaN, 1], [INF, 1], [-INF, -INF], [0, -INF]])], fn: (x) => x.softmax(1), want: [NaN, NaN, NaN, NaN, NaN, NaN, 1, 0] },
  // comparisons with NaN: all false but ne
  { name: 'comparisons with NaN', inputs: [f32(NaN, 1, NaN), f32(1, NaN, NaN)],
    fn: (x, y) => [x.eq(y), x.ne(y), x.lt(y), x.le(y), x.gt(y), x.ge(y)].map((c, i) => c.cast(DType.F32).mul(2 ** i)).reduce((a, b) => a.add(b)), want: [2, 2, 2] },
  { name: 'a value compared with itself (isnan)', inputs: [f32(NaN, 1, INF)],
    fn: (x) => [x.eq(x), x.ne(x), x.le(x), x.ge(x), x.lt(x), x.gt(x)].map((c, i) => c.cast(DType.F32).mul(2 ** i)).reduce((a, b) => a.add(b)), want: [2, 13, 13] },
  { name: 'where(isnan(x), 0, x)', inputs: [f32(NaN, 1, -INF)], fn: (x) => where(x.ne(x), 0, x), want: [0, 1, -INF] },
  // i32: wrapping, floor division, x / 0 = 0, powers
  { name: 'i32 division floors; x / 0 = 0; −2³¹ / −1 wraps', inputs: [i32(7, -7, 7, -7, 7, I32_MIN, 0, -1), i32(2, 2, -2, -2, 0, -1, 0, 3)],
    fn: (x, y) => x.div(y), want: [3, -4, -4, 3, 0, I32_MIN, 0, -1] },
  { name: 'i32 add wraps', inputs: [i32(I32_MAX, I32_MIN, -5), i32(1, -1, 3)], fn: (x, y) => x.add(y), want: [I32_MIN, I32_MAX, -2] },
  { name: 'i32 sub wraps', inputs: [i32(I32_MIN, 0), i32(1, I32_MIN)], fn: (x, y) => x.sub(y), want: [I32_MAX, I32_MIN] },
  { name: 'i32 mul wraps', inputs: [i32(65536, 100000, 46341, -65536), i32(65536, 100000, 46341, 32768)], fn: (x, y) => x.mul(y), want: [0, 1410065408, -2147479015, I32_MIN] },
  { name: 'i32 neg and abs wrap', inputs: [i32(I32_MIN, -16777217, 5)], fn: (x) => x.neg().add(x.abs().mul(2)), want: [I32_MIN, 50331651, 5] },
  { name: 'i32 pow', inputs: [i32(-2, -2, 3, 2, -1, 0, 2, 1, 7, 0), i32(2, 3, 0, -1, -3, 0, 31, -5, 12, -1)],
    fn: (x, y) => x.pow(y), want: [4, -8, 1, 0, -1, 1, I32_MIN, 1, 956385313, 0] },
  { name: 'i32 maximum, max and argmax', inputs: [rows(DType.I32, [[I32_MIN, 5, -3, 5], [I32_MIN, I32_MIN, I32_MIN, I32_MIN], [16777216, 16777217, 16777217, 3]])],
    fn: (x) => x.max(1).mul(4).add(x.argmax(1)).add(x.maximum(x.neg()).max(1).mul(0)), want: [21, 0, 67108869] },
  // f32 pow: C's special cases
  { name: 'f32 pow', inputs: [f32(-2, -2, -2, 2, 0, 0, -INF, NaN, 1, -1, -1, 0.5, -8), f32(2, 3, 0.5, -1, -1, 0, 3, 0, NaN, INF, NaN, -INF, 1 / 3)],
    fn: (x, y) => x.pow(y), want: [4, -8, NaN, 0.5, INF, 1, -INF, 1, 1, 1, NaN, INF, NaN] },
  { name: 'f32 pow by a literal', inputs: [f32(-2, NaN, -INF, 0)], fn: (x) => x.pow(3), want: [-8, NaN, -INF, 0] },
  // casts
  { name: 'f32 → i32 saturates; NaN → 0', inputs: [f32(NaN, INF, -INF, 3e9, -3e9, 2.7, -2.7, 2147483520, -0.5)],
    fn: (x) => x.cast(DType.I32), want: [0, I32_MAX, I32_MIN, I32_MAX, I32_MIN, 2, -2, 2147483520, 0] },
  { name: 'f32 → u32 → f32 saturates at [0, 2³² − 1]', inputs: [f32(NaN, INF, -5, 3e9, 4e9, 5e9, 7.9)],
    fn: (x) => x.cast(DType.U32).cast(DType.F32), want: [0, 4294967296, 0, 3e9, 4e9, 4294967296, 7] },
  { name: 'i32 → u32 keeps the bits', inputs: [i32(-1, I32_MIN, 5)], fn: (x) => x.cast(DType.U32).cast(DType.F32), want: [4294967296, 2147483648, 5] },
  { name: 'u32 → i32 keeps the bits', inputs: [i32(-1, I32_MIN, 5)], fn: (x) => x.cast(DType.U32).cast(DType.I32), want: [-1, I32_MIN, 5] },
  { name: 'u32 equality and where', inputs: [{ dtype: DType.U32, shape: [3], values: [4294967295, 7, 0] }], fn: (x) => where(x.eq(4294967295), x, 3).cast(DType.F32), want: [4294967296, 3, 3] },
  { name: 'f32 → bool: NaN is true', inputs: [f32(NaN, 0, -0, INF)], fn: (x) => x.cast(DType.Bool).cast(DType.F32), want: [1, 0, 0, 1] },
  { name: 'i32 → f32 rounds', inputs: [i32(16777217, I32_MIN, I32_MAX)], fn: (x) => x.cast(DType.F32), want: [16777216, -2147483648, 2147483648] },
  { name: 'f32 → f16: overflow to ±∞, subnormals, NaN', inputs: [f32(65504, 65519, 65520, 1e5, -1e5, NaN, INF, 6e-8, 1e-8, 3.0001e-8, 1.00048828125, 1.000732421875)],
    fn: (x) => x.cast(DType.F16).cast(DType.F32), want: [65504, 65504, INF, INF, -INF, NaN, INF, roundF16(6e-8), 0, roundF16(3.0001e-8), 1, 1.0009765625] },
  { name: 'f32 → bf16: overflow to ±∞, ties to even, NaN', inputs: [f32(3.4e38, 3.4028234663852886e38, -3.4028234663852886e38, NaN, 1.00390625, 1.01171875, -INF)],
    fn: (x) => x.cast(DType.BF16).cast(DType.F32), want: [roundBf16(3.4e38), INF, -INF, NaN, 1, 1.015625, -INF] },
  { name: 'f16 arithmetic overflows inside a kernel', inputs: [{ dtype: DType.F16, shape: [2], values: [60000, 1000] }],
    fn: (x) => x.add(x).mul(0.5).cast(DType.F32), want: [INF, 1000] },
  { name: 'bf16 arithmetic rounds each op', inputs: [{ dtype: DType.BF16, shape: [2], values: [256, 1] }],
    fn: (x) => x.add(1).sub(x).cast(DType.F32), want: [0, 1] },
  // reductions over an empty axis
  { name: 'sum over an empty axis is 0', inputs: [rows(DType.F32, [[], []])], fn: (x) => x.sum(1), want: [0, 0] },
  { name: 'mean over an empty axis is NaN', inputs: [rows(DType.F32, [[], []])], fn: (x) => x.mean(1), want: [NaN, NaN] },
  { name: 'max over an empty axis is −∞', inputs: [rows(DType.F32, [[], []])], fn: (x) => x.max(1), want: [-INF, -INF] },
  { name: 'argmax over an empty axis is 0', inputs: [rows(DType.F32, [[], []])], fn: (x) => x.argmax(1), want: [0, 0] },
  // a Llama-shaped check: masked attention rows never see −∞ − (−∞)
  { name: 'causal softmax with a −∞ mask', inputs: [rows(DType.F32, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])],
    fn: (x) => where(arange(3).reshape(1, -1).le(arange(3).reshape(-1, 1)), x, -INF).softmax(1).max(1).mul(0).add(1), want: [1, 1, 1] },
];

const only = process.env.CASE ? new RegExp(process.env.CASE) : undefined;
const selected = cases.filter((c) => !only || only.test(c.name));

function graphOf(c: Case, i: number): Graph {
  const specs = c.inputs.map((x, j) => ({ name: `x${j}`, dtype: x.dtype, shape: x.shape }));
  return trace(`case${i}`, specs, (...xs: Tensor[]) => c.fn(...xs));
}

const inputsOf = (c: Case): Record<string, HostTensor> =>
  Object.fromEntries(c.inputs.map((x, j) => [`x${j}`, hostTensor(x.dtype, x.shape, x.values)]));

/** Exactly equal (NaN equal to NaN, −0 equal to 0), or within rtol. */
function same(got: number, want: number, rtol: number): boolean {
  if (Number.isNaN(want)) return Number.isNaN(got);
  if (got === want) return true;
  return Number.isFinite(want) && Math.abs(got - want) <= rtol * Math.abs(want);
}

/** Why a device's results differ from the table, per case; [] when they all agree. */
async function run(device: Device, kind: DeviceKind): Promise<string[]> {
  const graphs = selected.map(graphOf);
  const lowered = kind === 'reference' ? { graphs: graphs.map((graph) => ({ graph, kernels: [] })) } : compileModule({ graphs });
  const noParams = new ParamStore((n) => { throw new Error(`no parameter ${n}`); });
  const program = await device.load(lowered, noParams, { maxSizes: {} });
  const failures: string[] = [];
  try {
    for (const [i, c] of selected.entries()) {
      const [got] = await runOnce(program, graphs[i].name, inputsOf(c), new Map());
      const values = [...got.data];
      const matches = (want: number[]) => values.length === want.length && values.every((v, j) => same(v, want[j], c.rtol ?? 0));
      const bad = !matches(c.want) && !(c.contracted && (kind === 'webgpu' || kind === 'cuda') && matches(c.contracted));
      if (bad) failures.push(`${kind}: ${c.name}: got [${values.join(', ')}], want [${c.want.join(', ')}]`);
    }
  } finally {
    program.destroy();
  }
  return failures;
}

const unavailable = (e: unknown) => (/Unavailable/.test((e as Error).name) ? (e as Error).message : undefined);

for (const kind of ['reference', 'cpu'] as const) {
  test(`special values on ${kind} as the README defines them`, async () => {
    const failures = await run(await openDevice(kind), kind);
    assert.ok(failures.length === 0, `${failures.length} of ${selected.length} cases differ:\n${failures.join('\n')}`);
  });
}

test('special values on webgpu (lavapipe, or the GPU\'s adapter) as the README defines them', async () => {
  let device: Device;
  try {
    device = await openDevice('webgpu');
  } catch (e) {
    if (!unavailable(e)) throw e;
    console.log(`  webgpu skipped: ${unavailable(e)}`);
    return;
  }
  try {
    const failures = await run(device, 'webgpu');
    assert.ok(failures.length === 0, `${failures.length} of ${selected.length} cases differ:\n${failures.join('\n')}`);
  } finally {
    device.destroy();
  }
});

test('special values on cuda (a real driver, or the CPU fake) as the README defines them', async () => {
  let device: Device;
  let restore: (() => void) | undefined;
  try {
    device = await openDevice('cuda');
  } catch (e) {
    if (!unavailable(e)) throw e;
    if (!fakeCudaEnabled) {
      console.log(`  cuda skipped: ${unavailable(e)}; no g++ for the CPU fake`);
      return;
    }
    const fake = buildFakeCuda();
    restore = useFakeCuda(fake);
    device = await openDevice('cuda', { libraries: [fake.lib], cacheDir: fake.cacheDir });
  }
  try {
    const failures = await run(device, 'cuda');
    assert.ok(failures.length === 0, `${failures.length} of ${selected.length} cases differ:\n${failures.join('\n')}`);
  } finally {
    device.destroy();
    restore?.();
  }
});

test.run();
