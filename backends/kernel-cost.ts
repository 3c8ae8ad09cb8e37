// What a kernel moves and computes at given sizes: the bytes of its buffers and a GEMM's FLOPs. Profiles report
// them beside each kernel's time; the megakernel's scheduler (backends/megakernel-schedule.ts) weighs tasks by them.

import { DType } from '../ir/dtype.ts';
import { anyExpr, evalSize, KernelIR, kernelExprs, KExpr } from './kernel-ir.ts';

/** Symbolic sizes bound to numbers. */
type Sizes = Readonly<Record<string, number>>;

/**
 * Bytes a kernel's buffers hold at these sizes (`byteLength` as the device stores each dtype), as what one run
 * moves: every buffer counted whole, but a table the kernel reads only at rows it computes from other loads (a
 * gather: the embedding rows of the tokens) not at all, since those rows are a sliver of it.
 */
export function kernelBytes(k: KernelIR, sizes: Sizes, byteLength: (d: DType, n: number) => number): number {
  const gathered = gatheredBuffers(k);
  return k.buffers.reduce((s, b, i) => (gathered.has(i) ? s : s + byteLength(b.dtype, evalSize(b.elems, sizes))), 0);
}

/** Buffers every load of which reads at an index computed from another load. */
function gatheredBuffers(k: KernelIR): Set<number> {
  const direct = new Set<number>();
  const indirect = new Set<number>();
  const readsLoad = (e: KExpr): boolean => anyExpr(e, (x) => x.k === 'load');
  for (const e of kernelExprs(k)) {
    anyExpr(e, (x) => {
      if (x.k === 'load') (readsLoad(x.index) ? indirect : direct).add(x.buf);
      return false;
    });
  }
  return new Set([...indirect].filter((b) => !direct.has(b)));
}

/** 2 · m · n · k per product of a GEMM kernel at these sizes; undefined for other kernels. */
export function gemmFlops(k: KernelIR, sizes: Sizes): number | undefined {
  const g = k.gemm;
  return g && 2 * evalSize(g.rows, sizes) * g.columns * g.depth * g.b.length;
}
