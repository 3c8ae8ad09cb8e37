// decompose, as golden IR (test/golden/decompose): softmax becomes max, sub, exp, sum, div along its axis, whichever
// axis it is and whether the rows are symbolic; other ops pass through.
// UPDATE_GOLDEN=1 npm test -- passes rewrites the .out.ir files from what the passes print now (golden.ts).

import { goldenSuite } from './golden.ts';

goldenSuite('decompose');
