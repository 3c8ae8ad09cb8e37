// split-reductions: an argmax over a long last axis with a single row (the next token over a 128k vocabulary)
// becomes a two-level search, so a GPU spreads it over many workgroups instead of one:
//   argmax(x) = c·C + a[c]  where  a[p] = argmax(x[p, :]), c = argmax_p max(x[p, :])  over x viewed as [P, C].
// The first chunk holding the maximum, then its first position, is the first position of the maximum overall. Each
// chunk's maximum and its position are found in one pass (fuse joins the two reductions of one input), and the last
// step reads one position of a, not the chunk again.

import { Graph } from '../../ir/graph.ts';
import { Op } from '../../ir/ops.ts';
import { numel } from '../../ir/shape.ts';
import { keepNode, rewriteGraph } from './rewrite.ts';

/** Reductions this long are split. */
const SPLIT_AT = 16384;

/** The divisor of n closest to its square root (chunks of about equal count and length). */
function squareDivisor(n: number): number {
  for (let d = Math.floor(Math.sqrt(n)); d > 1; d--) if (n % d === 0) return d;
  return 1;
}

export function splitReductions(g: Graph): Graph {
  return rewriteGraph(g, (n, ins, out) => {
    const [x] = ins;
    if (n.op !== Op.Argmax || !x.type.shape.every((d) => typeof d === 'number')) return keepNode(n, ins, out);
    const shape = x.type.shape;
    const len = shape[shape.length - 1] as number;
    const rows = numel(shape.slice(0, -1) as number[]);
    const chunks = squareDivisor(len);
    if (n.attrs.axis !== shape.length - 1 || rows !== 1 || len < SPLIT_AT || chunks === 1) return keepNode(n, ins, out);
    const width = len / chunks;
    const at = n.loc;
    const grid = out.emit(Op.Reshape, [x], { shape: [chunks, width] }, at);
    const chunkMax = out.emit(Op.Max, [grid], { axes: [1], keepdims: false }, at);
    const chunkArgmax = out.emit(Op.Argmax, [grid], { axis: 1, keepdims: false }, at);
    const chunk = out.emit(Op.Argmax, [chunkMax], { axis: 0, keepdims: true }, at);
    const within = out.emit(Op.Gather, [chunkArgmax, chunk], {}, at);
    const base = out.emit(Op.Mul, [chunk, out.emit(Op.Const, [], { value: width, dtype: chunk.type.dtype }, at)], {}, at);
    const index = out.emit(Op.Add, [base, within], {}, at);
    const same = index.type.shape.join() === n.output.type.shape.join();
    return same ? index : out.emit(Op.Reshape, [index], { shape: [...n.output.type.shape] }, at);
  });
}
