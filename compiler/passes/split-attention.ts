// split-attention: attention over a long KV cache is computed in chunks of the cache, so a GPU runs a workgroup
// per (head, chunk) instead of one per head (flash-decoding). Each chunk keeps its own softmax statistics, and the
// chunks are combined exactly:
//   per chunk c:  m_c = max s_c,  z_c = Σ e^(s_c − m_c),  o_c = Σ e^(s_c − m_c) v_c
//   then:         M = max_c m_c,  out = Σ_c o_c e^(m_c − M) / Σ_c z_c e^(m_c − M)
// It rewrites the decomposed softmax·V that `decompose` leaves (max, sub, exp, sum, div, matmul).

import { Graph, Node, usersOf, Value } from '../../ir/graph.ts';
import { Op } from '../../ir/ops.ts';
import { keepNode, rewriteGraph } from './rewrite.ts';

/** Caches at least this long are split (shorter ones fit one workgroup's memory and gain nothing). */
export const SPLIT_ATTENTION_AT = 1024;
/** Positions per chunk, at most. */
const CHUNK = 256;

interface SoftmaxV {
  readonly scores: Value;
  readonly probsV: Node;
}

/** probs·v where probs = exp(s − max s) / Σ exp(s − max s) over the last axis of s, as decompose writes softmax. */
function matchSoftmaxV(n: Node): SoftmaxV | undefined {
  if (n.op !== Op.Matmul) return undefined;
  const div = n.inputs[0].producer;
  if (div?.op !== Op.Div) return undefined;
  const [e, z] = div.inputs.map((v) => v.producer);
  if (e?.op !== Op.Exp || z?.op !== Op.Sum || z.inputs[0] !== div.inputs[0]) return undefined;
  const sub = e.inputs[0].producer;
  if (sub?.op !== Op.Sub) return undefined;
  const [s, m] = sub.inputs;
  const max = m.producer;
  if (max?.op !== Op.Max || max.inputs[0] !== s) return undefined;
  const last = s.type.shape.length - 1;
  const overLast = (r: Node) => (r.attrs.axes as number[]).join() === String(last) && r.attrs.keepdims === true;
  return overLast(max) && overLast(z) ? { scores: s, probsV: n } : undefined;
}

function chunking(length: number): number | undefined {
  for (let w = CHUNK; w >= 32; w--) if (length % w === 0) return length / w;
  return undefined;
}

export function splitAttention(g: Graph, from = SPLIT_ATTENTION_AT): Graph {
  const users = usersOf(g);
  const targets = new Map<Node, SoftmaxV>();
  for (const n of g.nodes) {
    const m = matchSoftmaxV(n);
    const shape = m?.scores.type.shape;
    const t = shape?.[shape.length - 1];
    // One query row (decode) only: with many (a prompt) there are workgroups enough without chunks, and the chunks'
    // partial results are S times as many (measured on the H200: a 2,048-token prompt took 2.5 s split, 0.25 s not).
    const oneQuery = shape?.[shape.length - 2] === 1;
    // Only where the softmax's pieces feed nothing else (they disappear from the graph).
    if (m && oneQuery && typeof t === 'number' && t >= from && chunking(t) && users.get(n.inputs[0])?.length === 1) targets.set(n, m);
  }
  if (targets.size === 0) return g;
  return rewriteGraph(g, (n, ins, out) => {
    const m = targets.get(n);
    if (!m) return keepNode(n, ins, out);
    const at = n.loc;
    const emit = (op: Op, inputs: Value[], attrs = {}) => out.emit(op, inputs, attrs, at);
    // The rewrite reads the new graph's values: the scores (mapped from the old graph) and v.
    const scores = ins[0].producer!.inputs[0].producer!.inputs[0].producer!.inputs[0];
    const v = ins[1];
    const shape = scores.type.shape;
    const b = shape.length - 2; // batch dims, then S, T
    const t = shape[b + 1] as number;
    const chunks = chunking(t)!;
    const width = t / chunks;
    // s as [...batch, C, S, W]: each chunk's scores contiguous per query row.
    const perm = [...Array(b).keys(), b + 1, b, b + 2];
    const s = emit(Op.Permute, [emit(Op.Reshape, [scores], { shape: [...shape.slice(0, b), shape[b], chunks, width] })], { perm });
    const last = b + 2;
    // A chunk wholly past the causal bound has max −inf; a finite floor keeps its exp(s − m) at 0, not NaN.
    const floor = emit(Op.Const, [], { value: -3.4028234663852886e38, dtype: s.type.dtype });
    const mc = emit(Op.Maximum, [emit(Op.Max, [s], { axes: [last], keepdims: true }), floor]);
    const ec = emit(Op.Exp, [emit(Op.Sub, [s, mc])]);
    const zc = emit(Op.Sum, [ec], { axes: [last], keepdims: true });
    const vShape = v.type.shape;
    const vb = vShape.length - 2;
    const vc = emit(Op.Reshape, [v], { shape: [...vShape.slice(0, vb), chunks, width, vShape[vb + 1]] });
    const oc = emit(Op.Matmul, [ec, vc]);
    const big = emit(Op.Max, [mc], { axes: [b], keepdims: true });
    const w = emit(Op.Exp, [emit(Op.Sub, [mc, big])]);
    const z = emit(Op.Sum, [emit(Op.Mul, [zc, w])], { axes: [b], keepdims: false });
    const o = emit(Op.Sum, [emit(Op.Mul, [oc, w])], { axes: [b], keepdims: false });
    return emit(Op.Div, [o, z]);
  });
}
