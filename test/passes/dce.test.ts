// dce, as golden IR (test/golden/dce): whole dead chains go, including nodes that read other dead nodes; what
// reaches an output or a state update stays.

import { goldenSuite } from './golden.ts';

goldenSuite('dce');
