// A stand-in for runtime/cuda/nvrtc.ts's compileCuda, run by compileCudaAll's worker threads in tests: each call
// marks that it started (a file in the cache folder), waits until `expected` calls have started or two seconds have
// passed, and "compiles" to the module's name and how many calls it saw running, written to the cache as NVRTC's
// results are. A source containing BROKEN fails as NVRTC would; one containing SLOW n takes n ms first.

import fs from 'node:fs';
import path from 'node:path';
import { cacheKey, CompiledImage } from '../../../runtime/cuda/nvrtc.ts';
import { CudaCompileError } from '../../../runtime/cuda/errors.ts';

const sleep = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

// Loading, with TSFUSE_STUB_LOADS set to a file: takes 50 ms and appends when it began and ended (ms), as a module
// whose loading must not overlap another's (koffi's) would.
if (process.env.TSFUSE_STUB_LOADS) {
  const began = performance.timeOrigin + performance.now();
  sleep(50);
  fs.appendFileSync(process.env.TSFUSE_STUB_LOADS, `${began} ${performance.timeOrigin + performance.now()}\n`);
}

export function compileCuda(source: string, cc: number, name: string, cacheDir: string): CompiledImage {
  // With TSFUSE_STUB_ORDER set to a file: the order modules are compiled in, a name a line.
  if (process.env.TSFUSE_STUB_ORDER) fs.appendFileSync(process.env.TSFUSE_STUB_ORDER, `${name}\n`);
  if (source.includes('BROKEN')) throw new CudaCompileError(`NVRTC could not compile ${name} for sm_${cc}: NVRTC_ERROR_COMPILATION\n${name}(1): error: BROKEN`);
  // A source saying SLOW n takes n ms, then marks that it finished (a file in the cache folder).
  const slow = /SLOW (\d+)/.exec(source);
  if (slow) {
    sleep(Number(slow[1]));
    fs.mkdirSync(cacheDir, { recursive: true });
    fs.writeFileSync(path.join(cacheDir, `finished-${name}`), '');
  }
  const expected = Number(/expected (\d+)/.exec(source)?.[1] ?? 1);
  fs.mkdirSync(cacheDir, { recursive: true });
  fs.writeFileSync(path.join(cacheDir, `started-${name}`), '');
  const started = Date.now();
  let running = 0;
  while ((running = fs.readdirSync(cacheDir).filter((f) => f.startsWith('started-')).length) < expected && Date.now() - started < 2000) sleep(10);
  const image = new TextEncoder().encode(`${name} compiled for sm_${cc}, ${running} running`);
  const file = path.join(cacheDir, `${cacheKey(source, cc)}.cubin`);
  fs.writeFileSync(file, image);
  return { image, kind: 'cubin', cached: false, file };
}
