// One interface over every backend for the CLI, tests and benchmarks: logits of a prompt, and generation.
// Host backends (cpu, reference) run step by step; device backends keep the whole decode loop on the device.

import { HostTensor } from '../ir/host-tensor.ts';
import { checkTokens, LlamaSession, LoadedLlama } from './llama.ts';
import type { Sampling } from './webgpu/llama.ts';

export type { Sampling };
export const backends = ['cpu', 'reference', 'webgpu', 'cuda'] as const;
export type Backend = (typeof backends)[number];

export interface LlamaRunner {
  logits(ids: readonly number[]): Promise<HostTensor>;
  generate(prompt: readonly number[], maxNewTokens: number, sampling?: Sampling, onToken?: (t: number) => void): Promise<number[]>;
  close(): void;
}

export function isBackend(name: string): name is Backend {
  return (backends as readonly string[]).includes(name);
}

/** A runner whose KV cache holds `cacheLength` positions. */
export async function openRunner(model: LoadedLlama, cacheLength: number, backend: Backend): Promise<LlamaRunner> {
  if (backend === 'cuda') {
    const { CudaLlama } = await import('./cuda/llama.ts');
    const s = await CudaLlama.create(model, cacheLength);
    return { logits: (ids) => s.logits(ids), generate: (p, n, smp, on) => s.generate(p, n, smp, on), close: () => s.destroy() };
  }
  if (backend === 'webgpu') {
    const { WebGpuLlama } = await import('./webgpu/llama.ts');
    const s = await WebGpuLlama.create(model, cacheLength);
    return { logits: (ids) => s.logits(ids), generate: (p, n, smp, on) => s.generate(p, n, smp, on), close: () => s.destroy() };
  }
  return hostRunner(model, cacheLength, backend);
}

function hostRunner(model: LoadedLlama, cacheLength: number, backend: 'cpu' | 'reference'): LlamaRunner {
  const fresh = () => new LlamaSession(model, cacheLength, backend);
  return {
    logits: async (ids) => fresh().step(ids, 0).logits,
    generate: async (prompt, maxNewTokens, sampling = {}, onToken) => {
      checkTokens(model.cfg, prompt);
      const session = fresh();
      const out: number[] = [];
      let { logits, next } = session.step(prompt, 0);
      let row = prompt.length - 1;
      for (let i = 0; i < maxNewTokens; i++) {
        const pos = prompt.length + i;
        const token = (sampling.temperature ?? 0) > 0 ? sampleRow(logits, row, sampling, pos) : next.data[row];
        out.push(token);
        onToken?.(token);
        if (i + 1 === maxNewTokens) break;
        ({ logits, next } = session.step([token], pos));
        row = 0;
      }
      return out;
    },
    close: () => {},
  };
}

/** Temperature and top-p sampling of one logits row on the host (the device backends do it in a kernel). */
export function sampleRow(logits: HostTensor, row: number, s: Sampling, pos: number): number {
  const vocab = logits.shape[1];
  const l = logits.data.subarray(row * vocab, (row + 1) * vocab);
  let m = -Infinity;
  for (const x of l) m = Math.max(m, x);
  const p = Array.from(l, (x) => Math.exp((x - m) / s.temperature!));
  const order = p.map((_, i) => i).sort((a, b) => p[b] - p[a]);
  const total = p.reduce((a, b) => a + b, 0);
  const kept: number[] = [];
  let mass = 0;
  for (const i of order) {
    kept.push(i);
    mass += p[i];
    if (mass >= (s.topP ?? 1) * total) break;
  }
  let u = mulberry32(((s.seed ?? 0) ^ Math.imul(pos, 0x9e3779b1)) >>> 0) * mass;
  for (const i of kept) {
    u -= p[i];
    if (u < 0) return i;
  }
  return kept[kept.length - 1];
}

function mulberry32(a: number): number {
  let t = (a + 0x6d2b79f5) >>> 0;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
