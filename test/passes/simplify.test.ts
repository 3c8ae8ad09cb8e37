// simplify, as golden IR (test/golden/simplify): one case per rule, named after it, with the places the rule must
// not fire (a constant that broadcasts the other operand, x + 0 for floats, pow(x, 3)).
// UPDATE_GOLDEN=1 npm test -- passes rewrites the .out.ir files from what the passes print now (golden.ts).

import * as assert from 'uvu/assert';
import { simplifyRuleNames } from '../../compiler/passes/simplify.ts';
import { goldenCases, goldenSuite } from './golden.ts';

goldenSuite('simplify', (test) => {
  test('every rule has a golden case named after it', () => {
    const cases = goldenCases('simplify');
    assert.equal(simplifyRuleNames.filter((r) => !cases.includes(r)), []);
  });
});
