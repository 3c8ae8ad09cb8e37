// Choosing the next token, as graph ops: the argmax of the logits, or a sample at a temperature from the smallest
// set of most likely tokens that holds top-p of the probability mass, drawn with the `random` op from a seed and
// the position. Written against the tensor API like any model code, so it is traced, fused and lowered like any
// other kernel, and the same seed picks the same tokens on every backend.

import { DType } from '../ir/dtype.ts';
import { arange, random, scalar, Tensor, where } from './tensor.ts';

/** Bisection steps for the top-p threshold (probabilities relative to the largest, in (0, 1]): 2⁻²⁴ apart. */
const THRESHOLD_STEPS = 24;

/** The argmax of logits over the last axis (f32[1, V] → i32[1]). */
export function greedyToken(logits: Tensor): Tensor {
  return logits.argmax(-1);
}

/**
 * A token drawn from logits f32[V] at temperature f32[] (> 0), keeping the most likely tokens up to top-p f32[]
 * of the mass, with the uniform number random(seed, counter): i32[].
 *
 * Sorting has no kernel here, so both searches bisect: the threshold on p = exp((l - max) / T) whose tokens still
 * hold top-p of the mass, then the first token (in vocabulary order) at which the kept mass passes u · total.
 */
export function sampledToken(logits: Tensor, temperature: Tensor, topP: Tensor, seed: Tensor, counter: Tensor): Tensor {
  const vocab = logits.dim(-1) as number;
  const p = logits.sub(logits.max(-1)).div(temperature).exp();
  const mass = p.sum(-1);
  let lo = scalar(0);
  let hi = scalar(1);
  for (let i = 0; i < THRESHOLD_STEPS; i++) {
    const mid = lo.add(hi).mul(0.5);
    const keeps = where(p.ge(mid), p, 0).sum(-1).ge(topP.mul(mass));
    lo = where(keeps, mid, lo);
    hi = where(keeps, hi, mid);
  }
  const kept = where(p.ge(lo), p, 0);
  const target = random(seed, counter).mul(kept.sum(-1));
  const ids = arange(vocab);
  let first = scalar(0, DType.I32);
  let last = scalar(vocab - 1, DType.I32);
  for (let span = vocab - 1; span > 0; span = Math.floor(span / 2)) {
    const mid = first.add(last).div(2);
    const passes = where(ids.le(mid), kept, 0).sum(-1).gt(target);
    last = where(passes, mid, last);
    first = where(passes, first, mid.add(1));
  }
  return first;
}
