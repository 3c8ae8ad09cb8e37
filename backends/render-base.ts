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
  /** `t`: the operand's (and result's) type, where a target spells i32 and f32 differently. */
  readonly unary: Record<UnaryOp, (a: string, t: Scalar) => string>;
  readonly binary: Record<BinaryOp, (a: string, b: string, t: Scalar) => string>;
  readonly literal: (value: number, t: Scalar) => string;
  /**
   * `round`: also round to a 16-bit float (an explicit cast to f16 or bf16). `u32`: the i32 side holds a u32's
   * bits (a float from a u32, or a float to u32, which saturates at [0, 2³² − 1]).
   */
  readonly cast: (a: string, from: Scalar, to: Scalar, round?: 'f16' | 'bf16', u32?: boolean) => string;
  /** An element of buffer `buf` (its binding index in the kernel), widened to the compute type. */
  readonly load: (buf: number, b: KBuffer, index: string) => string;
  readonly elem: (array: string, index: string) => string;
  /** The identity of max over `t`: −∞, or the smallest i32. */
  readonly lowest: (t: Scalar) => string;
  /**
   * Whether `x` replaces `best` in an argmax that keeps the first maximum: a larger value, or the first NaN (NaN
   * counts as the largest, as in PyTorch). Both are names or literals of type `t`.
   */
  readonly argmaxTakes: (x: string, best: string, t: Scalar) => string;
  /**
   * Where the target computes an f32 sine and cosine of one argument together (one range reduction): the
   * statement declaring `s` and `c` as them. The rotary embedding needs both of every angle.
   */
  readonly sinCos?: (a: string, s: string, c: string) => string;
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
    // GPUs clamp an index into [0, b) (no kernel can stop with an error there)
    index: (a: string, b: string) => `clamp(${a}, 0, ${b} - 1)`,
  } satisfies Record<BinaryOp, (a: string, b: string, t: Scalar) => string>,
};

/**
 * The name a kernel gives a symbolic size (`S` → `sz_S`): sizes are named by users, so they live apart from every
 * name the printers generate (t0, row, b1, Math, sizes...), and any identifier is safe.
 */
export const sizeName = (symbol: string) => `sz_${symbol}`;

/** Prints expressions into lines of code, one temporary per operation. */
export class ExprPrinter {
  private n = 0;
  private readonly keys = exprKeys();
  /** The kernel's symbolic sizes: printed by sizeName wherever an expression reads one. */
  sizes: ReadonlySet<string> = new Set();

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
    // No closures here: this runs for every node of every expression, and tsx names each closure it creates.
    if (e.k === 'const') return this.d.literal(e.value, e.t);
    if (e.k === 'var') return this.sizes.has(e.name) ? sizeName(e.name) : e.name;
    const key = this.keys.key(e);
    const hit = memo.get(key);
    if (hit) return hit;
    const d = this.d;
    let result: string;
    switch (e.k) {
      case 'load': result = this.bindTemp(d.load(e.buf, this.buffers[e.buf], this.expr(e.index, out, indent, memo)), e.t, out, indent); break;
      case 'elem': result = this.bindTemp(d.elem(e.array, this.expr(e.index, out, indent, memo)), e.t, out, indent); break;
      case 'unary': {
        const a = this.expr(e.a, out, indent, memo);
        if (d.sinCos && e.t === 'f32' && (e.op === 'sin' || e.op === 'cos')) {
          // Both at once; the other is there for a later read of it in this scope.
          const [s, c] = [this.fresh(), this.fresh()];
          out.push(`${indent}${d.sinCos(a, s, c)}`);
          memo.set(this.keys.key({ k: 'unary', op: 'sin', a: e.a, t: 'f32' }), s);
          memo.set(this.keys.key({ k: 'unary', op: 'cos', a: e.a, t: 'f32' }), c);
          return e.op === 'sin' ? s : c;
        }
        result = this.bindTemp(d.unary[e.op](a, e.t), e.t, out, indent);
        break;
      }
      case 'binary': {
        const a = this.expr(e.a, out, indent, memo);
        const b = this.expr(e.b, out, indent, memo);
        result = this.bindTemp(d.binary[e.op](a, b, e.a.t), e.t, out, indent);
        break;
      }
      case 'cast': result = this.bindTemp(d.cast(this.expr(e.a, out, indent, memo), e.a.t, e.t, e.round, e.u32), e.t, out, indent); break;
      case 'select': {
        const cond = this.expr(e.cond, out, indent, memo);
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
        const n = this.expr(e.n, out, indent, memo);
        this.reduceInto(acc, e.op, e.v, n, e.body, e.t, out, indent, memo);
        result = acc;
        break;
      }
      default: return e satisfies never;
    }
    memo.set(key, result);
    return result;
  }

  /** Declares a fresh temporary holding `code` and returns its name. */
  private bindTemp(code: string, t: Scalar, out: string[], indent: string): string {
    const name = this.fresh();
    out.push(`${indent}${this.d.constDecl(name, t, code)}`);
    return name;
  }

  /** Declares `acc` and loops `v` over [0, n), folding `body` into it with `op` (argmax keeps the first max). */
  reduceInto(acc: string, op: ReduceOp, v: string, n: string, body: KExpr, t: Scalar, out: string[], indent: string,
    outer = new Map<string, string>()): void {
    const d = this.d;
    const inner = indent + '  ';
    if (op === 'argmax') {
      const best = `${acc}_best`;
      out.push(`${indent}${d.varDecl(best, body.t, d.lowest(body.t))}`);
      out.push(`${indent}${d.varDecl(acc, 'i32', d.literal(0, 'i32'))}`);
      out.push(`${indent}${d.forLoop(v, n)}`);
      const x = this.expr(body, out, inner, new Map(outer));
      out.push(`${inner}if (${d.argmaxTakes(x, best, body.t)}) { ${best} = ${x}; ${acc} = ${v}; }`);
      out.push(`${indent}}`);
      return;
    }
    out.push(`${indent}${d.varDecl(acc, t, op === 'max' ? d.lowest(t) : d.literal(0, t))}`);
    out.push(`${indent}${d.forLoop(v, n)}`);
    const x = this.expr(body, out, inner, new Map(outer));
    out.push(`${inner}${acc} = ${op === 'max' ? d.binary.max(acc, x, t) : d.binary.add(acc, x, t)};`);
    out.push(`${indent}}`);
  }
}

/**
 * Structural keys of expressions (equal keys: equal expressions), each built once per node object. A subexpression
 * appears in its parent's key by a number standing for its own key: keys that nest their subexpressions' text grow
 * with the square of an expression's depth.
 */
class ExprKeys {
  private readonly keys = new WeakMap<KExpr, string>();
  private readonly ids = new Map<string, number>();

  get size(): number { return this.ids.size; }

  key(e: KExpr): string {
    let k = this.keys.get(e);
    if (k !== undefined) return k;
    switch (e.k) {
      case 'const': k = `c${e.t}:${e.value}`; break;
      case 'var': k = `v:${e.name}`; break;
      case 'load': k = `ld${e.buf}(#${this.id(e.index)})`; break;
      case 'elem': k = `el:${e.array}(#${this.id(e.index)})`; break;
      case 'unary': k = `${e.op}(#${this.id(e.a)})`; break;
      case 'binary': k = `${e.op}:${e.t}(#${this.id(e.a)},#${this.id(e.b)})`; break;
      case 'cast': k = `cast:${e.t}:${e.round ?? ''}${e.u32 ? ':u32' : ''}(#${this.id(e.a)})`; break;
      case 'select': k = `sel(#${this.id(e.cond)},#${this.id(e.a)},#${this.id(e.b)})`; break;
      case 'reduce': k = `red:${e.op}:${e.v}:#${this.id(e.n)}(#${this.id(e.body)})`; break;
      default: return e satisfies never;
    }
    this.keys.set(e, k);
    return k;
  }

  private id(e: KExpr): number {
    const k = this.key(e);
    let i = this.ids.get(k);
    if (i === undefined) this.ids.set(k, (i = this.ids.size));
    return i;
  }
}

/**
 * The key table printers share (kernels alike but for their buffers share expression objects), replaced by a
 * fresh one when it grows large; a printer keeps the table it started with, so its keys stay comparable.
 */
let sharedKeys = new ExprKeys();
function exprKeys(): ExprKeys {
  if (sharedKeys.size > 1 << 20) sharedKeys = new ExprKeys();
  return sharedKeys;
}
