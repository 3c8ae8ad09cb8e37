// `tsfuse compile --explain-fusion`: every fusion decision and kernel boundary, under the graph it is about, a
// decision made alike in many layers printed once with its count; nothing dropped (the counts add up to every
// explanation the passes gave), nothing from one graph under another's name.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { tsfuse } from '../tsfuse-cli.ts';

test('explanations by graph, repeated ones counted, all of them there', async () => {
  const r = await tsfuse(['compile', '--config', 'llama-tiny', '--explain-fusion']);
  assert.is(r.code, 0, r.stderr);
  const sections = new Map<string, Map<string, number>>();
  let current: Map<string, number> | undefined;
  for (const line of r.stdout.split('\n')) {
    const graph = /^@(\w+)$/.exec(line);
    if (graph) sections.set(graph[1], (current = new Map()));
    const entry = /^ {2}(\[\w+\] .*?)(?: \(×(\d+)\))?$/.exec(line);
    if (entry) {
      assert.ok(current, `an explanation before any graph: ${line}`);
      assert.not.ok(current!.has(entry[1]), `printed twice under one graph: ${entry[1]}`);
      current!.set(entry[1], Number(entry[2] ?? 1));
    }
  }
  assert.equal([...sections.keys()].sort(), ['decode', 'prefill', 'prompt']);
  // The same explanations as the passes' log gives them one by one (TSFUSE_LOGS=fusion, compiled anew).
  const logged = await tsfuse(['compile', '--config', 'llama-tiny', '--no-cache'], { env: { TSFUSE_LOGS: 'fusion' } });
  assert.is(logged.code, 0, logged.stderr);
  const want = new Map<string, Map<string, number>>();
  for (const line of logged.stderr.split('\n')) {
    const m = /^\[tsfuse:fusion\] (\[\w+\]) @(\w+): (.*)$/.exec(line);
    if (!m) continue;
    const lines = want.get(m[2]) ?? want.set(m[2], new Map()).get(m[2])!;
    lines.set(`${m[1]} ${m[3]}`, (lines.get(`${m[1]} ${m[3]}`) ?? 0) + 1);
  }
  assert.equal([...want.keys()].sort(), ['decode', 'prefill', 'prompt']);
  for (const [graph, lines] of want) assert.equal(sections.get(graph), lines, `@${graph}`);
  // A norm kept apart in every layer: one line, counted.
  const kept = [...sections.get('prefill')!].find(([text]) => text.startsWith('[fuse] kept apart: the mean over rows'));
  assert.ok(kept && kept[1] > 1, 'the norms kept apart, counted');
});

test.run();
