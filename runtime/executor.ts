// What the generation loop needs from a backend: run one graph of the compiled module over host tensors.

import { HostTensor } from '../ir/host-tensor.ts';

export interface GraphExecutor {
  /** Runs graph `name`; state tensors in `states` are updated in place (or replaced) with their new values. */
  run(name: string, inputs: Readonly<Record<string, HostTensor>>, states: Map<string, HostTensor>): HostTensor[];
}
