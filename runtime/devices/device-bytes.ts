// Host tensors to and from the bytes a GPU keeps (16-bit floats as 16 bits, bools as bytes on CUDA and as u32 words
// on WebGPU, whose shaders have no byte type), shared by the webgpu and cuda devices.

import { DType } from '../../ir/dtype.ts';
import { decodeBf16, decodeF16 } from '../../ir/half.ts';
import { allocHost, HostTensor } from '../../ir/host-tensor.ts';
import { encodeTensor } from '../params.ts';

export type BoolLayout = 'bytes' | 'words';

/** Bytes `n` elements of `d` take in device memory. */
export function deviceByteLength(d: DType, n: number, bools: BoolLayout): number {
  switch (d) {
    case DType.F16: case DType.BF16: return 2 * n;
    case DType.Bool: return bools === 'words' ? 4 * n : n;
    default: return 4 * n;
  }
}

/** Bytes `n` elements of `d` take in a CUDA device's memory (bools as bytes): what its kernels are counted to move. */
export const cudaByteLength = (d: DType, n: number): number => deviceByteLength(d, n, 'bytes');

/** Bools as bytes (as ParamStore and encodeTensor give them) widened to u32 words. */
export function boolWords(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(Uint32Array.from(bytes, (x) => (x ? 1 : 0)).buffer);
}

/** A host tensor's values as device bytes. */
export function toDevice(t: HostTensor, bools: BoolLayout): Uint8Array {
  const bytes = encodeTensor(t.dtype, t.data);
  return t.dtype === DType.Bool && bools === 'words' ? boolWords(bytes) : bytes;
}

/** The host tensor that device bytes hold (16-bit floats decoded to f32, bools back to 0/1 bytes). */
export function fromDevice(dtype: DType, shape: readonly number[], bytes: Uint8Array, bools: BoolLayout): HostTensor {
  const t = allocHost(dtype, shape);
  const n = t.data.length;
  // A copy, aligned for any view (the source may be a mapped range or pinned memory about to be reused).
  const own = bytes.slice(0, deviceByteLength(dtype, n, bools)).buffer;
  switch (dtype) {
    case DType.F32: t.data.set(new Float32Array(own, 0, n)); break;
    case DType.I32: t.data.set(new Int32Array(own, 0, n)); break;
    case DType.U32: t.data.set(new Uint32Array(own, 0, n)); break;
    case DType.F16: t.data.set(decodeF16(new Uint16Array(own, 0, n))); break;
    case DType.BF16: t.data.set(decodeBf16(new Uint16Array(own, 0, n))); break;
    case DType.Bool: {
      const raw = bools === 'words' ? new Uint32Array(own, 0, n) : new Uint8Array(own, 0, n);
      for (let i = 0; i < n; i++) t.data[i] = raw[i] ? 1 : 0;
      break;
    }
    default: return dtype satisfies never;
  }
  return t;
}
