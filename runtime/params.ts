// Weights for every device: each parameter read once from its source, and each derived parameter (concatenated
// projections, `param %w = concat ...`) computed once, on the host, whatever device the program runs on. A start
// reads them all at once (preload): from a checkpoint, every parameter's stored bytes straight into the buffer the
// device uploads, a concatenation's parts straight into their places in it, so nothing is copied after reading.

import { DType, dtypeBytes } from '../ir/dtype.ts';
import { Graph, Value } from '../ir/graph.ts';
import { HostTensor } from '../ir/host-tensor.ts';
import { Op } from '../ir/ops.ts';
import { evalRule } from '../ir/semantics.ts';
import { numel } from '../ir/shape.ts';
import { encodeBf16, encodeF16 } from '../ir/half.ts';
import type { ReadRequest, TensorSource } from './safetensors.ts';

/** A parameter as read from a checkpoint: decoded values, and the bytes as stored when there are any. */
export interface StoredTensor extends HostTensor {
  readonly raw?: Uint8Array;
}

export type ParamLoader = (name: string) => StoredTensor;

export class ParamStore {
  private readonly values = new Map<string, StoredTensor>();
  private readonly encoded = new Map<string, Uint8Array>();
  /** Milliseconds spent reading parameters from their source so far (start-up timings). */
  readMs = 0;

  constructor(private readonly load: ParamLoader) {}

  /**
   * Reads every parameter `graphs` declare from `source` at once, where it reads many tensors at once (a
   * checkpoint on disk): each into a buffer of its own, or a part of an axis-0 concatenation into its place in the
   * concatenation's buffer (shared memory, so that threads may fill them); later tensor() and bytes() calls
   * return them. Parameters stored in another form than the graph's dtype, and sources without readInto, are left
   * to be read one by one as asked for.
   */
  async preload(graphs: readonly Graph[], source: Pick<TensorSource, 'has' | 'info' | 'readInto'>): Promise<void> {
    if (!source.readInto) return;
    const started = performance.now();
    const requests: ReadRequest[] = [];
    const planned = new Set<string>();
    /** Whether parameter `v` is stored in the graph's dtype, so its stored bytes are its device bytes. */
    const asStored = (g: Graph, v: Value) => {
      if (g.derivations.has(v) || !source.has(v.name!)) return false;
      const info = source.info(v.name!);
      return info.dtype === v.type.dtype && info.byteLength === numel(v.type.shape as number[]) * dtypeBytes[v.type.dtype];
    };
    const request = (name: string, into: Uint8Array) => {
      planned.add(name);
      requests.push({ name, into });
      this.encoded.set(name, into);
    };
    for (const g of graphs) {
      for (const v of g.params) {
        const d = g.derivations.get(v);
        if (!d || d.op !== Op.Concat || d.attrs.axis !== 0 || planned.has(v.name!)) continue;
        if (!d.inputs.every((p) => asStored(g, p) && !planned.has(p.name!))) continue;
        const whole = shared(d.inputs.reduce((n, p) => n + source.info(p.name!).byteLength, 0));
        let at = 0;
        for (const p of d.inputs) {
          const n = source.info(p.name!).byteLength;
          request(p.name!, whole.subarray(at, at + n));
          at += n;
        }
        planned.add(v.name!);
        this.encoded.set(v.name!, whole);
      }
    }
    for (const g of graphs) {
      for (const v of g.params) if (!planned.has(v.name!) && asStored(g, v)) request(v.name!, shared(source.info(v.name!).byteLength));
    }
    await source.readInto(requests, (name, t) => this.values.set(name, t));
    this.readMs += performance.now() - started;
  }

  /** The value of parameter `name` of graph `g`, loaded or derived (once). */
  tensor(g: Graph, name: string): StoredTensor {
    let t = this.values.get(name);
    if (t) return t;
    const v = paramOf(g, name);
    const d = g.derivations.get(v);
    t = d
      ? evalRule(d.op)!(d.inputs.map((i) => this.tensor(g, i.name!)), d.attrs, { dtype: v.type.dtype, shape: v.type.shape as number[] })
      : this.read(name);
    this.values.set(name, t);
    return t;
  }

  private read(name: string): StoredTensor {
    const started = performance.now();
    try {
      return this.load(name);
    } finally {
      this.readMs += performance.now() - started;
    }
  }

  /**
   * The parameter's bytes in device memory (16-bit floats as 16 bits, bools as bytes): stored bytes as they are,
   * a concatenation along axis 0 as its parts' bytes back to back, anything else derived on decoded values and
   * encoded again (exact: the parts were decoded exactly).
   */
  bytes(g: Graph, name: string): Uint8Array {
    let b = this.encoded.get(name);
    if (b) return b;
    const v = paramOf(g, name);
    const d = g.derivations.get(v);
    if (d && d.op === Op.Concat && d.attrs.axis === 0) {
      const parts = d.inputs.map((i) => this.bytes(g, i.name!));
      b = new Uint8Array(parts.reduce((s, p) => s + p.byteLength, 0));
      let at = 0;
      for (const p of parts) {
        b.set(p, at);
        at += p.byteLength;
      }
    } else {
      const t = this.tensor(g, name);
      const n = numel(v.type.shape as number[]);
      b = t.raw && t.dtype === v.type.dtype && t.raw.byteLength === n * dtypeBytes[v.type.dtype] ? t.raw : encodeTensor(v.type.dtype, t.data);
    }
    this.encoded.set(name, b);
    return b;
  }
}

/** A buffer worker threads can read into (runtime/tensor-reader.ts reads large checkpoints side by side). */
const shared = (bytes: number) => new Uint8Array(new SharedArrayBuffer(bytes));

function paramOf(g: Graph, name: string): Value {
  const v = g.params.find((p) => p.name === name);
  if (!v) throw new Error(`graph @${g.name} has no parameter %${name}`);
  return v;
}

/** Values as the bytes of `d` in device memory (16-bit floats rounded to nearest even, bools as bytes). */
export function encodeTensor(d: DType, data: ArrayLike<number>): Uint8Array {
  const view = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  switch (d) {
    case DType.F32: return view(data instanceof Float32Array ? data : Float32Array.from(data));
    case DType.BF16: return view(encodeBf16(data));
    case DType.F16: return view(encodeF16(data));
    case DType.I32: return view(data instanceof Int32Array ? data : Int32Array.from(data));
    case DType.U32: return view(data instanceof Uint32Array ? data : Uint32Array.from(data));
    case DType.Bool: return Uint8Array.from(data, (x) => (x ? 1 : 0));
    default: return d satisfies never;
  }
}
