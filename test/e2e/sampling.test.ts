// Sampling is a graph op like any other (compiler/next-token.ts), so one seed gives one token sequence on every
// backend: `generate --temperature 0.9 --top-p 0.95 --seed 11` on the fixtures gives identical tokens on cpu,
// reference and webgpu (lavapipe; skipped without an adapter), and on cuda when TSFUSE_BACKENDS names it.

import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { DeviceKind } from '../../runtime/device.ts';
import { loadLlama } from '../../runtime/llama.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const prompt = [5, 9, 13, 200, 17];
const newTokens = 24;
const sampling = { temperature: 0.9, topP: 0.95, seed: 11 };
const gpus: DeviceKind[] = process.env.TSFUSE_BACKENDS?.split(',').includes('cuda') ? ['webgpu', 'cuda'] : ['webgpu'];

const unavailable = (e: unknown) => /WebGpuUnavailableError|CudaUnavailableError/.test((e as Error).name) ||
  /no WebGPU adapter|libcuda/.test((e as Error).message);

async function sample(dir: string, backend: DeviceKind, s = sampling): Promise<number[] | undefined> {
  let session;
  try {
    session = await openLlamaSession(loadLlama(dir), { backend, cacheLength: prompt.length + newTokens, sampling: true });
  } catch (e) {
    if (backend !== 'cpu' && backend !== 'reference' && unavailable(e)) return undefined;
    throw e;
  }
  try {
    return await session.generate(prompt, newTokens, s);
  } finally {
    session.close();
  }
}

for (const fixture of ['tiny-llama', 'tiny-llama3-bf16']) {
  const dir = path.join(fixtures, fixture);
  const s = suite(`sampling on ${fixture}`);
  let cpu: Promise<number[] | undefined> | undefined;
  const onCpu = () => (cpu ??= sample(dir, 'cpu'));

  s('cpu and reference draw the same tokens; they are not the greedy ones; another seed draws others', async () => {
    const tokens = (await onCpu())!;
    assert.is(tokens.length, newTokens);
    assert.equal(await sample(dir, 'reference'), tokens);
    const session = await openLlamaSession(loadLlama(dir), { backend: 'cpu', cacheLength: prompt.length + newTokens });
    const greedy = await session.generate(prompt, newTokens);
    session.close();
    assert.not.equal(tokens, greedy, 'at temperature 0.9 the tokens differ from greedy decoding');
    assert.not.equal(await sample(dir, 'cpu', { ...sampling, seed: 12 }), tokens, 'seed 12');
    assert.equal(await sample(dir, 'cpu', { ...sampling, temperature: 0 }), greedy, 'temperature 0 is greedy');
  });

  for (const gpu of gpus) {
    s(`${gpu} draws the tokens cpu draws`, async () => {
      const tokens = await sample(dir, gpu);
      if (tokens) assert.equal(tokens, await onCpu());
    });
  }
  s.run();
}

const cli = suite('generate --temperature 0.9 --top-p 0.95 --seed 11');
cli('the same tokens from the command line on cpu and reference', () => {
  const run = (backend: string) => {
    const r = spawnSync(process.execPath, ['bin/tsfuse.mjs', 'generate', '--model', path.join(fixtures, 'tiny-llama'),
      '--ids', prompt.join(','), '--max-new-tokens', '12', '--temperature', '0.9', '--top-p', '0.95', '--seed', '11',
      '--backend', backend, '--json'], { cwd: root, encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
    return JSON.parse(r.stdout).tokens as number[];
  };
  const cpu = run('cpu');
  assert.is(cpu.length, 12);
  assert.equal(run('reference'), cpu);
});
cli.run();
