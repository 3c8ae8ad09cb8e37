// Prefill time by prompt length on a host or GPU backend, from random bf16 weights of a built-in config:
//   node --import tsx examples/bench-prefill.ts [--backend cpu] [--config llama-tiny] [--lengths 550,1100] [--runs 2] [--kv-dtype f32|bf16|f16] [--warmup SECONDS]
// Prints one row per length: after a warm-up, the best wall-clock time of generate(prompt, 1) (the prompt and the first token) and its
// ratio to the first length's, and the best time on the device's clock, so that growth with the prompt (linear for the projections, quadratic for attention)
// shows at a glance.

import { parseArgs } from 'node:util';
import { openLlamaSession } from '../compiler/open-session.ts';
import { DType } from '../ir/dtype.ts';
import { builtinConfig } from '../runtime/config.ts';
import { DeviceKind, deviceKinds, isDeviceKind } from '../runtime/device.ts';
import { isUserError, userMessage } from '../compiler/cli-errors.ts';
import { LlamaConfig } from '../runtime/config.ts';
import { Session } from '../runtime/session.ts';
import { randomBf16Weights } from './random-checkpoint.ts';

const USAGE = 'usage: node --import tsx examples/bench-prefill.ts [--backend cpu|webgpu|cuda] [--config llama-tiny|llama-3.2-1b] [--lengths 550,1100] [--runs 2] [--kv-dtype f32|bf16|f16] [--warmup SECONDS (default: 3 on webgpu, else 0)]';
let values: { backend?: string; config?: string; lengths?: string; runs?: string; 'kv-dtype'?: string; warmup?: string; help?: boolean };
try {
  ({ values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'cpu' },
      config: { type: 'string', default: 'llama-tiny' },
      lengths: { type: 'string', default: '550,1100' },
      runs: { type: 'string', default: '2' },
      'kv-dtype': { type: 'string' },
      warmup: { type: 'string' },
      help: { type: 'boolean' },
    },
  }));
} catch (e) {
  console.error(`bench-prefill: ${(e as Error).message}\n${USAGE}`);
  process.exit(2);
}
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
function fail(message: string): never {
  console.error(`bench-prefill: ${message}\n${USAGE}`);
  process.exit(2);
}
const kvArg = values['kv-dtype'];
if (kvArg !== undefined && !['f32', 'bf16', 'f16'].includes(kvArg)) fail(`--kv-dtype ${kvArg}: expected f32, bf16 or f16`);
if (!isDeviceKind(values.backend!)) fail(`--backend ${values.backend}: expected ${deviceKinds.join(', ')}`);
if (!/^[1-9]\d*(,[1-9]\d*)*$/.test(values.lengths!)) fail(`--lengths ${values.lengths}: expected prompt lengths, whole numbers from 1, separated by commas`);
if (!/^[1-9]\d*$/.test(values.runs!)) fail(`--runs ${values.runs}: expected a whole number from 1`);
if (values.warmup !== undefined && !/^\d+(\.\d+)?$/.test(values.warmup)) fail(`--warmup ${values.warmup}: expected seconds, a number from 0`);
// A WebGPU process's first seconds run at a lower clock (the host leaves the GPU idle between submissions, and its
// clock rises only under sustained load): on the H200 a 32-token prompt took 9.65 ms first and 3.45 at the end of the
// same process, 9.61 against 2.47–2.97 with this warm-up (BENCHMARKS.md, twenty-fifth session). The longest prompt runs for this long first.
const warmupSeconds = Number(values.warmup ?? (values.backend === 'webgpu' ? 3 : 0));
let cfg: LlamaConfig;
try {
  cfg = builtinConfig(values.config!);
} catch (e) {
  fail(`--config: ${(e as Error).message}`);
}
const lengths = values.lengths!.split(',').map(Number);
let session: Session;
try {
  session = await openLlamaSession({ cfg, weights: randomBf16Weights(cfg), weightDType: DType.BF16 },
    { backend: values.backend as DeviceKind, cacheLength: Math.max(...lengths) + 1, kvDType: kvArg as DType | undefined });
} catch (e) {
  // Bad input (a length past the model's context, no GPU): one line, as the CLI says it.
  if (!(await isUserError(e))) throw e;
  fail(userMessage(e as Error));
}
const promptOf = (n: number) => Array.from({ length: n }, (_, i) => (i * 7919 + 13) % cfg.vocabSize);
for (const since = performance.now(); performance.now() - since < warmupSeconds * 1000;) await session.generate(promptOf(Math.max(...lengths)), 1);
const rows: [number, number, number][] = [];
for (const n of lengths) {
  const prompt = promptOf(n);
  // A warm-up first: a size's first run on WebGPU pays for more than the kernels (60 ms more, measured on the H200).
  await session.generate(prompt, 1);
  let [best, device] = [Infinity, Infinity];
  for (let r = 0; r < Number(values.runs); r++) {
    const t = performance.now();
    await session.generate(prompt, 1);
    best = Math.min(best, performance.now() - t);
    device = Math.min(device, (await session.lastTimings())?.prefillMs ?? Infinity);
  }
  rows.push([n, best, device]);
}
const kv = session.program.graph('decode').states.find((v) => v.name === 'cache.k.0')?.type.dtype;
session.close();
console.log(`prefill + first token — ${values.backend}, ${values.config}, random bf16 weights, ${kv} KV cache, best of ${values.runs}${warmupSeconds ? ` after ${warmupSeconds} s of the longest prompt` : ''}, ${new Date().toISOString().slice(0, 10)}`);
// The device's clock (its timestamps; CUDA's events) beside the wall clock, which the host's waits make noisier.
console.log('| prompt tokens | ms | × the first | device ms |');
console.log('| ---: | ---: | ---: | ---: |');
for (const [n, ms, device] of rows) console.log(`| ${n} | ${ms.toFixed(1)} | ${(ms / rows[0][1]).toFixed(2)} | ${device.toFixed(2)} |`);
