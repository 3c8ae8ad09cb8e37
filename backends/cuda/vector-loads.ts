// Finding the weight streams of a cooperative sum: loads whose index is `base + v`, with `base` the same for every
// thread of the row, read a contiguous run as the loop variable v advances. The CUDA renderer reads eight such
// elements at once with 16-byte loads (a decode matrix-vector product is bound by how fast it streams its weights).
// This only recognises a shape the lowering already produced; it decides nothing about the kernel.

import { DType } from '../../ir/dtype.ts';
import { KBuffer, KExpr, offsetAlong } from '../kernel-ir.ts';

/** Elements one vector step reads from each contiguous load. */
export const VECTOR_WIDTH = 8;

export type LoadExpr = Extract<KExpr, { k: 'load' }> | Extract<KExpr, { k: 'elem' }>;

export interface ContiguousLoad {
  readonly load: LoadExpr;
  /** The load's identity: structurally equal loads are the same stream. */
  readonly key: string;
  readonly base: KExpr;
  readonly dtype: DType;
}

const vectorDTypes = new Set<DType>([DType.BF16, DType.F16, DType.F32]);

/**
 * The loads of `body` that are contiguous in `v`, read-only, of a float dtype, and evaluated on every iteration
 * (not under a select's branch or inside a nested loop), so reading eight of them ahead is always in bounds.
 */
export function contiguousLoads(body: KExpr, v: string, buffers: readonly KBuffer[]): ContiguousLoad[] {
  const found = new Map<string, ContiguousLoad>();
  const visit = (e: KExpr): void => {
    switch (e.k) {
      case 'unary': case 'cast': visit(e.a); break;
      case 'binary': visit(e.a); visit(e.b); break;
      // The condition always runs; the branches only sometimes.
      case 'select': visit(e.cond); break;
      case 'load': {
        const b = buffers[e.buf];
        const base = b.written || !vectorDTypes.has(b.dtype) ? undefined : offsetAlong(e.index, v);
        if (base) {
          const key = JSON.stringify(e);
          if (!found.has(key)) found.set(key, { load: e, key, base, dtype: b.dtype });
        }
        break;
      }
      // A row-local array read along the loop (the normalised input row): 16-byte reads from shared memory,
      // where eight lanes reading eight floats each one at a time would conflict on the banks.
      case 'elem': {
        const base = offsetAlong(e.index, v);
        const key = JSON.stringify(e);
        if (base && !found.has(key)) found.set(key, { load: e, key, base, dtype: DType.F32 });
        break;
      }
      case 'const': case 'var': case 'reduce': break;
      default: e satisfies never;
    }
  };
  visit(body);
  return [...found.values()];
}

/** `e` with every load whose identity is in `by` replaced by its expression. */
export function replaceLoads(e: KExpr, by: ReadonlyMap<string, KExpr>): KExpr {
  const r = (x: KExpr) => replaceLoads(x, by);
  switch (e.k) {
    case 'const': case 'var': return e;
    case 'load': return by.get(JSON.stringify(e)) ?? { ...e, index: r(e.index) };
    case 'elem': return by.get(JSON.stringify(e)) ?? { ...e, index: r(e.index) };
    case 'unary': case 'cast': return { ...e, a: r(e.a) };
    case 'binary': return { ...e, a: r(e.a), b: r(e.b) };
    case 'select': return { ...e, cond: r(e.cond), a: r(e.a), b: r(e.b) };
    case 'reduce': return { ...e, n: r(e.n), body: r(e.body) };
    default: return e satisfies never;
  }
}
