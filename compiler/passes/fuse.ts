// fuse: partitions the graph into kernels. Matmuls, reductions and state writes anchor kernels; anchors merge when
// keeping them apart would write and re-read a tensor (softmax's two reductions, attention, a norm feeding a
// projection, paired projections); elementwise ops join the kernel that produces their operands as an epilogue
// when they iterate over the same index space; everything else (views, casts, gathers, elementwise chains of
// inputs and constants) is recomputed inside each kernel that reads it, so it is never written to memory.
// Every decision is explained with the bytes of memory traffic it saves.

import { dtypeBytes } from '../../ir/dtype.ts';
import { Graph, Kernel, KernelKind, Node, usersOf, Value } from '../../ir/graph.ts';
import { isElementwise, Op, OpGroup, opDef } from '../../ir/ops.ts';
import { formatShape, formatType, sameNumel, sameShape, Shape } from '../../ir/shape.ts';
import { PassContext } from './context.ts';
import { copySignature } from './rewrite.ts';

class Group {
  readonly members: Node[] = [];
  constructor(readonly id: number, public kind: KernelKind) {}
  get matmuls(): Node[] { return this.members.filter((n) => n.op === Op.Matmul); }
  get reductions(): Node[] { return this.members.filter((n) => opDef(n.op)?.group === OpGroup.Reduce); }
}

function anchorKind(n: Node): KernelKind | undefined {
  if (n.op === Op.Matmul) return 'contraction';
  if (n.op === Op.UpdateSlice) return 'state-write';
  return opDef(n.op)?.group === OpGroup.Reduce ? 'reduce' : undefined;
}

/** Bytes of a value, with symbolic dims at the context's assumed sizes. */
export function valueBytes(v: Value, dims: ReadonlyMap<string, number>): number {
  return v.type.shape.reduce<number>((n, d) => n * (typeof d === 'number' ? d : dims.get(d) ?? 1), dtypeBytes[v.type.dtype]);
}

export function formatBytes(n: number): string {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

class Partition {
  private readonly groupOf = new Map<Node, Group>();
  private readonly groups: Group[] = [];
  private depsMemo = new Map<Value, Set<Group>>();
  private loadsMemo = new Map<Value, Set<Value>>();
  readonly users: Map<Value, Node[]>;

  constructor(readonly g: Graph, readonly ctx: PassContext) {
    this.users = usersOf(g);
    for (const n of g.nodes) {
      const kind = anchorKind(n);
      if (kind) this.add(this.newGroup(kind), n);
    }
  }

  explain(line: string): void { this.ctx.explain?.('fuse', line); }
  bytes(v: Value): string { return formatBytes(valueBytes(v, this.ctx.dims)); }

  newGroup(kind: KernelKind): Group {
    const gr = new Group(this.groups.length, kind);
    this.groups.push(gr);
    return gr;
  }

  add(gr: Group, n: Node): void {
    gr.members.push(n);
    this.groupOf.set(n, gr);
    this.depsMemo.clear();
    this.loadsMemo.clear();
  }

  group(n: Node): Group | undefined { return this.groupOf.get(n); }
  live(): Group[] { return this.groups.filter((gr) => gr.members.length > 0); }

  /** The kernels a value depends on through nodes that are recomputed wherever they are used. */
  deps(v: Value): Set<Group> {
    let d = this.depsMemo.get(v);
    if (d) return d;
    const p = v.producer;
    const home = p && this.groupOf.get(p);
    d = home ? new Set([home]) : new Set(p ? p.inputs.flatMap((u) => [...this.deps(u)]) : []);
    this.depsMemo.set(v, d);
    return d;
  }

  /** The values computing v reads from memory: v itself if a kernel computes it or it has no node, else what the
   * recomputed nodes under it read. */
  loads(v: Value): Set<Value> {
    let l = this.loadsMemo.get(v);
    if (l) return l;
    const p = v.producer;
    l = !p || this.groupOf.has(p) ? new Set([v]) : new Set(p.inputs.flatMap((u) => [...this.loads(u)]));
    this.loadsMemo.set(v, l);
    return l;
  }

  /** Whether a node of this kernel computes v. */
  producedIn(v: Value, gr: Group): boolean {
    return v.producer !== undefined && this.groupOf.get(v.producer) === gr;
  }

  /** Whether v must be written to memory even if `except` joins the kernel: something outside reads it. */
  escapes(v: Value, gr: Group, except: Node, sinks: Set<Value>): boolean {
    return sinks.has(v) || (this.users.get(v) ?? []).some((u) => u !== except && this.groupOf.get(u) !== gr);
  }

  /** Moves a node from one kernel to another. */
  move(n: Node, from: Group, to: Group): void {
    from.members.splice(from.members.indexOf(n), 1);
    this.add(to, n);
  }

  /**
   * Edges between kernels: a → b when b reads something a computes, and when a reads a state's value that b
   * then overwrites in place (update_slice writes into its target's buffer, so every other reader of the old
   * value must run first).
   */
  edges(): Map<Group, Set<Group>> {
    const out = new Map<Group, Set<Group>>();
    const edge = (a: Group, b: Group) => {
      if (a === b) return;
      if (!out.has(a)) out.set(a, new Set());
      out.get(a)!.add(b);
    };
    const live = this.live();
    const overwrites = new Map<Value, Group[]>();
    for (const gr of live) {
      for (const n of gr.members) {
        if (n.op === Op.UpdateSlice) overwrites.set(n.inputs[0], [...(overwrites.get(n.inputs[0]) ?? []), gr]);
      }
    }
    for (const gr of live) {
      for (const n of gr.members) {
        n.inputs.forEach((v, i) => {
          for (const src of this.deps(v)) edge(src, gr);
          if (overwrites.size === 0 || (n.op === Op.UpdateSlice && i === 0)) return;
          for (const read of this.loads(v)) for (const writer of overwrites.get(read) ?? []) edge(gr, writer);
        });
      }
    }
    return out;
  }

  /** Whether `to` is reachable from `from` through at least one other kernel (then merging them makes a cycle). */
  reachesThroughOthers(from: Group, to: Group, edges = this.edges()): boolean {
    const stack = [...(edges.get(from) ?? [])].filter((x) => x !== to);
    const seen = new Set<Group>(stack);
    while (stack.length) {
      const x = stack.pop()!;
      for (const y of edges.get(x) ?? []) {
        if (y === to) return true;
        if (!seen.has(y)) { seen.add(y); stack.push(y); }
      }
    }
    return false;
  }

  reaches(from: Group, to: Group, edges = this.edges()): boolean {
    return (edges.get(from)?.has(to) ?? false) || this.reachesThroughOthers(from, to, edges);
  }

  /** Merges b into a unless that would make the kernel graph cyclic; says why. */
  merge(a: Group, b: Group, kind: KernelKind, why: string, quiet = false): boolean {
    if (a === b) return true;
    const edges = this.edges();
    if (this.reachesThroughOthers(a, b, edges) || this.reachesThroughOthers(b, a, edges)) {
      if (!quiet) this.explain(`kept apart: ${why} — merging would make a kernel depend on itself`);
      return false;
    }
    for (const n of b.members) this.add(a, n);
    b.members.length = 0;
    a.kind = kind;
    this.explain(`merged: ${why}`);
    return true;
  }

  /** Shapes over which a kernel iterates; an elementwise op of one of them can be its epilogue. */
  domains(gr: Group): Shape[] {
    const shapes: Shape[] = [];
    for (const n of gr.members) {
      if (n.op === Op.UpdateSlice) continue;
      shapes.push(n.output.type.shape);
      if (opDef(n.op)?.group === OpGroup.Reduce) shapes.push(n.inputs[0].type.shape);
    }
    return shapes;
  }
}

const lastAxisReduction = (n: Node) => {
  const axes = n.op === Op.Argmax ? [n.attrs.axis as number] : (n.attrs.axes as number[]);
  return axes.length === 1 && axes[0] === n.inputs[0].type.shape.length - 1;
};

/** Softmax: a reduction whose input depends on another reduction over the same rows joins its kernel. */
function mergeReductionChains(p: Partition): void {
  for (const n of p.g.nodes) {
    const gr = p.group(n);
    if (gr?.kind !== 'reduce') continue;
    for (const src of p.deps(n.inputs[0])) {
      if (src === gr || src.kind !== 'reduce') continue;
      const same = src.reductions.every((r) => sameShape(r.inputs[0].type.shape, n.inputs[0].type.shape) &&
        JSON.stringify(r.attrs.axes) === JSON.stringify(n.attrs.axes));
      if (same) p.merge(src, gr, 'reduce', `reductions over the same rows (${n.op} after ${src.reductions.map((r) => r.op).join(', ')}) share one pass`);
    }
  }
}

/** A max then a sum over the same rows: the reductions of a decomposed softmax. */
const isSoftmax = (rs: Node[]) => rs.length === 2 && rs[0].op === Op.Max && rs[1].op === Op.Sum;

/** Attention: scores = q·kᵀ, a softmax over them, and probs·v become one kernel; scores never reach memory. */
function mergeAttention(p: Partition): void {
  for (const m2 of p.g.nodes) {
    const g2 = p.group(m2);
    if (m2.op !== Op.Matmul || g2?.kind !== 'contraction') continue;
    const a = m2.inputs[0];
    const srcs = [...p.deps(a)];
    const softmax = srcs.find((s) => s.kind === 'reduce' && isSoftmax(s.reductions) &&
      s.reductions.every((r) => lastAxisReduction(r) && sameShape(r.inputs[0].type.shape, a.type.shape)));
    // The scores may reach the softmax through views (a chunked cache splits their last axis): equal sizes.
    const scores = srcs.find((s) => s.kind === 'contraction' && s.matmuls.some((m) => sameNumel(m.output.type.shape, a.type.shape)));
    if (!softmax || !scores || srcs.length !== 2) continue;
    const saved = valueBytes(a, p.ctx.dims) * 4;
    if (p.merge(scores, softmax, 'attention', `attention: softmax over the scores of ${formatType(a.type)} stays in the score kernel`) &&
      p.merge(scores, g2, 'attention', `attention: probs·v joins scores and softmax, saving ${formatBytes(saved)} of score/prob traffic`)) continue;
  }
}

/** Projections of one input whose results are combined (gate and up) run in one kernel, one row of each. */
function mergePairedProjections(p: Partition): void {
  const byInput = new Map<Value, Node[]>();
  for (const n of p.g.nodes) {
    if (n.op !== Op.Matmul) continue;
    byInput.set(n.inputs[0], [...(byInput.get(n.inputs[0]) ?? []), n]);
  }
  for (const ms of byInput.values()) {
    for (let i = 1; i < ms.length; i++) {
      const [a, b] = [p.group(ms[0])!, p.group(ms[i])!];
      if (a.kind !== 'contraction' || !sameShape(ms[0].output.type.shape, ms[i].output.type.shape)) continue;
      p.merge(a, b, 'contraction', `projections of one input with equal output shapes ${formatShape(ms[0].output.type.shape)} share the loads of their input`);
    }
  }
}

/** RMSNorm before a projection: the norm's reduction is recomputed in the projection's prologue. */
function mergeNormPrologues(p: Partition): void {
  for (const n of p.g.nodes) {
    const r = p.group(n);
    if (r?.kind !== 'reduce' || r.members.length !== 1 || !lastAxisReduction(n)) continue;
    const consumers = new Set<Group>();
    let feedsWeights = false;
    let escapes = p.g.outputs.some((v) => p.deps(v).has(r)) || p.g.stateUpdates.some((u) => p.deps(u.value).has(r));
    for (const m of p.g.nodes) {
      const gm = p.group(m);
      if (!gm || gm === r || !m.inputs.some((v) => p.deps(v).has(r))) continue;
      consumers.add(gm);
      if (m.op !== Op.Matmul || p.deps(m.inputs[1]).has(r) || !sameShape(m.inputs[0].type.shape, n.inputs[0].type.shape)) escapes = true;
      feedsWeights ||= m.op === Op.Matmul && p.deps(m.inputs[1]).has(r);
    }
    const [c] = consumers;
    if (consumers.size === 1 && !escapes && !feedsWeights && c.kind === 'contraction') {
      p.merge(c, r, 'contraction', `the ${n.op} over rows of ${formatType(n.inputs[0].type)} is recomputed in the prologue of the projection it scales, saving ${p.bytes(n.inputs[0])} of normalised activations`);
    }
  }
}

/** Places elementwise ops into the kernel producing their operands, or recomputes them where they are used. */
function placeEpilogues(p: Partition): void {
  const sinks = new Set<Value>([...p.g.outputs, ...p.g.stateUpdates.map((u) => u.value)]);
  for (const n of p.g.nodes) {
    if (p.group(n)) continue;
    const deps = [...p.deps(n.output)];
    const elementwise = isElementwise(n.op) || n.op === Op.Cast;
    const candidates = elementwise
      ? deps.filter((gr) => gr.kind !== 'state-write' && p.domains(gr).some((s) => sameShape(s, n.output.type.shape)))
      : [];
    const latest = candidates.find((c) => deps.every((d) => d === c || !p.reaches(c, d)));
    // Worth it only when an operand then stays in registers; if all of them are written anyway, the consumers
    // recompute this op more cheaply than a kernel writes it (x·x of the next RMSNorm reads x from memory).
    // An output is written in any case: better by a kernel it depends on than by a kernel of its own.
    const operandStays = (v: Value) => p.producedIn(v, latest!) && !p.escapes(v, latest!, n, sinks);
    if (latest && (sinks.has(n.output) || n.inputs.some(operandStays))) {
      p.add(latest, n);
      continue;
    }
    if (sinks.has(n.output)) {
      // An output nobody else computes gets a kernel of its own, unless a kernel it reads also reads it (through
      // ops recomputed there: where(max(x) >= y, max(x), x) returned and then summed next to the max). A kernel
      // of its own would then have to run both before and after that kernel, so it joins that kernel instead.
      const own = p.newGroup('elementwise');
      p.add(own, n);
      const edges = p.edges();
      const feedsBack = deps.find((d) => p.reaches(own, d, edges));
      if (feedsBack) p.move(n, own, feedsBack);
    }
  }
}

/** KV-cache writes with the same update shape (keys and values) go in one kernel. */
function mergeStateWrites(p: Partition): void {
  const writes = p.live().filter((gr) => gr.kind === 'state-write');
  for (let i = 0; i < writes.length; i++) {
    for (let j = i + 1; j < writes.length; j++) {
      const [a, b] = [writes[i], writes[j]];
      if (a.members.length === 0 || b.members.length === 0) continue;
      const ua = a.members[0].inputs[1].type.shape;
      if (!sameShape(ua, b.members[0].inputs[1].type.shape)) continue;
      // Not when one write's update reads the other's result: inside one kernel that would be a read of the
      // state being written, which a store loop cannot express (and merge() allows a direct edge).
      const edges = p.edges();
      if (p.reaches(a, b, edges) || p.reaches(b, a, edges)) continue;
      // Writes of different layers depend on each other through the layers between; those are not worth a line.
      p.merge(a, b, 'state-write', `state writes of equal shape ${formatShape(ua)} (${a.members.map((m) => '%' + m.inputs[0].name).join(', ')} and ${b.members.map((m) => '%' + m.inputs[0].name).join(', ')}) share one launch`, true);
    }
  }
}

/** Rebuilds the graph kernel by kernel; nodes recomputed in several kernels are copied into each. */
function emit(p: Partition): Graph {
  const g = p.g;
  const groups = orderGroups(p);
  const { out, map: global } = copySignature(g);

  groups.forEach((gr, index) => {
    const local = new Map<Value, Value>();
    const start = out.nodes.length;
    const members = new Set(gr.members);
    const value = (v: Value): Value => {
      const hit = local.get(v) ?? global.get(v);
      if (hit) return hit;
      const n = v.producer!;
      if (!members.has(n) && p.group(n)) throw new Error(`fuse: kernel order broken at ${n.op}`);
      const copy = out.addNode(n.op, n.inputs.map(value), n.attrs, n.loc);
      (members.has(n) ? global : local).set(v, copy);
      return copy;
    };
    for (const n of g.nodes) if (members.has(n)) value(n.output);
    const kernel: Kernel = { name: `k${index}`, nodes: out.nodes.slice(start), attrs: { kind: gr.kind } };
    out.kernels.push(kernel);
  });
  // An output that no node computes (an input returned as is, or x·1 simplified to x) would be written by no
  // kernel, yet it has a buffer of its own to fill: one kernel copies it (a reshape to its own shape). So does a
  // state's new value returned as an output: its update_slice writes the state's buffer in place.
  const copies = new Map<Value, Value>();
  for (const v of g.outputs) {
    if ((v.producer && v.producer.op !== Op.UpdateSlice) || copies.has(v)) continue;
    const start = out.nodes.length;
    copies.set(v, out.addNode(Op.Reshape, [global.get(v)!], { shape: [...v.type.shape] }));
    out.kernels.push({ name: `k${out.kernels.length}`, nodes: out.nodes.slice(start), attrs: { kind: 'elementwise' } });
  }
  out.outputs = g.outputs.map((v) => copies.get(v) ?? global.get(v)!);
  out.outputNames = [...g.outputNames];
  for (const u of g.stateUpdates) out.setState(global.get(u.state)!, global.get(u.value)!);
  return out;
}

/** Kernels in dependency order, ties broken by where their first node was in the graph. */
function orderGroups(p: Partition): Group[] {
  const live = p.live();
  const first = new Map(live.map((gr) => [gr, Math.min(...gr.members.map((n) => p.g.nodes.indexOf(n)))]));
  const preds = new Map<Group, Set<Group>>(live.map((gr) => [gr, new Set()]));
  for (const [a, bs] of p.edges()) for (const b of bs) preds.get(b)!.add(a);
  const order: Group[] = [];
  const done = new Set<Group>();
  while (order.length < live.length) {
    const ready = live.filter((gr) => !done.has(gr) && [...preds.get(gr)!].every((d) => done.has(d)));
    // Only a graph that reads a state's old value after something computed from its new value gets here.
    if (ready.length === 0) throw new Error('fuse: kernels depend on each other in a cycle (a state read both before and after its in-place write?)');
    ready.sort((a, b) => first.get(a)! - first.get(b)!);
    order.push(ready[0]);
    done.add(ready[0]);
  }
  return order;
}

/** Explains the boundaries that remain: each value written by one kernel and read by another, and why. */
function explainBoundaries(fused: Graph, p: Partition): void {
  if (!p.ctx.explain) return;
  const kernelOf = new Map<Value, Kernel>();
  for (const k of fused.kernels) for (const n of k.nodes) kernelOf.set(n.output, k);
  const readers = new Map<Value, Kernel[]>();
  for (const k of fused.kernels) {
    for (const n of k.nodes) {
      for (const v of n.inputs) {
        const owner = kernelOf.get(v);
        if (owner && owner !== k && !readers.get(v)?.includes(k)) readers.set(v, [...(readers.get(v) ?? []), k]);
      }
    }
  }
  const use: Record<KernelKind, string> = {
    contraction: 'contracts over it, so every output it computes needs all of it',
    attention: 'attends over it, so every head it computes needs all of it',
    reduce: 'reduces over it',
    'state-write': 'reads it at other positions (rotate-half, reshape into heads)',
    elementwise: 'reads it at other indices',
  };
  for (const k of fused.kernels) {
    for (const n of k.nodes) {
      const rs = readers.get(n.output);
      if (!rs) continue;
      const why = rs.map((r) => `${r.name} ${use[r.attrs.kind]}`).join('; ');
      p.explain(`boundary: ${k.name} (${k.attrs.kind}) writes ${n.op} ${formatType(n.output.type)}, ${p.bytes(n.output)}: ${why} — written once rather than recomputed per output`);
    }
  }
}

export function fuse(g: Graph, ctx: PassContext): Graph {
  const p = new Partition(g, ctx);
  mergeReductionChains(p);
  mergeAttention(p);
  mergePairedProjections(p);
  mergeNormPrologues(p);
  placeEpilogues(p);
  mergeStateWrites(p);
  const fused = emit(p);
  explainBoundaries(fused, p);
  return fused;
}
