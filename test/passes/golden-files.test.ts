// The golden IR files themselves: each one reads back through the parser and prints byte-identical (so they stay
// valid IR as the format evolves), and every input has its expected output beside it.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseGraph } from '../../ir/parser.ts';
import { printGraph } from '../../ir/printer.ts';
import { goldenRoot, lineDiff } from './golden.ts';

const files = fs.readdirSync(goldenRoot, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ir')).sort();

test('there are golden files for every pass', () => {
  const passes = new Set(files.map((f) => path.dirname(f)));
  for (const p of ['decompose', 'fold-constants', 'simplify', 'cse', 'dce', 'constant-tables', 'concat-projections', 'fuse', 'plan-memory']) {
    assert.ok(passes.has(p), `test/golden/${p}`);
  }
});

for (const f of files) {
  test(`${f} round-trips through the parser`, () => {
    const text = fs.readFileSync(path.join(goldenRoot, f), 'utf8');
    const again = printGraph(parseGraph(text, f), { locations: false });
    if (again !== text) assert.unreachable(`${f} prints back differently (- file, + printed):\n${lineDiff(text, again)}`);
  });
}

test('every .in.ir has an .out.ir and the other way round', () => {
  const ins = files.filter((f) => f.endsWith('.in.ir')).map((f) => f.slice(0, -'.in.ir'.length));
  const outs = files.filter((f) => f.endsWith('.out.ir')).map((f) => f.slice(0, -'.out.ir'.length));
  assert.equal(outs, ins);
});

test.run();
