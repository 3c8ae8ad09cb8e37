// What the backends hand the runtime: every graph of a module with the kernels it runs as (kernel IR). A graph
// without kernels (an unfused, traced graph) runs op by op on the reference interpreter.

import { Graph } from '../ir/graph.ts';
import { KernelIR } from './kernel-ir.ts';

export interface LoweredGraph {
  readonly graph: Graph;
  readonly kernels: readonly KernelIR[];
}

export interface LoweredModule {
  readonly graphs: readonly LoweredGraph[];
}
