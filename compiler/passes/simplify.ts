// simplify: local algebraic rewrites, each a rule with its identity. Rules only fire where the result has exactly
// the node's type, so broadcasting and dtypes never change, and only where values are bit-for-bit the same.

import { Graph, Node, Value } from '../../ir/graph.ts';
import { isFloat } from '../../ir/dtype.ts';
import { Op } from '../../ir/ops.ts';
import { sameShape, sameType } from '../../ir/shape.ts';
import { constValue, Emitter, keepNode, rewriteGraph } from './rewrite.ts';

type Rule = (n: Node, ins: Value[], out: Emitter) => Value | undefined;

/** The operand itself, if it can stand for the node's result unchanged. */
const same = (n: Node, v: Value) => (sameType(v.type, n.output.type) ? v : undefined);
const producer = (v: Value, op: Op) => (v.producer?.op === op ? v.producer : undefined);

/** Each rule with the ops it rewrites (it is asked about nodes of those ops only). */
const rules: Record<string, { readonly ops: readonly Op[]; readonly rule: Rule }> = {
  // x * 1 = x, 1 * x = x
  'mul-one': { ops: [Op.Mul], rule: (n, [a, b]) => (constValue(b) === 1 ? same(n, a) : constValue(a) === 1 ? same(n, b) : undefined) },
  // x + 0 = x, 0 + x = x, x - 0 = x. For floats only x + (-0) = x exactly: -0 + 0 is +0 (x - 0 is exact).
  'add-zero': {
    ops: [Op.Add, Op.Sub],
    rule: (n, [a, b]) => {
      const zero = (v: Value) => constValue(v) === 0 && (!isFloat(v.type.dtype) || Object.is(constValue(v), -0));
      if (n.op === Op.Add) return zero(b) ? same(n, a) : zero(a) ? same(n, b) : undefined;
      return constValue(b) === 0 && !Object.is(constValue(b), -0) ? same(n, a) : undefined;
    },
  },
  // x / 1 = x
  'div-one': { ops: [Op.Div], rule: (n, [a, b]) => (constValue(b) === 1 ? same(n, a) : undefined) },
  // pow(x, 2) = x * x (exact, and no pow in the kernel); not where the 2 broadcasts x to a larger shape
  'square': { ops: [Op.Pow], rule: (n, [a, b], out) => (constValue(b) === 2 && same(n, a) ? out.emit(Op.Mul, [a, a], {}, n.loc) : undefined) },
  // neg(neg(x)) = x, not(not(x)) = x
  'double-negation': {
    ops: [Op.Neg, Op.Not],
    rule: (n, [a]) => {
      const inner = producer(a, n.op as Op);
      return inner ? same(n, inner.inputs[0]) : undefined;
    },
  },
  // reshape(x) = x when the shape is already x's; reshape(reshape(x)) = reshape(x)
  'reshape-reshape': {
    ops: [Op.Reshape],
    rule: (n, [a], out) => {
      if (sameShape(a.type.shape, n.output.type.shape)) return a;
      const inner = producer(a, Op.Reshape);
      if (!inner) return undefined;
      // Back to the inner operand's own shape: no reshape at all.
      return same(n, inner.inputs[0]) ?? out.emit(Op.Reshape, [inner.inputs[0]], n.attrs, n.loc);
    },
  },
  // permute(x, identity) = x; permute(permute(x, p), q) = permute(x, p∘q)
  'permute-permute': {
    ops: [Op.Permute],
    rule: (n, [a], out) => {
      const q = n.attrs.perm as number[];
      if (q.every((p, i) => p === i)) return a;
      const inner = producer(a, Op.Permute);
      if (!inner) return undefined;
      const p = inner.attrs.perm as number[];
      const perm = q.map((i) => p[i]);
      // The two undo each other: no permute at all.
      return perm.every((d, i) => d === i) ? inner.inputs[0] : out.emit(Op.Permute, [inner.inputs[0]], { perm }, n.loc);
    },
  },
  // expand(x) = x when x already has the shape
  'expand-same': { ops: [Op.Expand], rule: (n, [a]) => (sameShape(a.type.shape, n.output.type.shape) ? a : undefined) },
  // cast(x, dtype(x)) = x
  'cast-same': { ops: [Op.Cast], rule: (n, [a]) => (a.type.dtype === n.attrs.dtype ? a : undefined) },
};

/** The rules' names (the tests have a golden case for each). */
export const simplifyRuleNames: readonly string[] = Object.keys(rules);

/** The rules for each op, in the order they are tried. */
const rulesByOp = new Map<string, Rule[]>();
for (const { ops, rule } of Object.values(rules)) for (const op of ops) rulesByOp.set(op, [...(rulesByOp.get(op) ?? []), rule]);

export function simplify(g: Graph): Graph {
  return rewriteGraph(g, (n, ins, out) => {
    for (const rule of rulesByOp.get(n.op) ?? []) {
      const v = rule(n, ins, out);
      if (v) return v;
    }
    return keepNode(n, ins, out);
  });
}
