// Compile time of Llama-3.2-1B's prefill and decode graphs in one cold process, as CPU time (process.cpuUsage, so
// other work on the machine matters less than for wall time): trace, passes + lowering, then scheduling + printing
// every kernel for each backend named (cpu, cuda, webgpu; default all). No compile cache is involved. As the command
// line compiles, V8's optimizing tier is off throughout (compiler/optimizing-tier.ts); `turbofan` leaves it on.
//   node --import tsx test/bench/compile-time.ts [cuda|webgpu|cpu|all] [turbofan]

import { printJs } from '../../backends/cpu/render-js.ts';
import { cudaPrelude, printCudaFunction } from '../../backends/cuda/render-cuda.ts';
import { cpuCaps, cudaCaps, DeviceCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { scheduleKernel, ScheduledKernel } from '../../backends/schedule.ts';
import { printWgsl } from '../../backends/wgsl/render-wgsl.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { withoutOptimizingTier } from '../../compiler/optimizing-tier.ts';
import { traceLlama } from '../../examples/llama.ts';
import { DType } from '../../ir/dtype.ts';
import { builtinConfig } from '../../runtime/config.ts';

const printers: Record<string, { device: DeviceCaps; print: (s: ScheduledKernel) => string }> = {
  cpu: { device: cpuCaps, print: printJs },
  cuda: { device: cudaCaps(), print: (s) => `${cudaPrelude}\n${printCudaFunction(s).code}` },
  webgpu: { device: webgpuCaps({ subgroups: true }), print: (s) => printWgsl(s).code },
};
const which = process.argv[2] ?? 'all';
const optimizingTier = process.argv[3] === 'turbofan';
const backends = which === 'all' ? Object.keys(printers) : [which];

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const start = cpuMs();
const wall = performance.now();
const ms: Record<string, number> = {};
let last = start;
const lap = (what: string) => {
  const now = cpuMs();
  ms[what] = Math.round(now - last);
  last = now;
};
const compileAll = () => {
  const traced = traceLlama(builtinConfig('llama-3.2-1b'), { weightDType: DType.BF16, cacheLength: 2048 });
  lap('trace');
  const compiled = compileModule(traced);
  lap('passes+lowering');
  for (const b of backends) {
    const p = printers[b];
    for (const g of compiled.graphs) for (const k of g.kernels) p.print(scheduleKernel(k, p.device));
    lap(`schedule+print ${b}`);
  }
};
if (optimizingTier) compileAll();
else withoutOptimizingTier(compileAll);
console.log(JSON.stringify({ turbofan: optimizingTier, ...ms, cpuMs: Math.round(cpuMs() - start), wallMs: Math.round(performance.now() - wall) }));
