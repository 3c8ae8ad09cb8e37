// Compiling CUDA C at run time with NVRTC (through koffi), for the device's own architecture, with the results
// cached on disk by a hash of source, options and architecture: a second run compiles nothing and does not even
// load NVRTC. Several modules (one per graph) compile at once in worker threads (compileCudaAll): NVRTC is
// synchronous, so a cold start otherwise waits for each in turn.

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import koffi from 'koffi';
import { loadFirst } from './driver.ts';
import { CudaCompileError, CudaUnavailableError } from './errors.ts';

export interface CompiledImage {
  /** A cubin, or NUL-terminated PTX when NVRTC does not know the device's architecture. */
  readonly image: Uint8Array;
  readonly kind: 'cubin' | 'ptx';
  /** Read from the disk cache, not compiled now. */
  readonly cached: boolean;
  readonly file: string;
}

const NVRTC_ERROR_INVALID_OPTION = 5;

/** Where compiled images go: TSFUSE_CACHE_DIR/cuda (beside the compile cache's compile/), else .cache/tsfuse/cuda. */
export const defaultCacheDir = (): string =>
  path.join(process.env.TSFUSE_CACHE_DIR || path.join(fileURLToPath(new URL('../../', import.meta.url)), '.cache', 'tsfuse'), 'cuda');

/** Where libnvrtc may be: TSFUSE_LIBNVRTC alone when set, else versioned names and the usual CUDA folders. */
export function nvrtcCandidates(): string[] {
  if (process.env.TSFUSE_LIBNVRTC) return [process.env.TSFUSE_LIBNVRTC];
  const names = ['libnvrtc.so', 'libnvrtc.so.13', 'libnvrtc.so.12', 'libnvrtc.so.11.2'];
  const dirs = [process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda']
    .filter((d): d is string => !!d)
    .flatMap((d) => [path.join(d, 'lib64'), path.join(d, 'targets/x86_64-linux/lib'), path.join(d, 'targets/sbsa-linux/lib')]);
  return [
    ...names,
    ...dirs.flatMap((d) => names.map((n) => path.join(d, n))).filter((f) => fs.existsSync(f)),
  ];
}

type Fn = (...args: unknown[]) => number;
/** Bindings by the candidate list they were loaded from (tests point TSFUSE_LIBNVRTC elsewhere). */
const apis = new Map<string, ReturnType<typeof bind>>();

function bind(lib: koffi.IKoffiLib) {
  const f = (proto: string) => lib.func(proto) as unknown as Fn;
  return {
    nvrtcVersion: f('int nvrtcVersion(_Out_ int *major, _Out_ int *minor)'),
    nvrtcGetErrorString: lib.func('const char *nvrtcGetErrorString(int result)') as unknown as (r: number) => string,
    nvrtcCreateProgram: f('int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, void *headers, void *includeNames)'),
    nvrtcCompileProgram: f('int nvrtcCompileProgram(void *prog, int numOptions, const char **options)'),
    nvrtcGetProgramLogSize: f('int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *size)'),
    nvrtcGetProgramLog: f('int nvrtcGetProgramLog(void *prog, void *log)'),
    nvrtcGetCUBINSize: f('int nvrtcGetCUBINSize(void *prog, _Out_ size_t *size)'),
    nvrtcGetCUBIN: f('int nvrtcGetCUBIN(void *prog, void *cubin)'),
    nvrtcGetPTXSize: f('int nvrtcGetPTXSize(void *prog, _Out_ size_t *size)'),
    nvrtcGetPTX: f('int nvrtcGetPTX(void *prog, void *ptx)'),
    nvrtcDestroyProgram: f('int nvrtcDestroyProgram(_Inout_ void **prog)'),
  };
}

function nvrtc(): ReturnType<typeof bind> {
  const candidates = nvrtcCandidates();
  const key = candidates.join('\n');
  let api = apis.get(key);
  if (!api) {
    const lib = loadFirst(candidates, 'NVRTC, the CUDA runtime compiler (set TSFUSE_LIBNVRTC to its path)');
    try {
      api = bind(lib);
    } catch (e) {
      throw new CudaUnavailableError(`NVRTC is not usable: ${(e as Error).message}`);
    }
    apis.set(key, api);
  }
  return api;
}

/** Options every compilation gets, besides the architecture. */
const baseOptions = ['--std=c++17'];

/**
 * The architecture compiled for: compute capability 9.0 as sm_90a, whose warpgroup matrix instructions (wgmma) the
 * GEMM tiles use (its cubin runs on 9.0 devices only, which is all it is loaded on); the others as they are.
 */
export const archOf = (cc: number): string => (cc === 90 ? '90a' : `${cc}`);

/**
 * The name a compiled image has in the cache: a hash of what decides its contents, the compiler included (where
 * NVRTC is looked for: one TSFUSE_LIBNVRTC names, such as the tests' CPU fake, whose images no driver but its own
 * loads, keeps entries of its own beside the real compiler's in a shared cache).
 */
export function cacheKey(source: string, cc: number): string {
  return crypto.createHash('sha256').update(`${source}\0${baseOptions.join(' ')}\0sm_${archOf(cc)}\0${nvrtcCandidates().join('\n')}`).digest('hex');
}

/** The image of `source` for `cc` from the disk cache, or undefined when it is not there. */
export function cachedImage(source: string, cc: number, cacheDir = defaultCacheDir()): CompiledImage | undefined {
  const key = cacheKey(source, cc);
  for (const kind of ['cubin', 'ptx'] as const) {
    const file = path.join(cacheDir, `${key}.${kind}`);
    if (fs.existsSync(file)) return { image: new Uint8Array(fs.readFileSync(file)), kind, cached: true, file };
  }
  return undefined;
}

/** The cubin (or PTX) of `source` for compute capability `cc` (e.g. 90), from the cache when it is there. */
export function compileCuda(source: string, cc: number, name = 'tsfuse.cu', cacheDir = defaultCacheDir()): CompiledImage {
  const cached = cachedImage(source, cc, cacheDir);
  if (cached) return cached;
  const key = cacheKey(source, cc);
  const arch = archOf(cc);
  let result = compileWith(source, name, `--gpu-architecture=sm_${arch}`, 'cubin');
  // An NVRTC older than the device knows no sm_XY for it: PTX for the virtual architecture, which the driver JITs.
  if (result.code === NVRTC_ERROR_INVALID_OPTION) result = compileWith(source, name, `--gpu-architecture=compute_${arch}`, 'ptx');
  if (!result.image) {
    throw new CudaCompileError(`NVRTC could not compile ${name} for sm_${arch}: ${nvrtc().nvrtcGetErrorString(result.code)}\n${result.log}`);
  }
  const file = path.join(cacheDir, `${key}.${result.kind}`);
  fs.mkdirSync(cacheDir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, result.image);
  fs.renameSync(tmp, file);
  return { image: result.image, kind: result.kind, cached: false, file };
}

function compileWith(source: string, name: string, arch: string, kind: 'cubin' | 'ptx') {
  const n = nvrtc();
  const prog = [null];
  const check = (call: string, r: number) => {
    if (r !== 0) throw new CudaCompileError(`${call} failed: ${n.nvrtcGetErrorString(r)}`);
  };
  check('nvrtcCreateProgram', n.nvrtcCreateProgram(prog, source, name, 0, null, null));
  try {
    const options = [arch, ...baseOptions];
    const code = n.nvrtcCompileProgram(prog[0], options.length, options);
    const logSize = [0];
    check('nvrtcGetProgramLogSize', n.nvrtcGetProgramLogSize(prog[0], logSize));
    const logBytes = new Uint8Array(Math.max(logSize[0], 1));
    check('nvrtcGetProgramLog', n.nvrtcGetProgramLog(prog[0], logBytes));
    const log = new TextDecoder().decode(logBytes.subarray(0, Math.max(0, logBytes.indexOf(0)))).trim();
    if (code !== 0) return { code, log, kind, image: undefined };
    const size = [0];
    const image = (getSize: Fn, get: Fn, call: string) => {
      check(`${call}Size`, getSize(prog[0], size));
      const bytes = new Uint8Array(size[0]);
      check(call, get(prog[0], bytes));
      return bytes;
    };
    return {
      code, log, kind,
      image: kind === 'cubin' ? image(n.nvrtcGetCUBINSize, n.nvrtcGetCUBIN, 'nvrtcGetCUBIN') : image(n.nvrtcGetPTXSize, n.nvrtcGetPTX, 'nvrtcGetPTX'),
    };
  } finally {
    n.nvrtcDestroyProgram(prog);
  }
}

// ---- several modules at once ----

/** One module to compile: its CUDA C and a file name for messages. */
export interface CudaSource {
  readonly source: string;
  readonly name: string;
}

export interface CompileAllOptions {
  /** Worker threads at most (default: one per module not in the cache, at most the CPUs). */
  readonly workers?: number;
  /**
   * The module whose `compileCuda(source, cc, name, cacheDir)` the workers run: this one by default; tests give a
   * stand-in to check the plumbing without NVRTC.
   */
  readonly compiler?: string | URL;
}

/**
 * The images of several modules for compute capability `cc`, in order: those in the disk cache read from it, the
 * rest compiled at once, each in a worker thread (written to the cache as each is done), so a cold start waits for
 * the largest module rather than for all of them in turn. The first failure rejects with its error (a
 * CudaCompileError names the module and holds NVRTC's log), once the modules being compiled then are done.
 */
export async function compileCudaAll(sources: readonly CudaSource[], cc: number, cacheDir = defaultCacheDir(),
  opts: CompileAllOptions = {}): Promise<CompiledImage[]> {
  const images = sources.map((s) => cachedImage(s.source, cc, cacheDir));
  // The longest sources first: the workers that start last (one after another, below) get the shortest.
  const todo = images.flatMap((image, i) => (image ? [] : [i])).sort((a, b) => sources[b].source.length - sources[a].source.length);
  if (todo.length === 0) return images as CompiledImage[];
  const compiler = String(opts.compiler ?? import.meta.url);
  const workers = Math.max(1, Math.min(todo.length, opts.workers ?? os.availableParallelism()));
  const pool: Worker[] = [];
  // Workers start one after another, each once the last has loaded the compiler module: koffi loading in several
  // threads at once now and then aborted the process (a native napi_throw; koffi issue 190, seen once in our CI).
  const workerData = { compiler, tsx: tsxLoader(compiler) };
  // After the first failure no worker starts or takes another module, and the workers are stopped only once each
  // has answered: one stopped inside NVRTC (a native call through koffi) aborted the whole process on the H200
  // (napi_throw) where a generated kernel did not compile.
  const failures: unknown[] = [];
  let started: Promise<unknown> = Promise.resolve();
  const start = (): Promise<Worker | undefined> => {
    const turn = started.then(() => {
      if (failures.length) return undefined;
      const worker = new Worker(nvrtcWorker, { eval: true, workerData });
      pool.push(worker);
      return loaded(worker).then(() => worker);
    });
    started = turn.catch(() => undefined);
    return turn;
  };
  try {
    await Promise.all(Array.from({ length: workers }, async () => {
      try {
        const worker = await start();
        for (let i = todo.shift(); worker && i !== undefined && !failures.length; i = todo.shift()) {
          images[i] = await ask(worker, { source: sources[i].source, name: sources[i].name, cc, cacheDir });
        }
      } catch (e) {
        failures.push(e);
      }
    }));
  } finally {
    await Promise.all(pool.map((w) => w.terminate()));
  }
  if (failures.length) throw failures[0];
  return images as CompiledImage[];
}

/** Resolves once a worker has loaded its compiler module; rejects with the error that stopped it. */
const loaded = (worker: Worker): Promise<void> =>
  reply<{ ready?: boolean }>(worker, 'while loading its compiler').then(() => undefined);

/** Sends one module to a worker; resolves with its image, rejects with its error (of the class it had). */
function ask(worker: Worker, job: { source: string; name: string; cc: number; cacheDir: string }): Promise<CompiledImage> {
  const answer = reply<{ image?: CompiledImage }>(worker, `compiling ${job.name}`);
  worker.postMessage(job);
  return answer.then((m) => m.image!);
}

/**
 * The worker's next message; rejects with the error it sends (rebuilt in its class), or with the worker's own error
 * or exit (`doing` says what it was at).
 */
function reply<T>(worker: Worker, doing: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const done = () => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    const onMessage = (m: T & { error?: { name: string; message: string } }) => {
      done();
      if (m.error) reject(rebuild(m.error));
      else resolve(m);
    };
    const onError = (e: Error) => {
      done();
      reject(e);
    };
    const onExit = (code: number) => {
      done();
      reject(new Error(`the NVRTC worker stopped ${doing} (exit code ${code})`));
    };
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}

function rebuild(e: { name: string; message: string }): Error {
  const made = e.name === 'CudaCompileError' ? new CudaCompileError(e.message)
    : e.name === 'CudaUnavailableError' ? new CudaUnavailableError(e.message) : new Error(e.message);
  if (made.name !== e.name) made.name = e.name;
  return made;
}

/**
 * tsx's loader, for a worker that imports a TypeScript module (this one in a checkout; a worker thread does not
 * inherit the main thread's loaders); undefined for JavaScript (dist/).
 */
function tsxLoader(module: string): string | undefined {
  if (!/\.m?ts$/.test(module)) return undefined;
  try {
    return import.meta.resolve('tsx/esm/api');
  } catch {
    return undefined;
  }
}

/**
 * A worker: imports the compiler module (tsx registered first where it is TypeScript) and says when it has (or the
 * error), then compiles each module it is sent and posts back the image (its bytes moved, not copied) or the error.
 */
const nvrtcWorker = `
const { parentPort, workerData } = require('node:worker_threads');
const loaded = (async () => {
  if (workerData.tsx) (await import(workerData.tsx)).register();
  return import(workerData.compiler);
})();
loaded.then(
  () => parentPort.postMessage({ ready: true }),
  (e) => parentPort.postMessage({ error: { name: (e && e.name) || 'Error', message: String((e && e.message) || e) } }),
);
parentPort.on('message', async (job) => {
  try {
    const { compileCuda } = await loaded;
    const image = compileCuda(job.source, job.cc, job.name, job.cacheDir);
    const bytes = image.image.byteOffset === 0 && image.image.byteLength === image.image.buffer.byteLength ? image.image : image.image.slice();
    parentPort.postMessage({ image: { ...image, image: bytes } }, [bytes.buffer]);
  } catch (e) {
    parentPort.postMessage({ error: { name: (e && e.name) || 'Error', message: String((e && e.message) || e) } });
  }
});
`;
