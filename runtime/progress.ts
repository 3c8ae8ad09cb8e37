// Progress of long work (reading weights, compiling) on a terminal: a bar on stderr when it is a TTY, nothing when
// output is piped or machine-read (--json), so logs and JSON stay clean.

import cliProgress from 'cli-progress';
import type { LoadedLlama } from './llama.ts';
import { onFirstRead } from './safetensors.ts';

export interface Progress {
  /** One more unit done; `item` names it. */
  tick(item?: string): void;
  /** Removes the bar (the work is over, or failed). */
  stop(): void;
}

const silent: Progress = { tick: () => {}, stop: () => {} };

/** Whether progress is shown: stderr is a terminal and the output is not JSON. */
export function showProgress(json: boolean, stream: NodeJS.WriteStream = process.stderr): boolean {
  return !json && stream.isTTY === true;
}

export function progress(label: string, total: number, enabled: boolean): Progress {
  if (!enabled || total <= 0) return silent;
  const bar = new cliProgress.SingleBar({
    format: `${label} [{bar}] {value}/{total} {item}`,
    stream: process.stderr,
    clearOnComplete: true,
    hideCursor: true,
    barsize: 30,
  }, cliProgress.Presets.shades_classic);
  bar.start(total, 0, { item: '' });
  let done = 0;
  let stopped = false;
  const stop = () => {
    if (!stopped) bar.stop();
    stopped = true;
  };
  return {
    tick: (item = '') => {
      bar.update(++done, { item });
      if (done >= total) stop();
    },
    stop,
  };
}

/** The model with a bar counting its weights as they are read; stop the bar when loading is over. */
export function withWeightProgress(model: LoadedLlama, enabled: boolean): { model: LoadedLlama; bar: Progress } {
  if (!enabled) return { model, bar: silent };
  const src = model.weights;
  const bar = progress('reading weights', src.tensors.length, true);
  return { model: { ...model, weights: onFirstRead(src, (name) => bar.tick(name)) }, bar };
}
