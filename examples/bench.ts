// The decode benchmark: `npm run bench -- --backend webgpu --config llama-3.2-1b`. Random bf16 weights of the
// config's shape, a 32-token prompt, 128 generated tokens; prints ms per token, tokens/s, kernels per token and
// the achieved weight bandwidth as a fraction of a copy kernel measured in the same run.
// `--backend cuda [--compare hf]` is examples/bench-cuda.ts: the same, from a Hugging Face checkpoint folder of the
// random weights, and with `--compare hf`, transformers + torch.compile on the same weights in the same run.

import { parseArgs } from 'node:util';
import { builtinConfig, LlamaConfig } from '../runtime/config.ts';
import { LoadedLlama } from '../runtime/llama.ts';
import type { KernelTime } from '../runtime/device.ts';
import { openLlamaSession } from '../compiler/open-session.ts';
import { DType } from '../ir/dtype.ts';
import { randomBf16Weights } from './random-checkpoint.ts';

export { randomBf16Weights };

/** The options, each with its default and what it does (`npm run bench -- --help` prints them). */
const options = {
  backend: { type: 'string', default: 'webgpu', help: 'webgpu, or cuda (examples/bench-cuda.ts)' },
  config: { type: 'string', default: 'llama-3.2-1b', help: 'the built-in config whose shape the random weights take' },
  prompt: { type: 'string', default: '32', help: 'prompt length in tokens' },
  'new-tokens': { type: 'string', default: '128', help: 'tokens generated per run' },
  runs: { type: 'string', default: '3', help: 'runs; the best one is reported' },
  profile: { type: 'boolean', default: false, help: 'also print the GPU time of each kernel of one decode step' },
  compare: { type: 'string', help: 'cuda only: hf runs Hugging Face transformers + torch.compile on the same weights' },
  'checkpoint-dir': { type: 'string', help: 'cuda only: where the random checkpoint is written (default: tsfuse-bench-CONFIG-seedN in the temp folder)' },
  seed: { type: 'string', default: '1', help: 'cuda only: seed of the random weights' },
  python: { type: 'string', default: 'python3', help: 'cuda only: the Python that runs examples/bench-hf.py' },
  'hf-timeout': { type: 'string', default: '420', help: 'cuda only: seconds the Hugging Face side may take' },
  help: { type: 'boolean', default: false, help: 'print this help' },
} as const;

function helpText(): string {
  const rows = Object.entries(options).map(([name, o]) => {
    const flag = `--${name}${o.type === 'string' ? ' VALUE' : ''}`;
    const def = 'default' in o && o.default !== false ? ` (default: ${o.default})` : '';
    return [flag, `${o.help}${def}`] as const;
  });
  const width = Math.max(...rows.map(([f]) => f.length)) + 2;
  return 'usage: npm run bench -- [options]\n\n' +
    'Decode speed of a Llama with random bf16 weights: ms per token, tokens/s, kernels per token, bandwidth.\n\n' +
    `options:\n${rows.map(([f, h]) => `  ${f.padEnd(width)}${h}`).join('\n')}\n`;
}

/** The options as parseArgs takes them (without their help). */
const config = Object.fromEntries(Object.entries(options).map(([k, { help: _, ...o }]) => [k, o])) as
  { [K in keyof typeof options]: Omit<(typeof options)[K], 'help'> };

/** The options given; a bad one is one line on stderr (exit code 2), --help the list of options. */
function parseOptions() {
  const fail = (message: string): never => {
    console.error(`bench: ${message} (see npm run bench -- --help)`);
    process.exit(2);
  };
  let values;
  try {
    values = parseArgs({ options: config, strict: true }).values;
  } catch (e) {
    return fail((e as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
  if (values.help) {
    process.stdout.write(helpText());
    process.exit(0);
  }
  for (const name of ['prompt', 'new-tokens', 'runs', 'seed', 'hf-timeout'] as const) {
    if (!/^\d+$/.test(values[name])) fail(`--${name} ${values[name]}: expected a whole number`);
  }
  return values;
}

const values = parseOptions();

interface Row { label: string; value: string }

async function benchWebGpu(cfg: LlamaConfig): Promise<Row[]> {
  const { WebGpuDevice } = await import('../runtime/devices/webgpu.ts');
  const { measureCopyBandwidth } = await import('../runtime/webgpu/copy-bench.ts');
  const promptLen = Number(values.prompt);
  const newTokens = Number(values['new-tokens']);
  const weights = randomBf16Weights(cfg);
  const model: LoadedLlama = { cfg, weights, weightDType: DType.BF16 };
  const t0 = performance.now();
  const session = await openLlamaSession(model, { backend: 'webgpu', cacheLength: promptLen + Math.max(newTokens, 8) });
  const setupMs = performance.now() - t0;
  const device = session.device as InstanceType<typeof WebGpuDevice>;
  const prompt = Array.from({ length: promptLen }, (_, i) => (i * 7919 + 13) % cfg.vocabSize);

  await session.generate(prompt, 8); // warm-up: pipelines, first submits
  const runs = Number(values.runs);
  let best = { total: Infinity, prefill: Infinity };
  for (let r = 0; r < runs; r++) {
    let t = performance.now();
    await session.generate(prompt, 1);
    const prefill = performance.now() - t;
    t = performance.now();
    await session.generate(prompt, newTokens);
    const total = performance.now() - t;
    if (total < best.total) best = { total, prefill };
  }
  const msPerToken = (best.total - best.prefill) / (newTokens - 1);
  // The same on the device's own clock: the decode step replayed back to back between two timestamps.
  let replayMs = Infinity;
  for (let r = 0; r < runs; r++) replayMs = Math.min(replayMs, (await session.timeDecode(newTokens - 1, { warmup: 1, startPos: promptLen })).msPerToken);
  const weightBytes = weights.tensors.reduce((s, t) => s + t.byteLength, 0);
  const copy = await measureCopyBandwidth(device.gpu);
  if (values.profile) printProfile(await session.profileDecode(promptLen));
  const achieved = weightBytes / (msPerToken / 1e3);
  session.close();
  return [
    { label: 'device', value: device.description },
    { label: 'setup (compile + upload)', value: `${(setupMs / 1e3).toFixed(1)} s` },
    { label: `prefill (${promptLen} tokens) + first token`, value: `${best.prefill.toFixed(2)} ms` },
    { label: `decode ms per token (wall clock, (T${newTokens} − T1) / ${newTokens - 1})`, value: msPerToken.toFixed(3) },
    { label: `decode ms per token (${newTokens - 1} steps back to back, device timestamps)`, value: replayMs.toFixed(3) },
    { label: 'decode tokens/s', value: (1e3 / msPerToken).toFixed(1) },
    { label: 'kernels per token', value: String(session.decodeKernels()) },
    { label: 'weight bytes per token', value: `${(weightBytes / 1e9).toFixed(3)} GB` },
    { label: 'achieved weight bandwidth', value: `${(achieved / 1e12).toFixed(2)} TB/s` },
    { label: 'copy kernel bandwidth (read+write)', value: `${(copy / 1e12).toFixed(2)} TB/s` },
    { label: 'fraction of copy bandwidth', value: `${((100 * achieved) / copy).toFixed(1)} %` },
  ];
}

/** GPU time per kernel kind of one decode step (timestamp queries, one pass per kernel). */
function printProfile(rows: readonly KernelTime[]): void {
  const byKind = new Map<string, { n: number; us: number }>();
  for (const r of rows) {
    const k = byKind.get(r.kind) ?? { n: 0, us: 0 };
    byKind.set(r.kind, { n: k.n + 1, us: k.us + r.us });
  }
  console.log('decode step, GPU time by kernel kind (one pass per kernel):');
  for (const [kind, k] of byKind) console.log(`  ${kind.padEnd(12)} ${String(k.n).padStart(4)} kernels ${k.us.toFixed(1).padStart(9)} us`);
  console.log(`  layer 1: ${rows.slice(6, 12).map((r) => `${r.kernel} ${r.kind} ${r.us.toFixed(1)}us`).join(', ')}`);
  console.log(`  last: ${rows.slice(-4).map((r) => `${r.kernel} ${r.kind} ${r.us.toFixed(1)}us`).join(', ')}`);
}

async function main(): Promise<void> {
  const cfg = builtinConfig(values.config!);
  if (values.compare !== undefined && values.backend !== 'cuda') throw Object.assign(new Error('--compare needs --backend cuda'), { name: 'BenchError' });
  let rows: Row[];
  switch (values.backend) {
    case 'webgpu': rows = await benchWebGpu(cfg); break;
    case 'cuda': process.exitCode = await benchCuda(cfg); return;
    default: throw Object.assign(new Error(`--backend ${values.backend}: the benchmark runs on webgpu or cuda`), { name: 'BenchError' });
  }
  console.log(`tsfuse bench — ${values.backend}, ${values.config}, prompt ${values.prompt}, ${values['new-tokens']} new tokens, ${new Date().toISOString().slice(0, 10)}`);
  const w = Math.max(...rows.map((r) => r.label.length));
  for (const r of rows) console.log(`  ${r.label.padEnd(w)}  ${r.value}`);
}

async function benchCuda(cfg: LlamaConfig): Promise<number> {
  const { benchCuda: run } = await import('./bench-cuda.ts');
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`);
  return run(cfg, {
    config: values.config!, promptLength: Number(values.prompt), newTokens: Number(values['new-tokens']),
    runs: Number(values.runs), compare: values.compare, checkpointDir: values['checkpoint-dir'], seed: Number(values.seed),
    python: values.python!, hfTimeoutS: Number(values['hf-timeout']), profile: values.profile!,
    command: ['npm run bench --', ...process.argv.slice(2).map(quote)].join(' '),
  });
}

/** Errors that say all there is to say in one line (no driver, a bad option, python missing): no stack. */
const oneLineErrors = new Set(['CudaUnavailableError', 'BenchError', 'ConfigError', 'WeightsError']);

try {
  await main();
} catch (e) {
  if (!(e instanceof Error && oneLineErrors.has(e.name))) throw e;
  console.error(`bench: ${e.message}`);
  process.exitCode = 2;
}
