// fold-constants, as golden IR (test/golden/fold-constants): scalar chains fold to one constant, rounded to their
// dtype as the reference computes them (f32 sqrt, i32 division and casts truncating, compares to bools, where);
// tensors and anything reading a non-constant stay.
// UPDATE_GOLDEN=1 npm test -- passes rewrites the .out.ir files from what the passes print now (golden.ts).

import { goldenSuite } from './golden.ts';

goldenSuite('fold-constants');
