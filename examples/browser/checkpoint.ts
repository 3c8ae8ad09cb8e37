// A Hugging Face checkpoint folder over HTTP: config.json and one model.safetensors, fetched whole and parsed here
// (8-byte header length, JSON header, tensor bytes), the weights kept as stored (bf16 stays 16-bit on the GPU).

import { DType } from '../../ir/dtype.ts';
import { decodeBf16, decodeF16 } from '../../ir/half.ts';
import { llamaConfigFromJson, LlamaConfig } from '../../runtime/config.ts';
import { StoredTensor } from '../../runtime/params.ts';

export interface HttpCheckpoint {
  readonly cfg: LlamaConfig;
  readonly weightDType: DType;
  readonly tensors: ReadonlyMap<string, StoredTensor>;
  readonly bytes: number;
}

const dtypes: Record<string, DType> = { F32: DType.F32, BF16: DType.BF16, F16: DType.F16, I32: DType.I32 };

export async function fetchCheckpoint(base: string): Promise<HttpCheckpoint> {
  const url = (f: string) => `${base.replace(/\/$/, '')}/${f}`;
  const res = await fetch(url('config.json'));
  if (!res.ok) throw new Error(`${url('config.json')}: HTTP ${res.status}`);
  const cfg = llamaConfigFromJson(await res.json(), url('config.json'));
  const wres = await fetch(url('model.safetensors'));
  if (!wres.ok) throw new Error(`${url('model.safetensors')}: HTTP ${wres.status} (sharded checkpoints are not read here)`);
  const buf = await wres.arrayBuffer();
  const headerLength = Number(new DataView(buf).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, headerLength))) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const start = 8 + headerLength;
  const tensors = new Map<string, StoredTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const dtype = dtypes[info.dtype];
    if (!dtype) throw new Error(`${name}: dtype ${info.dtype} is not read in the browser`);
    // Copied so that every typed view is aligned.
    const raw = new Uint8Array(buf.slice(start + info.data_offsets[0], start + info.data_offsets[1]));
    const data = dtype === DType.F32 ? new Float32Array(raw.buffer)
      : dtype === DType.I32 ? new Int32Array(raw.buffer)
      : (dtype === DType.BF16 ? decodeBf16 : decodeF16)(new Uint16Array(raw.buffer));
    tensors.set(name, { dtype, shape: info.shape, data, raw });
  }
  const weightDType = tensors.get('model.embed_tokens.weight')?.dtype ?? DType.F32;
  return { cfg, weightDType, tensors, bytes: buf.byteLength };
}
