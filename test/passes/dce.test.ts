// dce, as golden IR (test/golden/dce): whole dead chains go, including nodes that read other dead nodes; what
// reaches an output or a state update stays.
// UPDATE_GOLDEN=1 npm test -- passes rewrites the .out.ir files from what the passes print now (golden.ts).

import { goldenSuite } from './golden.ts';

goldenSuite('dce');
