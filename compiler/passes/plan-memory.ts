// plan-memory: gives every value a kernel writes for a later kernel (an intermediate) a buffer slot, reusing a
// slot once the last kernel reading its value has run. Graph outputs and state keep buffers of their own.
// The plan is recorded on each kernel as `slots` (one slot per intermediate it writes, in write order).

import { Graph, Kernel, kernelIOs, StateUpdate, Value } from '../../ir/graph.ts';
import { PassContext } from './context.ts';
import { valueBytes } from './fuse.ts';

export interface MemoryPlan {
  /** Slot of each intermediate value. */
  readonly slotOf: Map<Value, number>;
  /** Size of each slot in bytes (at the context's symbolic sizes). */
  readonly slotBytes: number[];
  /** Bytes of intermediates alive at once, at the worst kernel. */
  readonly peakBytes: number;
}

/**
 * The plan the pass made for each graph, with what it was made from: compileModule asks again for the plan of the
 * graph the pass has just planned.
 */
const planned = new WeakMap<Graph, {
  readonly kernels: readonly Kernel[];
  readonly outputs: readonly Value[];
  readonly stateUpdates: readonly StateUpdate[];
  readonly dims: PassContext['dims'];
  readonly plan: MemoryPlan;
}>();

export function planMemory(g: Graph, ctx: PassContext): Graph {
  if (g.kernels.length === 0) return g;
  const plan = computePlan(g, ctx);
  const ios = kernelIOs(g);
  g.kernels = g.kernels.map((k, i) => {
    const slots = ios[i].writes.filter((v) => plan.slotOf.has(v)).map((v) => plan.slotOf.get(v)!);
    return slots.length ? { ...k, attrs: { ...k.attrs, slots } } : k;
  });
  planned.set(g, { kernels: g.kernels, outputs: g.outputs, stateUpdates: g.stateUpdates, dims: ctx.dims, plan });
  return g;
}

/** Liveness over the kernel order; a freed slot is reused by the next value that fits in it, else grown. */
export function computePlan(g: Graph, ctx: PassContext): MemoryPlan {
  // The slots depend on the kernels' nodes and order and on what the graph returns, not on the kernels' attributes.
  const hit = planned.get(g);
  const same = hit && hit.dims === ctx.dims && hit.kernels === g.kernels && hit.outputs === g.outputs && hit.stateUpdates === g.stateUpdates;
  if (same) return hit.plan;
  const kernelOf = new Map<Value, number>();
  g.kernels.forEach((k, i) => k.nodes.forEach((n) => kernelOf.set(n.output, i)));
  const external = new Set<Value>([...g.outputs, ...g.stateUpdates.map((u) => u.value)]);
  const lastUse = new Map<Value, number>();
  const writes: Value[][] = [];
  kernelIOs(g).forEach((io, i) => {
    for (const v of io.reads) if (kernelOf.has(v)) lastUse.set(v, i);
    writes.push(io.writes.filter((v) => !external.has(v) && v.producer?.op !== 'update_slice'));
  });
  // The values each kernel reads for the last time, in lastUse's order.
  const lastReads: Value[][] = g.kernels.map(() => []);
  for (const [v, last] of lastUse) lastReads[last].push(v);
  const slotOf = new Map<Value, number>();
  const slotBytes: number[] = [];
  const free: number[] = [];
  let live = 0;
  let peakBytes = 0;
  g.kernels.forEach((_, i) => {
    for (const v of writes[i]) {
      const bytes = valueBytes(v, ctx.dims);
      const fit = free.filter((s) => slotBytes[s] >= bytes).sort((a, b) => slotBytes[a] - slotBytes[b])[0];
      const slot = fit ?? slotBytes.push(bytes) - 1;
      if (fit !== undefined) free.splice(free.indexOf(fit), 1);
      slotOf.set(v, slot);
      live += bytes;
    }
    peakBytes = Math.max(peakBytes, live);
    for (const v of lastReads[i]) {
      if (slotOf.has(v)) {
        free.push(slotOf.get(v)!);
        live -= valueBytes(v, ctx.dims);
      }
    }
  });
  return { slotOf, slotBytes, peakBytes };
}
