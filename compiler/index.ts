// The public tensor API that model code imports.

export { Tensor, scalar, arange, where, concat, random } from './tensor.ts';
export type { TensorLike, ReduceOptions, DTypeName, ShapeSpec } from './tensor.ts';
export { trace, param, state, validLength, TraceError } from './trace.ts';
export type { InputSpec } from './trace.ts';
export { DType } from '../ir/dtype.ts';
