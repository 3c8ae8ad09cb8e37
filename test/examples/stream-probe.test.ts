// examples/cuda-probes/stream-probe.cu, the streaming floor the prompt's GEMM kernels are measured against
// (BENCHMARKS.md, tenth session): it still builds for sm_90a where nvcc is installed (it runs on a GPU only).

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const source = fileURLToPath(new URL('../../examples/cuda-probes/stream-probe.cu', import.meta.url));
const nvcc = process.env.TSFUSE_NVCC ?? 'nvcc';

test('the stream probe compiles for sm_90a', () => {
  const version = spawnSync(nvcc, ['--version'], { encoding: 'utf8' });
  if ((version.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return console.log(`  stream-probe: skipped (no ${nvcc})`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-probe-'));
  try {
    const out = path.join(dir, 'probe.cubin');
    const r = spawnSync(nvcc, ['-arch=sm_90a', '-O3', '-std=c++17', '-cubin', '-o', out, source], { encoding: 'utf8', timeout: 300_000 });
    assert.is(r.status, 0, r.stderr);
    assert.ok(fs.statSync(out).size > 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
