// concat-projections: projections of one input by several weights (Q, K and V) become one matmul over weights
// concatenated once at load time, then slices. Projections whose results are combined elementwise (SiLU(gate)·up)
// are left for fusion to pair in one kernel, where the combination becomes the kernel's epilogue.

import { Graph, Node, usersOf, Value } from '../../ir/graph.ts';
import { isElementwise, Op } from '../../ir/ops.ts';
import { keepNode, rewriteGraph } from './rewrite.ts';

/** matmul(x, transpose(w)) with w a 2-D parameter: returns w. */
function projectionWeight(n: Node): Value | undefined {
  if (n.op !== Op.Matmul) return undefined;
  const t = n.inputs[1].producer;
  const w = t?.inputs[0];
  const transposed = t?.op === Op.Permute && (t.attrs.perm as number[]).join() === '1,0';
  return transposed && w?.kind === 'param' && w.type.shape.length === 2 ? w : undefined;
}

/** Whether some elementwise node within a few steps downstream reads two of these values. */
function combined(users: ReadonlyMap<Value, Node[]>, outs: Value[]): boolean {
  const reach = outs.map((v) => {
    const seen = new Set<Node>();
    let frontier = [v];
    for (let depth = 0; depth < 3; depth++) {
      const next: Value[] = [];
      for (const u of frontier) {
        for (const n of users.get(u) ?? []) {
          if (isElementwise(n.op) && !seen.has(n)) { seen.add(n); next.push(n.output); }
        }
      }
      frontier = next;
    }
    return seen;
  });
  return reach.some((a, i) => reach.some((b, j) => i < j && [...a].some((n) => b.has(n))));
}

/** "model.layers.0.self_attn.q_k_v_proj.weight" from the q, k and v names. */
export function concatName(names: string[]): string {
  let pre = 0;
  while (names.every((s) => s[pre] === names[0][pre]) && pre < names[0].length) pre++;
  let suf = 0;
  while (names.every((s) => s[s.length - 1 - suf] === names[0][names[0].length - 1 - suf]) && suf < names[0].length - pre) suf++;
  const mids = names.map((s) => s.slice(pre, s.length - suf));
  return names[0].slice(0, pre) + mids.join('_') + names[0].slice(names[0].length - suf);
}

export function concatProjections(g: Graph): Graph {
  // Projections by input and weight dtype, in node order (weights of different dtypes cannot be concatenated
  // into one tensor); only groups of two or more whose results stay separate and are not returned.
  const byInput = new Map<Value, Map<string, Node[]>>();
  // A projection returned as it is would come out as a slice that a kernel of its own copies out; left alone, it
  // is written by its matmul (and fusion pairs projections of equal shape in one kernel).
  const sinks = new Set<Value>([...g.outputs, ...g.stateUpdates.map((u) => u.value)]);
  for (const n of g.nodes) {
    const w = projectionWeight(n);
    if (!w || sinks.has(n.output)) continue;
    const byDtype = byInput.get(n.inputs[0]) ?? new Map<string, Node[]>();
    byDtype.set(w.type.dtype, [...(byDtype.get(w.type.dtype) ?? []), n]);
    byInput.set(n.inputs[0], byDtype);
  }
  const users = usersOf(g);
  const groups = [...byInput.values()].flatMap((byDtype) => [...byDtype.values()]).filter((ns) => ns.length >= 2 && !combined(users, ns.map((n) => n.output)));
  if (groups.length === 0) return g;
  const first = new Map<Node, Node[]>(groups.map((ns) => [ns[0], ns]));
  const member = new Set(groups.flat());
  const replaced = new Map<Node, Value>();

  return rewriteGraph(g, (n, ins, out) => {
    const group = first.get(n);
    if (group) {
      // The concatenated projection, emitted where the first of the group was.
      const weights = group.map((p) => projectionWeight(p)!);
      const params = weights.map((w) => out.graph.params.find((p) => p.name === w.name)!);
      const cat = out.graph.addDerivedParam(concatName(weights.map((w) => w.name!)), Op.Concat, params, { axis: 0 });
      const y = out.emit(Op.Matmul, [ins[0], out.emit(Op.Permute, [cat], { perm: [1, 0] }, n.loc)], {}, n.loc);
      const axis = y.type.shape.length - 1;
      let start = 0;
      for (const p of group) {
        const width = p.output.type.shape[axis] as number;
        replaced.set(p, out.emit(Op.Slice, [y], { axis, start, end: start + width }, p.loc));
        start += width;
      }
    }
    return member.has(n) ? replaced.get(n) : keepNode(n, ins, out);
  });
}
