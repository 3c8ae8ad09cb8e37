// Guards of compile(): what a call's inputs must match for a compiled graph to be reused (each input's dtype and
// static sizes, the bucket of each dynamic size, the backend), and the first one that failed when one did not.

import { DType } from '../ir/dtype.ts';
import { HostTensor } from '../ir/host-tensor.ts';

/** Axis → symbol name of the dimensions of one input that vary from call to call: `{ 0: 'S' }`. */
export type DynamicAxes = Readonly<Record<number, string>>;

/**
 * Sizes a dynamic dimension is padded up to: 'pow2' (1, 2, 4, 8, …: the default), an ascending list (a size above
 * the last is refused), or a function from the real size to its bucket.
 */
export type Buckets = 'pow2' | readonly number[] | ((n: number) => number);

/** One dimension of a call's input as the guards see it: a static size, or a dynamic one with its bucket. */
export type GuardDim = number | { readonly symbol: string; readonly bucket: number };

export interface InputSignature {
  readonly name: string;
  readonly dtype: DType;
  readonly dims: readonly GuardDim[];
}

export interface CallSignature {
  readonly backend: string;
  readonly inputs: readonly InputSignature[];
}

/** Why a cached graph could not be reused: the guard that failed, what the graph was compiled for, what came. */
export interface GuardFailure {
  readonly guard: 'backend' | 'arity' | 'dtype' | 'rank' | 'shape' | 'bucket';
  /** The input (by name) and axis the guard is about, where it is about one. */
  readonly input?: string;
  readonly axis?: number;
  readonly old: string | number;
  readonly new: string | number;
  /** The same in words: "input x: dtype f32 → f16". */
  readonly message: string;
}

export function bucketOf(n: number, buckets: Buckets, symbol: string): number {
  if (buckets === 'pow2') return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
  if (typeof buckets === 'function') {
    const b = buckets(n);
    if (!Number.isInteger(b) || b < n) throw new RangeError(`the bucket function gave ${b} for ${symbol} = ${n}; a bucket must be a whole number ≥ the size`);
    return b;
  }
  const b = buckets.find((x) => x >= n);
  if (b === undefined) throw new RangeError(`${symbol} = ${n} is larger than the largest bucket (${buckets.join(', ')})`);
  return b;
}

/** The signature of a call: every input's dtype and sizes, dynamic ones replaced by their buckets. */
export function signatureOf(backend: string, names: readonly string[], inputs: readonly HostTensor[],
  dynamic: Readonly<Record<string, DynamicAxes>>, buckets: Buckets): CallSignature {
  return {
    backend,
    inputs: inputs.map((t, i) => {
      const name = names[i];
      const dyn = dynamic[name] ?? {};
      for (const axis of Object.keys(dyn).map(Number)) {
        if (axis >= t.shape.length) throw new RangeError(`input ${name} (${t.dtype}[${t.shape.join(',')}]) has no axis ${axis} to make dynamic`);
      }
      const dims = t.shape.map((n, axis): GuardDim => {
        const symbol = dyn[axis];
        return symbol === undefined ? n : { symbol, bucket: bucketOf(n, buckets, symbol) };
      });
      return { name, dtype: t.dtype, dims };
    }),
  };
}

/** The cache key of a signature: equal keys share a compiled graph. */
export function signatureKey(s: CallSignature): string {
  const dim = (d: GuardDim) => (typeof d === 'number' ? String(d) : `${d.symbol}≤${d.bucket}`);
  return `${s.backend}(${s.inputs.map((i) => `${i.name}: ${i.dtype}[${i.dims.map(dim).join(',')}]`).join(', ')})`;
}

/** The first guard of `old` that `now` fails, checked in the order a reader expects: backend, then input by input. */
export function firstFailure(old: CallSignature, now: CallSignature): GuardFailure | undefined {
  if (old.backend !== now.backend) {
    return { guard: 'backend', old: old.backend, new: now.backend, message: `backend ${old.backend} → ${now.backend}` };
  }
  if (old.inputs.length !== now.inputs.length) {
    return { guard: 'arity', old: old.inputs.length, new: now.inputs.length, message: `${old.inputs.length} inputs → ${now.inputs.length}` };
  }
  for (let i = 0; i < old.inputs.length; i++) {
    const [a, b] = [old.inputs[i], now.inputs[i]];
    const input = a.name;
    if (a.dtype !== b.dtype) return { guard: 'dtype', input, old: a.dtype, new: b.dtype, message: `input ${input}: dtype ${a.dtype} → ${b.dtype}` };
    if (a.dims.length !== b.dims.length) {
      return { guard: 'rank', input, old: a.dims.length, new: b.dims.length, message: `input ${input}: rank ${a.dims.length} → ${b.dims.length}` };
    }
    for (let axis = 0; axis < a.dims.length; axis++) {
      const [x, y] = [a.dims[axis], b.dims[axis]];
      if (typeof x === 'number' && typeof y === 'number') {
        if (x !== y) return { guard: 'shape', input, axis, old: x, new: y, message: `input ${input}: axis ${axis} size ${x} → ${y}` };
      } else if (typeof x !== 'number' && typeof y !== 'number' && x.bucket !== y.bucket) {
        return { guard: 'bucket', input, axis, old: x.bucket, new: y.bucket, message: `input ${input}: ${x.symbol} bucket ${x.bucket} → ${y.bucket}` };
      }
    }
  }
  return undefined;
}
