// What bisect needs of a device, on every device there is here: runs of a range of a graph's kernels (the one
// capability it added to Program), and bisect itself on a small graph of several kernels: clean, and with a sign
// flipped in one kernel's stores. cuda runs on the CPU fake of test/runtime/fake-cuda where g++ is present.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bisect } from '../../compiler/bisect.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { param, trace } from '../../compiler/index.ts';
import { DType } from '../../ir/dtype.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { Device, DeviceKind, Program } from '../../runtime/device.ts';
import { openDevice } from '../../runtime/devices/open.ts';
import { ParamStore } from '../../runtime/params.ts';
import { openCudaOrFake, restoreCudaOrFake, unavailable } from '../runtime/fake-cuda/build.ts';
import { plantInStores, sourceDir } from './plant.ts';


const targets: { kind: DeviceKind; open(): Promise<Device | string> }[] = [
  { kind: 'cpu', open: () => openDevice('cpu') },
  { kind: 'webgpu', open: () => openDevice('webgpu').catch((e) => unavailable(e) ?? Promise.reject(e)) },
  { kind: 'cuda', open: openCudaOrFake },
];

/** x [S,8] → RMSNorm → ·w [8,16] → silu → column sums over S → ·v [16,4]: a few kernels, one symbolic size. */
const graph = trace('mlp', [{ name: 'x', dtype: DType.F32, shape: ['S', 8] }], (x) => {
  const h = x.mul(x.mul(x).mean(-1, { keepdims: true }).add(1e-5).rsqrt()).matmul(param('w', DType.F32, [8, 16])).silu();
  return { y: h.sum(0, { keepdims: true }).matmul(param('v', DType.F32, [16, 4])) };
});
const compiled = compileModule({ graphs: [graph] });
const g = compiled.graphs[0].graph;
const seq = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i));
const weights: Record<string, HostTensor> = {
  w: hostTensor(DType.F32, [8, 16], seq(128, (i) => Math.sin(i) / 3)),
  v: hostTensor(DType.F32, [16, 4], seq(64, (i) => Math.cos(i) / 4)),
};
const params = new ParamStore((n) => weights[n]);
const inputs = { x: hostTensor(DType.F32, [5, 8], seq(40, (i) => Math.sin(3 * i + 1))) };
const sizes = { S: 5 };

for (const target of targets) {
  const s = suite(`bisect's device capability on ${target.kind}`);
  let device: Device | undefined;
  let skip = '';
  s.before(async () => {
    const d = await target.open();
    if (typeof d === 'string') {
      skip = d;
      console.log(`  ${target.kind}: skipped (${d})`);
    } else {
      device = d;
    }
  });
  s.after(() => {
    device?.destroy();
    if (target.kind === 'cuda') restoreCudaOrFake();
  });

  const load = async (): Promise<Program> => device!.load(compiled, params, { maxSizes: sizes });
  const output = async (p: Program) => [...(await p.read('output:mlp:y', DType.F32, [1, 4])).data];

  s('run(graph, sizes, kernels) runs those kernels only; in parts, as much as the whole', async () => {
    if (skip) return;
    assert.ok(g.kernels.length >= 3, `${g.kernels.length} kernels`);
    const whole = await load();
    whole.write('input:x', inputs.x);
    whole.run('mlp', sizes);
    const want = await output(whole);
    whole.destroy();
    assert.ok(want.some((v) => v !== 0));

    const parts = await load();
    parts.write('input:x', inputs.x);
    const last = g.kernels.length - 1;
    parts.run('mlp', sizes, { from: 0, to: last });
    assert.equal(await output(parts), [0, 0, 0, 0], 'the last kernel, which writes y, has not run');
    parts.run('mlp', sizes, { from: last, to: last + 1 });
    assert.equal(await output(parts), want);
    assert.throws(() => parts.run('mlp', sizes, { from: 2, to: 1 }), /not a range of the graph's \d+ kernels/);
    assert.throws(() => parts.run('mlp', sizes, { from: 0, to: last + 2 }), RangeError);
    parts.destroy();
  });

  s('bisect: the clean graph agrees; a sign flipped in one kernel\'s stores is that kernel', async () => {
    if (skip) return;
    const run = async (m = compiled) => {
      const program = await device!.load(m, params, { maxSizes: sizes });
      try {
        return await bisect({ compiled: m, program, graph: 'mlp', inputs, params, inside: true, sourceDir, traced: { module: { graphs: [graph] } } });
      } finally {
        program.destroy();
      }
    };
    const clean = await run();
    assert.ok(clean.agrees && clean.kernelsChecked === g.kernels.length, `clean: ${clean.culprit?.kernel}`);
    assert.ok(clean.passes?.agrees);
    const index = g.kernels.findIndex((k) => k.nodes.some((n) => n.op === 'silu'));
    const planted = plantInStores(compiled, 'mlp', index, (st) => ({ ...st, value: { k: 'unary', op: 'neg', a: st.value, t: 'f32' } }));
    const r = await run(planted);
    assert.is(r.culprit?.kernel, g.kernels[index].name);
    assert.is(r.culprit?.index, index);
    assert.ok(r.culprit?.inputsAgree);
    assert.is(r.culprit?.inside?.reproduced, false, 'compiled again, the kernel is right');
  });

  s.run();
}

const reference = suite('the reference device runs graphs whole');
reference('a range of kernels is refused', async () => {
  const device = await openDevice('reference');
  const program = await device.load({ graphs: [{ graph, kernels: [] }] }, params, { maxSizes: sizes });
  assert.throws(() => program.run('mlp', sizes, { from: 0, to: 1 }), /op by op/);
  program.write('input:x', inputs.x);
  program.run('mlp', sizes);
  assert.ok([...(program.read('output:mlp:y', DType.F32, [1, 4]) as HostTensor).data].some((v) => v !== 0));
});
reference.run();
