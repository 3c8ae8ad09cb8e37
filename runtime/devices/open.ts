// Opening a device by kind. The GPU devices are imported only when asked for, so cpu users never load Dawn or koffi.

import type { Device, DeviceKind } from '../device.ts';
import type { CudaOptions } from './cuda.ts';
import { HostDevice } from './host.ts';
import type { WebGpuOptions } from './webgpu.ts';

/** Options of every device kind; each device reads its own. */
export interface DeviceOptions extends WebGpuOptions, CudaOptions {}

export async function openDevice(kind: DeviceKind, opts: DeviceOptions = {}): Promise<Device> {
  switch (kind) {
    case 'cpu': case 'reference': return new HostDevice(kind);
    case 'webgpu': return (await import('./webgpu.ts')).openWebGpu(opts);
    case 'cuda': return (await import('./cuda.ts')).openCuda(opts);
    default: return kind satisfies never;
  }
}
