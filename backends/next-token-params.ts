// The parameter block of the next-token kernel that ends each decode step on the device, shared by its WGSL
// (backends/wgsl/next-token.ts) and CUDA (backends/cuda/next-token.ts) twins: 8 words, in this order.

export interface NextTokenParams {
  /** Which logits row / argmax entry holds the last position (S-1 after a prefill, 0 after a decode step). */
  readonly row: number;
  readonly vocab: number;
  /** How far the position moves: the prefill's length, or 1. */
  readonly advance: number;
  /** 0 for greedy. */
  readonly temperature: number;
  readonly topP: number;
  readonly seed: number;
  /** Tokens the history buffer holds after its count word (0 where the kernel does not bound-check). */
  readonly capacity?: number;
}

export const NEXT_TOKEN_PARAMS_BYTES = 32;

export function nextTokenParamsBytes(p: NextTokenParams): Uint8Array {
  const buf = new ArrayBuffer(NEXT_TOKEN_PARAMS_BYTES);
  const i = new Int32Array(buf);
  const f = new Float32Array(buf);
  i[0] = p.row; i[1] = p.vocab; i[2] = p.advance; f[3] = p.temperature; f[4] = p.topP; i[5] = p.seed | 0;
  i[6] = p.capacity ?? 0;
  return new Uint8Array(buf);
}
