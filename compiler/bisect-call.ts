// `f.bisect(...inputs)` on a compile()d function: the call's compiled graph bisected on its own program, with the
// function's state and weights, against the reference interpreter or another backend.

import { Graph } from '../ir/graph.ts';
import { HostTensor } from '../ir/host-tensor.ts';
import { formatType } from '../ir/shape.ts';
import { DeviceKind, Program } from '../runtime/device.ts';
import { HostDevice } from '../runtime/devices/host.ts';
import { openDevice } from '../runtime/devices/open.ts';
import { bindSizes } from '../runtime/executor.ts';
import { ParamStore } from '../runtime/params.ts';
import { bisect, BisectOptions, BisectReport } from './bisect.ts';
import { CompiledModule, compileModule } from './compile-module.ts';
import { PassContext } from './passes/context.ts';
import { Pass } from './passes/pipeline.ts';

/** Options of `f.bisect(...inputs, options)`. */
export interface BisectCallOptions extends Omit<BisectOptions, 'against' | 'traced'> {
  /** 'reference' (default), or a backend that runs the same kernels. */
  readonly against?: 'reference' | DeviceKind;
}

/** One compiled call, as compile() keeps it. */
export interface CompiledCall {
  readonly traced: Graph;
  /** Absent for the reference backend: bisect then compiles the graph for the cpu. */
  readonly compiled?: CompiledModule;
  readonly program: Program | Promise<Program>;
}

export async function bisectCall(call: CompiledCall, inputs: Readonly<Record<string, HostTensor>>,
  states: ReadonlyMap<string, HostTensor>, params: ParamStore, opts: BisectCallOptions & { readonly passes?: readonly Pass[] } = {}): Promise<BisectReport> {
  const g = call.traced;
  const sizes = bindSizes(g, inputs);
  // The passes weigh bytes at the sizes the call was compiled for (its buckets): the same graph comes out again.
  const ctx: PassContext = { dims: new Map(Object.entries(sizes)) };
  let compiled = call.compiled;
  let program: Program;
  if (compiled) {
    program = await call.program;
  } else {
    compiled = compileModule({ graphs: [g] }, { passes: opts.passes, ctx });
    program = new HostDevice('cpu').load(compiled, params, { maxSizes: sizes });
  }
  const against = opts.against && opts.against !== 'reference' ? await openDevice(opts.against) : undefined;
  try {
    const other = against ? await against.load(compiled, params, { maxSizes: sizes }) : 'reference';
    // State of another function's shape (a shared map) is not this graph's: it starts at zero, as a call's would.
    const own = new Map([...states].filter(([name, t]) => g.states.some((s) => s.name === name && formatType(s.type) === formatType(t))));
    return await bisect({
      ...opts, compiled, program, graph: g.name, inputs, states: own, params, against: other,
      traced: { module: { graphs: [g] }, passes: opts.passes, ctx },
    });
  } finally {
    against?.destroy();
  }
}

/** The last argument of `f.bisect(...)` when it is options, not an input tensor. */
export function splitBisectArgs(args: readonly unknown[], inputs: number): { inputs: HostTensor[]; options: BisectCallOptions } {
  const last = args[args.length - 1];
  const isOptions = args.length === inputs + 1 && typeof last === 'object' && last !== null && !('data' in last);
  return { inputs: (isOptions ? args.slice(0, -1) : args) as HostTensor[], options: isOptions ? last as BisectCallOptions : {} };
}
