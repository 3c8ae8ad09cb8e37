// A compiled module's graph run once over host tensors on the cpu device (the fused JavaScript kernels): the
// shape of the call most differential tests make.

import { LoweredModule } from '../../backends/lowered.ts';
import { HostTensor } from '../../ir/host-tensor.ts';
import { HostDevice } from '../../runtime/devices/host.ts';
import { bindSizes, runOnce } from '../../runtime/executor.ts';
import { ParamStore } from '../../runtime/params.ts';

export function runOnCpu(module: LoweredModule, name: string, inputs: Readonly<Record<string, HostTensor>>,
  param: (name: string) => HostTensor, states: Map<string, HostTensor> = new Map()): HostTensor[] {
  const g = module.graphs.find((lg) => lg.graph.name === name)!.graph;
  const program = new HostDevice('cpu').load(module, new ParamStore(param), { maxSizes: bindSizes(g, inputs) });
  return runOnce(program, name, inputs, states) as HostTensor[];
}
