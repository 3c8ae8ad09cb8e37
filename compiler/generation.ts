// The graphs a generation session runs, traced around a model's forward function: `prefill` (a prompt of S
// tokens) and `decode` (one token) each run the model, choose the next token in the graph (compiler/next-token.ts)
// and record it in the `history` state, so a device can run step after step without the host looking at a token.
//
// The contract a session relies on, by name:
//   inputs   tokens i32[S] (i32[1] for decode), pos i32[] — and, when sampling, temperature f32[], top_p f32[],
//            seed i32[];
//   outputs  logits f32[S, vocab] (every position), next i32[1] (the chosen token);
//   graph    prompt: as prefill, but its logits are the last position's alone, f32[1, vocab] (what generation
//            needs: the LM head, the widest projection, runs for one row instead of S);
//   state    history i32[cacheLength + 1]: the chosen token written at its position, pos + S (clamped to the last
//            entry, so no backend ever writes outside it); next_pos i32[1]: pos + S, where the next step runs;
//            besides whatever state the model keeps (its KV cache).
// After a step, the session copies next → tokens and next_pos → pos on the device, and runs decode again.

import { DType } from '../ir/dtype.ts';
import { Module } from '../ir/graph.ts';
import { greedyToken, sampledToken } from './next-token.ts';
import { arange, scalar, Tensor, where } from './tensor.ts';
import { InputSpec, state, trace } from './trace.ts';

/**
 * A model's forward pass: tokens i32[S] at positions pos.. → logits f32[S, vocab]; with `rows` 'last', the last
 * position's alone, f32[1, vocab] (the cache still gets every position's keys and values).
 */
export type ForwardFn = (tokens: Tensor, pos: Tensor, rows: 'all' | 'last') => Tensor;

export interface GenerationOptions {
  /** Positions the model's cache holds; the history holds one more (the last chosen token). */
  readonly cacheLength: number;
  /** Compile the sampler (temperature, top-p, seed inputs) instead of the argmax. */
  readonly sampling?: boolean;
}

export const HISTORY = 'history';
export const NEXT_POS = 'next_pos';

export function traceGeneration(forward: ForwardFn, opts: GenerationOptions): Module {
  const inputs = (seq: number | string): InputSpec[] => [
    { name: 'tokens', dtype: DType.I32, shape: [seq] },
    { name: 'pos', dtype: DType.I32, shape: [] },
    ...(opts.sampling ? [
      { name: 'temperature', dtype: DType.F32, shape: [] },
      { name: 'top_p', dtype: DType.F32, shape: [] },
      { name: 'seed', dtype: DType.I32, shape: [] },
    ] : []),
  ];
  const step = (rows: 'all' | 'last') => (tokens: Tensor, pos: Tensor, temperature?: Tensor, topP?: Tensor, seed?: Tensor) => {
    const logits = forward(tokens, pos, rows);
    const seq = tokens.dim(0);
    // The last position's logits, [1, vocab]: the row the next token comes from. A static length needs no index
    // computed (decode's step stays free of extra kernels); a symbolic one finds S - 1 as the largest position.
    const last = rows === 'last' ? logits : typeof seq === 'number'
      ? (seq === 1 ? logits : logits.slice(0, seq - 1, seq))
      : logits.gather(lastPosition(seq));
    const nextPos = typeof seq === 'number' ? pos.add(seq) : pos.add(arange(seq).max(0).add(1));
    // A sampling program still chooses greedily at temperature 0.
    const next = opts.sampling
      ? where(temperature!.le(0), greedyToken(last), sampledToken(last.reshape(-1), temperature!.maximum(1e-6), topP!, seed!, nextPos).reshape(1))
      : greedyToken(last);
    state(HISTORY, DType.I32, [opts.cacheLength + 1]).write(next, nextPos.minimum(opts.cacheLength), 0);
    // A state, not an output: its write joins the history's in one kernel (writes of one shape share a launch).
    state(NEXT_POS, DType.I32, [1]).write(nextPos.reshape(1), scalar(0, DType.I32), 0);
    return { logits, next };
  };
  return {
    graphs: [
      trace('prefill', inputs('S'), step('all')),
      trace('prompt', inputs('S'), step('last')),
      trace('decode', inputs(1), step('all')),
    ],
  };
}

/** [S - 1], i32[1], for a length S known only at run time: the largest position. */
export function lastPosition(seq: number | string): Tensor {
  return typeof seq === 'number' ? scalar(seq - 1, DType.I32).reshape(1) : arange(seq).max(0, { keepdims: true });
}
