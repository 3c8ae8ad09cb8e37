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
import { copySignature, emitterFor, keepNode, rewriteGraph } from './rewrite.ts';

class Group {
  readonly members: Node[] = [];
  /** The last reachability search (Partition.connects) that reached this group from its start, and from its end. */
  ahead = 0;
  behind = 0;
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

/**
 * A relation from each kernel to a set of kernels, kept with its converse (which kernels name a given one) so that
 * it can be walked both ways and renamed without a scan.
 */
class Links {
  private readonly forward = new Map<Group, Set<Group>>();
  private readonly backward = new Map<Group, Set<Group>>();

  of(gr: Group): Set<Group> | undefined { return this.forward.get(gr); }
  namedBy(gr: Group): Set<Group> | undefined { return this.backward.get(gr); }

  set(gr: Group, to: Set<Group> | undefined): void {
    const old = this.forward.get(gr);
    if (old) for (const x of old) if (!to?.has(x)) this.backward.get(x)?.delete(gr);
    if (!to) {
      this.forward.delete(gr);
      return;
    }
    this.forward.set(gr, to);
    for (const x of to) {
      if (old?.has(x)) continue;
      let back = this.backward.get(x);
      if (!back) this.backward.set(x, (back = new Set()));
      back.add(gr);
    }
  }

  /** Forgets a's and b's own sets, and has every other kernel that named b name a instead. */
  rename(b: Group, a: Group, rename: (s: Set<Group>) => Set<Group>): void {
    this.set(a, undefined);
    this.set(b, undefined);
    for (const gr of [...(this.backward.get(b) ?? [])]) this.set(gr, rename(this.forward.get(gr)!));
    this.backward.delete(b);
  }
}

/** The empty set that most values' loads share. */
const none: ReadonlySet<never> = new Set();

/**
 * A step of Partition.connects from its start: marks what `edges` lead to, adding the new ones to `next`; true
 * where one was reached from the end.
 */
function widenAhead(edges: ReadonlySet<Group> | undefined, walk: number, next: Group[]): boolean {
  if (edges) {
    for (const y of edges) {
      if (y.behind === walk) return true;
      if (y.ahead !== walk) { y.ahead = walk; next.push(y); }
    }
  }
  return false;
}

/** A step of Partition.connects from its end, against the edges: as widenAhead. */
function widenBehind(edges: ReadonlySet<Group> | undefined, walk: number, next: Group[]): boolean {
  if (edges) {
    for (const y of edges) {
      if (y.ahead === walk) return true;
      if (y.behind !== walk) { y.behind = walk; next.push(y); }
    }
  }
  return false;
}

class Partition {
  private readonly groupOf = new Map<Node, Group>();
  private readonly groups: Group[] = [];
  private readonly depsMemo = new Map<Value, Set<Group>>();
  private readonly loadsMemo = new Map<Value, ReadonlySet<Value>>();
  /**
   * The edges of the kernel graph that each kernel's own nodes make (see edges()): the kernels it reads from, and
   * those that overwrite a state it reads. Recomputed only for kernels a change touched (`stale`): fusion asks for
   * the kernel graph after every change, and walking the whole graph each time made it quadratic.
   */
  private readonly readsFrom = new Links();
  private readonly overwrittenBy = new Links();
  private readonly stale = new Set<Group>();
  private walks = 0;
  /** The kernels holding an update_slice of each state value. */
  private readonly overwrites = new Map<Value, Set<Group>>();
  /** The values an update_slice overwrites in place. */
  private readonly targets: ReadonlySet<Value>;
  readonly users: Map<Value, Node[]>;
  /** Each node's position in the graph. */
  readonly order = new Map<Node, number>();

  /** `readCopies`: update_slices that no kernel is built around, recomputed where they are read (withReadCopies). */
  constructor(readonly g: Graph, readonly ctx: PassContext, readCopies: ReadonlySet<Node> = new Set()) {
    this.users = usersOf(g);
    this.targets = new Set(g.nodes.flatMap((n) => (n.op === Op.UpdateSlice ? [n.inputs[0]] : [])));
    g.nodes.forEach((n, i) => this.order.set(n, i));
    for (const n of g.nodes) {
      const kind = readCopies.has(n) ? undefined : anchorKind(n);
      if (kind) this.add(this.newGroup(kind), n);
    }
  }

  explain(line: string): void { this.ctx.explain?.('fuse', line, this.g.name); }
  bytes(v: Value): string { return formatBytes(valueBytes(v, this.ctx.dims)); }

  newGroup(kind: KernelKind): Group {
    const gr = new Group(this.groups.length, kind);
    this.groups.push(gr);
    return gr;
  }

  /** Puts a node that no kernel computes into `gr`. */
  add(gr: Group, n: Node): void {
    // Where n's value depended on gr alone and read nothing an update_slice overwrites (an epilogue joining the
    // kernel that computes its operands), nothing derived from it changes: its deps stay {gr} and its loads empty,
    // and so do the deps and loads of what is recomputed from it and every kernel's edges (gr's included: n's
    // operands add none).
    const v = n.output;
    const deps = this.depsMemo.get(v);
    const unchanged = n.op !== Op.UpdateSlice && !this.targets.has(v) && deps?.size === 1 && deps.has(gr) &&
      this.loadsMemo.get(v)?.size === 0;
    gr.members.push(n);
    this.groupOf.set(n, gr);
    if (n.op === Op.UpdateSlice) {
      const target = n.inputs[0];
      if (!this.overwrites.has(target)) this.overwrites.set(target, new Set());
      this.overwrites.get(target)!.add(gr);
      // Every kernel reading the state now has an edge to gr.
      for (const other of this.groups) this.stale.add(other);
    }
    if (!unchanged) this.touched(gr, v);
  }

  /**
   * Forgets what was derived from v being recomputed where it is used: deps and loads of v and of everything
   * recomputed from it (the nodes no kernel computes, downstream of v), and the edges of `gr` and of the kernels
   * that read any of those values. (Where v's deps and loads were never asked for, nothing derived from them is.)
   */
  private touched(gr: Group, v: Value): void {
    this.stale.add(gr);
    const stack = [v];
    while (stack.length) {
      const x = stack.pop()!;
      const had = this.depsMemo.delete(x);
      if (!(this.loadsMemo.delete(x) || had)) continue;
      for (const u of this.users.get(x) ?? []) {
        const home = this.groupOf.get(u);
        if (home) this.stale.add(home);
        else stack.push(u.output);
      }
    }
  }

  group(n: Node): Group | undefined { return this.groupOf.get(n); }
  live(): Group[] { return this.groups.filter((gr) => gr.members.length > 0); }

  /** The kernels a value depends on through nodes that are recomputed wherever they are used. */
  deps(v: Value): Set<Group> {
    let d = this.depsMemo.get(v);
    if (d) return d;
    const p = v.producer;
    const home = p && this.groupOf.get(p);
    if (home) d = new Set([home]);
    else {
      d = new Set();
      if (p) for (const u of p.inputs) for (const gr of this.deps(u)) d.add(gr);
    }
    this.depsMemo.set(v, d);
    return d;
  }

  /**
   * What computing v reads from memory of the values an update_slice overwrites (the reads that order kernels
   * besides their operands): v itself if it is one and a kernel computes it or it has no node, else what the
   * recomputed nodes under it read of them.
   */
  loads(v: Value): ReadonlySet<Value> {
    let l = this.loadsMemo.get(v);
    if (l) return l;
    const p = v.producer;
    if (!p || this.groupOf.has(p)) l = this.targets.has(v) ? new Set([v]) : none;
    else {
      // Most values read none of them: they share one empty set.
      let union: Set<Value> | undefined;
      for (const u of p.inputs) for (const x of this.loads(u)) (union ??= new Set()).add(x);
      l = union ?? none;
    }
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
    this.stale.add(from);
    if (n.op === Op.UpdateSlice) this.overwrites.get(n.inputs[0])?.delete(from);
    this.add(to, n);
  }

  /**
   * Edges between kernels: a → b when b reads something a computes, and when a reads a state's value that b
   * then overwrites in place (update_slice writes into its target's buffer, so every other reader of the old
   * value must run first).
   */
  edges(): Map<Group, Set<Group>> {
    this.sync();
    const out = new Map<Group, Set<Group>>();
    for (const gr of this.groups) {
      if (gr.members.length === 0) continue;
      const to = new Set([...(this.readsFrom.namedBy(gr) ?? []), ...(this.overwrittenBy.of(gr) ?? [])]);
      if (to.size) out.set(gr, to);
    }
    return out;
  }

  /** Brings the edges of the kernels a change touched up to date. */
  private sync(): void {
    if (this.stale.size === 0) return;
    const anyOverwrites = [...this.overwrites.values()].some((s) => s.size > 0);
    for (const gr of this.stale) this.refresh(gr, anyOverwrites);
    this.stale.clear();
  }

  /** The edges gr's own nodes make: from the kernels they read, to the kernels overwriting a state they read. */
  private refresh(gr: Group, anyOverwrites: boolean): void {
    const from = new Set<Group>();
    const to = new Set<Group>();
    for (const n of gr.members) {
      for (let i = 0; i < n.inputs.length; i++) {
        const v = n.inputs[i];
        for (const src of this.deps(v)) if (src !== gr) from.add(src);
        if (!anyOverwrites || (n.op === Op.UpdateSlice && i === 0)) continue;
        for (const read of this.loads(v)) {
          const writers = this.overwrites.get(read);
          if (writers) for (const writer of writers) if (writer !== gr) to.add(writer);
        }
      }
    }
    this.readsFrom.set(gr, from);
    this.overwrittenBy.set(gr, to);
  }

  /** Whether `to` is reachable from `from` through at least one other kernel (then merging them makes a cycle). */
  reachesThroughOthers(from: Group, to: Group): boolean {
    this.sync();
    return this.connects(this.successors(from).filter((y) => y !== to), to);
  }

  /** Whether `to` is reachable from `from` (directly or through other kernels). */
  reaches(from: Group, to: Group): boolean {
    this.sync();
    return this.connects(this.successors(from), to);
  }

  private successors(gr: Group): Group[] {
    return [...(this.readsFrom.namedBy(gr) ?? []), ...(this.overwrittenBy.of(gr) ?? [])];
  }

  /**
   * Whether a path leads from one of `starts` to `to` (or `to` is among them): a search from both ends at once,
   * each step widening the smaller frontier, so that asking whether an early kernel reaches a late one (or a late
   * one an early one) costs about the few kernels on one side, not everything downstream of the other. Groups are
   * marked with the search's number rather than kept in sets.
   */
  private connects(starts: readonly Group[], to: Group): boolean {
    const walk = ++this.walks;
    let ahead: Group[] = [];
    for (const y of starts) {
      if (y === to) return true;
      if (y.ahead !== walk) { y.ahead = walk; ahead.push(y); }
    }
    to.behind = walk;
    let behind = [to];
    while (ahead.length && behind.length) {
      const next: Group[] = [];
      if (ahead.length <= behind.length) {
        for (const x of ahead) {
          if (widenAhead(this.readsFrom.namedBy(x), walk, next) || widenAhead(this.overwrittenBy.of(x), walk, next)) return true;
        }
        ahead = next;
      } else {
        for (const x of behind) {
          if (widenBehind(this.readsFrom.of(x), walk, next) || widenBehind(this.overwrittenBy.namedBy(x), walk, next)) return true;
        }
        behind = next;
      }
    }
    return false;
  }

  /**
   * Merges b into a unless that would make the kernel graph cyclic; says why. `independent`: the caller found that
   * neither reaches the other, so there is no cycle to look for.
   */
  merge(a: Group, b: Group, kind: KernelKind, why: string, independent = false): boolean {
    if (a === b) return true;
    if (!independent && (this.reachesThroughOthers(a, b) || this.reachesThroughOthers(b, a))) {
      this.explain(`kept apart: ${why} — merging would make a kernel depend on itself`);
      return false;
    }
    const moved = b.members.splice(0);
    for (const n of moved) {
      a.members.push(n);
      this.groupOf.set(n, a);
    }
    a.kind = kind;
    this.renamed(b, a, moved);
    this.explain(`merged: ${why}`);
    return true;
  }

  /**
   * After b's nodes moved into a, what was derived from the partition holds with b read as a: the deps that named
   * b (rebuilt in order, as computing them again would give them, and never changed under a caller iterating one),
   * the kernels overwriting each state, and other kernels' edges; a's own edges are computed again. Which values
   * are loaded does not change.
   */
  private renamed(b: Group, a: Group, moved: readonly Node[]): void {
    const as = (gr: Group) => (gr === b ? a : gr);
    const rename = (s: Set<Group>) => (s.has(b) ? new Set([...s].map(as)) : s);
    // Only values computed from b's nodes through nodes no kernel computes can depend on b (and only where their
    // deps were asked for: see touched()).
    const stack = moved.map((n) => n.output);
    const seen = new Set(stack);
    while (stack.length) {
      const x = stack.pop()!;
      const d = this.depsMemo.get(x);
      if (!d) continue;
      this.depsMemo.set(x, rename(d));
      for (const u of this.users.get(x) ?? []) {
        if (this.groupOf.has(u) || seen.has(u.output)) continue;
        seen.add(u.output);
        stack.push(u.output);
      }
    }
    for (const [v, s] of this.overwrites) if (s.has(b)) this.overwrites.set(v, rename(s));
    this.readsFrom.rename(b, a, rename);
    this.overwrittenBy.rename(b, a, rename);
    this.stale.delete(b);
    this.stale.add(a);
  }

  /**
   * The nodes of other kernels that read what kernel r computes, directly or through recomputed nodes, in graph
   * order: the only nodes whose operands can depend on r.
   */
  readersOf(r: Group): Node[] {
    return this.readersOfValues(r.members.map((n) => n.output), r);
  }

  /** The nodes of kernels other than `except` that read `values`, directly or through recomputed nodes, in graph order. */
  readersOfValues(values: readonly Value[], except?: Group): Node[] {
    const readers = new Set<Node>();
    const stack = [...values];
    const seen = new Set(stack);
    while (stack.length) {
      for (const u of this.users.get(stack.pop()!) ?? []) {
        const home = this.groupOf.get(u);
        if (home) {
          if (home !== except) readers.add(u);
        } else if (!seen.has(u.output)) {
          seen.add(u.output);
          stack.push(u.output);
        }
      }
    }
    return [...readers].sort((a, b) => this.order.get(a)! - this.order.get(b)!);
  }

  /** Whether a kernel iterates over `shape` (then an elementwise op of that shape can be its epilogue). */
  iterates(gr: Group, shape: Shape): boolean {
    for (const n of gr.members) {
      if (n.op === Op.UpdateSlice) continue;
      if (sameShape(n.output.type.shape, shape)) return true;
      if (opDef(n.op)?.group === OpGroup.Reduce && sameShape(n.inputs[0].type.shape, shape)) return true;
    }
    return false;
  }
}

/** The axes a reduction reduces. */
const reducedAxes = (n: Node): number[] => (n.op === Op.Argmax ? [n.attrs.axis as number] : (n.attrs.axes as number[]));

const lastAxisReduction = (n: Node) => {
  const axes = reducedAxes(n);
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

/**
 * Reductions of one value over the same axes (a chunk's maximum and where it is: split-reductions) share one pass
 * over it, its elements read once.
 */
function mergeSiblingReductions(p: Partition): void {
  const first = new Map<string, Group>();
  const ids = new Map<Value, number>();
  for (const n of p.g.nodes) {
    const gr = p.group(n);
    if (gr?.kind !== 'reduce' || opDef(n.op)?.group !== OpGroup.Reduce) continue;
    const x = n.inputs[0];
    if (!ids.has(x)) ids.set(x, ids.size);
    const key = `${ids.get(x)} ${reducedAxes(n).join()}`;
    const sibling = first.get(key);
    if (!sibling) first.set(key, gr);
    else if (sibling !== gr) p.merge(sibling, gr, 'reduce', `reductions of one value over the same axes (${sibling.reductions.map((r) => r.op).join(', ')} and ${n.op} of ${formatType(x.type)}) share one pass over it`);
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
    for (const m of p.readersOf(r)) {
      const gm = p.group(m);
      if (!gm || gm === r || !m.inputs.some((v) => p.deps(v).has(r))) continue;
      consumers.add(gm);
      if (m.op !== Op.Matmul || p.deps(m.inputs[1]).has(r) || !sameShape(m.inputs[0].type.shape, n.inputs[0].type.shape)) escapes = true;
      feedsWeights ||= m.op === Op.Matmul && p.deps(m.inputs[1]).has(r);
    }
    const [c] = consumers;
    // A projection of many rows runs as tiles (a GEMM, backends/lower.ts): each tile would recompute the norm of
    // its rows once per tile of columns. The norm stays a kernel of its own, writing the normalised rows once
    // (S × hidden f32: 4 MiB at 512 tokens of Llama-3.2-1B, a few µs), which the tiles load.
    const manyRows = c?.matmuls.some((m) => m.inputs[0].type.shape.length === 2 && m.inputs[0].type.shape[0] !== 1);
    if (consumers.size === 1 && !escapes && !feedsWeights && c.kind === 'contraction' && manyRows) {
      p.explain(`kept apart: the ${n.op} over rows of ${formatType(n.inputs[0].type)} stays a kernel of its own (the normalised rows written once): the projection runs as tiles of rows (GEMM), and every tile of columns would recompute it`);
    } else if (consumers.size === 1 && !escapes && !feedsWeights && c.kind === 'contraction') {
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
      ? deps.filter((gr) => gr.kind !== 'state-write' && p.iterates(gr, n.output.type.shape))
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
      const feedsBack = deps.find((d) => p.reaches(own, d));
      if (feedsBack) p.move(n, own, feedsBack);
    }
  }
}

/** KV-cache writes with the same update shape (keys and values) go in one kernel. */
function mergeStateWrites(p: Partition): void {
  const writes = p.live().filter((gr) => gr.kind === 'state-write');
  const reached = laterReached(p, writes);
  for (let i = 0; i < writes.length; i++) {
    for (let j = i + 1; j < writes.length; j++) {
      const [a, b] = [writes[i], writes[j]];
      if (a.members.length === 0 || b.members.length === 0) continue;
      const ua = a.members[0].inputs[1].type.shape;
      if (!sameShape(ua, b.members[0].inputs[1].type.shape)) continue;
      // Not when one write's update reads the other's result: inside one kernel that would be a read of the
      // state being written, which a store loop cannot express (and merge() allows a direct edge). Writes of
      // different layers depend on each other through the layers between: not worth a line. (Merging adds
      // paths and removes none, so what `reached` found still holds.)
      if (reached[i][j] || p.reaches(a, b) || p.reaches(b, a)) continue;
      p.merge(a, b, 'state-write', `state writes of equal shape ${formatShape(ua)} (${a.members.map((m) => '%' + m.inputs[0].name).join(', ')} and ${b.members.map((m) => '%' + m.inputs[0].name).join(', ')}) share one launch`, true);
    }
  }
}

/** Whether an update_slice writes one position along its axis (a decode step's cache write). */
const writesOnePosition = (n: Node) => n.inputs[1].type.shape[n.attrs.axis as number] === 1;

/** A state-write kernel's updates for a fusion note: "f32[1,2,64] into %cache.k.0, …". */
const formatUpdates = (w: Group) => w.members.map((m) => `${formatType(m.inputs[1].type)} into %${m.inputs[0].name}`).join(', ');

/**
 * A decode step's cache writes (updates of one position) join the attention kernel that alone reads the cache after
 * them (PassContext.cacheWrites 'attention'): it reads the new rows from the update rather than from memory, so it
 * need not wait for another kernel to write them, and the write costs no launch of its own.
 */
function mergeCacheWritesIntoAttention(p: Partition): void {
  if (p.ctx.cacheWrites !== 'attention') return;
  for (const w of p.live().filter((gr) => gr.kind === 'state-write')) {
    const onePosition = w.members.every(writesOnePosition);
    const readers = new Set(p.readersOf(w).map((n) => p.group(n)!));
    const [a] = readers;
    if (!onePosition || readers.size !== 1 || a.kind !== 'attention') continue;
    const updates = formatUpdates(w);
    p.merge(a, w, 'attention', `the cache writes of one position (${updates}) join the attention kernel that reads them: it reads the new rows from the update, one launch fewer`);
  }
}

/**
 * The graph with a copy of each of a decode step's cache updates (one position, the state's new value, read in the
 * step) for its readers to read (PassContext.cacheWrites 'after-attention'): the update itself stays the state's
 * write, and the copy is recomputed in each kernel that reads it (the update where it covers the index, else the
 * cache as it was), so the write is free to join a later kernel (deferCacheWrites). Returns each write's copy.
 */
function withReadCopies(g: Graph): { graph: Graph; copyOf: Map<Node, Node> } {
  const users = usersOf(g);
  const stateValues = new Set(g.stateUpdates.map((u) => u.value));
  const writeOf = new Map<Value, Value>();
  const graph = rewriteGraph(g, (n, ins, out) => {
    const v = keepNode(n, ins, out);
    const onePosition = n.op === Op.UpdateSlice && writesOnePosition(n);
    if (!onePosition || !stateValues.has(n.output) || !users.get(n.output)?.length) return v;
    const copy = keepNode(n, ins, out);
    writeOf.set(copy, v);
    return copy;
  });
  // The state's new value (or an output) is the write's; everything else read the copy.
  graph.stateUpdates = graph.stateUpdates.map((u) => ({ state: u.state, value: writeOf.get(u.value) ?? u.value }));
  graph.outputs = graph.outputs.map((v) => writeOf.get(v) ?? v);
  return { graph, copyOf: new Map([...writeOf].map(([copy, write]) => [write.producer!, copy.producer!])) };
}

/**
 * A decode step's cache writes whose readers read copies of them (withReadCopies) join the first kernel that reads
 * the result of the one kernel reading the copies (attention, then the output projection): attention computes the
 * new rows itself and reads the rest of the cache as it was, read-only; the writes, which must follow that read
 * (Partition.edges), cost no launch of their own. (Before mergeStateWrites, which would otherwise put every layer's
 * writes, no longer read in the step, into one kernel at its end.)
 */
function deferCacheWrites(p: Partition, copyOf: ReadonlyMap<Node, Node>): void {
  for (const w of p.live().filter((gr) => gr.kind === 'state-write')) {
    const copies = w.members.map((m) => copyOf.get(m));
    if (copies.some((c) => c === undefined)) continue;
    const readers = new Set(p.readersOfValues(copies.map((c) => c!.output)).map((n) => p.group(n)!));
    const [reader] = readers;
    if (readers.size !== 1) continue;
    const host = p.readersOf(reader).map((n) => p.group(n)!).find((gr) => gr !== w && gr.kind !== 'state-write');
    if (!host) continue;
    const updates = formatUpdates(w);
    p.merge(host, w, host.kind, `the cache write of one position (${updates}) joins the ${host.kind} kernel after the ${reader.kind} kernel, which computes the new row from the update and reads the cache read-only: one launch fewer`);
  }
}

/**
 * State writes of values that one one-row reduction kernel computes (the next token and position, after the
 * argmax's last step) join that kernel: its single workgroup stores them after the reduction, one launch fewer.
 */
function mergeTokenWrites(p: Partition): void {
  for (const w of p.live().filter((gr) => gr.kind === 'state-write')) {
    const sources = new Set(w.members.flatMap((m) => [...p.deps(m.inputs[1]), ...p.deps(m.inputs[2])]));
    const [r] = sources;
    const oneRow = r?.kind === 'reduce' && r.members.every((n) => numel(n.output) === 1);
    if (sources.size !== 1 || !oneRow) continue;
    const updates = formatUpdates(w);
    p.merge(r, w, 'reduce', `the state writes (${updates}) of what a one-row reduction computes join its kernel: one launch fewer`);
  }
}

/**
 * Whether each of `groups` reaches each later one. Rows are filled from the last, so that where a reaches some b
 * between it and c that reaches c, it is known to reach c without a search: a layer's KV-cache write reaches the
 * next layer's, and through it every later layer's.
 */
function laterReached(p: Partition, groups: readonly Group[]): boolean[][] {
  const r = groups.map(() => groups.map(() => false));
  for (let i = groups.length - 1; i >= 0; i--) {
    for (let j = i + 1; j < groups.length; j++) {
      let known = false;
      for (let k = i + 1; k < j && !known; k++) known = r[i][k] && r[k][j];
      r[i][j] = known || p.reaches(groups[i], groups[j]);
    }
  }
  return r;
}

/** Rebuilds the graph kernel by kernel; nodes recomputed in several kernels are copied into each. */
function emit(p: Partition): Graph {
  const g = p.g;
  const groups = orderGroups(p);
  const { out, map: global } = copySignature(g);
  const emitter = emitterFor(out);

  groups.forEach((gr, index) => {
    const local = new Map<Value, Value>();
    const start = out.nodes.length;
    const members = new Set(gr.members);
    const value = (v: Value): Value => {
      const hit = local.get(v) ?? global.get(v);
      if (hit) return hit;
      const n = v.producer!;
      if (!members.has(n) && p.group(n)) throw new Error(`fuse: kernel order broken at ${n.op}`);
      const copy = keepNode(n, n.inputs.map(value), emitter);
      (members.has(n) ? global : local).set(v, copy);
      return copy;
    };
    for (const n of [...gr.members].sort((x, y) => p.order.get(x)! - p.order.get(y)!)) value(n.output);
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
  const first = new Map(live.map((gr) => [gr, Math.min(...gr.members.map((n) => p.order.get(n)!))]));
  const edges = p.edges();
  // Each kernel's predecessors not yet placed; the kernels with none left, of which the one first in the graph goes next.
  const waiting = new Map(live.map((gr) => [gr, 0]));
  for (const bs of edges.values()) for (const b of bs) waiting.set(b, waiting.get(b)! + 1);
  const ready = live.filter((gr) => waiting.get(gr) === 0);
  const order: Group[] = [];
  while (order.length < live.length) {
    // Only a graph that reads a state's old value after something computed from its new value gets here.
    if (ready.length === 0) throw new Error('fuse: kernels depend on each other in a cycle (a state read both before and after its in-place write?)');
    let next = 0;
    for (let i = 1; i < ready.length; i++) if (first.get(ready[i])! < first.get(ready[next])!) next = i;
    const gr = ready.splice(next, 1)[0];
    order.push(gr);
    for (const b of edges.get(gr) ?? []) {
      const left = waiting.get(b)! - 1;
      waiting.set(b, left);
      if (left === 0) ready.push(b);
    }
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
    'state-write': 'writes it into a state (update_slice)',
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

/** Ops in a chain (since a matmul or a value with no node) after which cutDeepChains starts a kernel. */
export const maxChainDepth = 512;

/**
 * Cuts chains of ops deeper than maxChainDepth (`for (…3000…) x = x.add(1)`) into kernels: a kernel computes an
 * expression per output, and the partition's searches, the lowering, the code generators and the generated code
 * itself walk expressions recursively, so an unbounded chain overflows the stack. Runs first, when only anchors
 * have kernels: each op counts the ops of its longest chain since a matmul (whose result is an accumulator of its
 * own), a value with no node or a cut; reductions count, as chains of them merge into one kernel (softmax). An op
 * that would pass the bound gets a kernel of its own and restarts the count. Its kernel recomputes at most the
 * bound before it, and the ops after it join it as epilogues up to the next cut, so no kernel holds a chain of more
 * than about twice the bound. Real models stay well below it: a Llama layer adds two ops to the residual stream's
 * chain, and the top-p sampler's bisection is about 300 deep.
 */
function cutDeepChains(p: Partition): void {
  const depth = new Map<Value, number>();
  const inlined = new Map<Value, number>();
  for (const n of p.g.nodes) {
    if (n.op === Op.Matmul || n.op === Op.UpdateSlice) continue;
    const d = 1 + n.inputs.reduce((m, v) => Math.max(m, depth.get(v) ?? 0), 0);
    // Ops of the expression as lowering inlines it per element, a value read twice counted twice (x = x + x·0.5,
    // thirty times over, is 2^30). Values of one element become a `let` each, read by name: they count once.
    const ops = numel(n.output) <= 1 ? 1 : 1 + n.inputs.reduce((t, v) => t + (inlined.get(v) ?? 0), 0);
    // A reduction has its kernel already: the op after it is cut instead.
    if ((d <= maxChainDepth && ops <= maxInlinedOps) || p.group(n)) {
      depth.set(n.output, d);
      inlined.set(n.output, Math.min(ops, maxInlinedOps + 1));
      continue;
    }
    p.add(p.newGroup('elementwise'), n);
    const why = d > maxChainDepth ? `is ${d} ops deep` : `inlines more than ${maxInlinedOps} ops (values read more than once)`;
    p.explain(`cut: ${n.op} ${formatType(n.output.type)}${n.loc ? ` (${n.loc})` : ''} ${why}: it starts a kernel ` +
      'of its own, as a deeper expression would overflow the code generators');
  }
}

/** Ops an element's expression may inline before cutDeepChains starts a kernel. */
export const maxInlinedOps = 1 << 16;

/** Elements of a value whose dimensions are all known (symbolic ones count as many). */
function numel(v: Value): number {
  return v.type.shape.reduce<number>((n, d) => n * (typeof d === 'number' ? d : 2), 1);
}

export function fuse(g: Graph, ctx: PassContext): Graph {
  const { graph, copyOf } = ctx.cacheWrites === 'after-attention' ? withReadCopies(g) : { graph: g, copyOf: new Map<Node, Node>() };
  const p = new Partition(graph, ctx, new Set(copyOf.values()));
  cutDeepChains(p);
  mergeReductionChains(p);
  mergeSiblingReductions(p);
  mergeAttention(p);
  mergePairedProjections(p);
  mergeNormPrologues(p);
  placeEpilogues(p);
  deferCacheWrites(p, copyOf);
  mergeStateWrites(p);
  mergeCacheWritesIntoAttention(p);
  mergeTokenWrites(p);
  const fused = emit(p);
  explainBoundaries(fused, p);
  return fused;
}
