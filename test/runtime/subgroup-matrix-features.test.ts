// Which adapters open with f16 subgroup matrices (runtime/webgpu/device.ts): the feature, shader-f16 and subgroups,
// an f16 × f16 → f32 configuration of 16 × 16 × 16, and subgroups of exactly 32 lanes, as the GEMM tiles place 8 of
// them in a workgroup of 256. Fake adapters stand for the ones lavapipe cannot show: the H200's (as Dawn reported it
// with vulkan_enable_f16_on_nvidia), the same without that toggle (integer configurations only), and others.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { subgroupMatrixFeatures } from '../../runtime/webgpu/adapter.ts';
import { wgslFeatures } from '../../backends/wgsl/render-wgsl.ts';

type Config = { componentType: string; resultComponentType: string; M: number; N: number; K: number };
const f16 = (M: number, N: number, K: number, result = 'f32'): Config => ({ componentType: 'f16', resultComponentType: result, M, N, K });
const int8: Config[] = [{ componentType: 'i8', resultComponentType: 'i32', M: 16, N: 16, K: 32 }, { componentType: 'u8', resultComponentType: 'u32', M: 16, N: 8, K: 32 }];
const h200 = [f16(16, 16, 16), f16(16, 8, 16), f16(16, 8, 8), f16(16, 16, 16, 'f16'), ...int8];
const all = ['chromium-experimental-subgroup-matrix', 'shader-f16', 'subgroups', 'timestamp-query'];

function adapter(features: readonly string[], configs: readonly Config[], lanes: [number, number] = [32, 32]): GPUAdapter {
  return { features: new Set(features), info: { subgroupMatrixConfigs: configs, subgroupMinSize: lanes[0], subgroupMaxSize: lanes[1] } } as unknown as GPUAdapter;
}

test('the H200 as Dawn reports it with its f16 toggle: the three features', () => {
  assert.equal(subgroupMatrixFeatures(adapter(all, h200)).sort(), ['chromium-experimental-subgroup-matrix', 'shader-f16', 'subgroups']);
});

test('none where a feature, the f16 configuration or exact 32-lane subgroups is missing', () => {
  assert.equal(subgroupMatrixFeatures(adapter(all.filter((f) => f !== 'shader-f16'), h200)), [], 'without shader-f16 (Dawn on NVIDIA without the toggle)');
  assert.equal(subgroupMatrixFeatures(adapter(all, int8)), [], 'integer configurations only');
  assert.equal(subgroupMatrixFeatures(adapter(all, [f16(16, 16, 16, 'f16'), f16(16, 8, 16)])), [], 'no 16 × 16 × 16 into f32');
  assert.equal(subgroupMatrixFeatures(adapter(all.filter((f) => f !== 'chromium-experimental-subgroup-matrix'), h200)), [], 'no subgroup matrices');
  assert.equal(subgroupMatrixFeatures(adapter(all, h200, [16, 32])), [], 'subgroups of 16 to 32 lanes');
  assert.equal(subgroupMatrixFeatures(adapter(all, h200, [64, 64])), [], 'subgroups of 64 lanes');
  assert.equal(subgroupMatrixFeatures(adapter(all, [])), [], 'no configurations');
});

test('a device with both features schedules its GEMMs for subgroup matrices within its workgroup memory', () => {
  const device = (features: readonly string[]) => ({ features: new Set(features), limits: { maxComputeWorkgroupStorageSize: 49152 } });
  assert.equal(wgslFeatures(device(all)), { subgroups: true, subgroupMatrix: { workgroupBytes: 49152 } });
  assert.equal(wgslFeatures(device(['subgroups', 'shader-f16'])), { subgroups: true });
  assert.equal(wgslFeatures(device([])), { subgroups: false });
});

test.run();
