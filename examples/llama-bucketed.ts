// Llama through compile(): the prefill's sequence length is a dynamic axis padded to buckets (one compiled graph
// per bucket, not per prompt length), decode is the same function at one token; both share one KV cache.
//
// Padding is harmless here without a mask: the padded tokens come after the prompt, so causal attention hides them
// from every real position, and their logits are sliced off. Their keys and values land in cache positions past the
// prompt, which the decode step of each position overwrites before it attends (it writes its own key first).

import { compile, CompiledFunction, HostBackend } from '../compiler/compile.ts';
import { bucketOf, Buckets } from '../compiler/guards.ts';
import { Tensor } from '../compiler/tensor.ts';
import { llamaForward } from './llama.ts';
import { DType } from '../ir/dtype.ts';
import { HostTensor, hostTensor } from '../ir/host-tensor.ts';
import { checkTokens, LoadedLlama } from '../runtime/llama.ts';

/** One step's logits f32[S, vocab] and the greedy next token after each position, i32[S]. */
export interface StepResult {
  readonly logits: HostTensor;
  readonly next: HostTensor;
}

type Step = CompiledFunction<[Tensor, Tensor], Tensor[], HostBackend>;

export interface BucketedOptions {
  readonly backend?: HostBackend;
  readonly buckets?: Buckets;
}

export class BucketedLlama {
  readonly prefill: Step;
  readonly decode: Step;
  readonly states = new Map<string, HostTensor>();
  private readonly buckets: Buckets;

  constructor(readonly model: LoadedLlama, readonly cacheLength: number, opts: BucketedOptions = {}) {
    this.buckets = opts.buckets ?? 'pow2';
    const trace = { weightDType: model.weightDType, cacheLength };
    const forward = (tokens: Tensor, pos: Tensor) => {
      const logits = llamaForward(model.cfg, trace, tokens, pos);
      return [logits, logits.argmax(-1)];
    };
    const common = { inputs: ['tokens', 'pos'], params: (n: string) => model.weights.tensor(n), states: this.states, backend: opts.backend ?? 'cpu' } as const;
    this.prefill = compile(forward, { ...common, name: 'prefill', dynamic: { tokens: { 0: 'S' } }, buckets: this.buckets });
    this.decode = compile(forward, { ...common, name: 'decode' });
  }

  /** Runs `tokens` at positions pos..: the bucketed prefill for several tokens, decode for one. */
  step(tokens: readonly number[], pos: number): StepResult {
    checkTokens(this.model.cfg, tokens);
    const inputs = [hostTensor(DType.I32, [tokens.length], tokens), hostTensor(DType.I32, [], [pos])] as const;
    if (tokens.length === 1 && pos > 0) {
      const [logits, next] = this.decode(...inputs);
      return { logits, next };
    }
    // The padded positions are written into the cache too: they must fit.
    const bucket = bucketOf(tokens.length, this.buckets, 'S');
    if (pos + bucket > this.cacheLength) {
      throw new RangeError(`a prefill of ${tokens.length} tokens runs padded to ${bucket}; positions up to ${pos + bucket} do not fit a KV cache of ${this.cacheLength}`);
    }
    const [logits, next] = this.prefill(...inputs);
    return { logits, next };
  }
}
