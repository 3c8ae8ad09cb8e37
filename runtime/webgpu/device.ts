// Opening a WebGPU device through Dawn (the `webgpu` package) with the limits large models need.

import { requestDevice, subgroupMatrixFeatures } from './adapter.ts';
import { WebGpuUnavailableError } from './errors.ts';
import { withNativeStderrSilenced } from './quiet-stderr.ts';

export { WebGpuUnavailableError };

/** Dawn's instances, by the toggles they were created with. */
const instances = new Map<string, GPU>();

/**
 * Dawn's toggles for subgroup matrices: `allow_unsafe_apis` exposes the experimental feature, and
 * `vulkan_enable_f16_on_nvidia` the `shader-f16` its f16 configurations need, which Dawn withholds on NVIDIA's
 * Vulkan driver by default (pending conformance failures it lists; the GEMM tiles use f16 only as products'
 * operands, and the GPU tests check them against the reference interpreter there).
 */
const MATRIX_TOGGLES = 'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia';

export interface OpenOptions {
  readonly subgroups: boolean;
  /** Open with f16 subgroup matrices where the adapter offers them (subgroupMatrixFeatures). */
  readonly subgroupMatrix?: boolean;
}

export async function openDevice(opts: OpenOptions = { subgroups: true }): Promise<GPUDevice> {
  const toggles = ['disable-dawn-features=timestamp_quantization', ...(opts.subgroupMatrix ? [MATRIX_TOGGLES] : [])];
  let gpu = instances.get(toggles.join(' '));
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
    gpu = create(toggles);
    instances.set(toggles.join(' '), gpu);
  }
  const adapter = await withNativeStderrSilenced(() => gpu!.requestAdapter({ powerPreference: 'high-performance' }));
  if (!adapter) {
    throw new WebGpuUnavailableError('no WebGPU adapter: Dawn found no Vulkan device (on a CPU-only Debian machine, install Mesa 25 from bookworm-backports for lavapipe)');
  }
  const features: GPUFeatureName[] = ['timestamp-query', ...(opts.subgroups ? ['subgroups' as const] : []), ...(opts.subgroupMatrix ? subgroupMatrixFeatures(adapter) : [])];
  const device = await requestDevice(adapter, features);
  device.addEventListener('uncapturederror', (e) => {
    console.error(`tsfuse webgpu: ${(e as GPUUncapturedErrorEvent).error.message}`);
  });
  return device;
}

export function adapterName(device: GPUDevice): string {
  const info = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  return info ? [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') : 'webgpu';
}
