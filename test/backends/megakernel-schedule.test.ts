// The megakernel's schedule (backends/megakernel-schedule.ts) and its CUDA text (backends/cuda/megakernel.ts), no
// device needed: every task dealt once, waits covering every producer, the static check refusing planted faults,
// and task functions that read their block index from parameters and their shared memory from the pool.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { megakernelKernels, planWithoutWaits, printCudaMegakernel, renderCudaMegakernel, TASK_WORDS, TIMELINE_WORDS } from '../../backends/cuda/megakernel.ts';
import { cudaCaps } from '../../backends/device-caps.ts';
import { bindingKey, checkMegakernel, dependencies, formatMegakernel, kernelsAlike, megakernelOrigin, MegakernelSchedule, MegakernelTask, rowSpans, scheduleMegakernel } from '../../backends/megakernel-schedule.ts';
import { renderJs } from '../../backends/cpu/render-js.ts';
import { evalSize, KernelIR } from '../../backends/kernel-ir.ts';
import { scheduleKernels } from '../../backends/schedule.ts';
import { sessionContext } from '../../compiler/session-choices.ts';
import { rowAccesses } from '../../backends/element-ranges.ts';
import { traceLlama } from '../../examples/llama.ts';
import { dtypeBytes } from '../../ir/dtype.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { mlpStack } from './mlp-stack.ts';
import { fixture } from '../fixtures-dir.ts';

const s = suite('megakernel schedule');

const caps = { ...cudaCaps(90, 4), dependentLaunch: false };
const module = compileModule({ graphs: [mlpStack()] });
// Row by row, as the megakernel's graph is scheduled (megakernelScheduleOptions).
const kernels = scheduleKernels(module.graphs[0].kernels, caps, { rowsOnly: true });
// Prefetching up to 64 KiB a task (the default is none: slower on the H200), so that the tests see ranges.
const schedule = scheduleMegakernel(kernels, {}, { blocks: 8, processors: 4, prefetchBytes: 64 * 1024 });

/** The schedule with block `b`'s runs replaced. */
const withBlock = (b: number, runs: MegakernelTask[]): MegakernelSchedule => ({ ...schedule, blocks: schedule.blocks.map((r, i) => (i === b ? runs : r)) });

s('every task of every kernel is dealt to exactly one block, in the kernels\' order', () => {
  assert.ok(kernels.length >= 8, `${kernels.length} kernels`);
  const dealt = schedule.tasks.map((n) => new Array<number>(n).fill(0));
  for (const list of schedule.blocks) {
    list.forEach((t, i) => {
      if (i > 0) assert.ok(list[i - 1].kernel <= t.kernel);
      dealt[t.kernel][t.task]++;
    });
  }
  assert.ok(dealt.every((d) => d.every((n) => n === 1)));
  assert.ok(schedule.blocks.filter((runs) => runs.length > 0).length > 1, 'tasks spread over blocks');
});

s('a kernel depends on the writer of what it reads, and on readers of what it overwrites', () => {
  const irs = kernels.map((k) => k.kernel);
  const deps = dependencies(irs);
  const key = (b: (typeof irs)[number]['buffers'][number]) => JSON.stringify(b.binding);
  irs.forEach((k, j) => {
    // The latest earlier writer of each buffer k touches is among its dependencies.
    for (const b of k.buffers) {
      const writer = irs.slice(0, j).map((x, i) => (x.buffers.some((y) => y.written && key(y) === key(b)) ? i : -1)).filter((i) => i >= 0).pop();
      if (writer !== undefined) assert.ok(deps[j].includes(writer), `kernel ${j} reads or writes ${key(b)}, last written by ${writer}`);
    }
  });
  // The head's input is the last block's output: the head waits for the kernel that wrote it.
  assert.ok(deps[irs.length - 1].length > 0);
});

s('the static check refuses a missing wait, a wait on a later kernel, a task dealt twice or to no block, tasks out of order, rows missed or run twice', () => {
  const b = schedule.blocks.findIndex((list) => list.some((t) => t.waits.length > 0));
  const list = schedule.blocks[b];
  const i = list.findIndex((t) => t.waits.length > 0);
  const planted = (edit: (t: MegakernelTask) => MegakernelTask) => withBlock(b, list.map((t, j) => (j === i ? edit(t) : t)));
  const c = schedule.counters[list[i].waits[0]];
  assert.throws(() => checkMegakernel(planted((t) => ({ ...t, waits: t.waits.slice(1) }))), new RegExp(`block ${b}, task ${i} \\(kernel ${list[i].kernel}\\): does not wait for counter ${list[i].waits[0]} \\(kernel ${c.kernel}, tasks ${c.from}\\.\\.${c.to - 1}\\), which it needs`));
  const later = schedule.counters.findIndex((x) => x.kernel >= list[i].kernel);
  assert.throws(() => checkMegakernel(planted((t) => ({ ...t, waits: [...t.waits, later] }))), /whose kernel is not earlier: a cycle/);
  const other = schedule.blocks.findIndex((l, j) => j !== b && l.length > 0);
  assert.throws(() => checkMegakernel(withBlock(other, [...schedule.blocks[other], ...list])), /dealt twice|comes after a task of kernel/);
  assert.throws(() => checkMegakernel(withBlock(b, list.filter((_, j) => j !== i))), /dealt to no block|does not wait for counter/);
  assert.throws(() => checkMegakernel(withBlock(b, [...list].reverse())), /a block walks the kernels in order/);
  const k = schedule.spans.findIndex((spans) => spans.length > 1);
  const spans = (edit: (r: { from: number; to: number }[]) => void) => {
    const copy = schedule.spans.map((x) => x.map((r) => ({ ...r })));
    edit(copy[k]);
    return { ...schedule, spans: copy };
  };
  assert.throws(() => checkMegakernel(spans((r) => { r[1].from -= 1; })), new RegExp(`task 1 of kernel ${k} runs rows \\[${schedule.spans[k][1].from - 1}, \\d+\\), not from row ${schedule.spans[k][1].from} on`));
  const moreRows = schedule.rows.map((n, j) => (j === k ? n + 1 : n));
  assert.throws(() => checkMegakernel({ ...schedule, rows: moreRows }), new RegExp(`the tasks of kernel ${k} run ${schedule.rows[k]} of its ${schedule.rows[k] + 1} rows`));
});

s('coarse tasks: each kernel\'s rows split into contiguous spans covering every row once, at most one span a block', () => {
  for (const [rows, blocks] of [[1, 8], [7, 8], [8, 8], [9, 8], [1024, 264], [384, 264], [2004, 264], [334, 264], [1000, 7], [13, 5]]) {
    const spans = rowSpans(rows, blocks);
    assert.ok(spans.length <= blocks, `${rows} rows on ${blocks} blocks: ${spans.length} tasks`);
    const most = Math.ceil(rows / blocks);
    let next = 0;
    for (const r of spans) {
      assert.is(r.from, next);
      assert.ok(r.to > r.from && r.to - r.from <= most, `${rows} rows on ${blocks} blocks: [${r.from}, ${r.to})`);
      next = r.to;
    }
    assert.is(next, rows);
    // Fewer tasks would give some task more rows.
    assert.ok(Math.ceil(rows / (spans.length - 1 || 1)) > most || spans.length === 1, `${rows} rows on ${blocks} blocks: ${spans.length} tasks, fewer would do`);
  }
  // And in a schedule: every kernel's tasks cover its rows (the mlp stack's 3 rows of 8 blocks: a row a task).
  schedule.spans.forEach((spans, k) => assert.is(spans.reduce((n, r) => n + r.to - r.from, 0), schedule.rows[k]));
});

s('prefetch ranges hold every weight element each task\'s rows load (the kernels run for those rows on the CPU, loads recorded)', () => {
  const checked = checkPrefetch(schedule);
  assert.ok(checked.ranges > 0, 'some task prefetches');
});

s('by default no task prefetches', () => {
  const plain = scheduleMegakernel(kernels, {}, { blocks: 8, processors: 4 });
  assert.ok(plain.prefetch.every((perKernel) => perKernel.every((ranges) => ranges.length === 0)));
  assert.ok(schedule.prefetch.some((perKernel) => perKernel.some((ranges) => ranges.length > 0)), 'with a budget some do');
});

s('the task list names every block\'s tasks and waits, and each task\'s rows and prefetches', () => {
  const text = formatMegakernel(schedule);
  assert.match(text, /^megakernel: \d+ kernels, \d+ tasks on 8 blocks/);
  assert.match(text, /\n {2}kernel 0 k0: \d+ rows as \d+ tasks of at most \d+(, counted in \d+ runs)?\n/);
  assert.match(text, /\n {2}block 0: k0\.0/);
  assert.match(text, /wait\(k\d+(\.\d+-\d+)?( k\d+(\.\d+-\d+)?)*\) k\d+\.\d+/);
  assert.match(text, /\n {2}k0: 0:\[0,1\) b\d+@\d+\+\d+/);
});

s('task functions take their rows, drop launch-level waits, and take shared memory from one pool', () => {
  const mk = printCudaMegakernel(schedule, 'mlp_megakernel', 2);
  const functions = mk.source.slice(mk.source.indexOf('// tsfuse megakernel'));
  assert.not.match(functions, /__shared__ (?!__align__\(16\) unsigned char tf_smem\[\];)/, 'only the kernel\'s own dynamic pool');
  assert.not.match(functions.slice(functions.indexOf('static __device__ __noinline__ void tf_task0'), functions.indexOf('extern "C"')), /blockIdx|gridDim|tf_grid_wait|tf_rows/);
  assert.match(functions, /static __device__ __noinline__ void tf_task0\(.*const int tf_first, const int tf_end\) \{/);
  assert.match(functions, /for \(int row = tf_first; row < tf_end; row\+\+\) \{/);
  assert.is((mk.source.match(/ {4}case \d+: tf_task\d+\(/g) ?? []).length, kernels.length);
  assert.ok(mk.sharedBytes >= 16 && mk.sharedBytes < 48 * 1024, `${mk.sharedBytes} bytes of shared memory`);
  assert.is(mk.blocks, 8);
  // The timeline costs nothing unless asked for.
  assert.not.match(mk.source, /tf_timeline\[/);
  assert.match(printCudaMegakernel(schedule, 'mlp_megakernel', 2, { timeline: true }).source, new RegExp(`tf_timeline\\[${TIMELINE_WORDS} \\* tf_t \\+ 3\\] = tf_processor\\(\\)`));
});

s('the decode step of a Llama: prefetch ranges hold every weight element its tasks load, tasks about one a block', () => {
  const model = loadLlama(fixture('tiny-llama3-bf16'));
  const llama = compileModule(traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength: 16, sampling: false, kvDType: model.weightDType }));
  const decode = llama.graphs.find((g) => g.graph.name === 'decode')!;
  const mk = scheduleMegakernel(scheduleKernels(decode.kernels, caps, { rowsOnly: true }), {}, { blocks: 8, processors: 4, prefetchBytes: 1 << 30 });
  mk.tasks.forEach((n) => assert.ok(n <= 8));
  const checked = checkPrefetch(mk);
  assert.ok(checked.ranges > mk.kernels.length, `${checked.ranges} ranges`);
  // With a budget, no task prefetches more.
  const small = scheduleMegakernel(scheduleKernels(decode.kernels, caps, { rowsOnly: true }), {}, { blocks: 8, processors: 4, prefetchBytes: 1000 });
  for (const perKernel of small.prefetch) for (const ranges of perKernel) assert.ok(ranges.reduce((n, r) => n + r.bytes, 0) <= 1000);
});

s('timing some kernels without waits: every kernel of their code, and a task table in which only those tasks wait for nothing', () => {
  const model = loadLlama(fixture('tiny-llama3-bf16'));
  const llama = compileModule(traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength: 16, kvDType: model.weightDType }));
  const mk = renderCudaMegakernel(llama, cudaCaps(90, 4), {});
  const kernels = mk.schedule.kernels;
  // Every layer's kernel of a kind shares its code: asking for one layer's asks for them all, and for nothing else.
  const layers = model.cfg.numLayers;
  assert.ok(layers >= 2, `${layers} layers`);
  const attention = kernels.findIndex((sk) => sk.kernel.kind === 'attention');
  const alike = kernelsAlike(mk.schedule, [attention]);
  assert.equal(alike, kernels.flatMap((sk, k) => (sk.kernel.kind === 'attention' ? [k] : [])));
  assert.is(alike.length, layers);
  assert.ok(alike.every((k) => megakernelOrigin(kernels[k]) === megakernelOrigin(kernels[attention])));
  const two = kernelsAlike(mk.schedule, [alike[1], attention + 1]);
  assert.ok(two.length > layers && alike.every((k) => two.includes(k)) && two.includes(attention + 1), two.join());
  assert.throws(() => kernelsAlike(mk.schedule, [kernels.length]), (e: unknown) => e instanceof RangeError && (e as Error).message === `megakernel: kernel ${kernels.length} is not one of the step's ${kernels.length} kernels (0 to ${kernels.length - 1})`);
  assert.throws(() => kernelsAlike(mk.schedule, [-1]), /kernel -1 is not one of/);
  // The table: the tasks of those kernels have no waits; every other word as printed.
  const table = mk.kernel.plan;
  const without = planWithoutWaits(mk.kernel, new Set(alike));
  assert.is(without.length, table.length);
  const tasksAt = mk.kernel.blocks + 4;
  let dropped = 0;
  let kept = 0;
  for (let i = 0; i < table.length; i++) {
    const t = Math.floor((i - tasksAt) / TASK_WORDS);
    const waitsWord = i >= tasksAt && t < mk.kernel.tasks && (i - tasksAt) % TASK_WORDS === 5;
    if (waitsWord && alike.includes(table[tasksAt + TASK_WORDS * t])) {
      assert.is(without[i], 0, `task entry ${t}`);
      if (table[i] > 0) dropped++;
    } else {
      assert.is(without[i], table[i], `word ${i}`);
      if (waitsWord && table[i] > 0) kept++;
    }
  }
  assert.ok(dropped > 0 && kept > 0, `${dropped} tasks' waits dropped, ${kept} kept`);
});

s('a launch copies its pointers and the one-element inputs no task writes into shared memory once, and the tasks read them there', () => {
  const model = loadLlama(fixture('tiny-llama3-bf16'));
  const llama = compileModule(traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength: 16, kvDType: model.weightDType }));
  const { kernel, schedule } = renderCudaMegakernel(llama, cudaCaps(90, 4), {});
  const keys = kernel.buffers.map(bindingKey);
  const copied = [...kernel.source.matchAll(/if \(threadIdx\.x == \d+\) tf_constants\[(\d+)\] = \*static_cast<const unsigned\*>\(tf_buf\[(\d+)\]\);/g)];
  assert.equal(copied.map((m) => Number(m[1])), copied.map((_, i) => i));
  const copies = copied.map((m) => keys[Number(m[2])]);
  // A decode step's token and position: read by many tasks, written by none (the step writes the next ones elsewhere).
  assert.equal([...copies].sort(), ['input:pos', 'input:tokens']);
  const written = new Set(schedule.kernels.flatMap((sk) => sk.kernel.buffers.filter((b) => b.written).map((b) => bindingKey(b.binding))));
  const oneElement = schedule.kernels.flatMap((sk) => sk.kernel.buffers.filter((b) => b.elems.k === 'const' && b.elems.value === 1).map((b) => bindingKey(b.binding)));
  assert.ok(oneElement.some((key) => written.has(key)), 'the step writes a one-element buffer too (the next position)');
  // Every call passes a constant's shared copy and every other buffer's pointer from the shared table.
  const calls = [...kernel.source.matchAll(/case (\d+): tf_task\d+\(([^;]*)\); break;/g)];
  assert.is(calls.length, schedule.kernels.length);
  for (const [, k, args] of calls) {
    const passed = args.split(', ').slice(0, schedule.kernels[Number(k)].kernel.buffers.length);
    schedule.kernels[Number(k)].kernel.buffers.forEach((b, i) => {
      const key = bindingKey(b.binding);
      const copy = copies.indexOf(key);
      if (copy >= 0) assert.match(passed[i], new RegExp(`\\(tf_constants \\+ ${copy}\\)$`), `kernel ${k} buffer ${i}`);
      else assert.match(passed[i], new RegExp(`tf_bufs\\[${keys.indexOf(key)}\\]$`), `kernel ${k} buffer ${i} (${key})`);
      if (written.has(key)) assert.ok(copy < 0, `${key} is written, so not a constant`);
    });
  }
  // The copies lie in the launch's shared memory, after everything else it holds.
  const at = Number(/tf_bufs = reinterpret_cast<void\*\*>\(tf_smem \+ (\d+)\)/.exec(kernel.source)?.[1]);
  assert.is(kernel.sharedBytes, at + 8 * kernel.buffers.length + 4 * copies.length);
});

/**
 * Runs rows [from, to) of a kernel's row form on the CPU (the JS renderer's code, its row loop cut to those rows; a
 * GEMM's tiles are the same kernel), every buffer zero, and records the elements it reads and writes of each buffer.
 */
function runRows(ir: KernelIR, sizes: Readonly<Record<string, number>>, from: number, to: number): { reads: Set<number>[]; writes: Set<number>[] } {
  const code = renderJs({ ...ir, gemm: undefined, flash: undefined });
  const loop = /for \(let row = 0; row < [^;]+; row\+\+\) \{/;
  assert.match(code, loop, `kernel ${ir.name}'s JS has a row loop`);
  const run = new Function('b', 'sizes', 'round', code.replace(loop, `for (let row = ${from}; row < ${to}; row++) {`));
  const seen = { reads: ir.buffers.map(() => new Set<number>()), writes: ir.buffers.map(() => new Set<number>()) };
  const element = (key: string | symbol) => (typeof key === 'string' && /^\d+$/.test(key) ? Number(key) : undefined);
  const buffers = ir.buffers.map((b, i) => new Proxy(new (b.dtype === 'i32' || b.dtype === 'bool' ? Int32Array : Float32Array)(evalSize(b.elems, sizes)), {
    get(target, key) {
      const e = element(key);
      if (e !== undefined) seen.reads[i].add(e);
      const v = Reflect.get(target, key);
      return typeof v === 'function' ? v.bind(target) : v;
    },
    set(target, key, value) {
      const e = element(key);
      if (e !== undefined) seen.writes[i].add(e);
      return Reflect.set(target, key, value);
    },
  }));
  run(buffers, sizes, { bf16: (x: number) => x, f16: (x: number) => x, random: () => 0 });
  return seen;
}

/**
 * Runs each task's rows of each kernel on the CPU (runRows) and checks that each weight element read lies in the
 * task's prefetch range of that buffer (where it has one: a buffer whose reads cannot be bounded has none).
 */
function checkPrefetch(s: MegakernelSchedule): { ranges: number } {
  let ranges = 0;
  s.kernels.forEach((sk, k) => {
    const ir = sk.kernel;
    s.spans[k].forEach((span, t) => {
      const { reads } = runRows(ir, s.sizes, span.from, span.to);
      for (const r of s.prefetch[k][t]) {
        ranges++;
        const size = dtypeBytes[ir.buffers[r.buffer].dtype];
        for (const e of reads[r.buffer]) {
          assert.ok(e * size >= r.offset && (e + 1) * size <= r.offset + r.bytes, `kernel ${k} ${ir.name} task ${t} rows [${span.from}, ${span.to}) reads element ${e} of buffer ${r.buffer}, outside its prefetch bytes ${r.offset}+${r.bytes}`);
        }
        assert.ok(r.bytes <= (Math.max(...reads[r.buffer]) + 1) * size + 16 - r.offset, `kernel ${k} task ${t} prefetches past what it reads of buffer ${r.buffer}`);
      }
    });
  });
  return { ranges };
}

/**
 * Runs every task of each kernel the megakernel runs in its row form on the CPU (runRows; attention's decode form
 * has no CPU form) and checks that each element it reads or writes lies in the runs rowAccesses gives the task.
 */
function checkAccesses(s: MegakernelSchedule): { tasks: number; accesses: number } {
  let [tasks, accesses] = [0, 0];
  s.kernels.forEach((sk, k) => {
    if (sk.tilesFrom !== undefined) return;
    const ir = sk.kernel;
    s.spans[k].forEach((span, t) => {
      const seen = runRows(ir, s.sizes, span.from, span.to);
      const bounds = rowAccesses(ir, s.sizes, span.from, span.to);
      tasks++;
      for (const what of ['reads', 'writes'] as const) {
        seen[what].forEach((elements, buffer) => {
          if (!elements.size) return;
          const runs = bounds[what].get(buffer);
          assert.ok(runs, `kernel ${k} ${ir.name} task ${t} ${what} buffer ${buffer}, which rowAccesses does not list`);
          if (runs === 'unbounded') return;
          for (const e of elements) {
            accesses++;
            assert.ok(runs!.some((r) => r.from <= e && e < r.to), `kernel ${k} ${ir.name} task ${t} rows [${span.from}, ${span.to}) ${what} element ${e} of buffer ${buffer}, outside ${JSON.stringify(runs)}`);
          }
        });
      }
    });
  });
  return { tasks, accesses };
}

s('what a task\'s rows read and write lies within the runs rowAccesses bounds (every row-form task of the MLP stack and of a Llama\'s decode step, run on the CPU)', () => {
  const mlp = checkAccesses(schedule);
  assert.ok(mlp.tasks > 8 && mlp.accesses > 0, `${mlp.tasks} tasks`);
  const model = loadLlama(fixture('tiny-llama3-bf16'));
  const llama = compileModule(traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength: 16, kvDType: model.weightDType }), { ctx: sessionContext('cuda', model.weightDType, model.cfg.headDim) });
  const checked = checkAccesses(renderCudaMegakernel(llama, cudaCaps(90, 16), {}).schedule);
  assert.ok(checked.tasks > 100 && checked.accesses > checked.tasks, `${checked.tasks} tasks, ${checked.accesses} accesses checked`);
});

s('attention\'s heads wait for the tasks that write their own query, key and value rows, and a wait another implies is not made', () => {
  // The fixture's shapes widened to a small Llama's (its projections in rows of a few outputs) over 64 multiprocessors,
  // 128 blocks: the projection's tasks narrower than a head.
  const model = loadLlama(fixture('tiny-llama3-bf16'));
  const cfg = { ...model.cfg, hiddenSize: 1024, numHeads: 16, numKvHeads: 4, headDim: 64, intermediateSize: 2048, numLayers: 2 };
  const { numHeads: H, numKvHeads: KV, headDim: D } = cfg;
  // As a CUDA session compiles it: the step's cache writes made by attention (their share among the heads bounded too).
  const llama = compileModule(traceLlama(cfg, { weightDType: model.weightDType, cacheLength: 16, kvDType: model.weightDType }), { ctx: sessionContext('cuda', model.weightDType, D) });
  const mk = renderCudaMegakernel(llama, cudaCaps(90, 64), {}).schedule;
  assert.ok(mk.kernels.find((sk) => sk.kernel.kind === 'attention')!.kernel.flash?.updates, 'attention makes the cache writes');
  const attention = mk.kernels.flatMap((sk, k) => (sk.kernel.kind === 'attention' ? [k] : []));
  assert.is(attention.length, cfg.numLayers);
  for (const a of attention) {
    assert.is(mk.tasks[a], H, 'a task a head');
    // The projection attention reads: [queries of every head | keys | values], a row of its outputs a run.
    const qkv = a - 1;
    assert.ok(mk.dependsOn[a].includes(qkv));
    const outputs = H * D + 2 * KV * D;
    const perRow = outputs / mk.rows[qkv];
    assert.ok(Number.isInteger(perRow) && mk.tasks[qkv] > H, `${mk.tasks[qkv]} tasks of ${perRow} outputs a row`);
    const writers = (from: number, to: number) => mk.spans[qkv].flatMap((span, t) => (span.from * perRow < to && from < span.to * perRow ? [t] : []));
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / KV));
      const want = [...new Set([...writers(h * D, (h + 1) * D), ...writers(H * D + g * D, H * D + (g + 1) * D), ...writers((H + KV) * D + g * D, (H + KV) * D + (g + 1) * D)])].sort((x, y) => x - y);
      const got = mk.needs[a][h].map((c) => mk.counters[c]).flatMap((c) => (c.kernel === qkv ? Array.from({ length: c.to - c.from }, (_, i) => c.from + i) : []));
      assert.equal(got, want, `head ${h} of kernel ${a}`);
      assert.ok(got.length < mk.tasks[qkv], 'fewer than every task');
    }
    // The output projection waits for attention alone: that wait implies the projection's and the norm's before it.
    const o = a + 1;
    assert.ok(mk.dependsOn[o].length > 1, `kernel ${o} depends on ${mk.dependsOn[o].join(' ')}`);
    for (const needs of mk.needs[o]) assert.equal(needs.map((c) => mk.counters[c].kernel), [a]);
  }
  // In the task list: the projection counted in runs, and attention's tasks waiting for some of them.
  const text = formatMegakernel(mk);
  assert.match(text, new RegExp(`kernel ${attention[0] - 1} k\\d+: \\d+ rows as \\d+ tasks of at most \\d+, counted in \\d+ runs`));
  assert.match(text, new RegExp(`wait\\(k${attention[0] - 1}\\.\\d+-\\d+( k${attention[0] - 1}\\.\\d+-\\d+)*\\) k${attention[0]}\\.`));
});

s('refused by name: a graph of symbolic sizes, a device too old, a grid of no blocks, a task that would run tiles', () => {
  assert.throws(() => renderCudaMegakernel(module, cudaCaps(61, 4), { graph: 'mlp' }), /compute capability 7\.0 or later/);
  assert.throws(() => renderCudaMegakernel(module, cudaCaps(90, 4), { graph: 'decode' }), /no graph @decode \(it has @mlp\)/);
  assert.throws(() => scheduleMegakernel(kernels, {}, { blocks: 0, processors: 4 }), /0 blocks is not a grid/);
  const symbolic = compileModule({ graphs: [mlpStack('S')] });
  assert.throws(() => renderCudaMegakernel(symbolic, cudaCaps(90, 4), { graph: 'mlp' }), /reads size S, which the step does not fix/);
  // The kernels as scheduled for launches keep their GEMM tiles (3 rows), which loop over the grid's blocks.
  const launched = scheduleKernels(module.graphs[0].kernels, caps);
  assert.ok(launched.some((k) => k.gemm), 'tiles at 3 rows');
  assert.throws(() => scheduleMegakernel(launched, {}, { blocks: 8, processors: 4 }), /kernel k\d+ was scheduled with tiles; the megakernel deals rows only/);
  const tiled = { ...schedule, kernels: launched };
  assert.throws(() => printCudaMegakernel(tiled, 'mlp_megakernel', 2), /kernel k1 may run as tiles, which loop over the grid's blocks; a megakernel's task runs rows only/);
});

s('the megakernel lowers its graph again: a narrow projection in no more rows than it has blocks, each kernel over the module\'s buffers', () => {
  // One input row: the down projections (48 outputs, no norm before them) take 2 outputs a row for launches (24 rows);
  // 16 blocks (4 multiprocessors, 4 each) want at most 16 rows: 12 of 4. The norms' projections keep theirs.
  const one = compileModule({ graphs: [mlpStack(1)] });
  const mk = renderCudaMegakernel(one, cudaCaps(90, 4), { graph: 'mlp' });
  const [mine, launched] = [megakernelKernels(one.graphs[0], cudaCaps(90, 4), { graph: 'mlp' }), one.graphs[0].kernels];
  assert.is(mine.length, launched.length);
  const rows = (ks: readonly KernelIR[]) => ks.map((k) => evalSize(k.rows, {}));
  const narrowed = rows(launched).flatMap((n, i) => (n !== rows(mine)[i] ? [i] : []));
  assert.ok(narrowed.length > 0, 'some kernel lowered otherwise');
  for (const i of narrowed) {
    assert.ok(rows(launched)[i] > 16 && rows(mine)[i] <= 16, `kernel ${i}: ${rows(launched)[i]} rows launched, ${rows(mine)[i]} in the megakernel`);
    assert.equal(new Set(mine[i].buffers.map((b) => JSON.stringify(b.binding))), new Set(launched[i].buffers.map((b) => JSON.stringify(b.binding))));
  }
  assert.equal(mk.schedule.rows, rows(mine), 'the megakernel runs those kernels');
  // A module without its memory plan (lowered elsewhere) runs its kernels as they are.
  assert.is(megakernelKernels({ graph: one.graphs[0].graph, kernels: launched }, cudaCaps(90, 4), { graph: 'mlp' }), launched);
});

s.run();
