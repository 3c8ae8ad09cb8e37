// Padding a dynamic axis of a host tensor up to its bucket, and slicing an output back to the real size.

import { numel } from '../ir/shape.ts';
import { allocHost, HostTensor } from '../ir/host-tensor.ts';

/** `t` with axis `axis` grown to `size`, the new positions holding `value`. */
export function padAxis(t: HostTensor, axis: number, size: number, value: number): HostTensor {
  const n = t.shape[axis];
  if (n === size) return t;
  const shape = t.shape.map((d, i) => (i === axis ? size : d));
  const out = allocHost(t.dtype, shape);
  out.data.fill(value);
  const inner = numel(t.shape.slice(axis + 1));
  const outer = numel(t.shape.slice(0, axis));
  for (let o = 0; o < outer; o++) out.data.set(t.data.subarray(o * n * inner, (o + 1) * n * inner), o * size * inner);
  return out;
}

/** The first `n` positions of axis `axis` of `t`. */
export function sliceAxis(t: HostTensor, axis: number, n: number): HostTensor {
  const size = t.shape[axis];
  if (n === size) return t;
  const shape = t.shape.map((d, i) => (i === axis ? n : d));
  const out = allocHost(t.dtype, shape);
  const inner = numel(t.shape.slice(axis + 1));
  const outer = numel(t.shape.slice(0, axis));
  for (let o = 0; o < outer; o++) out.data.set(t.data.subarray(o * size * inner, (o * size + n) * inner), o * n * inner);
  return out;
}
