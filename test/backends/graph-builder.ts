// Building random graphs value by value (test/backends/random-graph.ts picks the ops): inputs, params and states
// with random data, and helpers that keep values in a range where float32 and float64 evaluation agree to the
// differential test's tolerance, steered by a rough bound on each value's magnitude.

import { DType, isFloat } from '../../ir/dtype.ts';
import { Graph, Value } from '../../ir/graph.ts';
import { Attrs, Op } from '../../ir/ops.ts';
import { broadcastShapes } from '../../ir/shape.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { Rng } from './rng.ts';

/** A value of the graph and a rough bound on the magnitude of its elements. */
export interface Val { readonly v: Value; readonly mag: number }

export const shapeOf = (x: Val) => x.v.type.shape as readonly number[];
export const dtypeOf = (x: Val) => x.v.type.dtype;
export const numelOf = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
/** Largest magnitude an operand may have before a growing op (mul, exp, matmul) scales it down first. */
const BIG = 30;

/** Builds one random graph: its inputs, params and states with their data, and a pool of values to pick from. */
export class Builder {
  readonly g: Graph;
  readonly pool: Val[] = [];
  readonly inputs: Record<string, HostTensor> = {};
  readonly params = new Map<string, HostTensor>();
  readonly states = new Map<string, HostTensor>();
  private counter = 0;

  constructor(readonly rng: Rng, name: string) {
    this.g = new Graph(name);
  }

  shape(minRank = 1, maxRank = 3): number[] {
    return Array.from({ length: this.rng.int(minRank, maxRank) }, () => this.rng.int(1, 7));
  }

  private data(dtype: DType, n: number, scale: number): number[] {
    const r = this.rng;
    if (dtype === DType.Bool) return Array.from({ length: n }, () => r.int(0, 1));
    if (dtype === DType.I32) return Array.from({ length: n }, () => r.int(-4, 4));
    return Array.from({ length: n }, () => r.normal() * scale);
  }

  input(dtype: DType, shape: readonly number[], data?: number[]): Val {
    const name = `x${this.counter++}`;
    const v = this.g.addInput(name, { dtype, shape });
    this.inputs[name] = hostTensor(dtype, shape, data ?? this.data(dtype, numelOf(shape), 1));
    return this.keep({ v, mag: 4 });
  }

  param(dtype: DType, shape: readonly number[], scale = 0.5): Val {
    const name = `w${this.counter++}`;
    const v = this.g.addParam(name, { dtype, shape });
    this.params.set(name, hostTensor(dtype, shape, this.data(dtype, numelOf(shape), scale)));
    return { v, mag: 4 * scale };
  }

  state(shape: readonly number[]): Val {
    const name = `s${this.counter++}`;
    const v = this.g.addState(name, { dtype: DType.F32, shape });
    this.states.set(name, hostTensor(DType.F32, shape, this.data(DType.F32, numelOf(shape), 1)));
    return { v, mag: 4 };
  }

  private keep(x: Val): Val {
    this.pool.push(x);
    return x;
  }

  /** Adds a node; its value joins the pool later steps pick operands from unless `pooled` is false. */
  node(op: Op, ins: Val[], attrs: Attrs, mag: number, pooled = true): Val {
    const x = { v: this.g.addNode(op, ins.map((y) => y.v), attrs), mag };
    return pooled ? this.keep(x) : x;
  }

  konst(value: number, dtype: DType): Val {
    return { v: this.g.addNode(Op.Const, [], { value, dtype }), mag: Math.abs(value) };
  }

  // ---- helpers that keep values in range ----

  /**
   * x, scaled into [-1, 1] when it is a float larger than `limit`. (Not squashed with tanh: a saturated tanh is
   * exactly 1 in float32 but not in float64, and a cast or compare after it would tell the two apart.)
   */
  bounded(x: Val, limit = BIG): Val {
    if (!isFloat(dtypeOf(x)) || x.mag <= limit) return x;
    return this.node(Op.Mul, [x, this.konst(Math.fround(1 / x.mag), dtypeOf(x))], {}, 1);
  }

  /**
   * Floats moved off the values where a cast, floor or compare jumps. Kernels keep intermediates in float64 and
   * the reference rounds each to float32, so a value that is structurally an integer or a tie (the sum of a
   * softmax, a max against its input) can land on either side of the jump: 0.9999999 in one, 1 in the other.
   */
  offTies(x: Val): Val {
    if (!isFloat(dtypeOf(x))) return x;
    return this.node(Op.Add, [x, this.konst(0.3183099, dtypeOf(x))], {}, x.mag + 1);
  }

  /** |x| + 0.5 for floats, |x| + 1 for ints: safe for log, sqrt, division. */
  positive(x: Val): Val {
    const f = isFloat(dtypeOf(x));
    const one = this.konst(f ? 0.5 : 1, dtypeOf(x));
    return this.node(Op.Add, [this.node(Op.Abs, [x], {}, x.mag), one], {}, x.mag + 1);
  }

  /** An operand for a binary op with x: same dtype, a shape that broadcasts with x's. */
  partner(x: Val): Val {
    const r = this.rng;
    const s = shapeOf(x);
    const dtype = dtypeOf(x);
    const fits = this.pool.filter((y) => y !== x && dtypeOf(y) === dtype && typeof broadcastShapes(s, shapeOf(y)) !== 'string' &&
      shapeOf(y).length <= 4);
    const choice = r.weighted<string>([[fits.length ? 4 : 0, 'pool'], [4, 'input'], [dtype === DType.Bool ? 0 : 1.5, 'const']]);
    if (choice === 'pool') return r.pick(fits);
    if (choice === 'const') {
      const c = this.konst(dtype === DType.I32 ? r.int(-3, 3) : r.pick([-2, -1, -0.5, 0, -0, 0.5, 1, 2, 0.25, 3]), dtype);
      // Sometimes broadcast already (simplify sees through it; its rules must still keep the node's type).
      if (r.chance(0.2)) return { v: this.g.addNode(Op.Expand, [c.v], { shape: s.map((d) => (r.chance(0.5) ? d : 1)) }), mag: c.mag };
      if (r.chance(0.2)) return { v: this.g.addNode(Op.Reshape, [c.v], { shape: [1, 1].slice(0, r.int(1, 2)) }), mag: c.mag };
      return c;
    }
    // A new input of a broadcast-compatible shape: the same, a suffix, some dims pinned to 1, a scalar, or one more
    // leading dim.
    const form = r.pick(['same', 'suffix', 'ones', 'scalar', 'lead']);
    let shape: number[] = [...s];
    if (form === 'suffix') shape = s.slice(r.int(0, s.length));
    if (form === 'ones') shape = s.map((d) => (r.chance(0.5) ? 1 : d));
    if (form === 'scalar') shape = [];
    if (form === 'lead' && s.length < 4) shape = [r.int(1, 4), ...s];
    return this.input(dtype, shape);
  }

  pickOperand(): Val {
    // Mostly the newest values, so chains form; sometimes any value, so the graph branches and joins.
    const r = this.rng;
    const recent = this.pool.slice(-3);
    return r.chance(0.6) ? r.pick(recent) : r.pick(this.pool);
  }
}

/** One step of the generator: adds ops reading x, or returns undefined when it does not apply to x. */
export type Step = (b: Builder, x: Val) => Val | undefined;

/** x as a matrix (or batch of them) with a float dtype and a bounded magnitude. */
export function asMatrix(b: Builder, x: Val): Val | undefined {
  if (dtypeOf(x) !== DType.F32) return undefined;
  let m = b.bounded(x, 4);
  if (shapeOf(m).length === 1) m = b.node(Op.Reshape, [m], { shape: b.rng.chance(0.5) ? [1, shapeOf(m)[0]] : [shapeOf(m)[0], 1] }, m.mag);
  return shapeOf(m).length >= 2 ? m : undefined;
}
