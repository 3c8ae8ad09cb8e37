// Sampling is a graph op like any other (compiler/next-token.ts), so one seed gives one token sequence on every
// backend: `generate --temperature 0.9 --top-p 0.95 --seed 11` on the fixtures gives identical tokens on cpu,
// reference and webgpu (lavapipe; skipped without an adapter), and on cuda when TSFUSE_BACKENDS names it. (The
// command runs in this process, test/tsfuse-cli.ts.)

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { DeviceKind } from '../../runtime/device.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { tsfuse } from '../tsfuse-cli.ts';

const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const prompt = [5, 9, 13, 200, 17];
const newTokens = 24;
const sampling = { temperature: 0.9, topP: 0.95, seed: 11 };
const gpus: DeviceKind[] = process.env.TSFUSE_BACKENDS?.split(',').includes('cuda') ? ['webgpu', 'cuda'] : ['webgpu'];

const unavailable = (e: unknown) => /WebGpuUnavailableError|CudaUnavailableError/.test((e as Error).name) ||
  /no WebGPU adapter|libcuda/.test((e as Error).message);

/** The tokens drawn with each of `settings` in turn, from one session on `backend`; undefined without the device. */
async function sample(dir: string, backend: DeviceKind, settings = [sampling]): Promise<number[][] | undefined> {
  let session;
  try {
    session = await openLlamaSession(loadLlama(dir), { backend, cacheLength: prompt.length + newTokens, sampling: true });
  } catch (e) {
    if (backend !== 'cpu' && backend !== 'reference' && unavailable(e)) return undefined;
    throw e;
  }
  try {
    const drawn: number[][] = [];
    for (const s of settings) drawn.push(await session.generate(prompt, newTokens, s));
    return drawn;
  } finally {
    session.close();
  }
}

for (const fixture of ['tiny-llama', 'tiny-llama3-bf16']) {
  const dir = path.join(fixtures, fixture);
  const s = suite(`sampling on ${fixture}`);
  // On the cpu: seed 11, seed 12 and temperature 0, from one session.
  let cpu: Promise<number[][] | undefined> | undefined;
  const cpuDraws = () => (cpu ??= sample(dir, 'cpu', [sampling, { ...sampling, seed: 12 }, { ...sampling, temperature: 0 }]));
  const onCpu = async () => (await cpuDraws())![0];

  s('cpu and reference draw the same tokens; they are not the greedy ones; another seed draws others', async () => {
    const [tokens, seed12, cold] = (await cpuDraws())!;
    assert.is(tokens.length, newTokens);
    assert.equal((await sample(dir, 'reference'))![0], tokens);
    const session = await openLlamaSession(loadLlama(dir), { backend: 'cpu', cacheLength: prompt.length + newTokens });
    const greedy = await session.generate(prompt, newTokens);
    session.close();
    assert.not.equal(tokens, greedy, 'at temperature 0.9 the tokens differ from greedy decoding');
    assert.not.equal(seed12, tokens, 'seed 12');
    assert.equal(cold, greedy, 'temperature 0 is greedy');
  });

  for (const gpu of gpus) {
    s(`${gpu} draws the tokens cpu draws`, async () => {
      const tokens = (await sample(dir, gpu))?.[0];
      if (tokens) assert.equal(tokens, await onCpu());
    });
  }
  s.run();
}

const cli = suite('generate --temperature 0.9 --top-p 0.95 --seed 11');
cli('the same tokens from the command line on cpu and reference', async () => {
  const run = async (backend: string) => {
    const r = await tsfuse(['generate', '--model', path.join(fixtures, 'tiny-llama'),
      '--ids', prompt.join(','), '--max-new-tokens', '12', '--temperature', '0.9', '--top-p', '0.95', '--seed', '11',
      '--backend', backend, '--json']);
    assert.is(r.code, 0, r.stderr);
    return JSON.parse(r.stdout).tokens as number[];
  };
  const cpu = await run('cpu');
  assert.is(cpu.length, 12);
  assert.equal(await run('reference'), cpu);
});
cli.run();
