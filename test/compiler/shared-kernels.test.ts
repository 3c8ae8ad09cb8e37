// Kernels alike but for their buffers (every transformer layer's) are lowered, scheduled and printed once and
// shared: each must come out as it would alone. A kernel given a body of its own (a copy of the array) shares
// nothing, so it is scheduled and printed afresh to compare with.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { printJs } from '../../backends/cpu/render-js.ts';
import { printCudaFunction } from '../../backends/cuda/render-cuda.ts';
import { cpuCaps, cudaCaps, DeviceCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { KernelIR } from '../../backends/kernel-ir.ts';
import { scheduleKernel, ScheduledKernel, scheduleOrigin } from '../../backends/schedule.ts';
import { formatSchedule } from '../../backends/schedule-format.ts';
import { printWgsl } from '../../backends/wgsl/render-wgsl.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { traceLlama } from '../../examples/llama.ts';
import { DType } from '../../ir/dtype.ts';
import { builtinConfig } from '../../runtime/config.ts';

const kernels = compileModule(traceLlama(builtinConfig('llama-tiny'), { weightDType: DType.BF16, cacheLength: 64 }))
  .graphs.flatMap((g) => g.kernels);

const targets: { name: string; device: DeviceCaps; print: (s: ScheduledKernel) => string }[] = [
  { name: 'cpu', device: cpuCaps, print: printJs },
  { name: 'cuda', device: cudaCaps(), print: (s) => printCudaFunction(s).code },
  { name: 'webgpu', device: webgpuCaps({ subgroups: true }), print: (s) => printWgsl(s).code },
];

test('the layers share lowered kernels', () => {
  const bodies = new Set(kernels.map((k) => k.body));
  assert.ok(bodies.size < kernels.length, `${bodies.size} bodies for ${kernels.length} kernels`);
});

for (const { name, device, print } of targets) {
  test(`${name}: a kernel sharing a schedule prints as if scheduled alone`, () => {
    let shared = 0;
    for (const k of kernels) {
      const s = scheduleKernel(k, device);
      if (scheduleOrigin(s) !== s) shared++;
      const alone: KernelIR = { ...k, body: [...k.body] };
      const fresh = scheduleKernel(alone, device);
      assert.is(formatSchedule(s), formatSchedule(fresh), k.name);
      assert.is(print(s), print(fresh), k.name);
    }
    assert.ok(shared > 0, 'some schedules are shared');
  });
}

test.run();
