// Random bf16 weights of a Llama config's shape, for benchmarks: held in memory, or written as a Hugging Face
// checkpoint folder (config.json + model.safetensors) that tsfuse and transformers both load.

import fs from 'node:fs';
import path from 'node:path';
import { expectedLlamaTensors, LlamaConfig } from '../runtime/config.ts';
import { DType } from '../ir/dtype.ts';
import { decodeBf16, readSafetensors, Tensor, TensorInfo, TensorSource, TensorToWrite, writeSafetensors } from '../runtime/safetensors.ts';

/** Random bf16 weights of a config's shape, generated as bit patterns (norm weights 1.0), held in memory. */
export function randomBf16Weights(cfg: LlamaConfig, seed = 1): TensorSource {
  let s = seed >>> 0 || 1;
  const tensors = new Map<string, Tensor>();
  const infos: TensorInfo[] = [];
  for (const { name, shape } of expectedLlamaTensors(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const bits = new Uint16Array(n);
    if (name.endsWith('norm.weight')) {
      bits.fill(0x3f80);
    } else {
      // Sign, an exponent for magnitudes 2^-9..2^-6 (std about 0.01), 7 random mantissa bits: xorshift32.
      for (let i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
        bits[i] = ((s >>> 16) & 0x807f) | ((118 + ((s >>> 8) & 3)) << 7);
      }
    }
    const raw = new Uint8Array(bits.buffer);
    let decoded: Float32Array | undefined;
    tensors.set(name, {
      dtype: DType.BF16, shape: [...shape], raw,
      get data() { return (decoded ??= decodeBf16(bits)); },
    });
    infos.push({ name, file: '<random>', dtype: DType.BF16, storedAs: 'BF16', shape, byteOffset: 0, byteLength: raw.byteLength });
  }
  return {
    location: '<random bf16 weights>',
    tensors: infos,
    has: (n) => tensors.has(n),
    info: (n) => infos.find((t) => t.name === n)!,
    tensor: (n) => tensors.get(n)!,
  };
}

/**
 * Writes `config.json` and `model.safetensors` (every tensor as BF16, in `weights`' order, its stored bytes as they
 * are, one tensor in memory at a time) into `dir`. `metadata` goes into the header's `__metadata__` (with
 * `format: pt`, which transformers requires).
 */
export function writeBf16Checkpoint(dir: string, configJson: object, weights: TensorSource, metadata: Record<string, string>): void {
  fs.mkdirSync(dir, { recursive: true });
  const tensors: Record<string, TensorToWrite> = {};
  for (const t of weights.tensors) {
    if (t.storedAs !== 'BF16') throw new Error(`${weights.location}: tensor '${t.name}' is ${t.storedAs}, not BF16`);
    tensors[t.name] = { dtype: DType.BF16, shape: t.shape, bytes: () => weights.tensor(t.name).raw };
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt', ...metadata });
  fs.writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(configJson, null, 2)}\n`);
}

/** The `__metadata__` of `dir/model.safetensors` when it and config.json are there and readable; null otherwise. */
export function checkpointMetadata(dir: string): Readonly<Record<string, string>> | null {
  if (!fs.existsSync(path.join(dir, 'config.json'))) return null;
  try {
    return readSafetensors(path.join(dir, 'model.safetensors')).metadata;
  } catch {
    return null;
  }
}
