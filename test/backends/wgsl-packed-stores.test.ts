// WGSL kernels storing bf16 and f16 (two to a u32 word, written through atomics: backends/wgsl/render-wgsl.ts)
// against the reference interpreter, bit for bit: rounding to nearest even at ties, overflow to ±∞, NaN kept, f16
// subnormals, -0 (not f32 subnormals, which GPUs may flush to zero); a word's two halves stored by different
// threads; a state's row written in place beside elements that must keep their values; buffers bound in chunks.
// Lavapipe without a GPU.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { interpret } from '../../backends/reference/interpreter.ts';
import { state, trace } from '../../compiler/index.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { Device } from '../../runtime/device.ts';
import { openWebGpu } from '../../runtime/devices/webgpu.ts';
import { runOnce } from '../../runtime/executor.ts';
import { ParamStore } from '../../runtime/params.ts';
import { Rng } from './rng.ts';

let device: Device | undefined;
const gpu = async () => (device ??= await openWebGpu());

/** Values whose rounding to bf16 or f16 is easy to get wrong, then random ones over every magnitude. */
function awkward(n: number, seed: number): number[] {
  const special = [
    NaN, -NaN, Infinity, -Infinity, 0, -0, 1, -1,
    1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), // bf16 ties: to even (1) and up
    1 + 2 ** -11, 1 + 3 * 2 ** -11, // f16 ties
    65504, 65519, 65520, -65520, 1e6, // f16's largest, the tie past it (to ∞), overflow
    3.3895313892515355e38, 3.4028234663852886e38, -3.4028234663852886e38, // bf16's largest, f32's (to ∞)
    2 ** -24, 1.5 * 2 ** -24, 2.5 * 2 ** -24, 2 ** -25, 2 ** -26, 6.1e-5, 5.9e-8, -3e-7, // f16 subnormals, ties, underflow
    1.1754944e-38, -(2 ** -126), // f32's (and bf16's) smallest normal: f32 subnormals a GPU may flush (README, Numerics)
  ];
  const rng = new Rng(seed);
  const out = special.slice(0, n);
  while (out.length < n) out.push(rng.normal() * 2 ** Math.round(rng.normal() * 20));
  return out;
}

function sameBits(got: HostTensor, want: HostTensor, what: string): void {
  assert.is(got.dtype, want.dtype, `${what}: dtype`);
  for (let i = 0; i < want.data.length; i++) {
    const [a, b] = [got.data[i], want.data[i]];
    if (!(Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b)))) assert.unreachable(`${what}, element ${i}: got ${a}, want ${b}`);
  }
}

async function check(g: Graph, inputs: Record<string, HostTensor>, states: Map<string, HostTensor>, what: string, on?: Device): Promise<void> {
  const copy = () => new Map([...states].map(([name, t]) => [name, { ...t, data: t.data.slice() }]));
  const wantStates = copy();
  const want = interpret(g, { inputs, param: () => { throw new Error('no params'); }, states: wantStates });
  const program = await (on ?? await gpu()).load(compileModule({ graphs: [g] }), new ParamStore(() => { throw new Error('no params'); }), { maxSizes: {} });
  try {
    const gotStates = copy();
    const got = await runOnce(program, g.name, inputs, gotStates);
    want.forEach((w, i) => sameBits(got[i], w, `${what}, output ${i}`));
    for (const [name, w] of wantStates) sameBits(gotStates.get(name)!, w, `${what}, state ${name}`);
  } finally {
    program.destroy();
  }
}

for (const dtype of [DType.BF16, DType.F16]) {
  test(`f32 → ${dtype}: each of 777 values rounded as the reference rounds it`, async () => {
    const x = hostTensor(DType.F32, [777], awkward(777, 1));
    const g = trace(`to_${dtype}`, [{ name: 'x', dtype: DType.F32, shape: [777] }], (t) => ({ y: t.cast(dtype), z: t.mul(3).cast(dtype) }));
    await check(g, { x }, new Map(), `to ${dtype}`);
  });

  test(`${dtype} state: a row of 3 written in place keeps the other half of each word it shares`, async () => {
    const g = trace(`row_${dtype}`, [{ name: 'x', dtype: DType.F32, shape: [1, 3] }, { name: 'at', dtype: DType.I32, shape: [] }], (x, at) => {
      state('table', dtype, [5, 3]).write(x.cast(dtype), at, 0);
      return { y: x.add(1) };
    });
    for (const row of [0, 1, 4]) {
      const table = hostTensor(dtype, [5, 3], awkward(15, 2).map((v) => (Number.isFinite(v) ? v / 1e4 : v)));
      const x = hostTensor(DType.F32, [1, 3], [NaN, 1 + 2 ** -8, -65520]);
      await check(g, { x, at: hostTensor(DType.I32, [], [row]) }, new Map([['table', table]]), `row ${row}`);
    }
  });
}

test('bf16 stores into a buffer bound in chunks of 256 bytes (200 elements: two chunks)', async () => {
  const split = await openWebGpu({ maxBindingBytes: 256 });
  try {
    const g = trace('chunked_bf16', [{ name: 'x', dtype: DType.F32, shape: [200] }], (x) => ({ y: x.neg().cast(DType.BF16) }));
    await check(g, { x: hostTensor(DType.F32, [200], awkward(200, 3)) }, new Map(), 'chunked', split);
  } finally {
    split.destroy();
  }
});

test.after(() => device?.destroy());
test.run();
