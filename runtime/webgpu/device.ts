// Opening a WebGPU device through Dawn (the `webgpu` package) with the limits large models need.

import { requestDevice } from './adapter.ts';
import { WebGpuUnavailableError } from './errors.ts';
import { withNativeStderrSilenced } from './quiet-stderr.ts';

export { WebGpuUnavailableError };

let gpu: GPU | undefined;

export async function openDevice(opts: { readonly subgroups: boolean } = { subgroups: true }): Promise<GPUDevice> {
  if (!gpu) {
    // Dawn is an optional dependency, loaded only when a WebGPU device is opened.
    let dawn: typeof import('webgpu');
    try {
      dawn = await import('webgpu');
    } catch (e) {
      throw new WebGpuUnavailableError(`the webgpu backend needs the optional package webgpu (Dawn for Node): npm install webgpu (${(e as Error).message.split('\n')[0]})`);
    }
    const { create, globals } = dawn;
    Object.assign(globalThis, globals);
    // Unquantized timestamps, so the benchmark's per-kernel profile is exact to the GPU's tick.
    gpu = create(['disable-dawn-features=timestamp_quantization']);
  }
  const adapter = await withNativeStderrSilenced(() => gpu!.requestAdapter({ powerPreference: 'high-performance' }));
  if (!adapter) {
    throw new WebGpuUnavailableError('no WebGPU adapter: Dawn found no Vulkan device (on a CPU-only Debian machine, install Mesa 25 from bookworm-backports for lavapipe)');
  }
  const device = await requestDevice(adapter, opts.subgroups ? ['timestamp-query', 'subgroups'] : ['timestamp-query']);
  device.addEventListener('uncapturederror', (e) => {
    console.error(`tsfuse webgpu: ${(e as GPUUncapturedErrorEvent).error.message}`);
  });
  return device;
}

export function adapterName(device: GPUDevice): string {
  const info = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  return info ? [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') : 'webgpu';
}
