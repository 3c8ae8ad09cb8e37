// The scratch of depth-split GEMMs (GemmPlan.split) and of attention's key chunks (FlashPlan.keyChunks): one
// workspace and one set of counters serve every such kernel of a program, since its kernels run one after another
// on the stream; the counters start at zero and each kernel leaves them so.

import { CudaDriver, DevicePtr } from './driver.ts';

export interface SplitScratch {
  readonly workspace: DevicePtr;
  readonly counters: DevicePtr;
}

/** The scratch for `splits` (each a kernel's needs), as large as the largest asks; none where no kernel splits. */
export function allocSplitScratch(cuda: CudaDriver, splits: readonly { readonly workspaceFloats: number; readonly counters: number }[]): SplitScratch | undefined {
  if (!splits.length) return undefined;
  const workspace = cuda.alloc(4 * Math.max(...splits.map((s) => s.workspaceFloats)));
  const countersBytes = 4 * Math.max(...splits.map((s) => s.counters));
  const counters = cuda.alloc(countersBytes);
  cuda.fill(counters, 0, countersBytes);
  return { workspace, counters };
}

export function freeSplitScratch(cuda: CudaDriver, s: SplitScratch | undefined): void {
  if (!s) return;
  cuda.free(s.workspace);
  cuda.free(s.counters);
}
