// Profiles as timelines: each device's profile of a decode step gives every kernel a start after the previous one
// ended, and runtime/trace.ts turns it into a Chrome / Perfetto trace (valid JSON, one slice per kernel of the
// decode graph, named after it, in order and never overlapping on the queue's one track) and a text table. Run on
// the cpu, webgpu (lavapipe here) with timestamp queries and with host timing, and cuda (the CPU fake).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { openLlamaSession } from '../../compiler/open-session.ts';
import type { KernelTime } from '../../runtime/device.ts';
import type { DeviceOptions } from '../../runtime/devices/open.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { chromeTrace, ChromeTrace, fusedOps, kernelRates, profileTable, sliceName, TraceEvent, traceText } from '../../runtime/trace.ts';
import { buildFakeCuda, fakeCudaEnabled, unavailable, useFakeCuda } from './fake-cuda/build.ts';
import { fixture as fixtureDir } from '../fixtures-dir.ts';

const fixture = fixtureDir('tiny-llama') + '/';

/** A kernel of a made-up profile. */
function kernel(name: string, startUs: number, us: number, more: Partial<KernelTime> = {}): KernelTime {
  const fused = ['%0: f32[4] = mul %x, %x', `%1: f32[4] = add %0, %x`];
  return { kernel: name, kind: 'contraction', startUs, us, bytes: 4000, fused, last: fused[1], ...more };
}

/** Nanoseconds, as the trace rounds them (its µs are whole nanoseconds). */
const ns = (us: number) => Math.round(us * 1e3);

/** The slices of a trace, with what every test of one asks of it: one track, in order, never overlapping. */
function slicesOf(trace: ChromeTrace): TraceEvent[] {
  const parsed = JSON.parse(JSON.stringify(trace)) as ChromeTrace;
  const slices = parsed.traceEvents.filter((e) => e.ph === 'X');
  for (const [i, e] of slices.entries()) {
    assert.ok(Number.isFinite(e.ts) && Number.isFinite(e.dur) && e.dur! >= 0, JSON.stringify(e));
    if (i > 0) {
      const before = slices[i - 1];
      assert.is(`${e.pid}/${e.tid}`, `${before.pid}/${before.tid}`, 'one track');
      assert.ok(ns(e.ts!) >= ns(before.ts!) + ns(before.dur!), `slice ${i} starts at ${e.ts} µs, before slice ${i - 1} ends (${before.ts} + ${before.dur})`);
    }
  }
  return slices;
}

const unit = suite('trace: profiles as trace events and tables');

unit('a slice per kernel with its rates; metadata names the device and the queue', () => {
  const kernels = [kernel('k0', 0, 2), kernel('k1', 2.5, 1, { kind: 'gemm', flops: 4e6 }), kernel('k2', 4, 0.5, { kind: 'reduce' })];
  const trace = chromeTrace([{ device: 'GPU X', queue: 'cuda stream', kernels, copyBandwidth: 4e9 }], { command: 'npm run bench' });
  const meta = trace.traceEvents.filter((e) => e.ph === 'M');
  assert.equal(meta.map((e) => [e.name, e.args!.name]), [['process_name', 'GPU X'], ['thread_name', 'cuda stream']]);
  const slices = slicesOf(trace);
  assert.equal(slices.map((e) => e.name), ['k0 contraction', 'k1 gemm', 'k2 reduce']);
  assert.equal(slices.map((e) => [e.ts, e.dur]), [[0, 2], [2.5, 1], [4, 0.5]]);
  // 4000 bytes in 2 µs: 2 GB/s, half of a 4 GB/s copy; the GEMM's 4 MFLOP in 1 µs: 4 TFLOP/s.
  assert.equal(slices[0].args, {
    kernel: 'k0', index: 0, kind: 'contraction', bytes: 4000, 'GB/s': 2, '% of copy bandwidth': 50, ops: 'mul add', fused: kernels[0].fused,
  });
  assert.is(slices[1].args!['TFLOP/s'], 4);
  assert.not.ok('TFLOP/s' in slices[0].args!);
  assert.equal(trace.otherData, { command: 'npm run bench' });
  assert.is(trace.displayTimeUnit, 'ns');
  // As text: the same JSON, an event a line.
  const text = traceText(trace);
  assert.equal(JSON.parse(text), JSON.parse(JSON.stringify(trace)));
  const lines = text.split('\n');
  trace.traceEvents.forEach((e, i) => assert.equal(JSON.parse(lines[1 + i].replace(/,$/, '')), JSON.parse(JSON.stringify(e))));
});

unit('a start before the previous kernel ended (separately rounded timestamps) moves to that end', () => {
  const slices = slicesOf(chromeTrace([{ device: 'd', queue: 'q', kernels: [kernel('a', 0, 1.0014), kernel('b', 1, 2), kernel('c', 3.5, 1)] }]));
  assert.equal(slices.map((e) => [e.ts, e.dur]), [[0, 1.001], [1.001, 2], [3.5, 1]]);
  assert.not.ok('% of copy bandwidth' in slices[0].args!, 'no copy bandwidth given');
});

unit('tracks of two devices are two processes; two queues of one device two threads', () => {
  const k = [kernel('k0', 0, 1)];
  const trace = chromeTrace([{ device: 'A', queue: 'q0', kernels: k }, { device: 'A', queue: 'q1', kernels: k }, { device: 'B', queue: 'q0', kernels: k }]);
  assert.equal(trace.traceEvents.filter((e) => e.ph === 'X').map((e) => [e.pid, e.tid]), [[1, 1], [1, 2], [2, 1]]);
});

unit('rates, op names and the text table', () => {
  assert.equal(kernelRates({ bytes: 1e6, us: 10, flops: 2e7 }, 2e11), { gbPerS: 100, copyFraction: 0.5, tflopPerS: 2 });
  assert.equal(kernelRates({ bytes: 1e6, us: 0 }), {}, 'no rate for no time');
  assert.equal(fusedOps(['%3: f32[4] = add %1, %2', '%4: bf16[2,2] = permute %w [perm=[1,0]]']), ['add', 'permute']);
  const lines = profileTable([kernel('k0', 0, 2), kernel('k1', 2, 8, { kind: 'attention' })], 8e9);
  assert.match(lines[0], /#\s+kernel\s+kind\s+µs\s+GB\/s\s+% copy\s+TFLOP\/s\s+last fused IR line/);
  assert.match(lines[1], /^0\s+k0\s+contraction\s+2\.0\s+2\.00\s+25\.0\s+—\s+%1: f32\[4\] = add %0, %x$/);
  assert.match(lines[2], /^1\s+k1\s+attention\s+8\.0\s+0\.50\s+6\.3\s/);
  assert.is(lines[3], 'by kind:');
  assert.match(lines[4], /attention\s+1 kernel\s+8\.0 µs\s+0\.50 GB\/s\s+6\.3 % of copy/);
  assert.match(lines[6], /all\s+2 kernels\s+10\.0 µs\s+0\.80 GB\/s\s+10\.0 % of copy/);
  // Where the device says a kernel's registers and local memory (CUDA), two columns; a spilling kernel's local bytes.
  const cuda = profileTable([kernel('k0', 0, 2, { registers: 64, localBytes: 192 }), kernel('k1', 2, 8, { kind: 'attention', registers: 117, localBytes: 0 })], 8e9);
  assert.match(cuda[0], /#\s+kernel\s+kind\s+µs\s+GB\/s\s+% copy\s+TFLOP\/s\s+regs\s+local B\s+last fused IR line/);
  assert.match(cuda[1], /^0\s+k0\s+contraction\s+2\.0\s+2\.00\s+25\.0\s+—\s+64\s+192\s+%1: f32\[4\] = add %0, %x$/);
  assert.match(cuda[2], /^1\s+k1\s+attention\s+8\.0\s+0\.50\s+6\.3\s+—\s+117\s+0\s/);
});

unit.run();

// ---------------------------------------------------------------------------------------------------------------
// On each device: the decode step of the tiny-llama fixture, profiled.

interface Target {
  readonly name: string;
  readonly backend: 'cpu' | 'webgpu' | 'cuda';
  readonly options?: DeviceOptions;
  /** Why it cannot run here, else undefined; may point the CUDA runtime at the fake (undone by `after`). */
  before?(): string | undefined;
  after?(): void;
}

let restoreFake: (() => void) | undefined;
let fakeCacheDir = '';
const targets: Target[] = [
  { name: 'cpu', backend: 'cpu' },
  { name: 'webgpu, timestamp queries', backend: 'webgpu' },
  { name: 'webgpu, host timing', backend: 'webgpu', options: { timestamps: false } },
  {
    name: 'cuda (the CPU fake)', backend: 'cuda',
    before() {
      if (!fakeCudaEnabled) return 'no g++ for the CPU fake';
      const fake = buildFakeCuda();
      fakeCacheDir = fake.cacheDir;
      restoreFake = useFakeCuda(fake);
      return undefined;
    },
    after() {
      restoreFake?.();
      restoreFake = undefined;
    },
  },
];

const onDevices = suite('trace: a decode step profiled on each device');
for (const t of targets) {
  onDevices(`${t.name}: a start per kernel after the previous one ended; the trace has a slice per decode kernel`, async () => {
    const skip = t.before?.();
    if (skip) return console.log(`  ${t.name}: skipped (${skip})`);
    try {
      const model = loadLlama(fixture);
      const options = { ...t.options, ...(t.backend === 'cuda' ? { cacheDir: fakeCacheDir } : {}) };
      let session;
      try {
        session = await openLlamaSession(model, { backend: t.backend, cacheLength: 16, promptChunk: 4, ...options });
      } catch (e) {
        if (unavailable(e)) return console.log(`  ${t.name}: skipped (${unavailable(e)})`);
        throw e;
      }
      try {
        const kernels = await session.profileDecode(5);
        const decode = session.program.module.graphs.find((g) => g.graph.name === 'decode')!;
        assert.equal(kernels.map((k) => k.kernel), decode.kernels.map((k) => k.name), 'the decode graph\'s kernels, in order');
        assert.ok(kernels.length > 4 && kernels.length === session.decodeKernels());
        assert.is(kernels[0].startUs, 0);
        kernels.forEach((k, i) => {
          assert.ok(k.us >= 0 && k.bytes > 0 && k.fused.length > 0 && k.last === k.fused[k.fused.length - 1], JSON.stringify(k));
          // CUDA says each kernel's registers and local memory (the fake: 40 and none); other devices nothing.
          if (t.backend === 'cuda') assert.equal([k.registers, k.localBytes], [40, 0], k.kernel);
          else assert.equal([k.registers, k.localBytes], [undefined, undefined], k.kernel);
          if (i === 0) return;
          const before = kernels[i - 1];
          // Device clocks tick in whole ns, read back as float ms (CUDA) or separately subtracted (WebGPU).
          const slack = 1e-3 + 1e-6 * k.startUs;
          assert.ok(k.startUs + slack >= before.startUs + before.us, `${k.kernel} starts at ${k.startUs} µs, before ${before.kernel} ended (${before.startUs} + ${before.us})`);
        });
        const slices = slicesOf(chromeTrace([{ device: session.device.description, queue: 'queue', kernels }]));
        assert.equal(slices.map((e) => e.name), kernels.map(sliceName));
        assert.equal(slices.map((e) => e.args!.kernel), decode.kernels.map((k) => k.name));
        assert.is(slices[0].ts, 0);
        const end = slices[slices.length - 1];
        assert.ok(ns(end.ts! + end.dur!) >= ns(kernels.reduce((s, k) => s + k.us, 0)) - kernels.length, 'the step spans at least its kernels');
        // A prompt longer than a chunk (4 tokens here) is profiled a step per chunk: 10 tokens, three steps.
        const names = session.program.module.graphs.map((g) => g.graph.name);
        const promptGraph = session.program.module.graphs.find((g) => g.graph.name === (names.includes('prompt') ? 'prompt' : 'prefill'))!;
        const prefill = await session.profilePrefill([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        const step = promptGraph.kernels.map((k) => k.name);
        assert.equal(prefill.map((k) => k.kernel), [...step, ...step, ...step], 'the prompt graph\'s kernels, once per chunk');
      } finally {
        session.close();
      }
    } finally {
      t.after?.();
    }
  });
}
onDevices.run();
