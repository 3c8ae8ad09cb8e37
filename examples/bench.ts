// The decode benchmark: `npm run bench -- --backend webgpu --config llama-3.2-1b`. Random bf16 weights of the
// config's shape, a 32-token prompt, 128 generated tokens; prints ms per token, tokens/s, kernels per token and
// the achieved weight bandwidth as a fraction of a copy kernel measured in the same run; `--profile` each kernel's
// time and bandwidth, `--trace FILE` a Chrome / Perfetto trace of one decode step (runtime/trace.ts).
// `--backend cuda [--compare hf,torch]` is examples/bench-cuda.ts: the same, from a Hugging Face checkpoint folder of
// the random weights, and with `--compare`, transformers + torch.compile (hf) and a lean PyTorch Llama under
// torch.compile (torch) on the same weights in the same run.

import { parseArgs } from 'node:util';
import { builtinConfig, LlamaConfig } from '../runtime/config.ts';
import { LoadedLlama } from '../runtime/llama.ts';
import { profileTable } from '../runtime/trace.ts';
import { openLlamaSession } from '../compiler/open-session.ts';
import { DType } from '../ir/dtype.ts';
import { randomBf16Weights } from './random-checkpoint.ts';
import { BenchError, checkTraceFile, parseCompare, printPrefillProfile, traceAbout, writeTrace } from './bench-cuda.ts';

export { randomBf16Weights };

/** The options, each with its default and what it does (`npm run bench -- --help` prints them). */
const options = {
  backend: { type: 'string', default: 'webgpu', help: 'webgpu, or cuda (examples/bench-cuda.ts)' },
  config: { type: 'string', default: 'llama-3.2-1b', help: 'the built-in config whose shape the random weights take' },
  prompt: { type: 'string', default: '32', help: 'prompt length in tokens' },
  'new-tokens': { type: 'string', default: '128', help: 'tokens generated per run' },
  runs: { type: 'string', default: '3', help: 'runs; the best one is reported' },
  'cache-length': { type: 'string', help: 'KV-cache positions of tsfuse (default: prompt + new tokens; peers keep theirs at that)' },
  'kv-dtype': { type: 'string', help: 'what tsfuse\'s KV cache stores: f32, bf16 or f16 (default: bf16 for these bf16 weights)' },
  'subgroup-matrix': { type: 'string', default: 'on', help: 'webgpu only: on (GEMM tiles on f16 subgroup matrices where Dawn offers them) or off (f32 multiply-adds)' },
  megakernel: { type: 'boolean', default: false, help: 'cuda only: run the decode step as one persistent kernel (runtime/devices/cuda-megakernel.ts)' },
  'megakernel-prefetch': { type: 'string', help: 'with --megakernel: weight KiB each task prefetches into L2 before it waits, at most (default 0: none)' },
  'megakernel-blocks': { type: 'string', help: 'with --megakernel: blocks each multiprocessor runs (default 2)' },
  'megakernel-stream': { type: 'boolean', default: false, help: 'with --megakernel: stream each row\'s weights through pages of shared memory filled ahead by the copy engine (compute capability 9.0)' },
  'megakernel-without-waits': { type: 'string', help: 'with --megakernel: also time the step with these kernels\' tasks not waiting for their inputs (comma-separated numbers, as --profile\'s table has them; each with every kernel of the same code, such as every layer\'s): what their waits cost (timing only)' },
  profile: { type: 'boolean', default: false, help: 'also print the GPU time and bandwidth of each kernel of one decode step (on CUDA with its registers and local bytes a thread) and the prompt\'s kernels by kind, GEMMs with their TFLOP/s (--megakernel: each kernel\'s tasks, from the step\'s timeline)' },
  trace: { type: 'string', help: 'write a Chrome / Perfetto trace (JSON) of one decode step, a slice per kernel (--megakernel: per task, a track per block; --timeline: as the kernels ran inside the replayed step), to this file' },
  timeline: {
    type: 'boolean', default: false,
    help: 'cuda only: also print a decode step and the prompt as their kernels ran inside the replayed recordings, from each block\'s stamps (%globaltimer): when each kernel could go on after its predecessor, its tail, its share of the step. The kernels carry the stamps, so every time of this run includes them',
  },
  compare: {
    type: 'string',
    help: 'cuda only: peers on the same weights in the same run: hf (transformers + torch.compile), torch (a lean PyTorch Llama under torch.compile), or hf,torch',
  },
  'checkpoint-dir': { type: 'string', help: 'cuda only: where the random checkpoint is written (default: tsfuse-bench-CONFIG-seedN in the temp folder)' },
  seed: { type: 'string', default: '1', help: 'cuda only: seed of the random weights' },
  python: { type: 'string', default: 'python3', help: 'cuda only: the Python that runs the peers (examples/bench-hf.py, bench-torch.py)' },
  'hf-timeout': { type: 'string', default: '420', help: 'cuda only: seconds each peer may take' },
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
  const prefetch = values['megakernel-prefetch'];
  if (prefetch !== undefined && !/^\d+$/.test(prefetch)) fail(`--megakernel-prefetch ${prefetch}: expected a whole number of KiB`);
  if (prefetch !== undefined && !values.megakernel) fail('--megakernel-prefetch needs --megakernel');
  const blocks = values['megakernel-blocks'];
  if (blocks !== undefined && !/^[1-9]\d*$/.test(blocks)) fail(`--megakernel-blocks ${blocks}: expected a whole number of blocks, 1 or more`);
  if (blocks !== undefined && !values.megakernel) fail('--megakernel-blocks needs --megakernel');
  if (values['megakernel-stream'] && !values.megakernel) fail('--megakernel-stream needs --megakernel');
  const withoutWaits = values['megakernel-without-waits'];
  if (withoutWaits !== undefined && !/^\d+(,\d+)*$/.test(withoutWaits)) fail(`--megakernel-without-waits ${withoutWaits}: expected kernel numbers separated by commas (as --profile's table has them)`);
  if (withoutWaits !== undefined && !values.megakernel) fail('--megakernel-without-waits needs --megakernel');
  const cache = values['cache-length'];
  if (cache !== undefined && !/^[1-9]\d*$/.test(cache)) fail(`--cache-length ${cache}: expected a whole number of positions`);
  const kv = values['kv-dtype'];
  if (kv !== undefined && !['f32', 'bf16', 'f16'].includes(kv)) fail(`--kv-dtype ${kv}: expected f32, bf16 or f16`);
  try {
    return { ...values, peers: parseCompare(values.compare) };
  } catch (e) {
    return fail((e as Error).message);
  }
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
  const session = await openLlamaSession(model, { backend: 'webgpu', cacheLength: cacheLength(promptLen + Math.max(newTokens, 8)), kvDType: kvDType(), subgroupMatrix: values['subgroup-matrix'] === 'on' });
  const setupMs = performance.now() - t0;
  const device = session.device as InstanceType<typeof WebGpuDevice>;
  const prompt = Array.from({ length: promptLen }, (_, i) => (i * 7919 + 13) % cfg.vocabSize);

  await session.generate(prompt, 8); // warm-up: pipelines, first submits
  const runs = Number(values.runs);
  // Each the best of the runs: a prefill taken from the run whose whole generate was fastest could be that run's
  // outlier (a 91 ms prefill once left 0.126 ms a token, faster than the device's own clock).
  const best = { total: Infinity, prefill: Infinity, prefillDevice: Infinity };
  for (let r = 0; r < runs; r++) {
    let t = performance.now();
    await session.generate(prompt, 1);
    best.prefill = Math.min(best.prefill, performance.now() - t);
    best.prefillDevice = Math.min(best.prefillDevice, (await session.lastTimings())?.prefillMs ?? Infinity);
    t = performance.now();
    await session.generate(prompt, newTokens);
    best.total = Math.min(best.total, performance.now() - t);
  }
  const msPerToken = (best.total - best.prefill) / (newTokens - 1);
  // The same on the device's own clock: the decode step replayed back to back between two timestamps.
  let replayMs = Infinity;
  for (let r = 0; r < runs; r++) replayMs = Math.min(replayMs, (await session.timeDecode(newTokens - 1, { warmup: 1, startPos: promptLen })).msPerToken);
  const weightBytes = weights.tensors.reduce((s, t) => s + t.byteLength, 0);
  const copy = await measureCopyBandwidth(device.gpu);
  if (values.profile || values.trace !== undefined) {
    const kernels = await session.profileDecode(promptLen);
    const how = device.gpu.features.has('timestamp-query')
      ? "the decode step's kernels in a compute pass each, timed by the pass's timestamps"
      : "the decode step's kernels submitted one by one, timed on the host (the adapter has no timestamp queries)";
    if (values.profile) {
      console.log(`${how}; copy bandwidth ${(copy / 1e12).toFixed(2)} TB/s:`);
      for (const line of profileTable(kernels, copy)) console.log(`  ${line}`);
      printPrefillProfile(await session.profilePrefill(prompt));
    }
    if (values.trace !== undefined) {
      writeTrace(values.trace, { device: device.description, queue: 'webgpu queue', kernels, copyBandwidth: copy }, traceAbout(command(), how));
    }
  }
  const achieved = weightBytes / (msPerToken / 1e3);
  session.close();
  return [
    { label: 'device', value: device.description },
    { label: 'prefill GEMM tiles on', value: device.subgroupMatrix ? 'f16 subgroup matrices (16 × 16 × 16, f32 results)' : 'f32 multiply-adds' },
    { label: 'setup (compile + upload)', value: `${(setupMs / 1e3).toFixed(1)} s` },
    { label: `prefill (${promptLen} tokens) + first token`, value: `${best.prefill.toFixed(2)} ms` },
    // The wall clock of one prompt swings by 10 ms and more with the host's waits on Dawn; the device's own clock does not.
    { label: `prefill (${promptLen} tokens) + first token (device timestamps)`, value: `${best.prefillDevice.toFixed(2)} ms` },
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

async function main(): Promise<void> {
  const cfg = builtinConfig(values.config!);
  if (values.compare !== undefined && values.backend !== 'cuda') throw new BenchError('--compare needs --backend cuda');
  if (values.megakernel && values.backend !== 'cuda') throw new BenchError('--megakernel needs --backend cuda');
  if (values.timeline && values.backend !== 'cuda') throw new BenchError('--timeline needs --backend cuda (WebGPU kernels cannot read a clock: --profile times them one by one)');
  if (values.timeline && values.megakernel) throw new BenchError('--timeline stamps the kernels of a step launched kernel by kernel; --megakernel --profile prints the megakernel\'s own timeline');
  if (!['on', 'off'].includes(values['subgroup-matrix']!)) throw new BenchError(`--subgroup-matrix ${values['subgroup-matrix']}: expected on or off`);
  if (values.trace !== undefined) checkTraceFile(values.trace);
  let rows: Row[];
  switch (values.backend) {
    case 'webgpu': rows = await benchWebGpu(cfg); break;
    case 'cuda': process.exitCode = await benchCuda(cfg); return;
    default: throw new BenchError(`--backend ${values.backend}: the benchmark runs on webgpu or cuda`);
  }
  console.log(`tsfuse bench — ${values.backend}, ${values.config}, prompt ${values.prompt}, ${values['new-tokens']} new tokens, ${new Date().toISOString().slice(0, 10)}`);
  const w = Math.max(...rows.map((r) => r.label.length));
  for (const r of rows) console.log(`  ${r.label.padEnd(w)}  ${r.value}`);
}

async function benchCuda(cfg: LlamaConfig): Promise<number> {
  const { benchCuda: run } = await import('./bench-cuda.ts');
  return run(cfg, {
    config: values.config!, promptLength: Number(values.prompt), newTokens: Number(values['new-tokens']),
    runs: Number(values.runs), compare: values.peers, checkpointDir: values['checkpoint-dir'], seed: Number(values.seed),
    python: values.python!, hfTimeoutS: Number(values['hf-timeout']), profile: values.profile!, trace: values.trace,
    cacheLength: values['cache-length'] === undefined ? undefined : cacheLength(0), kvDType: kvDType(), command: command(),
    megakernel: values.megakernel!, timeline: values.timeline!,
    megakernelPrefetch: values['megakernel-prefetch'] === undefined ? undefined : 1024 * Number(values['megakernel-prefetch']),
    megakernelBlocks: values['megakernel-blocks'] === undefined ? undefined : Number(values['megakernel-blocks']),
    megakernelStream: values['megakernel-stream']!,
    megakernelWithoutWaits: values['megakernel-without-waits']?.split(',').map(Number),
  });
}

/** --cache-length (checked when parsed), else `fallback`. */
function cacheLength(fallback: number): number {
  const v = values['cache-length'];
  return v === undefined ? fallback : Number(v);
}

/** --kv-dtype (checked when parsed) as a dtype. */
function kvDType(): DType | undefined {
  return values['kv-dtype'] as DType | undefined;
}

/** The command line as typed, for reports. */
function command(): string {
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`);
  return ['npm run bench --', ...process.argv.slice(2).map(quote)].join(' ');
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
