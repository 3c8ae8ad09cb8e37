// What tsfuse asks of a WebGPU adapter, in Node (Dawn) and in a browser alike: the adapter's own limits for the few
// that matter to large models, instead of WebGPU's conservative defaults, and whichever wanted features it offers.
// Imports nothing from Node, so a page bundles it.

const wantedLimits = [
  'maxStorageBufferBindingSize', 'maxBufferSize', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX',
] as const;

export function requestDevice(adapter: GPUAdapter, features: readonly GPUFeatureName[]): Promise<GPUDevice> {
  const requiredLimits: Record<string, number> = {};
  for (const k of wantedLimits) requiredLimits[k] = adapter.limits[k];
  const requiredFeatures = features.filter((f) => adapter.features.has(f));
  return adapter.requestDevice({ requiredLimits, requiredFeatures });
}
