// Running one graph over host tensors on any device (compile()'s calls, differential tests): inputs and state
// written, the graph run, outputs and the new state read back. Host devices answer at once, GPUs with a promise.

import { Graph } from '../ir/graph.ts';
import { HostTensor } from '../ir/host-tensor.ts';
import { resolveShape } from '../ir/shape.ts';
import { outputKey, Program, Sizes } from './device.ts';

/** The symbolic sizes of `g` as the inputs give them (S from tokens: i32[S]); a disagreement is an error. */
export function bindSizes(g: Graph, inputs: Readonly<Record<string, HostTensor>>): Record<string, number> {
  const sizes: Record<string, number> = {};
  for (const v of g.inputs) {
    const t = inputs[v.name!];
    if (!t) throw new Error(`@${g.name}: no value for input %${v.name}`);
    if (t.shape.length !== v.type.shape.length) {
      throw new RangeError(`@${g.name}: input %${v.name} has ${t.shape.length} dimensions, the graph declares ${v.type.shape.length}`);
    }
    v.type.shape.forEach((d, i) => {
      if (typeof d === 'number') {
        if (t.shape[i] !== d) throw new RangeError(`@${g.name}: input %${v.name} has size ${t.shape[i]} on axis ${i}, the graph declares ${d}`);
        return;
      }
      if (sizes[d] !== undefined && sizes[d] !== t.shape[i]) {
        throw new RangeError(`@${g.name}: size ${d} is ${sizes[d]} in one input and ${t.shape[i]} in %${v.name}`);
      }
      sizes[d] = t.shape[i];
    });
  }
  return sizes;
}

/** Runs graph `name` once; `states` is read before and updated after (a missing state starts at zero). */
export function runOnce(program: Program, name: string, inputs: Readonly<Record<string, HostTensor>>,
  states: Map<string, HostTensor>): HostTensor[] | Promise<HostTensor[]> {
  const g = program.graph(name);
  const sizes: Sizes = bindSizes(g, inputs);
  for (const v of g.inputs) if (program.has(`input:${v.name}`)) program.write(`input:${v.name}`, inputs[v.name!]);
  for (const v of g.states) {
    const t = states.get(v.name!);
    if (t) program.write(`state:${v.name}`, t);
    else program.zero(`state:${v.name}`);
  }
  program.run(name, sizes);
  const bindings = new Map(Object.entries(sizes));
  const reads = [
    ...g.outputs.map((v, i) => program.read(outputKey(g, i), v.type.dtype, resolveShape(v.type.shape, bindings))),
    ...g.states.map((v) => program.read(`state:${v.name}`, v.type.dtype, resolveShape(v.type.shape, bindings))),
  ];
  const finish = (read: HostTensor[]) => {
    g.states.forEach((v, i) => states.set(v.name!, read[g.outputs.length + i]));
    return read.slice(0, g.outputs.length);
  };
  return reads.some((r) => r instanceof Promise) ? Promise.all(reads).then(finish) : finish(reads as HostTensor[]);
}

