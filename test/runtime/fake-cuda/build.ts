// Building the CPU stand-in for libcuda + NVRTC (fake-cuda.cpp) and pointing the CUDA runtime at it, for the tests
// that run the CUDA backend without a GPU. It needs g++ on x64 Linux; TSFUSE_FAKE_CUDA=0 turns it off.

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Device, DeviceKind } from '../../../runtime/device.ts';
import { openDevice } from '../../../runtime/devices/open.ts';
import type { CudaOptions } from '../../../runtime/devices/cuda.ts';

const here = fileURLToPath(new URL('./', import.meta.url));

function hasGxx(): boolean {
  try {
    execFileSync('g++', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export const fakeCudaEnabled = process.env.TSFUSE_FAKE_CUDA !== '0' && process.platform === 'linux' && process.arch === 'x64' && hasGxx();

export interface FakeCuda {
  /** The library to load as libcuda (and as libnvrtc). */
  readonly lib: string;
  /** Where compiled kernels are cached, beside it. */
  readonly cacheDir: string;
}

/** Builds the fake once per version of its sources. */
export function buildFakeCuda(): FakeCuda {
  const sources = ['fake-cuda.cpp', 'kernel-shim.h'].map((f) => fs.readFileSync(path.join(here, f), 'utf8')).join('\0');
  const dir = path.join(os.tmpdir(), `tsfuse-fake-cuda-${crypto.createHash('sha256').update(sources).digest('hex').slice(0, 16)}`);
  const lib = path.join(dir, 'libfakecuda.so');
  if (!fs.existsSync(lib)) {
    fs.mkdirSync(dir, { recursive: true });
    const tmp = `${lib}.${process.pid}.tmp`;
    execFileSync('g++', ['-std=c++17', '-O2', '-shared', '-fPIC', '-o', tmp, path.join(here, 'fake-cuda.cpp'), '-ldl']);
    fs.renameSync(tmp, lib);
  }
  return { lib, cacheDir: path.join(dir, 'kernels') };
}

/** Points TSFUSE_LIBCUDA, TSFUSE_LIBNVRTC and the kernel shim at the fake; returns what puts them back. */
export function useFakeCuda(fake: FakeCuda): () => void {
  const saved = { TSFUSE_LIBCUDA: process.env.TSFUSE_LIBCUDA, TSFUSE_LIBNVRTC: process.env.TSFUSE_LIBNVRTC, FAKE_CUDA_SHIM: process.env.FAKE_CUDA_SHIM };
  process.env.TSFUSE_LIBCUDA = fake.lib;
  process.env.TSFUSE_LIBNVRTC = fake.lib;
  process.env.FAKE_CUDA_SHIM = path.join(here, 'kernel-shim.h');
  return () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}

/**
 * Points the CUDA runtime at the fake while suite `s` runs (nothing where the fake cannot be built); the returned
 * object's cacheDir is the fake's kernel cache once the suite has started.
 */
export function onFakeCuda(s: { before(hook: () => void): void; after(hook: () => void): void }): { cacheDir: string } {
  const state = { cacheDir: '' };
  let restore: (() => void) | undefined;
  s.before(() => {
    if (!fakeCudaEnabled) return;
    const fake = buildFakeCuda();
    state.cacheDir = fake.cacheDir;
    restore = useFakeCuda(fake);
  });
  s.after(() => restore?.());
  return state;
}

/** The message of a device that is not there (no driver, no adapter), else undefined. */
export const unavailable = (e: unknown): string | undefined => (/Unavailable/.test((e as Error).name) ? (e as Error).message : undefined);

/**
 * What `open` opens on `backend` (for CUDA the GPU where a driver opens, else with the CPU fake's kernel cache while
 * the runtime points at the fake, until `restore`); the reason as a string when the backend cannot run here.
 */
export async function openOrFake<T>(backend: DeviceKind, open: (cacheDir?: string) => Promise<T>): Promise<{ opened: T; restore?: () => void } | string> {
  try {
    return { opened: await open() };
  } catch (e) {
    const why = unavailable(e);
    if (!why) throw e;
    if (backend !== 'cuda' || !fakeCudaEnabled) return why;
  }
  const fake = buildFakeCuda();
  const restore = useFakeCuda(fake);
  try {
    return { opened: await open(fake.cacheDir), restore };
  } catch (e) {
    restore();
    throw e;
  }
}

let restoreFake: (() => void) | undefined;

/**
 * The CUDA device: a real driver where one opens, else the CPU fake (pointed at until restoreCudaOrFake()); the
 * reason as a string when neither can run here.
 */
export async function openCudaOrFake(opts: CudaOptions = {}): Promise<Device | string> {
  try {
    return await openDevice('cuda', opts);
  } catch (e) {
    if (!unavailable(e)) throw e;
    if (!fakeCudaEnabled) return `${unavailable(e)}; no g++ for the CPU fake`;
  }
  const fake = buildFakeCuda();
  restoreFake ??= useFakeCuda(fake);
  return openDevice('cuda', { ...opts, libraries: [fake.lib], cacheDir: fake.cacheDir });
}

/** Points the CUDA runtime back where it was before openCudaOrFake. */
export function restoreCudaOrFake(): void {
  restoreFake?.();
  restoreFake = undefined;
}

/** The devices differential tests compare against the reference interpreter. */
export const kernelDevices: readonly DeviceKind[] = ['cpu', 'webgpu', 'cuda'];

/**
 * Opens device `kind` (for CUDA the driver, else the CPU fake), runs `body` on it and closes it. Where the device
 * cannot run here it says so and returns undefined.
 */
export async function onDevice<T>(kind: DeviceKind, body: (d: Device) => Promise<T>): Promise<T | undefined> {
  const device = kind === 'cuda' ? await openCudaOrFake()
    : await openDevice(kind).catch((e) => unavailable(e) ?? Promise.reject(e));
  if (typeof device === 'string') {
    console.log(`  ${kind}: skipped (${device})`);
    return undefined;
  }
  try {
    return await body(device);
  } finally {
    device.destroy();
    if (kind === 'cuda') restoreCudaOrFake();
  }
}
