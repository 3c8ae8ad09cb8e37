// `tsfuse generate`: a prompt as token ids or as text (through the checkpoint's tokenizer.json), tokens streamed as
// they are produced (as ids, or as decoded text), and the timing at the end: prefill, ms per token, tokens/s.

import { DeviceKind } from '../runtime/device.ts';
import { LoadedLlama } from '../runtime/llama.ts';
import { Sampling } from '../runtime/session.ts';
import { openLlamaSession } from './open-session.ts';
import { showProgress, withWeightProgress } from '../runtime/progress.ts';
import { TextStream, TextTokenizer } from '../runtime/tokenizer.ts';

export interface GenerateRequest {
  readonly model: LoadedLlama;
  readonly backend: DeviceKind;
  readonly ids: readonly number[];
  /** Present when the prompt was text: generated tokens are decoded with it. */
  readonly tokenizer?: TextTokenizer;
  readonly maxNewTokens: number;
  readonly sampling: Sampling;
  readonly json: boolean;
  readonly write?: (text: string) => void;
}

export interface GenerateTiming {
  /** From the start to the first new token: the prompt's forward pass. */
  readonly prefillMs: number;
  /** Mean time of each later token (NaN when only one was generated). */
  readonly msPerToken: number;
  readonly tokensPerSecond: number;
}

export async function runGenerate(req: GenerateRequest): Promise<void> {
  const write = req.write ?? ((s: string) => process.stdout.write(s));
  const { model, bar } = withWeightProgress(req.model, showProgress(req.json));
  let session;
  try {
    session = await openLlamaSession(model, {
      backend: req.backend, cacheLength: req.ids.length + req.maxNewTokens, sampling: (req.sampling.temperature ?? 0) > 0,
    });
  } finally {
    bar.stop();
  }
  const stream = req.tokenizer ? new TextStream(req.tokenizer) : undefined;
  const started = performance.now();
  let first = NaN;
  const onToken = (t: number) => {
    if (Number.isNaN(first)) {
      first = performance.now();
      bar.stop(); // weights read lazily during the prefill (host backends)
    }
    const piece = stream ? stream.push(t) : `${t} `;
    if (!req.json) write(piece);
  };
  let tokens: number[];
  try {
    tokens = await session.generate(req.ids, req.maxNewTokens, req.sampling, onToken);
  } finally {
    bar.stop();
    session.close();
  }
  const ended = performance.now();
  const timing = timingOf(started, first, ended, tokens.length);
  if (req.json) {
    write(JSON.stringify({
      tokens, ...(stream ? { text: stream.text } : {}), promptTokens: req.ids.length,
      prefillMs: round(timing.prefillMs), msPerToken: round(timing.msPerToken), tokensPerSecond: round(timing.tokensPerSecond),
    }) + '\n');
    return;
  }
  const perToken = Number.isNaN(timing.msPerToken) ? 'one token'
    : `${timing.msPerToken.toFixed(2)} ms/token, ${timing.tokensPerSecond.toFixed(1)} tokens/s`;
  write(`\n\n${tokens.length} tokens in ${(ended - started).toFixed(0)} ms: prefill ${timing.prefillMs.toFixed(1)} ms ` +
    `(${req.ids.length} prompt tokens), ${perToken}\n`);
}

export function timingOf(started: number, first: number, ended: number, n: number): GenerateTiming {
  const prefillMs = first - started;
  const msPerToken = n > 1 ? (ended - first) / (n - 1) : NaN;
  return { prefillMs, msPerToken, tokensPerSecond: 1000 / msPerToken };
}

const round = (x: number) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : null);
