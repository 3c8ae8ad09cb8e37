// registerOp: a custom elementwise op defined in one place, as a built-in one is: its shape rule (in ir/ops.ts's
// registry), its reference semantics (ir/semantics.ts), and its kernel-IR lowering (backends/lower.ts).
// Fusion asks the registry for the op's group, so the op joins its neighbours' kernels like a built-in one, and
// every renderer (JavaScript, WGSL, CUDA) prints its lowering because it is plain kernel IR.

import { scalarOf, registerLowering } from '../backends/lower.ts';
import { BinaryOp, KExpr, Scalar, UnaryOp } from '../backends/kernel-ir.ts';
import { elementwise, registerEvalRule } from '../ir/semantics.ts';
import { DType } from '../ir/dtype.ts';
import { AttrKind, Attrs, AttrValue, OpError, OpGroup, registerOpDef } from '../ir/ops.ts';
import { broadcastShapes, TensorType } from '../ir/shape.ts';
import { callerLocation } from './source-location.ts';
import { scalar, Tensor, TensorLike } from './tensor.ts';
import { record, TraceError } from './trace.ts';

type ElementwiseGroup = OpGroup.Unary | OpGroup.Binary | OpGroup.Compare | OpGroup.Ternary | 'unary' | 'binary' | 'compare' | 'ternary';

/** Builds the kernel-IR expression of a custom op from its operands' expressions (computing in `t`). */
export interface KernelBuilder {
  /** The type the op's result computes in ('f32' for every float dtype). */
  readonly t: Scalar;
  const(value: number): KExpr;
  unary(op: UnaryOp, a: KExpr): KExpr;
  binary(op: BinaryOp, a: KExpr, b: KExpr): KExpr;
  add(a: KExpr, b: KExpr): KExpr;
  sub(a: KExpr, b: KExpr): KExpr;
  mul(a: KExpr, b: KExpr): KExpr;
  div(a: KExpr, b: KExpr): KExpr;
  select(cond: KExpr, a: KExpr, b: KExpr): KExpr;
}

export interface CustomOpSpec<N extends 1 | 2 | 3> {
  /** The name printed in the IR (an identifier; must not be taken). */
  readonly name: string;
  readonly arity: N;
  /** Default: unary, binary or ternary by arity. 'compare' ops give bool. */
  readonly group?: ElementwiseGroup;
  /** Attribute schema, as built-in ops declare theirs: `{ alpha: 'float' }`. */
  readonly attrs?: Readonly<Record<string, AttrKind>>;
  /** Result type; default: operands of one dtype broadcast together (bool for a compare op). */
  readonly infer?: (inputs: readonly TensorType[], attrs: Attrs) => TensorType;
  /** The value of one element from its operands' (float64 math; the result is rounded to its dtype). */
  readonly reference: (operands: number[], attrs: Attrs) => number;
  /** The kernel-IR expression of one element from its operands' expressions. */
  readonly lower: (operands: KExpr[], b: KernelBuilder, attrs: Attrs) => KExpr;
}

type Operands<N extends number> = N extends 1 ? [TensorLike] : N extends 2 ? [TensorLike, TensorLike] : [TensorLike, TensorLike, TensorLike];

/** Calls the op while tracing: its operands, then its attributes when it has any. */
export type CustomOp<N extends 1 | 2 | 3> = ((...args: [...Operands<N>, attrs?: Readonly<Record<string, AttrValue>>]) => Tensor) & {
  readonly opName: string;
};

const groups: Record<string, OpGroup> = { unary: OpGroup.Unary, binary: OpGroup.Binary, compare: OpGroup.Compare, ternary: OpGroup.Ternary };
const byArity: Record<number, OpGroup> = { 1: OpGroup.Unary, 2: OpGroup.Binary, 3: OpGroup.Ternary };

export function registerOp<N extends 1 | 2 | 3>(spec: CustomOpSpec<N>): CustomOp<N> {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(spec.name)) throw new Error(`registerOp: '${spec.name}' is not an identifier`);
  const group = spec.group === undefined ? byArity[spec.arity] : groups[spec.group] ?? (spec.group as OpGroup);
  const infer = spec.infer ?? ((inputs: readonly TensorType[]) => defaultInfer(spec.name, group, inputs));
  registerOpDef({ name: spec.name, group, arity: spec.arity, attrs: spec.attrs ?? {}, infer });
  registerEvalRule(spec.name, (ins, attrs, out) => elementwise(out, ins, (v) => spec.reference(v, attrs)));
  registerLowering(spec.name, (operands, idx, node) => spec.lower(operands(idx), builder(scalarOf(node.output.type.dtype)), node.attrs));
  const op = (...args: unknown[]): Tensor => {
    const last = args[args.length - 1];
    const attrs = args.length > spec.arity && last !== null && typeof last === 'object' && !(last instanceof Tensor)
      ? (args.pop() as Attrs) : {};
    if (args.length !== spec.arity) throw new TraceError(`${spec.name} takes ${spec.arity} operands, got ${args.length}`, callerLocation());
    const first = args.find((a): a is Tensor => a instanceof Tensor);
    const dtype = first?.dtype ?? DType.F32;
    return record(spec.name, args.map((a) => (a instanceof Tensor ? a : scalar(a as number, dtype))), attrs);
  };
  return Object.assign(op, { opName: spec.name }) as unknown as CustomOp<N>;
}

function defaultInfer(name: string, group: OpGroup, inputs: readonly TensorType[]): TensorType {
  const dtype = inputs[0].dtype;
  for (const t of inputs) if (t.dtype !== dtype) throw new OpError(`${name} needs operands of one dtype, got ${inputs.map((x) => x.dtype).join(' and ')}`);
  let shape = inputs[0].shape;
  for (const t of inputs.slice(1)) {
    const r = broadcastShapes(shape, t.shape);
    if (typeof r === 'string') throw new OpError(r);
    shape = r;
  }
  return { dtype: group === OpGroup.Compare ? DType.Bool : dtype, shape };
}

function builder(t: Scalar): KernelBuilder {
  const binary = (op: BinaryOp, a: KExpr, b: KExpr): KExpr => ({ k: 'binary', op, a, b, t: ['eq', 'ne', 'lt', 'le', 'gt', 'ge', 'and', 'or'].includes(op) ? 'bool' : t });
  return {
    t,
    const: (value) => ({ k: 'const', value, t }),
    unary: (op, a) => ({ k: 'unary', op, a, t: op === 'not' ? 'bool' : t }),
    binary,
    add: (a, b) => binary('add', a, b),
    sub: (a, b) => binary('sub', a, b),
    mul: (a, b) => binary('mul', a, b),
    div: (a, b) => binary('div', a, b),
    select: (cond, a, b) => ({ k: 'select', cond, a, b, t }),
  };
}
