// The browser page: loads a checkpoint folder over HTTP, traces and compiles the Llama generation graphs here, runs
// prefill and decode on navigator.gpu through the same WGSL kernels Node runs (the next token chosen on the GPU),
// streams the tokens and shows ms/token. Query: ?model=URL&ids=5,9,13&n=16&temperature=0&top_p=1&seed=0.

import { compileModule } from '../../compiler/compile-module.ts';
import { traceLlama } from '../llama.ts';
import { openBrowserWebGpu } from '../../runtime/devices/browser-webgpu.ts';
import { ParamStore } from '../../runtime/params.ts';
import { Session } from '../../runtime/session.ts';
import { fetchCheckpoint } from './checkpoint.ts';

interface PageResult {
  status: 'running' | 'done' | 'error';
  tokens: number[];
  prefillMs?: number;
  msPerToken?: number;
  error?: string;
}

// The little of the DOM the page uses (the project type-checks without the DOM library, whose WebGPU types differ).
declare const document: { getElementById(id: string): { textContent: string | null } | null };
declare const location: { search: string };

const result: PageResult = { status: 'running', tokens: [] };
(globalThis as { tsfuse?: PageResult }).tsfuse = result;

const $ = (id: string) => document.getElementById(id)!;
const say = (text: string) => { $('status').textContent = text; };

async function main(): Promise<void> {
  const q = new URLSearchParams(location.search);
  const model = q.get('model') ?? '/checkpoint';
  const ids = (q.get('ids') ?? '1,2,3').split(',').map(Number);
  const n = Number(q.get('n') ?? '16');
  const sampling = { temperature: Number(q.get('temperature') ?? '0'), topP: Number(q.get('top_p') ?? '1'), seed: Number(q.get('seed') ?? '0') };
  $('prompt').textContent = ids.join(' ');

  say(`fetching ${model} …`);
  const ckpt = await fetchCheckpoint(model);
  say(`${(ckpt.bytes / 2 ** 20).toFixed(1)} MiB of weights; compiling …`);
  const cacheLength = ids.length + n;
  const started = performance.now();
  const module = traceLlama(ckpt.cfg, { weightDType: ckpt.weightDType, cacheLength, sampling: sampling.temperature > 0 });
  const lowered = compileModule(module);
  const device = await openBrowserWebGpu();
  const params = new ParamStore((name) => {
    const t = ckpt.tensors.get(name);
    if (!t) throw new Error(`the checkpoint has no tensor '${name}'`);
    return t;
  });
  const program = await device.load(lowered, params, { maxSizes: { S: cacheLength } });
  const session = new Session(program, {});
  const kernels = lowered.graphs.map((g) => `@${g.graph.name} ${g.kernels.length}`).join(', ');
  say(`compiled in ${(performance.now() - started).toFixed(0)} ms (kernels: ${kernels}) on ${device.description}; generating …`);

  const t0 = performance.now();
  let first = NaN;
  const tokens = await session.generate(ids, n, sampling, (t) => {
    if (Number.isNaN(first)) first = performance.now();
    result.tokens.push(t);
    $('tokens').textContent += `${t} `;
  });
  const end = performance.now();
  result.prefillMs = first - t0;
  result.msPerToken = tokens.length > 1 ? (end - first) / (tokens.length - 1) : NaN;
  result.tokens = tokens;
  session.close();
  $('timing').textContent = `prefill ${result.prefillMs.toFixed(1)} ms, ${result.msPerToken.toFixed(2)} ms/token`;
  say('done');
  result.status = 'done';
}

main().catch((e: unknown) => {
  result.status = 'error';
  result.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  say(`error: ${result.error}`);
});
