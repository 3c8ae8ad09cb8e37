// fuse, as golden IR (test/golden/fuse): which nodes land in which kernel, for the patterns the compiler exists for
// (elementwise chains, RMSNorm, softmax, matmul epilogues and prologues, paired projections, views between matmuls).
// test/compiler/fusion.test.ts asserts the same patterns as kernel counts on traced code.
// UPDATE_GOLDEN=1 npm test -- passes rewrites the .out.ir files from what the passes print now (golden.ts).

import { goldenSuite } from './golden.ts';

goldenSuite('fuse');
