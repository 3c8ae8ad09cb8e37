// A step's timeline from the kernels' stamps (CudaOptions.stamps, runtime/step-timeline.ts): on CUDA (the fake
// where there is no GPU) every kernel of the decode step and of the prompt's last step (its last chunk's) stamps
// each of its blocks once, in order, with start ≤ ready ≤ end; stamped kernels give the fixture's tokens; and the
// stamps' words read back as kernels whose shares add up to the step and as a trace (a track per block resident
// at once on a multiprocessor), refusing stamps of two steps.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { STAMP_WORDS } from '../../backends/cuda/prelude.ts';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { evalSize } from '../../backends/kernel-ir.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { StepTimeline, stepKernelTimes, stepTimeline, stepTimelineTable, stepTimelineTrace } from '../../runtime/step-timeline.ts';
import { openOrFake } from './fake-cuda/build.ts';

const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const dir = path.join(fixtures, 'tiny-llama');
const gold = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8')) as { input_ids: number[]; greedy_new_tokens: number[] };

const s = suite('step timeline');

/** Every kernel's blocks once each, as many as its launch had, each block's times in order. */
function checkBlocks(t: StepTimeline, grids: ReadonlyMap<string, number>, what: string): void {
  assert.is(t.kernels.length, grids.size, `${what}: every kernel stamped`);
  for (const k of t.kernels) {
    assert.is(k.blocks.length, grids.get(k.kernel), `${what}: ${k.kernel}'s blocks`);
    for (const b of k.blocks) assert.ok(b.startNs <= b.readyNs && b.readyNs <= b.endNs, `${what}: ${k.kernel} block ${b.block}: ${b.startNs} ≤ ${b.readyNs} ≤ ${b.endNs}`);
    assert.ok(k.startNs <= k.readyNs && k.firstEndNs <= k.endNs && k.endNs <= t.spanNs);
  }
}

s('the decode step and the prompt stamped on CUDA, with the fixture\'s tokens', async () => {
  const model = loadLlama(dir);
  const cacheLength = gold.input_ids.length + gold.greedy_new_tokens.length;
  // Prompts in chunks of 5 tokens: the prompt's timeline is its last chunk's step.
  const promptChunk = 5;
  const open = (cacheDir?: string) => openLlamaSession(model, { backend: 'cuda', cacheLength, stamps: true, promptChunk, ...(cacheDir ? { cacheDir } : {}) });
  const got = await openOrFake('cuda', open);
  if (typeof got === 'string') return void console.log(`  cuda: skipped (${got})`);
  const { opened: session, restore } = got;
  try {
    assert.equal(await session.generate(gold.input_ids, gold.greedy_new_tokens.length), gold.greedy_new_tokens, 'stamped kernels compute the same');
    const grids = (graph: string, sizes: Record<string, number>) => {
      const p = session.program as unknown as { graphOf(g: string): { kernels: { ir: { name: string }; rows: import('../../backends/kernel-ir.ts').KExpr }[] } };
      return new Map(p.graphOf(graph).kernels.map((k) => [`${graph}.${k.ir.name}`, Math.min(evalSize(k.rows, sizes), 2 ** 31 - 1)]));
    };
    const decode = await session.decodeTimeline(gold.input_ids.length);
    checkBlocks(decode, grids('decode', {}), 'decode');
    // Kernels of one stream start in launch order.
    assert.equal(decode.kernels.map((k) => k.kernel), [...grids('decode', {}).keys()]);
    const graph = session.program.module.graphs.some((lg) => lg.graph.name === 'prompt') ? 'prompt' : 'prefill';
    const prompt = await session.promptTimeline(gold.input_ids);
    const lastChunk = gold.input_ids.length - Math.floor((gold.input_ids.length - 1) / promptChunk) * promptChunk;
    assert.ok(gold.input_ids.length > promptChunk && lastChunk < promptChunk + 1);
    checkBlocks(prompt, grids(graph, { S: lastChunk }), 'prompt');
    const table = stepTimelineTable(decode);
    assert.match(table[table.length - 1], new RegExp(`^step: ${(decode.spanNs / 1e3).toFixed(1)} µs, ${decode.kernels.length} kernels`));
  } finally {
    session.close();
    restore?.();
  }
});

s('stamps read back as kernels; shares tile the step; two steps refused', () => {
  // Kernel 7 (two blocks) then kernel 9 (one block), origin at 1000 ns.
  const rows = [[7, 0, 3, 1000, 1000, 1500], [7, 1, 4, 1100, 1100, 1700], [9, 0, 3, 1200, 1800, 2500]];
  const words = new BigUint64Array(rows.length * STAMP_WORDS);
  rows.forEach(([id, block, sm, start, ready, end], i) => {
    words.set([(BigInt(id) << 32n) | BigInt(block), BigInt(sm), BigInt(start), BigInt(ready), BigInt(end)], i * STAMP_WORDS);
  });
  const facts = (id: number) => ({ kernel: `k${id}`, kind: id === 7 ? 'contraction' : 'attention', bytes: 1000, fused: [], last: '' });
  const t = stepTimeline(words, rows.length, facts);
  assert.equal(t.kernels.map((k) => [k.kernel, k.blocks.length, k.startNs, k.readyNs, k.firstEndNs, k.endNs]), [['k7', 2, 0, 100, 500, 700], ['k9', 1, 200, 800, 1500, 1500]]);
  assert.is(t.spanNs, 1500);
  assert.equal(t.kernels[0].blocks.map((b) => b.processor), [3, 4]);
  // As a profile: k7 from 100 (its last block's wait) to 700, k9 from 800 to 1500.
  assert.equal(stepKernelTimes(t).map((k) => [k.startUs * 1e3, k.us * 1e3]), [[100, 600], [800, 700]]);
  const table = stepTimelineTable(t);
  assert.match(table[1], /^0\s+k7\s+contraction\s+2\s+0\.0\s+0\.1\s+0\.7\s+0\.1\s+0\.2\s+0\.7\s+1\b/);
  assert.match(table[2], /^1\s+k9\s+attention\s+1\s+0\.2\s+0\.8\s+1\.5\s+0\.1\s+0\.0\s+0\.8\s+1\b/);
  assert.ok(table.some((l) => l.startsWith('step: 1.5 µs, 2 kernels; 0.2 µs')), table.join('\n'));
  // No copy rate: no time over it. At 1 GB/s (1 byte a ns) each kernel's 1,000 bytes take 1 µs: k7's share (0.7 µs)
  // runs −0.3 µs over it, k9's (0.8) −0.2; the step's 2,000 bytes 2 µs against its 1.5.
  assert.ok(table[0].trimEnd().endsWith('% copy  over') && table.slice(1, 3).every((l) => l.trimEnd().endsWith('—')), table.join('\n'));
  assert.not.ok(table.some((l) => l.includes('copy rate')));
  const rated = stepTimelineTable(t, 1e9);
  assert.match(rated[1], /\s142\.9\s+-0\.3$/);
  assert.match(rated[2], /\s125\.0\s+-0\.2$/);
  assert.ok(rated.some((l) => /^\s+contraction\s+1 kernel\s.*over -0\.3 µs$/.test(l)), rated.join('\n'));
  assert.ok(rated.includes("at the copy rate (0.00 TB/s) the step's 0.0 MB take 2.0 µs: the step runs -0.5 µs over it"), rated.join('\n'));
  // No marks, no phases; kernel 9's block marking phases 0 and 2 (1 not set): 800 → 1000 → 1300 → 1500.
  assert.not.ok(table.some((l) => l.startsWith('phases')));
  const marked = words.slice();
  marked.set([2000n, 0n, 2300n], 2 * STAMP_WORDS + 5);
  const phases = stepTimelineTable(stepTimeline(marked, rows.length, facts));
  const at = phases.findIndex((l) => l.startsWith('phases of the kernels that mark them'));
  assert.ok(at > 0, phases.join('\n'));
  assert.match(phases[at + 2], /^\s+1\s+k9\s+0\.2 \(1\)\s+—\s+0\.3 \(1\)\s+0\.2 \(1\)$/);
  // As a trace: the two kernels on the stream, then SM 3's two blocks (k9's starts at 200, before k7's block 0 ends
  // at 500: a second track) and SM 4's one; k9's block with its marks.
  const trace = stepTimelineTrace(stepTimeline(marked, rows.length, facts), 'gpu', undefined, { command: 'x' });
  const slices = trace.traceEvents.filter((e) => e.ph === 'X');
  assert.equal(slices.map((e) => [e.pid, e.tid, e.name, e.ts, e.dur]), [
    [1, 1, 'k7 contraction', 0.1, 0.6], [1, 1, 'k9 attention', 0.8, 0.7],
    [5, 1, 'k7 contraction', 0, 0.5], [6, 1, 'k7 contraction', 0.1, 0.6], [5, 2, 'k9 attention', 0.2, 1.3],
  ]);
  assert.equal(slices[4].args, { block: 0, 'wait µs': 0.6, 'mark 0 µs': 0.8, 'mark 2 µs': 1.1 });
  assert.equal(trace.traceEvents.filter((e) => e.name === 'process_name').map((e) => e.args?.name), ['gpu', 'gpu SM 3', 'gpu SM 4']);
  // A block that starts after another on its multiprocessor ended takes its track (k9's block from 1600 ns).
  const after = stepTimeline(words.map((w, i) => (i === 2 * STAMP_WORDS + 2 ? 1600n : w)), rows.length, facts);
  const tids = stepTimelineTrace(after, 'gpu', undefined).traceEvents.filter((e) => e.ph === 'X' && e.pid === 5).map((e) => e.tid);
  assert.equal(tids, [1, 1]);
  // A block stamped twice: two steps' stamps.
  const twice = new BigUint64Array([...words, ...words.subarray(0, STAMP_WORDS)]);
  assert.throws(() => stepTimeline(twice, rows.length + 1, facts), /block 0 twice: clear them before the step/);
});

s.run();
