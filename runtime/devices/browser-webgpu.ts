// The WebGPU device in a browser: the same device (kernels, buffers, queue) over a GPUDevice from navigator.gpu, so
// a page runs the WGSL kernels Node runs through Dawn. Imports nothing from Node; the page bundles this file.

import { WebGpuUnavailableError } from '../webgpu/errors.ts';
import { WebGpuDevice, WebGpuOptions } from './webgpu.ts';

export { WebGpuDevice };

/** A device over `gpu`, or over the adapter navigator.gpu gives (with its own limits and subgroups when offered). */
export async function openBrowserWebGpu(gpu?: GPUDevice, opts: WebGpuOptions = {}): Promise<WebGpuDevice> {
  return new WebGpuDevice(gpu ?? await requestBrowserDevice(), opts);
}

const wantedLimits = [
  'maxStorageBufferBindingSize', 'maxBufferSize', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX',
] as const;

async function requestBrowserDevice(): Promise<GPUDevice> {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) throw new WebGpuUnavailableError('this browser has no WebGPU (navigator.gpu is missing)');
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new WebGpuUnavailableError('navigator.gpu found no adapter');
  const requiredLimits: Record<string, number> = {};
  for (const k of wantedLimits) requiredLimits[k] = adapter.limits[k];
  const requiredFeatures = (['subgroups'] as GPUFeatureName[]).filter((f) => adapter.features.has(f));
  return adapter.requestDevice({ requiredLimits, requiredFeatures });
}
