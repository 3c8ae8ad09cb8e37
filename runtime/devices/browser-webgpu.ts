// The WebGPU device in a browser: the same device (kernels, buffers, queue) over a GPUDevice from navigator.gpu, so
// a page runs the WGSL kernels Node runs through Dawn. Imports nothing from Node; the page bundles this file.

import { requestDevice, subgroupMatrixFeatures } from '../webgpu/adapter.ts';
import { WebGpuUnavailableError } from '../webgpu/errors.ts';
import { WebGpuDevice, WebGpuOptions } from './webgpu.ts';

export { WebGpuDevice };

/**
 * A device over `gpu`, or over the adapter navigator.gpu gives (with its own limits, and subgroups and f16 subgroup
 * matrices when offered).
 */
export async function openBrowserWebGpu(gpu?: GPUDevice, opts: WebGpuOptions = {}): Promise<WebGpuDevice> {
  return new WebGpuDevice(gpu ?? await requestBrowserDevice(), opts);
}

async function requestBrowserDevice(): Promise<GPUDevice> {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) throw new WebGpuUnavailableError('this browser has no WebGPU (navigator.gpu is missing)');
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new WebGpuUnavailableError('navigator.gpu found no adapter');
  // f16 subgroup matrices where the browser offers them (Chrome behind its unsafe-WebGPU flag, on some adapters).
  return requestDevice(adapter, ['subgroups', ...subgroupMatrixFeatures(adapter)]);
}
