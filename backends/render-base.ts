// What the JavaScript, WGSL and CUDA renderers share: printing kernel-IR expressions as straight-line code with one
// temporary per operation (so no operand is evaluated twice), serial reductions as loops, and selects as if/else
// (so a load on the side not taken is never executed). A dialect is a table of how each target spells things;
// the targets spread the C-like table and override what differs.

import { BinaryOp, KBuffer, KExpr, ReduceOp, Scalar, UnaryOp } from './kernel-ir.ts';

export interface Dialect {
  readonly type: Record<Scalar, string>;
  /** `const x = e;` */
  readonly constDecl: (name: string, t: Scalar, value: string) => string;
  /** `let x = e;` (assigned later) */
  readonly varDecl: (name: string, t: Scalar, value: string) => string;
  readonly forLoop: (v: string, n: string) => string;
  readonly unary: Record<UnaryOp, (a: string) => string>;
  readonly binary: Record<BinaryOp, (a: string, b: string, t: Scalar) => string>;
  readonly literal: (value: number, t: Scalar) => string;
  /** `round`: also round to a 16-bit float (an explicit cast to f16 or bf16). */
  readonly cast: (a: string, from: Scalar, to: Scalar, round?: 'f16' | 'bf16') => string;
  /** An element of buffer `buf` (its binding index in the kernel), widened to the compute type. */
  readonly load: (buf: number, b: KBuffer, index: string) => string;
  readonly elem: (array: string, index: string) => string;
  readonly negInfinity: string;
}

/** The shared C-like base: what C, CUDA and (mostly) WGSL and JavaScript spell alike. */
export const cLike = {
  unary: {
    neg: (a: string) => `(-${a})`,
    abs: (a: string) => `abs(${a})`,
    exp: (a: string) => `exp(${a})`,
    log: (a: string) => `log(${a})`,
    sqrt: (a: string) => `sqrt(${a})`,
    rsqrt: (a: string) => `rsqrt(${a})`,
    recip: (a: string) => `(1.0 / ${a})`,
    sin: (a: string) => `sin(${a})`,
    cos: (a: string) => `cos(${a})`,
    tanh: (a: string) => `tanh(${a})`,
    sigmoid: (a: string) => `(1.0 / (1.0 + exp(-${a})))`,
    silu: (a: string) => `(${a} / (1.0 + exp(-${a})))`,
    floor: (a: string) => `floor(${a})`,
    not: (a: string) => `(!${a})`,
  } satisfies Record<UnaryOp, (a: string) => string>,
  binary: {
    add: (a: string, b: string) => `(${a} + ${b})`,
    sub: (a: string, b: string) => `(${a} - ${b})`,
    mul: (a: string, b: string) => `(${a} * ${b})`,
    div: (a: string, b: string) => `(${a} / ${b})`,
    pow: (a: string, b: string) => `pow(${a}, ${b})`,
    max: (a: string, b: string) => `max(${a}, ${b})`,
    min: (a: string, b: string) => `min(${a}, ${b})`,
    eq: (a: string, b: string) => `(${a} == ${b})`,
    ne: (a: string, b: string) => `(${a} != ${b})`,
    lt: (a: string, b: string) => `(${a} < ${b})`,
    le: (a: string, b: string) => `(${a} <= ${b})`,
    gt: (a: string, b: string) => `(${a} > ${b})`,
    ge: (a: string, b: string) => `(${a} >= ${b})`,
    and: (a: string, b: string) => `(${a} && ${b})`,
    or: (a: string, b: string) => `(${a} || ${b})`,
    idiv: (a: string, b: string) => `(${a} / ${b})`,
    imod: (a: string, b: string) => `(${a} % ${b})`,
    random: (a: string, b: string) => `tf_random(${a}, ${b})`,
  } satisfies Record<BinaryOp, (a: string, b: string, t: Scalar) => string>,
};

/** Prints expressions into lines of code, one temporary per operation. */
export class ExprPrinter {
  private n = 0;

  constructor(readonly d: Dialect, readonly buffers: readonly KBuffer[], readonly tempPrefix = 't') {}

  fresh(): string {
    return `${this.tempPrefix}${this.n++}`;
  }

  /**
   * Appends the code computing `e` to `out` (at `indent`) and returns the name or literal holding it. Equal
   * subexpressions are computed once (`memo`: what the enclosing code already holds); code inside a branch or a
   * loop may reuse what is outside it, never the other way round.
   */
  expr(e: KExpr, out: string[], indent: string, memo = new Map<string, string>()): string {
    const d = this.d;
    const key = exprKey(e);
    const hit = memo.get(key);
    if (hit) return hit;
    const sub = (x: KExpr) => this.expr(x, out, indent, memo);
    const bind = (code: string, t: Scalar) => {
      const name = this.fresh();
      out.push(`${indent}${d.constDecl(name, t, code)}`);
      return name;
    };
    let result: string;
    switch (e.k) {
      case 'const': return d.literal(e.value, e.t);
      case 'var': return e.name;
      case 'load': result = bind(d.load(e.buf, this.buffers[e.buf], sub(e.index)), e.t); break;
      case 'elem': result = bind(d.elem(e.array, sub(e.index)), e.t); break;
      case 'unary': result = bind(d.unary[e.op](sub(e.a)), e.t); break;
      case 'binary': {
        const a = sub(e.a);
        const b = sub(e.b);
        result = bind(d.binary[e.op](a, b, e.a.t), e.t);
        break;
      }
      case 'cast': result = bind(d.cast(sub(e.a), e.a.t, e.t, e.round), e.t); break;
      case 'select': {
        const cond = sub(e.cond);
        const name = this.fresh();
        out.push(`${indent}${d.varDecl(name, e.t, d.literal(0, e.t))}`);
        out.push(`${indent}if (${cond}) {`);
        out.push(`${indent}  ${name} = ${this.expr(e.a, out, indent + '  ', new Map(memo))};`);
        out.push(`${indent}} else {`);
        out.push(`${indent}  ${name} = ${this.expr(e.b, out, indent + '  ', new Map(memo))};`);
        out.push(`${indent}}`);
        result = name;
        break;
      }
      case 'reduce': {
        const acc = this.fresh();
        const n = sub(e.n);
        this.reduceInto(acc, e.op, e.v, n, e.body, e.t, out, indent, memo);
        result = acc;
        break;
      }
      default: return e satisfies never;
    }
    memo.set(key, result);
    return result;
  }

  /** Declares `acc` and loops `v` over [0, n), folding `body` into it with `op` (argmax keeps the first max). */
  reduceInto(acc: string, op: ReduceOp, v: string, n: string, body: KExpr, t: Scalar, out: string[], indent: string,
    outer = new Map<string, string>()): void {
    const d = this.d;
    const inner = indent + '  ';
    if (op === 'argmax') {
      const best = `${acc}_best`;
      out.push(`${indent}${d.varDecl(best, 'f32', d.negInfinity)}`);
      out.push(`${indent}${d.varDecl(acc, 'i32', d.literal(0, 'i32'))}`);
      out.push(`${indent}${d.forLoop(v, n)}`);
      const x = this.expr(body, out, inner, new Map(outer));
      out.push(`${inner}if (${x} > ${best}) { ${best} = ${x}; ${acc} = ${v}; }`);
      out.push(`${indent}}`);
      return;
    }
    out.push(`${indent}${d.varDecl(acc, t, op === 'max' ? d.negInfinity : d.literal(0, t))}`);
    out.push(`${indent}${d.forLoop(v, n)}`);
    const x = this.expr(body, out, inner, new Map(outer));
    out.push(`${inner}${acc} = ${op === 'max' ? d.binary.max(acc, x, t) : d.binary.add(acc, x, t)};`);
    out.push(`${indent}}`);
  }
}

const keys = new WeakMap<KExpr, string>();

/** A structural key of an expression, built once per node object. */
function exprKey(e: KExpr): string {
  let k = keys.get(e);
  if (k !== undefined) return k;
  switch (e.k) {
    case 'const': k = `c${e.t}:${e.value}`; break;
    case 'var': k = `v:${e.name}`; break;
    case 'load': k = `ld${e.buf}(${exprKey(e.index)})`; break;
    case 'elem': k = `el:${e.array}(${exprKey(e.index)})`; break;
    case 'unary': k = `${e.op}(${exprKey(e.a)})`; break;
    case 'binary': k = `${e.op}:${e.t}(${exprKey(e.a)},${exprKey(e.b)})`; break;
    case 'cast': k = `cast:${e.t}:${e.round ?? ''}(${exprKey(e.a)})`; break;
    case 'select': k = `sel(${exprKey(e.cond)},${exprKey(e.a)},${exprKey(e.b)})`; break;
    case 'reduce': k = `red:${e.op}:${e.v}:${exprKey(e.n)}(${exprKey(e.body)})`; break;
    default: return e satisfies never;
  }
  keys.set(e, k);
  return k;
}
