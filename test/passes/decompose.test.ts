// decompose, as golden IR (test/golden/decompose): softmax becomes max, sub, exp, sum, div along its axis, whichever
// axis it is and whether the rows are symbolic; other ops pass through.

import { goldenSuite } from './golden.ts';

goldenSuite('decompose');
