// What a kernel's rows read of its weights: for each weight (a parameter buffer) a kernel loads, the elements its
// row form reads for a range of rows, bounded by interval arithmetic over the load's index with the row, the loop
// variables and the sizes in their ranges. A megakernel task may fetch them before it waits (weights never depend
// on another task); the scheduler asks whether the rows read each element once (then nothing in the cache is worth
// keeping them for). A buffer whose reads cannot be bounded (an index that reads memory, an operation the bounds do
// not follow) gets no range: nothing is better than a guess.

import { BinaryOp, KernelIR, KExpr, KStmt, ROW } from './kernel-ir.ts';

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
 * Per parameter buffer the kernel's row form loads, the elements rows [from, to) read, in buffer order; a buffer
 * with a load whose index cannot be bounded is left out. `sizes` binds every size the kernel reads.
 */
export function weightReads(k: KernelIR, sizes: Readonly<Record<string, number>>, from: number, to: number): ElementRange[] {
  if (to <= from) return [];
  const env = new Map<string, Interval>(Object.entries(sizes).map(([name, v]) => [name, { lo: v, hi: v }]));
  env.set(ROW, { lo: from, hi: to - 1 });
  const reads = new Map<number, Interval | 'unbounded'>();
  const isWeight = (buf: number) => k.buffers[buf]?.binding.kind === 'param';
  /** Records the loads inside `e` with `scope`'s variables bound; returns e's interval if it has one. */
  const visit = (e: KExpr, scope: Map<string, Interval>): Interval | undefined => {
    switch (e.k) {
      case 'const': return { lo: e.value, hi: e.value };
      case 'var': return scope.get(e.name);
      case 'load': {
        const index = visit(e.index, scope);
        if (isWeight(e.buf)) {
          const known = reads.get(e.buf);
          if (!index || !Number.isFinite(index.lo) || !Number.isFinite(index.hi)) reads.set(e.buf, 'unbounded');
          else if (known !== 'unbounded') reads.set(e.buf, known ? { lo: Math.min(known.lo, index.lo), hi: Math.max(known.hi, index.hi) } : index);
        }
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
        const [a, b] = [visit(e.a, scope), visit(e.b, scope)];
        return a && b ? { lo: Math.min(a.lo, b.lo), hi: Math.max(a.hi, b.hi) } : undefined;
      }
      case 'reduce': {
        const n = visit(e.n, scope);
        visit(e.body, within(scope, e.v, n));
        return undefined;
      }
      default: return e satisfies never;
    }
  };
  const stmt = (s: KStmt) => {
    switch (s.k) {
      case 'let': {
        const v = visit(s.value, env);
        if (v) env.set(s.name, v);
        else env.delete(s.name);
        return;
      }
      case 'coop': {
        visit(s.body, within(env, s.v, visit(s.n, env)));
        env.delete(s.name);
        return;
      }
      case 'array': visit(s.value, within(env, s.v, { lo: s.n, hi: s.n })); return;
      case 'store': {
        const scope = within(env, s.v, visit(s.n, env));
        visit(s.index, scope);
        visit(s.value, scope);
        return;
      }
      default: return s satisfies never;
    }
  };
  k.body.forEach(stmt);
  // No read lies outside its buffer: a bound past its end (an index the arithmetic over-estimates, such as a
  // rotary table's index a select takes below 32 either way) stops at it.
  const end = (buffer: number) => { const e = k.buffers[buffer].elems; return e.k === 'const' ? e.value : Infinity; };
  return [...reads].flatMap(([buffer, r]) => (r === 'unbounded' ? [] : [{ buffer, from: Math.max(0, r.lo), to: Math.min(r.hi + 1, end(buffer)) }]))
    .filter((r) => r.to > r.from)
    .sort((a, b) => a.buffer - b.buffer);
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
