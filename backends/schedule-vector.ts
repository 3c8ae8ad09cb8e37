// Finding what a sum can read 16 bytes at a time: loads whose index is `base + v`, with `base` the same for every
// thread of the row, read consecutive elements as the loop variable v advances (a decode matrix-vector product is
// bound by how fast it streams its weights). The scheduler (backends/schedule.ts) decides where to use them.

import { DType } from '../ir/dtype.ts';
import { KBuffer, KExpr, offsetAlong } from './kernel-ir.ts';

type Reduce = Extract<KExpr, { k: 'reduce' }>;
export type LoadExpr = Extract<KExpr, { k: 'load' }> | Extract<KExpr, { k: 'elem' }>;

/** A contiguous run a sum reads: from a buffer (`load`) or a row-local array (`elem`), starting at `base`. */
export interface Stream {
  readonly load: LoadExpr;
  /** The load's identity: structurally equal loads are one stream (replaceLoads finds them by it). */
  readonly key: string;
  readonly base: KExpr;
  readonly dtype: DType;
  /** A weight the kernel reads each element of once (the scheduler's readOnce): loaded asking L2 to evict it first. */
  readonly readOnce?: boolean;
}

export const streamKey = (load: LoadExpr): string => JSON.stringify(load);

const floatDTypes = new Set<DType>([DType.BF16, DType.F16, DType.F32]);

/**
 * The loads of `body` contiguous in `v`, read-only, of a float dtype, and evaluated on every iteration (not under a
 * select's branch or inside a nested loop), so reading several of them ahead is always in bounds. Row-local arrays
 * read along the loop (the normalised input row) count too: wide reads from workgroup memory avoid bank conflicts.
 * Used where alignment is checked at run time, with a scalar loop for the rest.
 */
export function contiguousStreams(body: KExpr, v: string, buffers: readonly KBuffer[]): Stream[] {
  const found = new Map<string, Stream>();
  const visit = (e: KExpr): void => {
    switch (e.k) {
      case 'unary': case 'cast': visit(e.a); break;
      case 'binary': visit(e.a); visit(e.b); break;
      // The condition always runs; the branches only sometimes.
      case 'select': visit(e.cond); break;
      case 'load': {
        const b = buffers[e.buf];
        const base = b.written || !floatDTypes.has(b.dtype) ? undefined : offsetAlong(e.index, v);
        const key = streamKey(e);
        if (base && !found.has(key)) found.set(key, { load: e, key, base, dtype: b.dtype });
        break;
      }
      case 'elem': {
        const base = offsetAlong(e.index, v);
        const key = streamKey(e);
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

/**
 * A dot product whose alignment the index proves: a sum of weight[base + v] · other over a constant range that is a
 * multiple of the elements per 16 bytes, base a multiple of it too. The other factor becomes a second stream when
 * it is contiguous as well (an f32 buffer, or a row-local array of a multiple of 4 elements, read as vec4s).
 * Returns [weight, other?] and the weight's elements per 16-byte load; undefined when the sum is not of that form,
 * or when a buffer it would read wide is not bound whole (WebGPU splits large buffers into several bindings).
 */
export function alignedDot(r: Reduce, buffers: readonly KBuffer[], arrayLength: (name: string) => number | undefined,
  wholeBinding: (buf: number) => boolean): { streams: Stream[]; elements: number } | undefined {
  const body = r.body;
  if (r.op !== 'sum' || body.k !== 'binary' || body.op !== 'mul' || r.n.k !== 'const') return undefined;
  for (const [load, other] of [[body.b, body.a], [body.a, body.b]] as const) {
    // Read-only buffers only (a WGSL shader binds a buffer it reads wide a second time, read-only, which a buffer
    // it writes must not be: a decode attention that writes the cache, in its row form).
    if (load.k !== 'load' || buffers[load.buf].written) continue;
    const dtype = buffers[load.buf].dtype;
    const elements = dtype === DType.F32 ? 4 : dtype === DType.BF16 || dtype === DType.F16 ? 8 : 0;
    if (!elements || r.n.value % elements !== 0) continue;
    const base = offsetAlong(load.index, r.v);
    if (!base || !multipleOf(base, elements)) continue;
    const streams: Stream[] = [{ load, key: streamKey(load), base, dtype }];
    const otherBase = other.k === 'load' || other.k === 'elem' ? offsetAlong(other.index, r.v) : undefined;
    const contiguous = otherBase !== undefined && multipleOf(otherBase, 4) &&
      ((other.k === 'load' && buffers[other.buf].dtype === DType.F32 && !buffers[other.buf].written) || (other.k === 'elem' && (arrayLength(other.array) ?? 1) % 4 === 0));
    if (contiguous) streams.push({ load: other as LoadExpr, key: streamKey(other as LoadExpr), base: otherBase, dtype: DType.F32 });
    const bound = streams.every((st) => st.load.k === 'elem' || wholeBinding(st.load.buf));
    return bound ? { streams, elements } : undefined;
  }
  return undefined;
}

/** Whether e is a multiple of m for any values of its variables. */
export function multipleOf(e: KExpr, m: number): boolean {
  if (e.k === 'const') return e.value % m === 0;
  if (e.k === 'binary' && e.op === 'mul') return multipleOf(e.a, m) || multipleOf(e.b, m);
  if (e.k === 'binary' && e.op === 'add') return multipleOf(e.a, m) && multipleOf(e.b, m);
  return false;
}
