// Which dimensions of a kernel's index space are rows (one workgroup each), by the kind of kernel fusion made:
// the part of lowering (backends/lower.ts) that decides what one row computes. How the threads of a workgroup
// then share a row is the scheduler's (backends/schedule.ts).

import { dtypeBytes } from '../ir/dtype.ts';
import { Kernel, Node, Value } from '../ir/graph.ts';
import { Op } from '../ir/ops.ts';
import { Shape } from '../ir/shape.ts';

/**
 * Rows over some of the dimensions of `domain` (`rowAxes`, in order), a row covering `tile` neighbouring values of
 * the last of them:
 *   leading  rows over the leading dimensions; a contraction's row computes `tile` neighbouring outputs
 *   columns  rows over the dimensions a reduction keeps, when it reduces other than its last axes (x.sum(0)); a row
 *            reduces `tile` neighbouring columns, one row-local array element each
 */
export interface RowSplit {
  readonly by: 'leading' | 'columns';
  readonly domain: Shape;
  readonly rowAxes: readonly number[];
  readonly tile: number;
}

/**
 * Outputs per row of a contraction: 8 (a GPU runs one per warp) dividing the last dimension; fewer for narrow
 * outputs, so that there are enough rows to occupy the device; more, up to 128, for very wide outputs (the LM head),
 * where 8 per row would recompute the shared prologue row too many times.
 */
const OUTPUT_TILE = 8;
const MIN_OUTPUT_TILE = 2;
const MAX_OUTPUT_TILE = 128;
// Measured on the H200 (issue 11): Llama-3.2-1B's gate/up projection of 8,192 outputs as 1,024 rows of 8, one
// wave with the registers capped (backends/schedule.ts oneWave), beat 512 rows of 16. Rows that redo a norm need
// half as many (1,000): its LM head of 128,256 outputs then runs as 1,002 rows of 128, one wave at 8 a
// multiprocessor, rather than 2,004 rows of 64 in two (0.814 → 0.811 and 0.805 → 0.802 ms a token in two leases,
// BENCHMARKS.md thirteenth session).
const ENOUGH_ROWS = 2000;

/**
 * Columns per row of a 'columns' split: at least 8 (8 f32 fill a 32-byte memory sector, and a [4096, 512] input
 * still gets 64 rows), more while a row would reduce fewer than ROW_TERMS terms in all (a short reduction: a
 * flash-decoding combination of 8 chunks), up to 64. Measured on the H200: that combination kernel of
 * Llama-3.2-1B decode (2048 outputs, 8 terms each) took 1.4 µs as 64 rows of 32 columns, 4.5 µs as one row; its
 * statistics kernel (32 outputs of 8 terms) 2.0 µs as 32 rows, 1.3 µs as one.
 */
const COLUMN_TILE = 8;
const MAX_COLUMN_TILE = 64;
const ROW_TERMS = 256;

const reductionOps: readonly string[] = [Op.Sum, Op.Mean, Op.Max, Op.Argmax];

/** What code that runs the rows wants of them. */
export interface RowOptions {
  /**
   * Rows a narrow contraction takes at most (one a block of a fixed grid: a megakernel's tasks, whose rows a block
   * runs one after another): its rows of outputs as few as that allows, at least MIN_OUTPUT_TILE outputs each.
   * Measured on the H200 (Llama-3.2-1B decode as one kernel of 528 blocks, BENCHMARKS.md twenty-sixth session): the
   * output and down projections as 512 rows of 4 rather than 1,024 of 2, 0.878 / 0.884 → 0.867 / 0.873 ms a token,
   * 0.966 → 0.953 at a 2,048-position cache; the kernels launched alone lost (0.782 → 0.787), so only the megakernel
   * asks.
   */
  readonly maxRows?: number;
  /**
   * Weight bytes a contraction's row reads at most (rows of one output where one alone reads more): the megakernel's
   * rows when it streams each row's weights whole through a page of shared memory (backends/weight-stream.ts).
   */
  readonly rowWeightBytes?: number;
}

export function rowSplit(k: Kernel, writes: readonly Value[], opts: RowOptions = {}): RowSplit {
  const matmuls = k.nodes.filter((n) => n.op === Op.Matmul);
  const kind = k.attrs.kind;
  switch (kind) {
    case 'contraction': {
      const domain = matmuls[0].output.type.shape;
      const tile = outputTile(domain, reducingPrologue(k), opts.maxRows);
      return leading(writes, domain, domain.length, opts.rowWeightBytes === undefined ? tile : capByWeights(tile, weightBytesPerOutput(matmuls), opts.rowWeightBytes));
    }
    case 'attention': {
      const domain = matmuls[matmuls.length - 1].output.type.shape;
      return leading(writes, domain, domain.length - 1, 1);
    }
    case 'reduce': {
      const r = k.nodes.find((n) => reductionOps.includes(n.op))!;
      const domain = r.inputs[0].type.shape;
      const axes = r.op === Op.Argmax ? [r.attrs.axis as number] : (r.attrs.axes as number[]);
      if (axes.every((a, i) => a === domain.length - axes.length + i)) return leading(writes, domain, domain.length - axes.length, 1);
      return columns(writes, domain, domain.map((_, a) => a).filter((a) => !axes.includes(a)));
    }
    case 'elementwise': {
      const domain = writes[0].type.shape;
      return leading(writes, domain, Math.max(0, domain.length - 1), 1);
    }
    // KV-cache writes store their updates' elements, strided over one row.
    case 'state-write': return { by: 'leading', domain: [], rowAxes: [], tile: 1 };
    default: return kind satisfies never;
  }
}

/**
 * Rows over the leading `rank` dimensions of `domain`, as far as every value the kernel writes shares them: a
 * write whose shape starts differently narrows the rows to the dimensions they all share (down to one row). A tile
 * of outputs per row needs every write to have the domain's shape.
 */
function leading(writes: readonly Value[], domain: Shape, rank: number, tile: number): RowSplit {
  const stored = writes.filter((v) => v.producer!.op !== Op.UpdateSlice).map((v) => v.type.shape);
  const shared = (s: Shape) => {
    let n = 0;
    while (n < Math.min(rank, s.length) && s[n] === domain[n]) n++;
    return n;
  };
  const rowRank = stored.reduce((r, s) => Math.min(r, shared(s)), rank);
  const tiled = tile > 1 && rowRank === domain.length && stored.every((s) => s.length === domain.length);
  return { by: 'leading', domain, rowAxes: domain.slice(0, rowRank).map((_, a) => a), tile: tiled ? tile : 1 };
}

/**
 * Rows over the kept dimensions of a reduction over other than its last axes, a row taking a tile of neighbouring
 * columns so that its loads use whole memory sectors. Every write must be the reduction's result (or of its shape)
 * or of the input's shape; otherwise the rows are the kept dimensions before the first reduced one.
 */
function columns(writes: readonly Value[], domain: Shape, kept: number[]): RowSplit {
  const keptDims = kept.map((a) => domain[a]);
  const fits = (s: Shape) => (s.length === kept.length && s.every((d, i) => d === keptDims[i])) ||
    (s.length === domain.length && s.every((d, a) => d === domain[a] || (d === 1 && !kept.includes(a))));
  if (!writes.every((v) => v.producer!.op !== Op.UpdateSlice && fits(v.type.shape))) {
    return leading(writes, domain, domain.findIndex((_, a) => !kept.includes(a)), 1);
  }
  // Terms each column reduces (a symbolic dimension counts as long).
  const terms = domain.reduce<number>((n, d, a) => (kept.includes(a) ? n : n * (typeof d === 'number' ? d : ROW_TERMS)), 1);
  const last = domain[kept[kept.length - 1]];
  if (typeof last !== 'number') return { by: 'columns', domain, rowAxes: kept, tile: 1 };
  let tile = COLUMN_TILE;
  while (tile < MAX_COLUMN_TILE && tile * terms < ROW_TERMS) tile *= 2;
  while (tile > 1 && last % tile !== 0) tile /= 2;
  // Too few terms per row even so (narrow kept dimensions, a short reduction): the kernel is too small to spread;
  // idle threads and barriers would cost more than the rows gain. It runs as one row.
  if (tile * terms < ROW_TERMS) return leading(writes, domain, 0, 1);
  return { by: 'columns', domain, rowAxes: kept, tile };
}

function outputTile(domain: Shape, reducingPrologue: boolean, maxRows?: number): number {
  const n = domain[domain.length - 1];
  if (typeof n !== 'number') return 1;
  let t = OUTPUT_TILE;
  while (n % t !== 0) t /= 2;
  // Narrow outputs get more rows (up to maxRows where given), unless every row would redo a normalisation of the
  // input; a row that does redo it gets more outputs, to spread that work over more weights.
  const enough = reducingPrologue ? ENOUGH_ROWS / 2 : ENOUGH_ROWS;
  const more = (t: number) => (maxRows === undefined ? n / t < enough : n / (t / 2) <= maxRows);
  while (!reducingPrologue && t > MIN_OUTPUT_TILE && n % (t / 2) === 0 && more(t)) t /= 2;
  while (t < MAX_OUTPUT_TILE && n % (2 * t) === 0 && n / (2 * t) >= enough) t *= 2;
  return t;
}

/** A tile halved while its outputs' weights take more than `bytes` (one output at least). */
function capByWeights(tile: number, perOutput: number, bytes: number): number {
  while (tile > 1 && tile * perOutput > bytes) tile /= 2;
  return tile;
}

/** Bytes of the weights (each matmul's right operand) one output of a contraction reads: its depth in each. */
function weightBytesPerOutput(matmuls: readonly Node[]): number {
  return matmuls.reduce((n, m) => {
    const shape = m.inputs[0].type.shape;
    const depth = shape[shape.length - 1];
    return n + (typeof depth === 'number' ? depth : Infinity) * dtypeBytes[m.inputs[1].type.dtype];
  }, 0);
}

/** Whether a matmul's input row is computed in the kernel through a reduction (an RMSNorm): costly to redo per row. */
function reducingPrologue(k: Kernel): boolean {
  const inside = new Set(k.nodes.map((n) => n.output));
  const seen = new Set<Value>();
  const reduces = (v: Value): boolean => {
    if (!inside.has(v) || seen.has(v)) return false;
    seen.add(v);
    const n = v.producer!;
    return [...reductionOps, Op.Matmul].includes(n.op) || n.inputs.some(reduces);
  };
  return k.nodes.some((n) => n.op === Op.Matmul && reduces(n.inputs[0]));
}
