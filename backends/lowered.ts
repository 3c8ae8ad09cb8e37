// What the backends hand the runtime: every graph of a module with the kernels it runs as (kernel IR). A graph
// without kernels (an unfused, traced graph) runs op by op on the reference interpreter.

import { Graph, Value } from '../ir/graph.ts';
import { KernelIR } from './kernel-ir.ts';

export interface LoweredGraph {
  readonly graph: Graph;
  readonly kernels: readonly KernelIR[];
  /** The memory plan: its slot of each intermediate, where the graph may be lowered again otherwise (a megakernel's rows). */
  readonly plan?: { readonly slotOf: ReadonlyMap<Value, number> };
}

export interface LoweredModule {
  readonly graphs: readonly LoweredGraph[];
}
