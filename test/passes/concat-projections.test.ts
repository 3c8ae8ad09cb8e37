// concat-projections, as golden IR (test/golden/concat-projections): Q, K and V projections of one input become one
// matmul over a derived param (the weights concatenated at load time) and slices; gate and up, combined by
// silu·mul, are left for fusion; weights of different dtypes are never concatenated.
// UPDATE_GOLDEN=1 npm test -- passes rewrites the .out.ir files from what the passes print now (golden.ts).

import { goldenSuite } from './golden.ts';

goldenSuite('concat-projections');
