// The decode step as one persistent kernel on the CPU fake of CUDA (test/runtime/fake-cuda: resident blocks as
// fibers that yield while they spin): the fixtures' greedy tokens and decode logits as the multi-kernel path's,
// sampling inside the kernel, a model of another structure against the reference interpreter, the timeline of a
// step (each task's times) as a table and a trace, the watchdog reporting a planted wait that can never be met
// instead of hanging, and bisecting (runtime/megakernel-bisect.ts) naming planted faults by kernel and task.
//
//   TSFUSE_FAKE_CUDA=0 npm test                   skips (it needs g++)

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { interpret } from '../../backends/reference/interpreter.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { runGenerate } from '../../compiler/cli-generate.ts';
import { arange, trace, where } from '../../compiler/index.ts';
import { DType } from '../../ir/dtype.ts';
import { roundBf16 } from '../../ir/half.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { CudaDevice, CudaProgram } from '../../runtime/devices/cuda.ts';
import { openDevice } from '../../runtime/devices/open.ts';
import { runOnce } from '../../runtime/executor.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { ParamStore } from '../../runtime/params.ts';
import { MegakernelSchedule } from '../../backends/megakernel-schedule.ts';
import { MegakernelOptions, MegakernelRefused, PreparedMegakernel, TASK_WORDS } from '../../backends/cuda/megakernel.ts';
import { evalSize } from '../../backends/kernel-ir.ts';
import { kernelBytes } from '../../backends/kernel-cost.ts';
import { timelineTable, timelineTrace } from '../../runtime/megakernel-timeline.ts';
import { traceText } from '../../runtime/trace.ts';
import { mismatch } from '../backends/compare.ts';
import { Rng } from '../backends/rng.ts';
import { mlpStack, mlpValues } from '../backends/mlp-stack.ts';
import { fakeCudaEnabled as enabled, onFakeCuda } from './fake-cuda/build.ts';

const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const s = suite('megakernel on the CPU fake of CUDA');

const fake = onFakeCuda(s);

// tiny-llama: f32, untied head, 4 / 2 heads; tiny-llama3-bf16: bf16, tied embeddings, 6 / 2 heads, llama3 rope.
for (const fixture of ['tiny-llama', 'tiny-llama3-bf16']) {
  s(`${fixture}: one kernel a decode step, the greedy tokens of Hugging Face and of the multi-kernel path, the same decode logits`, async () => {
    if (!enabled) return;
    const dir = path.join(fixtures, fixture);
    const gold = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
    const run = async (megakernel: boolean | MegakernelOptions) => {
      const session = await openLlamaSession(loadLlama(dir), { backend: 'cuda', cacheLength: gold.input_ids.length + 32, cacheDir: fake.cacheDir, megakernel });
      try {
        const tokens = await session.generate(gold.input_ids, 32);
        const vocab = session.program.graph('decode').outputs[0].type.shape[1] as number;
        const logits = await session.program.read('output:decode:logits', DType.F32, [1, vocab]);
        const prepared = (session.program as unknown as { megakernel?: { prepared: PreparedMegakernel } }).megakernel?.prepared;
        return { tokens, logits, kernels: session.decodeKernels(), images: [...(session.program as CudaProgram).images.keys()], prepared };
      } finally {
        session.close();
      }
    };
    const mk = await run(true);
    const multi = await run(false);
    // Every projection's rows streaming their weights through the ring's pages (backends/weight-stream.ts).
    const streamed = await run({ streamWeights: true });
    const schedule = streamed.prepared!.schedule;
    const projections = schedule.kernels.flatMap((sk, k) => (sk.kernel.kind === 'contraction' ? [k] : []));
    assert.ok(projections.length > 0 && projections.every((k) => schedule.streams[k].length > 0), 'every projection streams');
    assert.match(streamed.prepared!.kernel.source, /tf_ring_produce\(tf_ring\)/);
    assert.not.match(mk.prepared!.kernel.source, /tf_ring_t/);
    assert.equal(streamed.tokens, gold.greedy_new_tokens);
    const off = mismatch(streamed.logits, mk.logits, 1e-5, 1e-6);
    assert.not.ok(off, off);
    assert.is(mk.kernels, 1);
    assert.ok(multi.kernels > 1);
    assert.ok(mk.images.includes('megakernel'));
    assert.equal(mk.tokens, gold.greedy_new_tokens);
    assert.equal(mk.tokens, multi.tokens);
    // The same graph, its narrow projections in fewer rows of more outputs (as many rows as the megakernel has
    // blocks: RowOptions.maxRows), whose sums add in another order: the logits agree to rounding, not bit for bit
    // (bisecting compares the megakernel with its own kernels, lowered alike, byte for byte).
    const bad = mismatch(mk.logits, multi.logits, 1e-5, 1e-6);
    assert.not.ok(bad, bad);
  });
}

s('sampling (temperature, top-p, seed) runs inside the one kernel a step: the multi-kernel path\'s tokens, and other seeds other tokens', async () => {
  if (!enabled) return;
  const dir = path.join(fixtures, 'tiny-llama3-bf16');
  const gold = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  const run = async (megakernel: boolean, seed: number) => {
    const session = await openLlamaSession(loadLlama(dir), { backend: 'cuda', cacheLength: gold.input_ids.length + 16, cacheDir: fake.cacheDir, megakernel, sampling: true });
    try {
      return { tokens: await session.generate(gold.input_ids, 12, { temperature: 0.9, topP: 0.9, seed }), kernels: session.decodeKernels() };
    } finally {
      session.close();
    }
  };
  const [mk, multi, other] = [await run(true, 7), await run(false, 7), await run(true, 8)];
  assert.is(mk.kernels, 1);
  assert.equal(mk.tokens, multi.tokens);
  assert.not.equal(other.tokens, mk.tokens, 'the seed is read on the device');
  assert.not.equal(mk.tokens, gold.greedy_new_tokens.slice(0, 12), 'sampled, not greedy');
});

s('the decode step timed with no task waiting: a time, then the greedy tokens as before; refused where it cannot run', async () => {
  if (!enabled) return;
  const dir = path.join(fixtures, 'tiny-llama');
  const gold = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  const refusal = async (f: () => Promise<unknown>): Promise<string> => {
    try {
      await f();
    } catch (e) {
      return (e as Error).message;
    }
    return 'not refused';
  };
  const open = (megakernel: boolean) => openLlamaSession(loadLlama(dir), { backend: 'cuda', cacheLength: gold.input_ids.length + 8, cacheDir: fake.cacheDir, megakernel });
  const session = await open(true);
  try {
    const from = gold.input_ids.length;
    const t = await session.timeDecodeWithoutWaits(3, { warmup: 1, startPos: from });
    assert.is(t.steps, 3);
    assert.ok(Number.isFinite(t.msPerToken) && t.msPerToken > 0, String(t.msPerToken));
    // The steps wrote garbage (tokens into the history among it); the session's state is cleared after, and
    // generating gives the greedy tokens (the counters still right).
    const history = await session.program.read('state:history', DType.I32, [gold.input_ids.length + 9]);
    assert.ok((history.data as Int32Array).every((t) => t === 0), 'the history cleared');
    assert.equal(await session.generate(gold.input_ids, 8), gold.greedy_new_tokens.slice(0, 8));
    // Only some kernels' tasks not waiting (every layer's attention): a time, the state cleared, the tokens again.
    const schedule = (session.program as CudaProgram).megakernelSchedule('decode')!;
    const attention = schedule.kernels.flatMap((sk, k) => (sk.kernel.kind === 'attention' ? [k] : []));
    assert.ok(attention.length >= 2, attention.join());
    const some = await session.timeDecodeWithoutWaits(2, { warmup: 1, startPos: from, kernels: attention });
    assert.ok(Number.isFinite(some.msPerToken) && some.msPerToken > 0, String(some.msPerToken));
    const after = await session.program.read('state:history', DType.I32, [gold.input_ids.length + 9]);
    assert.ok((after.data as Int32Array).every((t) => t === 0), 'the history cleared after');
    assert.equal(await session.generate(gold.input_ids, 8), gold.greedy_new_tokens.slice(0, 8), 'after timing some kernels without waits');
    // A task may read the position one step ahead: the last step must leave room for it.
    assert.is(await refusal(() => session.timeDecodeWithoutWaits(8, { warmup: 0, startPos: from })), `positions up to ${from + 9} do not fit a KV cache of ${from + 8}`);
  } finally {
    session.close();
  }
  const launched = await open(false);
  try {
    assert.match(await refusal(() => launched.timeDecodeWithoutWaits(1)), '@decode does not run as a megakernel');
  } finally {
    launched.close();
  }
});

s('an MLP stack with an untied bf16 head runs as one kernel and matches the reference interpreter on fresh inputs', async () => {
  if (!enabled) return;
  const graph = mlpStack();
  const module = compileModule({ graphs: [graph] });
  const device = await openDevice('cuda', { cacheDir: fake.cacheDir, megakernel: { graph: 'mlp' } }) as CudaDevice;
  try {
    const compiled = module.graphs[0].graph;
    for (const seed of [1, 2]) {
      const { params, x } = mlpValues(compiled, seed);
      const program = await device.load(module, new ParamStore((n) => params.get(n)!), { maxSizes: {} });
      try {
        assert.is(program.kernelCount('mlp'), 1);
        const [want] = interpret(compiled, { inputs: { x }, param: (n) => params.get(n)!, states: new Map() });
        // Twice: the counters carry on counting from the first step, with no reset between.
        for (let step = 0; step < 2; step++) {
          const [got] = await runOnce(program, 'mlp', { x }, new Map());
          const bad = mismatch(got, want, 2e-4);
          assert.not.ok(bad, `seed ${seed}, step ${step}: ${bad}`);
        }
      } finally {
        program.destroy();
      }
    }
  } finally {
    device.destroy();
  }
});

// One input row (as a decode step has): each norm reads no row of its projection, and with 8 blocks the projections'
// tasks take several rows each, which compute the norm once (the task form's prologue) rather than once a row.
s('tasks of several rows compute the norm before them once, and match the reference interpreter on fresh inputs', async () => {
  if (!enabled) return;
  const graph = mlpStack(1);
  const module = compileModule({ graphs: [graph] });
  const device = await openDevice('cuda', { cacheDir: fake.cacheDir, megakernel: { graph: 'mlp', blocksPerProcessor: 1 } }) as CudaDevice;
  try {
    const compiled = module.graphs[0].graph;
    const { params } = mlpValues(compiled, 7);
    const rng = new Rng(Date.now() % 1e9);
    const x = hostTensor(DType.F32, [1, 48], Array.from({ length: 48 }, () => rng.normal()));
    const program = await device.load(module, new ParamStore((n) => params.get(n)!), { maxSizes: {} });
    try {
      const { schedule, kernel } = (program as unknown as { megakernel: { prepared: PreparedMegakernel } }).megakernel.prepared;
      assert.match(kernel.source, /Statements 0 to \d+ once a task: they do not read the row/);
      assert.ok(schedule.spans.some((spans) => spans.some((r) => r.to - r.from > 1)), 'some task runs several rows');
      const [want] = interpret(compiled, { inputs: { x }, param: (n) => params.get(n)!, states: new Map() });
      const [got] = await runOnce(program, 'mlp', { x }, new Map());
      const bad = mismatch(got, want, 2e-4);
      assert.not.ok(bad, bad);
    } finally {
      program.destroy();
    }
  } finally {
    device.destroy();
  }
});

// Decode attention over 600 positions in heads of 64: 3 chunks of 256 keys a head, each a task's row, taken in one
// step of 8 keys' loads a lane group at the default 2 blocks a multiprocessor (128 registers a thread) and in two
// steps of 128 (4 keys' loads in flight) under 4 blocks' 64; the last chunk of a head to finish merges them through the
// megakernel's scratch and zeroes the head's counter for the next step.
s('attention over a long cache: its chunks of keys run as tasks, merged through the scratch, as the reference computes and the launched kernel does', async () => {
  if (!enabled) return;
  const [H, PER, D, T] = [2, 3, 64, 600];
  const graph = trace('attn', [
    { name: 'q', dtype: DType.F32, shape: [H, PER, 1, D] },
    { name: 'k', dtype: DType.BF16, shape: [H, 1, T, D] },
    { name: 'v', dtype: DType.BF16, shape: [H, 1, T, D] },
    { name: 'pos', dtype: DType.I32, shape: [] },
  ], (q, k, v, pos) => {
    const scores = where(arange(T).reshape(1, -1).le(pos.reshape(1, 1)), q.matmul(k.cast(DType.F32).transpose()).mul(1 / Math.sqrt(D)), -Infinity);
    return { y: scores.softmax(-1).matmul(v.cast(DType.F32)) };
  });
  const module = compileModule({ graphs: [graph] });
  const rng = new Rng(Date.now() % 1e9);
  const values = (n: number) => Array.from({ length: n }, () => roundBf16(rng.normal()));
  const k = hostTensor(DType.BF16, [H, 1, T, D], values(H * T * D));
  const v = hostTensor(DType.BF16, [H, 1, T, D], values(H * T * D));
  const q = hostTensor(DType.F32, [H, PER, 1, D], values(H * PER * D));
  for (const [blocksPerProcessor, keyUnroll] of [[2, 8], [4, 4]]) {
    const device = await openDevice('cuda', { cacheDir: fake.cacheDir, megakernel: { graph: 'attn', blocksPerProcessor } }) as CudaDevice;
    try {
      const program = await device.load(module, new ParamStore(() => { throw new Error('no params'); }), { maxSizes: {} });
      try {
        assert.is(program.kernelCount('attn'), 1);
        const schedule = (program as unknown as { megakernel: { prepared: { schedule: MegakernelSchedule } } }).megakernel.prepared.schedule;
        assert.is(schedule.rows[0], H * PER * 3, 'a row a head and chunk');
        assert.is(schedule.kernels[0].flash?.keyUnroll, keyUnroll, `${blocksPerProcessor} blocks a multiprocessor: ${keyUnroll} keys in flight`);
        assert.ok(schedule.scratch, 'the chunks\' scratch');
        // Positions inside the first chunk, at the chunks' edges and at the last; each twice (the counters reset).
        for (const at of [0, 127, 128, 255, 256, 511, 599, 599]) {
          const inputs = { q, k, v, pos: hostTensor(DType.I32, [], [at]) };
          const [want] = interpret(graph, { inputs, param: () => { throw new Error('no params'); }, states: new Map() });
          const [got] = await runOnce(program, 'attn', inputs, new Map());
          const bad = mismatch(got, want, 1e-4);
          assert.not.ok(bad, `position ${at}: ${bad}`);
        }
        // Byte for byte the launched kernel's chunks (bisecting), and the counters zeroed after: the next step as before.
        assert.is((program as CudaProgram).bisectMegakernel('attn', {}), undefined);
        const inputs = { q, k, v, pos: hostTensor(DType.I32, [], [599]) };
        const [want] = interpret(graph, { inputs, param: () => { throw new Error('no params'); }, states: new Map() });
        const [got] = await runOnce(program, 'attn', inputs, new Map());
        assert.not.ok(mismatch(got, want, 1e-4), 'after bisecting');
      } finally {
        program.destroy();
      }
    } finally {
      device.destroy();
    }
  }
});

s('more blocks a multiprocessor than the device holds: refused by name, with how many it holds; fewer run', async () => {
  if (!enabled) return;
  const module = compileModule({ graphs: [mlpStack()] });
  const { params } = mlpValues(module.graphs[0].graph, 5);
  for (const [blocks, refusal] of [[8, /must all be resident, and .* holds 32 \(4 a multiprocessor\): give --megakernel-blocks 4 or fewer$/], [2, undefined]] as const) {
    const device = await openDevice('cuda', { cacheDir: fake.cacheDir, megakernel: { graph: 'mlp', blocksPerProcessor: blocks } }) as CudaDevice;
    try {
      const loading = device.load(module, new ParamStore((n) => params.get(n)!), { maxSizes: {} });
      if (refusal) {
        const e = await loading.then(() => undefined, (err: Error) => err);
        assert.instance(e, MegakernelRefused);
        assert.match(e!.message, refusal);
      } else {
        const program = await loading;
        assert.is(program.kernelCount('mlp'), 1);
        program.destroy();
      }
    } finally {
      device.destroy();
    }
  }
});

s('the timeline: every task of a step once, its times in order, after the tasks it waited for; as a table and a trace', async () => {
  if (!enabled) return;
  const module = compileModule({ graphs: [mlpStack()] });
  const compiled = module.graphs[0].graph;
  const { params, x } = mlpValues(compiled, 4);
  const device = await openDevice('cuda', { cacheDir: fake.cacheDir, megakernel: { graph: 'mlp', timeline: true } }) as CudaDevice;
  try {
    const program = await device.load(module, new ParamStore((n) => params.get(n)!), { maxSizes: {} });
    try {
      const [want] = interpret(compiled, { inputs: { x }, param: (n) => params.get(n)!, states: new Map() });
      for (let step = 0; step < 2; step++) {
        const [got] = await runOnce(program, 'mlp', { x }, new Map());
        assert.not.ok(mismatch(got, want, 2e-4), `step ${step} with the timeline on`);
      }
      const t = await program.megakernelTimeline('mlp');
      const schedule = (program as unknown as { megakernel: { prepared: { schedule: MegakernelSchedule } } }).megakernel.prepared.schedule;
      const seen = new Set(t.tasks.map((x) => `${x.kernel}.${x.task}`));
      assert.is(t.tasks.length, schedule.tasks.reduce((a, b) => a + b, 0));
      assert.is(seen.size, t.tasks.length, 'every task once');
      const ends = new Map<number, number>();
      for (const x of t.tasks) ends.set(x.kernel, Math.max(ends.get(x.kernel) ?? 0, x.endNs));
      const taskEnds = new Map(t.tasks.map((x) => [`${x.kernel}.${x.task}`, x.endNs]));
      t.tasks.forEach((x, i) => {
        assert.ok(x.waitNs >= 0 && x.waitNs <= x.readyNs && x.readyNs <= x.endNs && x.endNs <= t.spanNs, `task ${x.kernel}.${x.task}: ${x.waitNs} ${x.readyNs} ${x.endNs}`);
        const before = t.tasks[i - 1];
        if (before?.block === x.block) assert.ok(before.endNs <= x.waitNs, `block ${x.block} runs its tasks one after another`);
        assert.ok(x.processor < 8 && x.block < schedule.blocks.length);
      });
      // A task's inputs were ready once every task it needs had ended.
      for (const x of t.tasks) {
        for (const c of schedule.needs[x.kernel][x.task].map((i) => schedule.counters[i])) {
          for (let task = c.from; task < c.to; task++) assert.ok(taskEnds.get(`${c.kernel}.${task}`)! <= x.readyNs, `task ${x.kernel}.${x.task} ran before task ${c.kernel}.${task} ended`);
        }
      }
      const table = timelineTable(t);
      assert.match(table[0], /^\s*#\s+kernel\s+kind\s+tasks\s+wait µs\s+max\s+run µs\s+max\s+busy µs\s+from µs\s+to µs\s+share µs\s+gap µs\s+tail µs\s+GB\/s\s+% copy\s+over µs$/);
      const rows = table.filter((l) => /^\s*\d+\s+k\d+\s/.test(l)).map((l) => l.trim().split(/\s+/));
      assert.is(rows.length, schedule.kernels.length);
      // Each kernel's share runs from the kernels before it ending to its own end: the shares add up to the step's
      // last end; its GB/s is its bytes (those the launched profile counts) over its share; no copy rate, no % copy.
      // Its gap runs from the kernels before it ending to its first task being ready, its tail from its median task
      // ending (of an even count, the mean of the middle two) to its last.
      let before = 0;
      const gaps: number[] = [];
      const tails: number[] = [];
      const shares = rows.map((_, k) => {
        const end = ends.get(k)!;
        const mine = t.tasks.filter((x) => x.kernel === k);
        gaps.push(Math.min(...mine.map((x) => x.readyNs)) - before);
        const sorted = mine.map((x) => x.endNs).sort((a, b) => a - b);
        const half = sorted.length >> 1;
        tails.push(end - (sorted.length % 2 ? sorted[half] : (sorted[half - 1] + sorted[half]) / 2));
        const share = Math.max(0, end - before);
        before = Math.max(before, end);
        return share;
      });
      assert.ok(Math.abs(shares.reduce((a, b) => a + b, 0) - Math.max(...ends.values())) < 1e-6, 'the shares add up to the last end');
      const copyTable = timelineTable(t, 4e12);
      const withCopy = copyTable.filter((l) => /^\s*\d+\s+k\d+\s/.test(l)).map((l) => l.trim().split(/\s+/));
      rows.forEach((r, k) => {
        const bytes = kernelBytes(schedule.kernels[k].kernel, schedule.sizes, (d, n) => n * (d === DType.BF16 ? 2 : 4));
        assert.is(t.kernelBytes[k], bytes, `kernel ${k}'s bytes`);
        assert.is(r[11], (shares[k] / 1e3).toFixed(1), `kernel ${k}'s share`);
        assert.is(r[12], k > 0 ? (gaps[k] / 1e3).toFixed(1) : '—', `kernel ${k}'s gap`);
        assert.is(r[13], (tails[k] / 1e3).toFixed(1), `kernel ${k}'s tail`);
        assert.ok(tails[k] >= 0, `kernel ${k}'s tail`);
        const gbPerS = bytes / shares[k];
        assert.is(r[14], shares[k] > 0 ? gbPerS.toFixed(0) : '—', `kernel ${k}'s GB/s`);
        assert.is(r[15], '—', 'no copy rate, no % copy');
        assert.is(r[16], '—', 'no copy rate, no time over it');
        // Over: its share less its bytes' time at the copy rate (4 TB/s: 4,000 bytes a ns).
        assert.is(withCopy[k][16], ((shares[k] - bytes / 4000) / 1e3).toFixed(1), `kernel ${k}'s time over a 4 TB/s copy rate`);
        assert.is(withCopy[k][15], shares[k] > 0 ? ((100 * gbPerS * 1e9) / 4e12).toFixed(1) : '—', `kernel ${k}'s % of a 4 TB/s copy rate`);
      });
      const stepBytes = t.kernelBytes.reduce((n, b) => n + b, 0);
      assert.ok(copyTable.includes(`at the copy rate (4.00 TB/s) the step's ${(stepBytes / 1e6).toFixed(1)} MB take ${(stepBytes / 4000 / 1e3).toFixed(1)} µs: the step runs ${((t.spanNs - stepBytes / 4000) / 1e3).toFixed(1)} µs over it`), 'the step against the copy rate');
      assert.ok(copyTable.some((l) => /^\s+\S+\s+\d+ kernels?\s+busy .* over -?[\d.]+ µs$/.test(l)), 'each kind over the copy rate');
      assert.ok(!table.some((l) => l.includes('copy rate') || / over -?[\d.]+ µs/.test(l)), 'no copy rate, no lines about it');
      // The fake's 8 multiprocessors at the default 2 blocks each.
      assert.match(table[table.length - 3], /^step: [\d.]+ µs on 16 blocks; tasks ran [\d.]+ % of it/);
      // The boundaries' sums: the gaps after the first kernel (where positive), every kernel's tail.
      const gapSum = gaps.slice(1).reduce((n, g) => n + Math.max(0, g), 0);
      const tailSum = tails.reduce((n, x) => n + x, 0);
      assert.is(table[table.length - 2], `boundaries: ${(gapSum / 1e3).toFixed(1)} µs from the kernels before one ending to its first task ready, ${(tailSum / 1e3).toFixed(1)} µs from kernels' median tasks ending to their last`);
      // The kernel's registers and local memory (the CPU fake's driver reports 40 and none).
      assert.is(table[table.length - 1], 'the kernel: 40 registers and 0 bytes of local memory a thread (above 0: it spills)');
      const trace = JSON.parse(traceText(timelineTrace(t, device.description, { command: 'test' })));
      const slices = trace.traceEvents.filter((e: { ph: string; cat: string }) => e.ph === 'X' && e.cat !== 'wait');
      assert.is(slices.length, t.tasks.length, 'a slice per task');
      assert.ok(slices.every((e: { name: string; dur: number }) => /^k\d+ task \d+$/.test(e.name) && e.dur >= 0));
      assert.ok(trace.traceEvents.some((e: { name: string; args?: { name: string } }) => e.name === 'thread_name' && e.args?.name === 'block 0'));
    } finally {
      program.destroy();
    }
  } finally {
    device.destroy();
  }
});

s('the timeline with a weight ring: each task\'s wait for its pages (none where its kernel streams nothing) and its producer\'s fills; as columns of the table', async () => {
  if (!enabled) return;
  const dir = path.join(fixtures, 'tiny-llama3-bf16');
  const gold = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  const session = await openLlamaSession(loadLlama(dir), {
    backend: 'cuda', cacheLength: gold.input_ids.length + 8, cacheDir: fake.cacheDir, megakernel: { streamWeights: true, timeline: true },
  });
  try {
    assert.equal(await session.generate(gold.input_ids, 4), gold.greedy_new_tokens.slice(0, 4), 'with the ring and the timeline on');
    const program = session.program as CudaProgram;
    const t = await program.megakernelTimeline('decode');
    const schedule = (program as unknown as { megakernel: { prepared: PreparedMegakernel } }).megakernel.prepared.schedule;
    const streaming = (k: number) => schedule.streams[k].length > 0;
    assert.ok(schedule.kernels.some((_, k) => streaming(k)) && schedule.kernels.some((_, k) => !streaming(k)), 'some kernels stream, some not');
    for (const task of t.tasks) {
      const what = `task ${task.kernel}.${task.task}`;
      assert.ok(Number.isFinite(task.pageWaitNs) && task.pageWaitNs >= 0 && Number.isFinite(task.fillNs) && task.fillNs >= 0, what);
      // Pages are taken only by a streamed row, within the task's run; the producer fills beside any task.
      if (!streaming(task.kernel)) assert.is(task.pageWaitNs, 0, `${what} streams nothing`);
      assert.ok(task.pageWaitNs <= task.endNs - task.readyNs, `${what}: its page waits within its run`);
    }
    // The fake copies a page with memcpy, which takes time on its clock.
    assert.ok(t.tasks.reduce((n, task) => n + task.fillNs, 0) > 0, 'the fills took time');
    const table = timelineTable(t);
    assert.match(table[0], /share µs\s+gap µs\s+tail µs\s+GB\/s\s+% copy\s+over µs\s+pages µs\s+fills µs$/);
    const rows = table.filter((l) => /^\s*\d+\s+\S+\s/.test(l) && !l.includes('kernel')).map((l) => l.trim().split(/\s+/));
    assert.is(rows.length, schedule.kernels.length);
    rows.forEach((r, k) => {
      const tasks = t.tasks.filter((task) => task.kernel === k);
      const mean = (f: (task: (typeof tasks)[number]) => number) => (tasks.reduce((n, task) => n + f(task), 0) / tasks.length / 1e3).toFixed(1);
      assert.equal(r.slice(-2), [mean((task) => task.pageWaitNs), mean((task) => task.fillNs)], `kernel ${k}'s pages and fills`);
    });
    const trace = JSON.parse(traceText(timelineTrace(t, 'fake')));
    assert.ok(trace.traceEvents.some((e: { args?: Record<string, unknown> }) => typeof e.args?.['fills µs'] === 'number'), 'the trace carries them');
  } finally {
    session.close();
  }
});

s('bisect: a healthy megakernel agrees with its kernels one by one; a planted fault is named by kernel and task, and the next step runs as before', async () => {
  if (!enabled) return;
  const module = compileModule({ graphs: [mlpStack()] });
  const compiled = module.graphs[0].graph;
  const { params, x } = mlpValues(compiled, 5);
  const [want] = interpret(compiled, { inputs: { x }, param: (n) => params.get(n)!, states: new Map() });
  const mlpKernels = module.graphs[0].kernels;
  const reads = (k: number, name: string) => mlpKernels[k].buffers.some((b) => b.binding.kind === 'param' && b.binding.name === name && !b.written);
  const open = async (plant?: (prepared: { kernel: { plan: Int32Array; blocks: number; buffers: { kind: string; name?: string }[] } }) => void) => {
    const device = await openDevice('cuda', { cacheDir: fake.cacheDir, megakernel: { graph: 'mlp' } }) as CudaDevice;
    device.prepare(module);
    const prepared = (device as unknown as { prepared: WeakMap<object, { megakernel: { kernel: { plan: Int32Array; blocks: number; buffers: { kind: string; name?: string }[] } } }> }).prepared.get(module)!.megakernel;
    plant?.(prepared);
    const program = await device.load(module, new ParamStore((n) => params.get(n)!), { maxSizes: {} }) as CudaProgram;
    return { device, program };
  };
  const healthy = await open();
  try {
    await runOnce(healthy.program, 'mlp', { x }, new Map());
    assert.is(healthy.program.bisectMegakernel('mlp', {}), undefined);
    // Buffers put back and counters zeroed: the next steps run as before.
    for (let step = 0; step < 2; step++) {
      const [got] = await runOnce(healthy.program, 'mlp', { x }, new Map());
      assert.not.ok(mismatch(got, want, 2e-4), `step ${step} after bisecting`);
    }
  } finally {
    healthy.program.destroy();
    healthy.device.destroy();
  }
  // Planted: the megakernel's pointers to layers 1's and 2's up projections swapped.
  const swapped = await open((prepared) => {
    const slots = prepared.kernel.buffers;
    const [a, b] = ['l1.up', 'l2.up'].map((n) => slots.findIndex((x) => x.kind === 'param' && x.name === n));
    assert.ok(a >= 0 && b >= 0);
    [slots[a], slots[b]] = [slots[b], slots[a]];
  });
  try {
    // A step first: the input written, the megakernel's own result wrong.
    const [wrong] = await runOnce(swapped.program, 'mlp', { x }, new Map());
    assert.ok(mismatch(wrong, want, 2e-4));
    const diff = swapped.program.bisectMegakernel('mlp', {});
    assert.ok(diff, 'a difference');
    const first = mlpKernels.findIndex((_, k) => reads(k, 'l1.up') || reads(k, 'l2.up'));
    assert.is(diff!.kernel, first, 'the first kernel reading a swapped weight');
    assert.is(diff!.name, mlpKernels[first].name);
    assert.ok(diff!.differing > 0 && diff!.megakernel !== diff!.expected);
    assert.ok(diff!.task, 'the task that wrote it');
    // The kernel's rows each write a run of its output: the task's rows hold the first differing element's.
    const schedule = (swapped.program as unknown as { megakernel: { prepared: { schedule: MegakernelSchedule } } }).megakernel.prepared.schedule;
    const out = mlpKernels[first].buffers.find((b) => b.written)!;
    const perRow = evalSize(out.elems, {}) / schedule.rows[first];
    assert.ok(Number.isInteger(perRow));
    const row = Math.floor(diff!.element / perRow);
    assert.ok(diff!.task!.from <= row && row < diff!.task!.to, `task ${JSON.stringify(diff!.task)} holds row ${row}`);
    assert.equal(schedule.spans[first][diff!.task!.index], { from: diff!.task!.from, to: diff!.task!.to });
  } finally {
    swapped.program.destroy();
    swapped.device.destroy();
  }
  // Planted: the last task of the last kernel runs one row fewer. The row's elements are written by no task.
  let lastKernel = -1;
  const short = await open((prepared) => {
    // The table: waits' start, prefetches' start, streams' start, each block's first task and the end, then the tasks,
    // TASK_WORDS each (kernel, task, first row, end row, …): the task of the last kernel with the largest index loses its last row.
    const plan = prepared.kernel.plan;
    let last = -1;
    for (let at = prepared.kernel.blocks + 4; at < plan[0]; at += TASK_WORDS) {
      if (last < 0 || plan[at] > plan[last] || (plan[at] === plan[last] && plan[at + 1] > plan[last + 1])) last = at;
    }
    lastKernel = plan[last];
    assert.ok(plan[last + 3] - plan[last + 2] >= 1);
    plan[last + 3] -= 1;
  });
  try {
    await runOnce(short.program, 'mlp', { x }, new Map());
    const diff = short.program.bisectMegakernel('mlp', {});
    assert.ok(diff, 'a difference');
    assert.is(diff!.kernel, lastKernel);
    assert.is(diff!.task, undefined, 'no task writes the missing row');
  } finally {
    short.program.destroy();
    short.device.destroy();
  }
});

s('bisect through generate (tsfuse generate --megakernel --bisect-megakernel): the fixture\'s megakernel agrees with its kernels; generating afterwards gives the greedy tokens', async () => {
  if (!enabled) return;
  const dir = path.join(fixtures, 'tiny-llama');
  const gold = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  let printed = '';
  await runGenerate({ model: loadLlama(dir), backend: 'cuda', ids: gold.input_ids, maxNewTokens: 4, sampling: {}, json: false, megakernel: true, bisectMegakernel: true, write: (t) => (printed += t), writeStats: () => {} });
  assert.match(printed, /^the megakernel agrees with the \d+ kernels run one by one: every write of the step, byte for byte\n$/);
  const session = await openLlamaSession(loadLlama(dir), { backend: 'cuda', cacheLength: gold.input_ids.length + 8, cacheDir: fake.cacheDir, megakernel: true });
  try {
    assert.is(await session.bisectMegakernel(gold.input_ids), undefined);
    assert.equal(await session.generate(gold.input_ids, 8), gold.greedy_new_tokens.slice(0, 8));
  } finally {
    session.close();
  }
});

s('the watchdog stops a step whose wait cannot be met and names the block, run, kernel and counter', async () => {
  if (!enabled) return;
  const module = compileModule({ graphs: [mlpStack()] });
  const compiled = module.graphs[0].graph;
  const { params, x } = mlpValues(compiled, 3);
  // Long enough that no wait which will be met outlasts it on the CPU fake under a loaded test run (200 ms did, in
  // a clean-clone CI run: the watchdog then named another block's wait).
  const device = await openDevice('cuda', { cacheDir: fake.cacheDir, megakernel: { graph: 'mlp', watchdogMs: 3000 } }) as CudaDevice;
  try {
    device.prepare(module);
    // Planted: the first wait of the table awaits one task more than its kernel has.
    const prepared = (device as unknown as { prepared: WeakMap<object, { megakernel: PreparedMegakernel }> }).prepared.get(module)!.megakernel;
    const plan = prepared.kernel.plan;
    const waitsAt = plan[0];
    assert.ok(waitsAt + 1 < plan.length, 'the schedule has a wait');
    const [awaited, tasks] = [plan[waitsAt], plan[waitsAt + 1]];
    plan[waitsAt + 1] = tasks + 1;
    const program = await device.load(module, new ParamStore((n) => params.get(n)!), { maxSizes: {} });
    try {
      const error = await Promise.resolve(runOnce(program, 'mlp', { x }, new Map())).then(() => undefined, (e: Error) => e);
      assert.ok(error, 'the step reports the stuck wait');
      // The planted wait can never be met, and waits on what its block would have computed after it cannot either:
      // the first of those to time out is named (on a loaded machine the fake's fibers may run a later one's
      // clock first, as a clean-clone CI run did). Whichever it is, it awaits more than it saw; the planted one
      // reports its numbers.
      const stuck = /megakernel of @mlp is stuck: block \d+, task entry \d+ \(kernel \d+ k\d+, task \d+\) waited on counter (\d+) \(kernel (\d+) k\d+, tasks (\d+) to (\d+)\) past the watchdog: it saw (\d+), awaiting (\d+)/.exec(error!.message);
      assert.ok(stuck, `the report names the block, task, kernel and counter: ${error!.message}`);
      const [counter, kernel, from, last, saw, target] = stuck!.slice(1).map(Number);
      const c = prepared.schedule.counters[counter];
      assert.equal([kernel, from, last], [c.kernel, c.from, c.to - 1], 'the counter\'s kernel and tasks, as scheduled');
      assert.ok(saw < target, `it saw ${saw}, fewer than the ${target} it awaited`);
      if (counter === awaited) assert.equal([saw, target], [tasks, tasks + 1], 'the planted wait: one task more than its kernel has');
      // From then on the program refuses to run rather than hang again.
      assert.throws(() => program.run('mlp', {}), /is stuck/);
    } finally {
      program.destroy();
    }
  } finally {
    device.destroy();
  }
});

s.run();
