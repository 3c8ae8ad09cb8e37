// WGSL of the subgroup-matrix GEMM tiles validated on any WebGPU adapter. Only an adapter with Dawn's
// chromium-experimental-subgroup-matrix feature (the H200's) compiles these shaders as they are, so elsewhere (CI's
// lavapipe) their code would go unchecked until it reached that machine. Here each matrix builtin is swapped for
// vector code of the same shape (a load for a load, a sum for a multiply-add, a store for a store) and f16 for f32;
// the rest of the shader (bindings, scoping, barriers and the uniformity of the control flow around them, the second
// entry point) is what Dawn validates: the shader module, then a pipeline for each entry point. A shader with a
// barrier under a branch on the thread must fail the same check. The graphs take each shape of the tiles: one step
// of 128, eight, five (the staging loop's last round partial), 32 columns (a wide GEMM), and two products.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { param, trace } from '../../compiler/index.ts';
import { webgpuCaps } from '../../backends/device-caps.ts';
import { scheduleKernels } from '../../backends/schedule.ts';
import { printWgsl } from '../../backends/wgsl/render-wgsl.ts';
import { DType } from '../../ir/dtype.ts';
import { openDevice } from '../../runtime/webgpu/device.ts';
import { unavailable } from '../runtime/fake-cuda/build.ts';

const N = 70;
const projection = (name: string, depth: number, columns = N) =>
  trace(name, [{ name: 'x', dtype: DType.F32, shape: ['S', depth] }], (x) => ({ y: x.matmul(param(`${name}.w`, DType.BF16, [columns, depth]).transpose()).silu() }));
const glu = trace('glu', [{ name: 'x', dtype: DType.F32, shape: ['S', 256] }], (x) => {
  const h = x.mul(x.mul(x).mean(-1, { keepdims: true }).add(1e-5).rsqrt());
  return { y: h.matmul(param('glu.g', DType.BF16, [N, 256]).transpose()).silu().mul(h.matmul(param('glu.u', DType.BF16, [N, 256]).transpose())) };
});
const module = compileModule({ graphs: [projection('one', 128), projection('eight', 1024), projection('five', 640), projection('wide', 128, 3090), glu] });
const matrix = webgpuCaps({ subgroups: true, subgroupMatrix: { workgroupBytes: 49152 } });
const shaders = module.graphs.flatMap((g) => scheduleKernels(g.kernels, matrix).filter((sk) => sk.gemm?.units === 'subgroup-matrix-f16').map((sk) => ({ name: `${g.graph.name}.${sk.kernel.name}`, code: printWgsl(sk).code })));

/** The shader with every subgroup-matrix builtin replaced by vector code of the same shape, f16 by f32. */
function standIn(code: string): string {
  return code
    .replace('enable chromium_experimental_subgroup_matrix;', '')
    .replace('diagnostic(off, chromium.subgroup_matrix_uniformity);', '')
    .replace('enable f16;', '')
    .replace(/\bf16\b/g, 'f32')
    .replace(/subgroup_matrix_result<f32, 16, 16>\(\)/g, 'vec4<f32>()')
    .replace(/subgroupMatrixLoad<[^(]*>\(&(\w+), ([^,]+), (\w+)\)/g, 'vec4<f32>($1[$2] + f32($3))')
    .replace(/subgroupMatrixMultiplyAccumulate\((\w+), (\w+), (\w+)\)/g, '($1 * $2 + $3)')
    .replace(/subgroupMatrixStore<row_major>\(&(\w+), ([^,]+), (\w+), (\w+)\);/g, '$1[$2] = $3.x + f32($4);');
}

/** Dawn's errors for a shader: its module's, then each entry point's pipeline's (past the adapter's memory limit). */
async function errors(gpu: GPUDevice, code: string): Promise<string[]> {
  // In an error scope: Dawn's report goes to the scope, not to the device's log of uncaptured errors.
  gpu.pushErrorScope('validation');
  const module = gpu.createShaderModule({ code });
  const found = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
  await gpu.popErrorScope();
  if (found.length) return found;
  for (const entryPoint of ['main', ...(code.includes('fn merge(') ? ['merge'] : [])]) {
    gpu.pushErrorScope('validation');
    gpu.createComputePipeline({ layout: 'auto', compute: { module, entryPoint } });
    const e = await gpu.popErrorScope();
    // The f16 arrays, as f32, may pass a small adapter's workgroup memory (lavapipe's 32 KiB): a limit, not the code.
    if (e && !/total use of workgroup storage/.test(e.message)) found.push(`${entryPoint}: ${e.message.split('\n')[0]}`);
  }
  return found;
}

const s = suite('subgroup-matrix WGSL on any adapter');
s('every subgroup-matrix GEMM shader, its matrix builtins stood in, passes Dawn\'s validation; a barrier under a branch on the thread does not', async () => {
  const selected = process.env.TSFUSE_BACKENDS?.split(',');
  if (selected && !selected.includes('webgpu')) return;
  const gpu = await openDevice().catch((e) => unavailable(e) ?? Promise.reject(e));
  if (typeof gpu === 'string') return void console.log(`  webgpu: skipped (${gpu})`);
  try {
    assert.ok(shaders.length >= 5, `${shaders.length} shaders`);
    for (const { name, code } of shaders) {
      const stood = standIn(code);
      assert.not.match(stood, /subgroupMatrix|subgroup_matrix|\bf16\b/, `${name}: every matrix builtin stood in`);
      assert.equal(await errors(gpu, stood), [], name);
    }
    // The check can fail: a barrier that only thread 0 reaches.
    const broken = standIn(shaders[0].code).replace('  let lid = i32(lidx);', '  let lid = i32(lidx);\n  if (lid == 0) { workgroupBarrier(); }');
    assert.ok((await errors(gpu, broken)).some((e) => /uniform/.test(e)), 'a non-uniform barrier is refused');
  } finally {
    gpu.destroy();
  }
});
s.run();
