// The JavaScript renderer: a scheduled kernel → the source of a JS function that runs it serially, row after row
// (every statement's mapping is 'serial' on the CPU).
// Buffers arrive as typed arrays (floats of every width held as f32, as the host keeps them).

import { cpuCaps } from '../device-caps.ts';
import { KernelIR, KStmt, ROW, Scalar } from '../kernel-ir.ts';
import { cLike, Dialect, ExprPrinter } from '../render-base.ts';
import { scheduleKernel, ScheduledKernel } from '../schedule.ts';

const math = (f: string) => (a: string) => `Math.${f}(${a})`;

/**
 * JavaScript computes in float64, the kernel IR in f32 and i32: every temporary is rounded to its type, so that a
 * value recomputed in one kernel has the bits it has when another kernel loads it from memory (where a compare
 * or cast would otherwise tell 0.99999999 from 1), and i32 arithmetic wraps as it does on a GPU. Accumulators
 * stay float64, as the reference accumulates.
 */
const roundTo: Record<Scalar, (value: string) => string> = {
  f32: (v) => `Math.fround(${v})`,
  i32: (v) => `(${v} | 0)`,
  bool: (v) => v,
};

export const jsDialect: Dialect = {
  type: { f32: 'number', i32: 'number', bool: 'boolean' },
  // Names, literals and loads (a typed array holds its type already) need no rounding.
  constDecl: (name, t, value) => `const ${name} = ${/^[\w.]+$|^\(-?[\d.e+-]+\)$|^b\d+\[\w+\]$/.test(value) ? value : roundTo[t](value)};`,
  varDecl: (name, _t, value) => `let ${name} = ${value};`,
  forLoop: (v, n) => `for (let ${v} = 0; ${v} < ${n}; ${v}++) {`,
  unary: {
    ...cLike.unary,
    abs: math('abs'), exp: math('exp'), log: math('log'), sqrt: math('sqrt'), sin: math('sin'), cos: math('cos'),
    tanh: math('tanh'), floor: math('floor'),
    rsqrt: (a) => `(1 / Math.sqrt(${a}))`,
    sigmoid: (a) => `(1 / (1 + Math.exp(-${a})))`,
    silu: (a) => `(${a} / (1 + Math.exp(-${a})))`,
    not: (a) => `(!${a})`,
  },
  binary: {
    ...cLike.binary,
    pow: (a, b) => `Math.pow(${a}, ${b})`,
    max: (a, b) => `Math.max(${a}, ${b})`,
    min: (a, b) => `Math.min(${a}, ${b})`,
    eq: (a, b) => `(${a} === ${b})`,
    ne: (a, b) => `(${a} !== ${b})`,
    div: (a, b, t) => (t === 'i32' ? `Math.trunc(${a} / ${b})` : `(${a} / ${b})`),
    idiv: (a, b) => `Math.trunc(${a} / ${b})`,
    random: (a, b) => `round.random(${a}, ${b})`,
  },
  literal: (value, t) => {
    if (t === 'bool') return value ? 'true' : 'false';
    if (Number.isNaN(value)) return 'NaN';
    if (!Number.isFinite(value)) return value > 0 ? 'Infinity' : '-Infinity';
    const s = String(value);
    return value < 0 ? `(${s})` : s;
  },
  cast: (a, from, to, round16) => {
    if (to === 'bool') return `(${a} != 0)`;
    const x = from === 'bool' ? `(+${a})` : to === 'i32' && from === 'f32' ? `Math.trunc(${a})` : a;
    return round16 ? `round.${round16}(${x})` : x;
  },
  load: (buf, b, index) => (b.dtype === 'bool' ? `(b${buf}[${index}] !== 0)` : `b${buf}[${index}]`),
  elem: (array, index) => `${array}[${index}]`,
  negInfinity: '-Infinity',
};

/** What a rendered kernel calls to round a value stored into a 16-bit float buffer (held as f32 on the host). */
export interface JsKernelRuntime {
  readonly bf16: (x: number) => number;
  readonly f16: (x: number) => number;
  /** ir/random.ts's randomUniform. */
  readonly random: (key: number, counter: number) => number;
}

/**
 * The body of `function (b, sizes, round)`: `b` holds the kernel's buffers in order, `sizes` the symbolic sizes,
 * `round` a JsKernelRuntime. Schedules the kernel for the CPU (cpuCaps) and prints it: the one-step form.
 */
export function renderJs(k: KernelIR): string {
  return printJs(scheduleKernel(k, cpuCaps));
}

/** A kernel scheduled for the CPU as a JS function body: one thread runs its grid's rows one after another. */
export function printJs(sk: ScheduledKernel): string {
  const k = sk.kernel;
  if (sk.grid.overflow !== 'serial') throw new Error(`printJs: kernel ${k.name} is scheduled for ${sk.device.name}`);
  const p = new ExprPrinter(jsDialect, k.buffers);
  const out: string[] = [];
  out.push(`// kernel ${k.name}: fuses`);
  for (const line of k.fused) out.push(`//   ${line}`);
  for (const s of k.sizes) out.push(`const ${s} = sizes.${s};`);
  k.buffers.forEach((_, i) => out.push(`const b${i} = b[${i}];`));
  for (const a of sk.arrays) out.push(`const ${a.name} = new Float64Array(${a.elements});`);
  const rows = p.expr(sk.grid.rows, out, '');
  out.push(`for (let ${ROW} = 0; ${ROW} < ${rows}; ${ROW}++) {`);
  for (const s of k.body) renderStmt(s, p, out, '  ');
  out.push('}');
  return out.join('\n');
}

function renderStmt(s: KStmt, p: ExprPrinter, out: string[], indent: string): void {
  const inner = indent + '  ';
  switch (s.k) {
    case 'let':
      out.push(`${indent}const ${s.name} = ${p.expr(s.value, out, indent)};`);
      break;
    case 'coop': {
      const t: Scalar = s.op === 'argmax' ? 'i32' : s.body.t;
      p.reduceInto(s.name, s.op, s.v, p.expr(s.n, out, indent), s.body, t, out, indent);
      break;
    }
    case 'array':
      out.push(`${indent}for (let ${s.v} = 0; ${s.v} < ${s.n}; ${s.v}++) {`);
      out.push(`${inner}${s.name}[${s.v}] = ${p.expr(s.value, out, inner)};`);
      out.push(`${indent}}`);
      break;
    case 'store': {
      out.push(`${indent}for (let ${s.v} = 0; ${s.v} < ${p.expr(s.n, out, indent)}; ${s.v}++) {`);
      const value = p.expr(s.value, out, inner);
      // A Float32Array rounds to f32 on store; a 16-bit float must be rounded to its own width, as the host keeps
      // it (kernels compute in f32 and round where a value reaches memory).
      const dtype = p.buffers[s.buf].dtype;
      const stored = dtype === 'bf16' || dtype === 'f16' ? `round.${dtype}(${value})` : value;
      out.push(`${inner}b${s.buf}[${p.expr(s.index, out, inner)}] = ${stored};`);
      out.push(`${indent}}`);
      break;
    }
    default: s satisfies never;
  }
}
