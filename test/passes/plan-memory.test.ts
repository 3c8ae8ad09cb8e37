// plan-memory, as golden IR (test/golden/plan-memory): each intermediate gets a slot, recorded on the kernel that
// writes it; a slot is reused once its last reader has run, and only by a value that fits in it.
// UPDATE_GOLDEN=1 npm test -- passes rewrites the .out.ir files from what the passes print now (golden.ts).

import { goldenSuite } from './golden.ts';

goldenSuite('plan-memory');
