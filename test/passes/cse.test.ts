// cse, as golden IR (test/golden/cse): repeated matmuls, constants and the arithmetic on them collapse to their
// first occurrence; different attributes or operand order keep nodes apart; state writes are never merged.
// UPDATE_GOLDEN=1 npm test -- passes rewrites the .out.ir files from what the passes print now (golden.ts).

import { goldenSuite } from './golden.ts';

goldenSuite('cse');
