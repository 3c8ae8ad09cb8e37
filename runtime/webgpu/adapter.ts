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

/**
 * The features f16 subgroup-matrix GEMM tiles need, where the adapter has them: a configuration of f16 × f16 → f32
 * products of 16 × 16 × 16, and subgroups of exactly 32 lanes (the tiles place 8 subgroups in a workgroup of 256).
 */
export function subgroupMatrixFeatures(adapter: GPUAdapter): GPUFeatureName[] {
  const info = adapter.info as GPUAdapterInfo & {
    readonly subgroupMatrixConfigs?: readonly { componentType: string; resultComponentType: string; M: number; N: number; K: number }[];
    readonly subgroupMinSize?: number; readonly subgroupMaxSize?: number;
  };
  const wanted = ['chromium-experimental-subgroup-matrix', 'shader-f16', 'subgroups'] as GPUFeatureName[];
  if (!wanted.every((f) => adapter.features.has(f)) || info.subgroupMinSize !== 32 || info.subgroupMaxSize !== 32) return [];
  const f16 = (info.subgroupMatrixConfigs ?? []).some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === 16 && c.N === 16 && c.K === 16);
  return f16 ? wanted : [];
}
