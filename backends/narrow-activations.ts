// 16-bit activations for matrix units. Where a GEMM runs 16-bit matrix instructions (CUDA's bf16 mma, WebGPU's f16
// subgroup matrices), its left operand is rounded to that type as it is staged; a temporary that only such left
// operands read may as well be stored rounded by the kernel that writes it: half the bytes to write, to copy into
// shared memory and to hold there, and fragments read without conversion. The one numerical difference: the reading
// kernels' row form (fewer rows than the tiles start from: short prompts) reads the rounded values too, as the tiles
// always did.
//
// A decision about memory that spans kernels, so the scheduler makes it for a graph's kernels at once
// (scheduleKernels), before it schedules each.

import { DType } from '../ir/dtype.ts';
import { anyExpr, KernelIR, kernelExprs } from './kernel-ir.ts';

/**
 * The kernels with every temporary that only matrix-unit GEMMs read as their left operand stored as `dtype` (bf16 or
 * f16) by its writer and read so by them. `onMatrixUnits` says whether a GEMM kernel runs matrix instructions on
 * `dtype` inputs.
 */
export function narrowGemmActivations(kernels: readonly KernelIR[], onMatrixUnits: (k: KernelIR) => boolean, dtype: DType.BF16 | DType.F16 = DType.BF16): readonly KernelIR[] {
  const narrowed = new Map<number, Set<number>>(); // kernel index → buffer indices stored as `dtype`
  const mark = (k: number, b: number) => narrowed.set(k, (narrowed.get(k) ?? new Set()).add(b));
  kernels.forEach((w, i) => {
    w.buffers.forEach((buf, bi) => {
      if (buf.binding.kind !== 'temp' || !buf.written || buf.dtype !== DType.F32 || reads(w, bi)) return;
      const slot = buf.binding.slot;
      // The value lives in the slot until the next kernel that writes it; every kernel between reads it.
      const readers: [number, number][] = [];
      for (let j = i + 1; j < kernels.length; j++) {
        const rb = kernels[j].buffers.findIndex((b) => b.binding.kind === 'temp' && b.binding.slot === slot);
        if (rb < 0) continue;
        if (kernels[j].buffers[rb].written && !reads(kernels[j], rb)) break;
        readers.push([j, rb]);
        if (kernels[j].buffers[rb].written) break;
      }
      const leftOperand = ([j, rb]: [number, number]) => {
        const r = kernels[j];
        const a = r.gemm?.a;
        return a?.k === 'load' && a.buf === rb && !r.buffers[rb].written && onMatrixUnits(r);
      };
      if (readers.length === 0 || !readers.every(leftOperand)) return;
      mark(i, bi);
      for (const [j, rb] of readers) mark(j, rb);
    });
  });
  if (narrowed.size === 0) return kernels;
  return kernels.map((k, i) => {
    const bufs = narrowed.get(i);
    return bufs ? { ...k, buffers: k.buffers.map((b, bi) => (bufs.has(bi) ? { ...b, dtype } : b)) } : k;
  });
}

/** Whether any expression of the kernel (row form, GEMM or flash tiles) loads buffer `buf`. */
function reads(k: KernelIR, buf: number): boolean {
  return kernelExprs(k).some((e) => anyExpr(e, (x) => x.k === 'load' && x.buf === buf));
}
