// What a kernel's rows touch: for each buffer, the elements a range of rows loads and stores, bounded by interval
// arithmetic over each access's index with the row, the loop variables and the sizes in their ranges. A megakernel
// task may fetch the weights it reads before it waits (weights never depend on another task), and waits only for the
// tasks that write what it reads (backends/megakernel-schedule.ts); the scheduler asks whether the rows read each
// weight element once (then nothing in the cache is worth keeping them for). A buffer with an access that cannot be
// bounded (an index that reads memory, an operation the bounds do not follow) gets no ranges: nothing is better than
// a guess.

import { BinaryOp, FlashIR, KernelIR, KExpr, KStmt, ROW } from './kernel-ir.ts';

/** The integers lo..hi (inclusive). */
interface Interval {
  readonly lo: number;
  readonly hi: number;
}

/** Elements [from, to) of one of a kernel's buffers. */
export interface ElementRange {
  readonly buffer: number;
  readonly from: number;
  readonly to: number;
}

/**
 * What rows [from, to) of a kernel load and store, per buffer: the runs of elements (sorted, apart), or 'unbounded'
 * where some access's index cannot be bounded.
 */
export interface RowAccesses {
  readonly reads: ReadonlyMap<number, readonly ElementRange[] | 'unbounded'>;
  readonly writes: ReadonlyMap<number, readonly ElementRange[] | 'unbounded'>;
}

/**
 * How the step's cache writes of attention's decode form (FlashIR.updates) are shared among its heads, as its
 * printers share them: the first chunk of head r writes elements [r·perHead, r·perHead + perHead) of each update, and
 * every batch·perHead on.
 */
export interface UpdateShare {
  readonly perHead: number;
}

/** The form a kernel's rows run in: its row form, or attention's decode form over `chunks` chunks of keys a head. */
export type RowForm = { readonly form: 'rows' } | { readonly form: 'decode'; readonly chunks: number; readonly updates?: UpdateShare };

/**
 * The elements rows [from, to) of `k` load and store, in `form`. `sizes` binds every size the kernel reads. Attention's
 * decode form's rows are its heads' chunks of keys (head row / chunks); a chunk's keys are bounded by the whole cache.
 */
export function rowAccesses(k: KernelIR, sizes: Readonly<Record<string, number>>, from: number, to: number, form: RowForm = { form: 'rows' }): RowAccesses {
  const reads = new Map<number, Interval[] | 'unbounded'>();
  const writes = new Map<number, Interval[] | 'unbounded'>();
  if (to <= from) return { reads: new Map(), writes: new Map() };
  const env = new Map<string, Interval>(Object.entries(sizes).map(([name, v]) => [name, { lo: v, hi: v }]));
  const note = (into: Map<number, Interval[] | 'unbounded'>, buf: number, index: Interval | undefined) => {
    const known = into.get(buf);
    if (!index || !Number.isFinite(index.lo) || !Number.isFinite(index.hi)) into.set(buf, 'unbounded');
    else if (known !== 'unbounded') into.set(buf, [...(known ?? []), index]);
  };
  // Within a select's branch, the interval its condition gives the expression it compares with a constant.
  const narrowed = new WeakMap<Map<string, Interval>, readonly (readonly [KExpr, Interval])[]>();
  /** Records the loads inside `e` with `scope`'s variables bound; returns e's interval if it has one. */
  const visit = (e: KExpr, scope: Map<string, Interval>): Interval | undefined => {
    const r = bound(e, scope);
    const known = r && narrowed.get(scope)?.find(([x]) => sameExpr(x, e));
    return known ? { lo: Math.max(r.lo, known[1].lo), hi: Math.min(r.hi, known[1].hi) } : r;
  };
  /** The scopes of a select's branches: its condition's bound on what it compares added to each (null: never taken). */
  const branches = (cond: KExpr, scope: Map<string, Interval>): [Map<string, Interval> | null, Map<string, Interval> | null] => {
    const split = cond.k === 'binary' && cond.a.t === 'i32' ? splitBy(cond.op, cond.a, visit(cond.a, scope), cond.b, visit(cond.b, scope)) : undefined;
    if (!split) return [scope, scope];
    return split.ranges.map((range) => {
      if (range.lo > range.hi) return null;
      const inner = new Map(scope);
      narrowed.set(inner, [...(narrowed.get(scope) ?? []), [split.expr, range]]);
      return inner;
    }) as [Map<string, Interval> | null, Map<string, Interval> | null];
  };
  const bound = (e: KExpr, scope: Map<string, Interval>): Interval | undefined => {
    switch (e.k) {
      case 'const': return { lo: e.value, hi: e.value };
      case 'var': return scope.get(e.name);
      case 'load': {
        note(reads, e.buf, visit(e.index, scope));
        // A loaded value bounds nothing.
        return undefined;
      }
      case 'elem': visit(e.index, scope); return undefined;
      case 'unary': {
        const a = visit(e.a, scope);
        return a && e.op === 'neg' ? { lo: -a.hi, hi: -a.lo } : undefined;
      }
      case 'cast': {
        const a = visit(e.a, scope);
        return a && e.t === 'i32' && e.a.t !== 'f32' && !e.u32 ? a : undefined;
      }
      case 'binary': return binary(e.op, visit(e.a, scope), visit(e.b, scope), e.t);
      case 'select': {
        visit(e.cond, scope);
        // Only the side chosen is evaluated: a side its condition rules out reads nothing.
        const [whenTrue, whenFalse] = branches(e.cond, scope);
        const a = whenTrue && visit(e.a, whenTrue);
        const b = whenFalse && visit(e.b, whenFalse);
        if (!whenTrue) return b ?? undefined;
        if (!whenFalse) return a ?? undefined;
        return a && b ? { lo: Math.min(a.lo, b.lo), hi: Math.max(a.hi, b.hi) } : undefined;
      }
      case 'reduce': {
        const n = visit(e.n, scope);
        const inner = within(scope, e.v, n);
        const narrowing = narrowed.get(scope);
        if (narrowing) narrowed.set(inner, narrowing);
        visit(e.body, inner);
        return undefined;
      }
      default: return e satisfies never;
    }
  };
  const storeAt = (buf: number, index: KExpr, value: KExpr, scope: Map<string, Interval>) => {
    note(writes, buf, visit(index, scope));
    visit(value, scope);
  };
  /** A store loop: `s.v` over `v` (default [0, n)). */
  const store = (s: Extract<KStmt, { k: 'store' }>, scope: Map<string, Interval>, v?: Interval) =>
    storeAt(s.buf, s.index, s.value, v ? new Map(scope).set(s.v, v) : within(scope, s.v, visit(s.n, scope)));
  /** Attention's decode form's accesses: its rows are heads' chunks of keys (head row / chunks). */
  const decode = (f: FlashIR, chunks: number, updates: UpdateShare | undefined) => {
    const heads = { lo: Math.floor(from / chunks), hi: Math.floor((to - 1) / chunks) };
    const scope = new Map(env).set(f.b, heads);
    const queries = visit(f.queries, scope);
    if (queries && queries.hi >= 1) scope.set(f.i, { lo: 0, hi: queries.hi - 1 });
    scope.set(f.t, { lo: 0, hi: f.keys - 1 }).set(f.d, { lo: 0, hi: f.depth - 1 }).set(f.e, { lo: 0, hi: f.width - 1 });
    for (const e of [f.q, f.k, f.v, f.score, ...(f.limit ? [f.limit] : [])]) visit(e, scope);
    for (const r of [f.fresh?.k, f.fresh?.v]) for (const e of r ? [r.from, r.to, ...(r.value ? [r.value] : [])] : []) visit(e, scope);
    for (const st of f.stores) storeAt(st.buf, st.index, st.value, scope);
    // The cache writes run on the heads' first chunks alone (some row in [from, to) is one), each head its share.
    const firstChunk = Math.ceil(from / chunks) * chunks < to;
    for (const u of firstChunk ? f.updates ?? [] : []) {
      const n = visit(u.n, env);
      const p = updates?.perHead;
      // Head r's elements, where the share is known and every head writes at most one share; else any.
      const share = n && p !== undefined && n.hi <= f.batch * p ? { lo: heads.lo * p, hi: Math.min(n.hi, (heads.hi + 1) * p) - 1 } : n && { lo: 0, hi: n.hi - 1 };
      if (share && share.hi < share.lo) continue;
      store(u, env, share);
    }
  };
  if (form.form === 'decode') {
    decode(k.flash!, form.chunks, form.updates);
  } else {
    env.set(ROW, { lo: from, hi: to - 1 });
    for (const s of k.body) {
      switch (s.k) {
        case 'let': {
          const v = visit(s.value, env);
          if (v) env.set(s.name, v);
          else env.delete(s.name);
          break;
        }
        case 'coop': {
          visit(s.body, within(env, s.v, visit(s.n, env)));
          env.delete(s.name);
          break;
        }
        case 'array': visit(s.value, within(env, s.v, { lo: s.n, hi: s.n })); break;
        case 'store': store(s, env); break;
        default: s satisfies never;
      }
    }
  }
  // No access lies outside its buffer: a bound past its end (an index the arithmetic over-estimates, such as a
  // rotary table's index a select takes below 32 either way) stops at it.
  const end = (buffer: number) => { const e = k.buffers[buffer].elems; return e.k === 'const' ? e.value : Infinity; };
  const runs = (m: Map<number, Interval[] | 'unbounded'>) => new Map([...m].map(([buffer, r]) => [buffer, r === 'unbounded' ? r : merged(buffer, r, end(buffer))] as const));
  return { reads: runs(reads), writes: runs(writes) };
}

/** The runs the intervals cover within [0, end), sorted, overlapping or touching ones joined. */
function merged(buffer: number, intervals: readonly Interval[], end: number): ElementRange[] {
  const sorted = intervals.map((r) => ({ from: Math.max(0, r.lo), to: Math.min(r.hi + 1, end) })).filter((r) => r.to > r.from).sort((a, b) => a.from - b.from);
  const out: ElementRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.from <= last.to) out[out.length - 1] = { buffer, from: last.from, to: Math.max(last.to, r.to) };
    else out.push({ buffer, ...r });
  }
  return out;
}

/**
 * Per parameter buffer the kernel's row form loads, the elements rows [from, to) read (from the first to the last),
 * in buffer order; a buffer with a load whose index cannot be bounded is left out. `sizes` binds every size the
 * kernel reads.
 */
export function weightReads(k: KernelIR, sizes: Readonly<Record<string, number>>, from: number, to: number): ElementRange[] {
  return [...rowAccesses(k, sizes, from, to).reads].flatMap(([buffer, r]) => (k.buffers[buffer].binding.kind !== 'param' || r === 'unbounded' || !r.length ? [] : [{ buffer, from: r[0].from, to: r[r.length - 1].to }]))
    .sort((a, b) => a.buffer - b.buffer);
}

/**
 * Where `a op b` compares an expression with a constant (either side): that expression and its interval where the
 * comparison holds and where it does not (lo > hi: never).
 */
function splitBy(op: BinaryOp, a: KExpr, ia: Interval | undefined, b: KExpr, ib: Interval | undefined): { expr: KExpr; ranges: [Interval, Interval] } | undefined {
  const flipped: Partial<Record<BinaryOp, BinaryOp>> = { lt: 'gt', le: 'ge', gt: 'lt', ge: 'le' };
  if (!ia || !ib || !flipped[op]) return undefined;
  if (ia.lo === ia.hi && ib.lo !== ib.hi) return splitBy(flipped[op]!, b, ib, a, ia);
  if (ib.lo !== ib.hi) return undefined;
  const c = ib.lo;
  const below = (x: number): Interval => ({ lo: ia.lo, hi: Math.min(ia.hi, x) });
  const above = (x: number): Interval => ({ lo: Math.max(ia.lo, x), hi: ia.hi });
  switch (op) {
    case 'lt': return { expr: a, ranges: [below(c - 1), above(c)] };
    case 'le': return { expr: a, ranges: [below(c), above(c + 1)] };
    case 'gt': return { expr: a, ranges: [above(c + 1), below(c)] };
    case 'ge': return { expr: a, ranges: [above(c), below(c - 1)] };
    default: return undefined;
  }
}

/** Whether two integer expressions are the same arithmetic of the same variables (loads and selects never are). */
function sameExpr(a: KExpr, b: KExpr): boolean {
  if (a === b) return true;
  if (a.k !== b.k || a.t !== b.t) return false;
  switch (a.k) {
    case 'const': return a.value === (b as typeof a).value;
    case 'var': return a.name === (b as typeof a).name;
    case 'unary': return a.op === (b as typeof a).op && sameExpr(a.a, (b as typeof a).a);
    case 'binary': return a.op === (b as typeof a).op && sameExpr(a.a, (b as typeof a).a) && sameExpr(a.b, (b as typeof a).b);
    case 'cast': return a.u32 === (b as typeof a).u32 && a.round === (b as typeof a).round && sameExpr(a.a, (b as typeof a).a);
    default: return false;
  }
}

/** `scope` with loop variable `v` over [0, n) (unbounded where n is not known: its loads are then unbounded too). */
function within(scope: Map<string, Interval>, v: string, n: Interval | undefined): Map<string, Interval> {
  const inner = new Map(scope);
  if (n && n.hi >= 1) inner.set(v, { lo: 0, hi: n.hi - 1 });
  else inner.delete(v);
  return inner;
}

/** The interval of `a op b` over integers (truncating division, C's remainder), where the op keeps one. */
function binary(op: BinaryOp, a: Interval | undefined, b: Interval | undefined, t: string): Interval | undefined {
  if (!a || !b) return undefined;
  // A GPU clamps the index into [0, b) (an index read from memory bounds nothing: a is unknown then).
  if (op === 'index') return { lo: Math.max(0, Math.min(a.lo, b.hi - 1)), hi: Math.max(0, Math.min(a.hi, b.hi - 1)) };
  if (['eq', 'ne', 'lt', 'le', 'gt', 'ge', 'and', 'or'].includes(op)) return { lo: 0, hi: 1 };
  if (t !== 'i32') return undefined;
  switch (op) {
    case 'add': return { lo: a.lo + b.lo, hi: a.hi + b.hi };
    case 'sub': return { lo: a.lo - b.hi, hi: a.hi - b.lo };
    case 'mul': {
      const c = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi];
      return { lo: Math.min(...c), hi: Math.max(...c) };
    }
    case 'min': return { lo: Math.min(a.lo, b.lo), hi: Math.min(a.hi, b.hi) };
    case 'max': return { lo: Math.max(a.lo, b.lo), hi: Math.max(a.hi, b.hi) };
    case 'idiv': {
      // Monotonic in a for a positive divisor.
      if (b.lo !== b.hi || b.lo <= 0) return undefined;
      return { lo: Math.trunc(a.lo / b.lo), hi: Math.trunc(a.hi / b.lo) };
    }
    case 'imod': {
      if (b.lo !== b.hi || b.lo <= 0) return undefined;
      const m = b.lo;
      if (a.lo < 0) return { lo: -(m - 1), hi: m - 1 };
      // One period: the remainders run from lo's to hi's.
      if (Math.floor(a.lo / m) === Math.floor(a.hi / m)) return { lo: a.lo % m, hi: a.hi % m };
      return { lo: 0, hi: m - 1 };
    }
    default: return undefined;
  }
}
