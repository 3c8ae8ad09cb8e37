// plan-memory: gives every value a kernel writes for a later kernel (an intermediate) a buffer slot, reusing a
// slot once the last kernel reading its value has run. Graph outputs and state keep buffers of their own.
// The plan is recorded on each kernel as `slots` (one slot per intermediate it writes, in write order).

import { Graph, kernelIOs, Value } from '../../ir/graph.ts';
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

export function planMemory(g: Graph, ctx: PassContext): Graph {
  if (g.kernels.length === 0) return g;
  const plan = computePlan(g, ctx);
  const ios = kernelIOs(g);
  g.kernels = g.kernels.map((k, i) => {
    const slots = ios[i].writes.filter((v) => plan.slotOf.has(v)).map((v) => plan.slotOf.get(v)!);
    return slots.length ? { ...k, attrs: { ...k.attrs, slots } } : k;
  });
  return g;
}

/** Liveness over the kernel order; a freed slot is reused by the next value that fits in it, else grown. */
export function computePlan(g: Graph, ctx: PassContext): MemoryPlan {
  const kernelOf = new Map<Value, number>();
  g.kernels.forEach((k, i) => k.nodes.forEach((n) => kernelOf.set(n.output, i)));
  const external = new Set<Value>([...g.outputs, ...g.stateUpdates.map((u) => u.value)]);
  const lastUse = new Map<Value, number>();
  const writes: Value[][] = [];
  kernelIOs(g).forEach((io, i) => {
    for (const v of io.reads) if (kernelOf.has(v)) lastUse.set(v, i);
    writes.push(io.writes.filter((v) => !external.has(v) && v.producer?.op !== 'update_slice'));
  });
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
    for (const [v, last] of lastUse) {
      if (last === i && slotOf.has(v)) {
        free.push(slotOf.get(v)!);
        live -= valueBytes(v, ctx.dims);
      }
    }
  });
  return { slotOf, slotBytes, peakBytes };
}
