// Weights a megakernel streams through shared memory: a kernel whose every row reads one contiguous run of a weight,
// each row's run a fixed distance after the one before, has its rows' runs copied into pages of shared memory by
// the copy engine, several rows ahead of the rows that read them and across the waits between kernels (weights
// never depend on another task), so that the memory system is kept busy while a block waits for its inputs. What a
// row reads is bounded by backends/element-ranges.ts; the megakernel's schedule deals the pages and its printer reads
// them (backends/cuda/megakernel.ts).

import { dtypeBytes } from '../ir/dtype.ts';
import { KernelIR } from './kernel-ir.ts';
import { weightReads } from './element-ranges.ts';

/** One weight a kernel's rows stream: row r reads bytes [first + r · perRow, first + r · perRow + bytes) of it. */
export interface RowStream {
  /** The weight's index among the kernel's buffers. */
  readonly buffer: number;
  readonly first: number;
  readonly perRow: number;
  readonly bytes: number;
  /** Where in the row's page the run lands. */
  readonly pageOffset: number;
}

/** The copy engine moves whole, aligned 16-byte units. */
const COPY_UNIT = 16;

/**
 * The weights a kernel's rows stream through pages of `pageBytes`, or none where it cannot: rows of a constant
 * count; per weight the row's run contiguous, at a fixed distance from the previous row's, aligned to the copy
 * engine's units, not read by the statements a task computes once before its rows (`prologue` of them); the runs
 * of one row together no more than a page. Weights read elsewise are left to their loads.
 */
export function rowStreams(k: KernelIR, pageBytes: number, prologue: number): RowStream[] {
  if (k.rows.k !== 'const' || k.rows.value < 1 || k.sizes.length) return [];
  const rows = k.rows.value;
  const inPrologue = new Set(weightReads({ ...k, body: k.body.slice(0, prologue) }, {}, 0, 1).map((r) => r.buffer));
  const at = (r: number) => new Map(weightReads(k, {}, r, r + 1).map((e) => [e.buffer, e]));
  const [row0, row1, last] = [at(0), at(Math.min(1, rows - 1)), at(rows - 1)];
  const streams: RowStream[] = [];
  let pageOffset = 0;
  for (const [buffer, e0] of row0) {
    const size = dtypeBytes[k.buffers[buffer].dtype];
    const [first, bytes] = [e0.from * size, (e0.to - e0.from) * size];
    const perRow = rows > 1 ? (row1.get(buffer)!.from - e0.from) * size : bytes;
    const lastRun = last.get(buffer)!;
    const linear = lastRun.from * size === first + (rows - 1) * perRow && (lastRun.to - lastRun.from) * size === bytes;
    // A weight every row reads alike (a norm's scale) gains nothing from a page a row.
    if (!linear || perRow < bytes || inPrologue.has(buffer)) continue;
    if (first % COPY_UNIT || perRow % COPY_UNIT || bytes % COPY_UNIT) continue;
    streams.push({ buffer, first, perRow, bytes, pageOffset });
    pageOffset += bytes;
  }
  return pageOffset > 0 && pageOffset <= pageBytes ? streams : [];
}
