// One suite, run on every device there is here: cpu, reference, webgpu (lavapipe without a GPU; once more with
// bindings split into 256-byte chunks and marks timed on the host) and cuda (the CPU fake of
// test/runtime/fake-cuda where g++ is present, or a real driver). Random graphs through runOnce against the
// reference interpreter, and the queue's promises: order across write, run, copy, zero and read, recordings
// that replay what they recorded, reads that see the value they were queued after, state kept between runs.
//
//   DEVICE_SEEDS=100 npm test -- devices      more random graphs (default 40; 24 on CUDA)
//   SEED=12 npm test -- devices               one random graph

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { interpret } from '../../backends/reference/interpreter.ts';
import { evalSize, KExpr } from '../../backends/kernel-ir.ts';
import { LoweredModule } from '../../backends/lowered.ts';
import { scalar, state, trace } from '../../compiler/index.ts';
import { DType } from '../../ir/dtype.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { printGraph } from '../../ir/printer.ts';
import { Device, DeviceKind, Program } from '../../runtime/device.ts';
import type { CudaDevice } from '../../runtime/devices/cuda.ts';
import { openDevice } from '../../runtime/devices/open.ts';
import { runOnce } from '../../runtime/executor.ts';
import { ParamStore } from '../../runtime/params.ts';
import { lowerFor } from '../../compiler/open-session.ts';
import { mismatch } from '../backends/compare.ts';
import { randomGraph } from '../backends/random-graph.ts';
import { openCudaOrFake, restoreCudaOrFake, unavailable } from './fake-cuda/build.ts';

/**
 * f32 tolerance: the host devices compute as the reference does (1e-4 leaves room for a different summation
 * order); GPU math (exp, sin, inverseSqrt...) is not correctly rounded, so GPUs get 2e-4. 16-bit floats within
 * one unit in the last place, ints and bools exactly (compare.ts).
 */
const RTOL: Record<DeviceKind, number> = { cpu: 1e-4, reference: 1e-4, webgpu: 2e-4, cuda: 2e-4 };

interface Target {
  readonly name: string;
  readonly kind: DeviceKind;
  readonly seeds: number;
  /** Only the graphs this holds for (the split bindings: graphs with a buffer that spans several). */
  readonly only?: (m: LoweredModule) => boolean;
  /** The device, or why there is none here. */
  open(): Promise<Device | string>;
  after?(): void;
}

/** 256-byte chunks a buffer of 4-byte elements spans. */
const chunks = (elems: KExpr) => Math.ceil((4 * evalSize(elems, {})) / 256);
const seedCount = (n: number) => Number(process.env.DEVICE_SEEDS ?? n);

const targets: Target[] = [
  { name: 'cpu', kind: 'cpu', seeds: seedCount(40), open: () => openDevice('cpu') },
  { name: 'reference', kind: 'reference', seeds: seedCount(40), open: () => openDevice('reference') },
  {
    name: 'webgpu', kind: 'webgpu', seeds: seedCount(40),
    open: () => openDevice('webgpu').catch((e) => unavailable(e) ?? Promise.reject(e)),
  },
  {
    name: 'webgpu (bindings split at 256 bytes, marks on the host)', kind: 'webgpu', seeds: seedCount(116),
    // Graphs with a buffer of several chunks, few enough in all for the limit on storage bindings per shader, and
    // no 16-bit stores (which WGSL kernels do not make).
    only: (m) => m.graphs.every((g) => g.kernels.every((k) => k.buffers.reduce((n, b) => n + chunks(b.elems), 0) <= 10
      && !k.buffers.some((b) => b.written && (b.dtype === DType.BF16 || b.dtype === DType.F16))))
      && m.graphs.some((g) => g.kernels.some((k) => k.buffers.some((b) => chunks(b.elems) > 1))),
    open: () => openDevice('webgpu', { maxBindingBytes: 256, timestamps: false, runsPerSubmit: 2 }).catch((e) => unavailable(e) ?? Promise.reject(e)),
  },
  {
    name: 'cuda', kind: 'cuda', seeds: seedCount(24),
    open: openCudaOrFake,
    after: restoreCudaOrFake,
  },
];


const f32 = (values: number[]) => hostTensor(DType.F32, [values.length], values);
const values = (t: HostTensor) => [...t.data];

/**
 * Graphs for the queue tests: @double (y = 2x), @scale (y = 3v over a symbolic S), @acc (s += x, y = 2s).
 * Run as a step that copies y back into x, @acc makes each step's values depend on every earlier one.
 */
function queueModule(kind: DeviceKind): LoweredModule {
  const double = trace('double', [{ name: 'x', dtype: DType.F32, shape: [4] }], (x) => ({ y: x.mul(2) }));
  const scale = trace('scale', [{ name: 'v', dtype: DType.F32, shape: ['S'] }], (v) => ({ y: v.mul(3) }));
  const acc = trace('acc', [{ name: 'x', dtype: DType.F32, shape: [4] }], (x) => {
    const s = state('s', DType.F32, [4]);
    return { y: s.write(s.add(x), scalar(0, DType.I32), 0).mul(2) };
  });
  return lowerFor(kind, { graphs: [double, scale, acc] });
}

const noParams = new ParamStore((n) => {
  throw new Error(`no parameter ${n}`);
});

for (const target of targets) {
  const s = suite(`device: ${target.name}`);
  let device: Device | undefined;
  let skip = '';
  let program: Program | undefined;
  let openError: unknown;

  s.before(async () => {
    try {
      const d = await target.open();
      if (typeof d === 'string') {
        skip = d;
        console.log(`  device ${target.name}: skipped (${d})`);
      } else {
        device = d;
      }
    } catch (e) {
      // uvu drops errors thrown in hooks: each test reports it instead.
      openError = e;
    }
  });
  s.after(() => {
    device?.destroy();
    target.after?.();
  });
  s.before.each(async () => {
    if (openError) throw openError;
    if (device) program = await device.load(queueModule(target.kind), noParams, { maxSizes: { S: 8 } });
  });
  s.after.each(() => {
    program?.destroy();
    program = undefined;
  });

  s(`kind and description`, () => {
    if (skip) return;
    assert.is(device!.kind, target.kind);
    assert.ok(device!.description.length > 0);
    if (target.kind === 'cuda') assert.match(device!.description, /\(sm_\d+\)$/);
  });

  s(`random graphs through runOnce match the reference interpreter (${process.env.SEED ? `SEED=${process.env.SEED}` : `${target.seeds} seeds`})`, async () => {
    if (skip) return;
    const seeds = process.env.SEED !== undefined ? process.env.SEED.split(',').map(Number) : [...Array(target.seeds).keys()];
    const failures: string[] = [];
    let tried = 0;
    for (const seed of seeds) {
      const c = randomGraph(seed);
      const g = c.graph;
      const copy = () => new Map([...c.states].map(([k, t]) => [k, { ...t, data: t.data.slice() }]));
      const wantStates = copy();
      const want = [...interpret(g, { inputs: c.inputs, param: (n) => c.params.get(n)!, states: wantStates }), ...wantStates.values()];
      const lowered = lowerFor(target.kind, { graphs: [g] });
      if (target.only && !target.only(lowered)) continue;
      tried++;
      const p: Program = await device!.load(lowered, new ParamStore((n) => c.params.get(n)!), { maxSizes: {} });
      try {
        const gotStates = copy();
        const got = [...await runOnce(p, g.name, c.inputs, gotStates), ...g.states.map((v) => gotStates.get(v.name!)!)];
        const wantOrdered = [...want.slice(0, g.outputs.length), ...g.states.map((v) => wantStates.get(v.name!)!)];
        wantOrdered.forEach((w, i) => {
          const bad = mismatch(got[i], w, RTOL[target.kind]);
          if (bad) {
            failures.push(`seed ${seed} (SEED=${seed} npm test -- devices), ${i < g.outputs.length ? `output ${i}` : 'state'}: ${bad}\n`
              + `--- lowered ---\n${printGraph(lowered.graphs[0].graph, { locations: false })}`);
          }
        });
      } finally {
        p.destroy();
      }
    }
    assert.ok(failures.length === 0, `${failures.length} failures; the first:\n${failures[0]}`);
    console.log(`  ${target.name}: ${tried} random graphs`);
    if (process.env.SEED === undefined) assert.ok(tried >= 4, `only ${tried} seeds to try`);
  });

  s('a symbolic size through runOnce: each run at its own size', async () => {
    if (skip) return;
    for (const n of [3, 8, 1, 5]) {
      const v = f32(Array.from({ length: n }, (_, i) => i + 1));
      const [y] = await runOnce(program!, 'scale', { v }, new Map());
      assert.equal(values(y), values(v).map((x) => 3 * x), `S=${n}`);
    }
  });

  s('write → run → copy → run → write → read: each in the order queued', async () => {
    if (skip) return;
    const p = program!;
    p.write('input:x', f32([1, 2, 3, 4]));
    p.run('double', {});
    p.copy('output:double:y', 'input:x', DType.F32, 4);
    p.run('double', {});
    // Must not overtake the runs before it (WebGPU's writeBuffer would, were the encoded runs not submitted first).
    p.write('input:x', f32([10, 20, 30, 40]));
    const y = p.read('output:double:y', DType.F32, [4]);
    const x = p.read('input:x', DType.F32, [4]);
    assert.equal(values(await y), [4, 8, 12, 16]);
    assert.equal(values(await x), [10, 20, 30, 40]);
  });

  s('one graph at two sizes back to back, directly and replayed: each run reads its own sizes', async () => {
    if (skip) return;
    const p = program!;
    const twice = () => {
      p.run('scale', { S: 8 });
      p.copy('output:scale:y', 'input:v', DType.F32, 8);
      p.run('scale', { S: 4 });
    };
    const v = [1, 2, 3, 4, 5, 6, 7, 8];
    // The first run triples all 8; the second triples the first 4 again and leaves the rest of y as it was.
    const want = [...v.slice(0, 4).map((x) => 9 * x), ...v.slice(4).map((x) => 3 * x)];
    p.write('input:v', f32(v));
    twice();
    assert.equal(values(await p.read('output:scale:y', DType.F32, [8])), want);
    const r = p.record(twice);
    assert.is(r.commands, 3);
    p.write('input:v', f32(v));
    p.run('scale', { S: 1 });
    p.replay(r);
    assert.equal(values(await p.read('output:scale:y', DType.F32, [8])), want);
  });

  s('record queues nothing; replaying a recording of two steps twice equals four steps run', async () => {
    if (skip) return;
    const p = program!;
    const step = () => {
      p.run('acc', {});
      p.copy('output:acc:y', 'input:x', DType.F32, 4);
    };
    const x0 = [1, 2, 3, 4];
    p.write('input:x', f32(x0));
    p.zero('state:s');
    const r = p.record(() => {
      step();
      step();
    });
    assert.is(r.commands, 4);
    assert.equal(values(await p.read('state:s', DType.F32, [4])), [0, 0, 0, 0], 'recording ran nothing');
    assert.equal(values(await p.read('input:x', DType.F32, [4])), x0);
    p.replay(r);
    p.replay(r);
    const replayed = [p.read('state:s', DType.F32, [4]), p.read('output:acc:y', DType.F32, [4])];

    // Step n: s = 3^(n-1) x0, y = x = 2·3^(n-1) x0.
    p.write('input:x', f32(x0));
    p.zero('state:s');
    for (let i = 0; i < 4; i++) step();
    const ran = [p.read('state:s', DType.F32, [4]), p.read('output:acc:y', DType.F32, [4])];
    const [rs, ry, s4, y4] = (await Promise.all([...replayed, ...ran])).map(values);
    assert.equal(s4, x0.map((x) => 27 * x));
    assert.equal(y4, x0.map((x) => 54 * x));
    assert.equal(rs, s4);
    assert.equal(ry, y4);
  });

  s('a read sees the value it was queued after, not later writes or runs', async () => {
    if (skip) return;
    const p = program!;
    p.write('input:x', f32([1, 2, 3, 4]));
    const x1 = p.read('input:x', DType.F32, [4]);
    p.run('double', {});
    const y1 = p.read('output:double:y', DType.F32, [4]);
    p.write('input:x', f32([5, 6, 7, 8]));
    const x2 = p.read('input:x', DType.F32, [4]);
    p.run('double', {});
    p.zero('input:x');
    const y2 = p.read('output:double:y', DType.F32, [4]);
    const x3 = p.read('input:x', DType.F32, [4]);
    // Awaited last-first: none depends on a later one having been awaited.
    assert.equal(values(await x3), [0, 0, 0, 0]);
    assert.equal(values(await y2), [10, 12, 14, 16]);
    assert.equal(values(await x2), [5, 6, 7, 8]);
    assert.equal(values(await y1), [2, 4, 6, 8]);
    assert.equal(values(await x1), [1, 2, 3, 4]);
  });

  s('state is kept on the device across runs until zeroed', async () => {
    if (skip) return;
    const p = program!;
    for (const k of [1, 2, 3]) {
      p.write('input:x', f32([k, 10 * k, 100 * k, -k]));
      p.run('acc', {});
    }
    assert.equal(values(await p.read('state:s', DType.F32, [4])), [6, 60, 600, -6]);
    assert.equal(values(await p.read('output:acc:y', DType.F32, [4])), [12, 120, 1200, -12]);
    p.zero('state:s');
    p.write('input:x', f32([1, 1, 1, 1]));
    p.run('acc', {});
    assert.equal(values(await p.read('state:s', DType.F32, [4])), [1, 1, 1, 1]);
  });

  s('marks, finish and profile', async () => {
    if (skip) return;
    const p = program!;
    p.write('input:x', f32([1, 2, 3, 4]));
    const a = p.mark();
    for (let i = 0; i < 5; i++) p.run('acc', {});
    const b = p.mark();
    const ms = await p.elapsedMs(a, b);
    assert.ok(Number.isFinite(ms) && ms >= 0, `elapsed ${ms} ms`);
    await p.finish();
    if (target.kind === 'reference') return;
    const profile = await p.profile('scale', { S: 8 });
    assert.is(profile.length, p.kernelCount('scale'));
    assert.ok(profile.length > 0 && profile.every((k) => k.us >= 0 && k.bytes > 0 && k.kernel.length > 0), JSON.stringify(profile));
  });

  s('mistakes are named: sizes past the allocation, unknown buffers, unknown graphs', () => {
    if (skip) return;
    const p = program!;
    assert.throws(() => p.run('scale', { S: 9 }), /S=9 exceeds the 8/);
    assert.throws(() => p.write('input:nope', f32([1])), /no buffer input:nope/);
    assert.throws(() => p.run('nope', {}), /no graph @nope/);
    assert.not.ok(p.has('input:nope'));
    assert.ok(p.has('output:acc:y') && p.has('state:s') && p.has('input:v'));
  });

  if (target.kind === 'cuda') {
    s('a second load of the same module compiles nothing', async () => {
      if (skip) return;
      const again = await device!.load(queueModule('cuda'), noParams, { maxSizes: { S: 8 } });
      try {
        const images = [...(again as unknown as { images: Map<string, { cached: boolean }> }).images.values()];
        assert.ok(images.length > 0 && images.every((i) => i.cached), 'every compilation unit from the disk cache');
      } finally {
        again.destroy();
      }
    });

    s('copy bandwidth is measured on the device', () => {
      if (skip) return;
      const bw = (device as CudaDevice).copyBandwidth(1 << 22, 4);
      assert.ok(bw > 0, `${bw} bytes/s`);
    });
  }

  s.run();
}

const errors = suite('openDevice');
errors('cuda without a driver rejects with CudaUnavailableError', async () => {
  try {
    await openDevice('cuda', { libraries: ['/nonexistent/libcuda.so.1'] });
    assert.unreachable('opened a device');
  } catch (e) {
    assert.is((e as Error).name, 'CudaUnavailableError');
  }
});
errors('a kind that is none of them (from JavaScript) rejects with a RangeError naming the kinds there are', async () => {
  try {
    await openDevice('tpu' as DeviceKind);
    assert.unreachable('opened a device');
  } catch (e) {
    assert.instance(e, RangeError);
    assert.is((e as Error).message, "unknown device 'tpu' (available: cpu, reference, webgpu, cuda)");
  }
});
errors.run();
