// Printing reductions in CUDA C as their plans say: shared by the whole block (a cooperative reduction of the
// kernel IR), by one warp (a reduction inside a value computed one element per warp) or run by one thread. Each
// thread folds a strided share of the range into a partial, then shuffles (and, for a block, shared memory)
// combine the partials; every taking part thread ends with the result. A planned vector loop reads each stream's
// elements 16 bytes at a time where the streams are aligned (checked at run time), a scalar loop does the rest;
// where every lane takes the same count of steps (VectorPlan.steps) it loops that count, no bound to check.

import { ivar, KExpr, ReduceOp, replaceLoads, Scalar } from '../kernel-ir.ts';
import { Dialect, ExprPrinter } from '../render-base.ts';
import { ReductionPlan, VectorPlan } from '../schedule.ts';
import { ld8Function } from './prelude.ts';

/** Who takes part in a reduction: their index, how many, and how partials combine. */
export interface Scope {
  readonly lane: string;
  readonly size: string;
  combine(op: ReduceOp, t: Scalar, part: string, best: string): string;
}

export const blockScope: Scope = {
  lane: 'tf_tid',
  size: 'TF_BLOCK',
  // t: for an argmax, the type of its values
  combine: (op, t, part, best) => (op === 'argmax' ? `tf_block_argmax(${best}, ${part}, ${t === 'f32' ? 'tf_rf' : 'tf_rv'}, tf_ri)`
    : `tf_block_${op}(${part}, ${t === 'f32' ? 'tf_rf' : 'tf_ri'})`),
};

/** One thread alone: its partial is the result. */
export const threadScope: Scope = {
  lane: '0',
  size: '1',
  combine: (_op, _t, part) => part,
};

export const warpScope: Scope = {
  lane: 'tf_lane',
  size: '32',
  combine: (op, _t, part, best) => (op === 'argmax' ? `tf_warp_argmax(${best}, ${part})` : `tf_warp_${op}(${part})`),
};

/** Declares `acc` (const) holding the reduction of `body` over `v` in [0, n) by every thread of `scope`. */
export function renderReduction(
  acc: string, op: ReduceOp, v: string, n: string, body: KExpr, t: Scalar,
  p: ExprPrinter, scope: Scope, plan: ReductionPlan, out: string[], indent: string,
): void {
  const d: Dialect = p.d;
  const inner = indent + '  ';
  const part = `${acc}_part`;
  const best = `${acc}_best`;
  if (op === 'argmax') {
    out.push(`${indent}${d.type[body.t]} ${best} = ${d.lowest(body.t)};`);
    out.push(`${indent}int ${part} = 0x7fffffff;`);
  } else {
    out.push(`${indent}${d.varDecl(part, t, op === 'sum' ? d.literal(0, t) : `tf_lowest((${d.type[t]})0)`)}`);
  }
  const fold = (x: string, at: string) => {
    if (op === 'sum') out.push(`${at}${part} += ${x};`);
    else if (op === 'max') out.push(`${at}${part} = tf_max(${part}, ${x});`);
    else out.push(`${at}if (${d.argmaxTakes(x, best, body.t)}) { ${best} = ${x}; ${part} = ${v}; }`);
  };
  const from = plan.vector ? vectorLoop(acc, v, n, body, p, scope, plan.vector, fold, out, indent) : undefined;
  if (plan.unroll > 1) out.push(`${indent}#pragma unroll ${plan.unroll}`);
  out.push(`${indent}for (int ${v} = ${from ? `${from} + ` : ''}${scope.lane}; ${v} < ${n}; ${v} += ${scope.size}) {`);
  fold(p.expr(body, out, inner), inner);
  out.push(`${indent}}`);
  out.push(`${indent}const ${d.type[t]} ${acc} = ${scope.combine(op, op === 'argmax' ? body.t : t, part, best)};`);
}

/** The vector part of a sum over its planned streams; returns the variable holding where the scalar loop starts. */
function vectorLoop(
  acc: string, v: string, n: string, body: KExpr, p: ExprPrinter, scope: Scope, vec: VectorPlan,
  fold: (x: string, at: string) => void, out: string[], indent: string,
): string {
  const w = vec.elements;
  if (w !== 8) throw new Error(`CUDA: the prelude's wide loads read 8 elements, not ${w}`);
  const [from, kv, j, nv] = [`${acc}_from`, `${acc}_kv`, `${acc}_j`, `${acc}_nv`];
  const l1 = indent + '  ';
  const l2 = l1 + '  ';
  const l3 = l2 + '  ';
  const l4 = l3 + '  ';
  out.push(`${indent}int ${from} = 0;`);
  out.push(`${indent}{`);
  const bases = vec.streams.map((c, i) => {
    const name = `${acc}_vb${i}`;
    out.push(`${l1}const int ${name} = ${p.expr(c.base, out, l1)};`);
    return name;
  });
  // Every stream's start must be aligned (the allocations are); the base is the same in every thread.
  out.push(`${l1}if (((${bases.join(' | ')}) & ${w - 1}) == 0) {`);
  out.push(`${l2}const int ${nv} = ${n} / ${w};`);
  out.push(`${l2}#pragma unroll ${vec.unroll}`);
  if (vec.steps) {
    const s = `${acc}_s`;
    out.push(`${l2}for (int ${s} = 0; ${s} < ${vec.steps}; ${s}++) {`);
    out.push(`${l3}const int ${kv} = ${scope.lane} + ${s} * ${scope.size};`);
  } else {
    out.push(`${l2}for (int ${kv} = ${scope.lane}; ${kv} < ${nv}; ${kv} += ${scope.size}) {`);
  }
  const replaced = new Map<string, KExpr>();
  vec.streams.forEach((c, i) => {
    const arr = `${acc}_w${i}`;
    out.push(`${l3}float ${arr}[${w}];`);
    if (c.load.k === 'elem') {
      out.push(`${l3}tf_ld8_smem(${c.load.array} + ${bases[i]} + ${kv} * ${w}, ${arr});`);
    } else {
      out.push(`${l3}${ld8Function(c.dtype)}${c.readOnce ? '_once' : ''}(b${c.load.buf} + ${bases[i]} + ${kv} * ${w}, ${arr});`);
    }
    replaced.set(c.key, { k: 'elem', array: arr, index: ivar(j), t: 'f32' });
  });
  out.push(`${l3}#pragma unroll`);
  out.push(`${l3}for (int ${j} = 0; ${j} < ${w}; ${j}++) {`);
  out.push(`${l4}const int ${v} = ${kv} * ${w} + ${j};`);
  out.push(`${l4}(void)${v};`);
  fold(p.expr(replaceLoads(body, replaced), out, l4), l4);
  out.push(`${l3}}`);
  out.push(`${l2}}`);
  out.push(`${l2}${from} = ${nv} * ${w};`);
  out.push(`${l1}}`);
  out.push(`${indent}}`);
  return from;
}
