// Opening a device by kind. The GPU devices are imported only when asked for, so cpu users never load Dawn or koffi.

import { type Device, type DeviceKind, deviceKinds } from '../device.ts';
import type { CudaOptions } from './cuda.ts';
import { HostDevice } from './host.ts';
import type { WebGpuOptions } from './webgpu.ts';
import { CudaUnavailableError } from '../cuda/errors.ts';

/** Options of every device kind; each device reads its own. */
export interface DeviceOptions extends WebGpuOptions, CudaOptions {}

export async function openDevice(kind: DeviceKind, opts: DeviceOptions = {}): Promise<Device> {
  switch (kind) {
    case 'cpu': case 'reference': return new HostDevice(kind);
    case 'webgpu': return (await import('./webgpu.ts')).openWebGpu(opts);
    case 'cuda': return (await importCuda()).openCuda(opts);
    default:
      kind satisfies never;
      // Called from JavaScript, or with a cast: a name that is none of them.
      throw new RangeError(`unknown device '${kind as string}' (available: ${deviceKinds.join(', ')})`);
  }
}

/** koffi is an optional dependency: without it, say what to install. */
async function importCuda(): Promise<typeof import('./cuda.ts')> {
  try {
    return await import('./cuda.ts');
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && /'koffi'/.test((e as Error).message)) {
      throw new CudaUnavailableError('the cuda backend needs the optional package koffi (FFI to libcuda and NVRTC): npm install koffi');
    }
    throw e;
  }
}
