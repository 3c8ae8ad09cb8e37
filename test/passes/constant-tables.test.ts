// constant-tables, as golden IR (test/golden/constant-tables): rotary frequencies (a power over an arange and a
// reciprocal) become a chain of derived params that the rotation reads, a constant also used elsewhere staying a
// node there; cheap constant arithmetic, tables past 4,096 elements, symbolic shapes and a table only returned stay.
// UPDATE_GOLDEN=1 npm test -- passes rewrites the .out.ir files from what the passes print now (golden.ts).

import * as assert from 'uvu/assert';
import { parseGraph } from '../../ir/parser.ts';
import { goldenRoot, goldenSuite, runPass } from './golden.ts';
import fs from 'node:fs';
import path from 'node:path';

goldenSuite('constant-tables', (test) => {
  test('graphs computing the same table name it alike (a module shares a param by name), other tables otherwise', () => {
    const text = fs.readFileSync(path.join(goldenRoot, 'constant-tables', 'rotary.in.ir'), 'utf8');
    const names = (t: string) => runPass('constant-tables', parseGraph(t)).params.map((p) => p.name);
    const first = names(text);
    assert.ok(first.length > 0, 'the rotary graph gets a table');
    assert.equal(names(text.replace('@rotary', '@other')), first);
    const base = names(text.replace('value=10000', 'value=500000'));
    assert.is.not(base.at(-1), first.at(-1), 'another base, another table');
  });
});
