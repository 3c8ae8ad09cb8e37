// tsfuse's public entry (`import { compile, tensor, … } from 'tsfuse'`): the tensor API model code is written
// against, compile() with its guards and buckets, the IR and its text format, the pass pipeline, and custom ops.

// Tracing and the tensor API.
export { Tensor, scalar, arange, where, concat, trace, param, state, validLength, TraceError, DType } from './compiler/index.ts';
export type { TensorLike, ReduceOptions, InputSpec, DTypeName, ShapeSpec } from './compiler/index.ts';

// compile(): traced on first call, guarded, cached, dynamic sizes padded to buckets.
export { compile } from './compiler/compile.ts';
export type {
  Buckets, CompileBackend, CompiledEntry, CompiledFunction, CompileEvent, CompileFnOptions, CompileStats, DynamicAxes,
  GuardFailure, HostBackend, HostResult, ParamSource,
} from './compiler/compile.ts';
export { compileModule } from './compiler/compile-module.ts';
export type { CompiledGraph, CompiledModule } from './compiler/compile-module.ts';

// Host tensors: what compiled functions take and return.
export { tensor, hostTensor } from './ir/host-tensor.ts';
export type { HostTensor, HostData, NestedNumbers } from './ir/host-tensor.ts';

// The IR: graphs, ops, types, and the text format (print → parse → print is byte-identical).
export { Graph, Value, GraphError } from './ir/graph.ts';
export type { Module, Node, Kernel, StateUpdate, ValueKind } from './ir/graph.ts';
export { Op, OpGroup, OpError, opDef } from './ir/ops.ts';
export type { OpDef, Attrs, AttrKind, AttrValue } from './ir/ops.ts';
export type { Dim, Shape, TensorType } from './ir/shape.ts';
export { printModule, printGraph } from './ir/printer.ts';
export { parseModule, parseGraph, IrParseError } from './ir/parser.ts';
export { verifyGraph, verifyModule, VerifyError } from './ir/verify.ts';

// The pass pipeline.
export { defaultPasses, insertPass, passNames, runPipeline } from './compiler/passes/pipeline.ts';
export type { Pass } from './compiler/passes/pipeline.ts';
export type { PassContext } from './compiler/passes/context.ts';
export { rewriteGraph, keepNode } from './compiler/passes/rewrite.ts';
export type { NodeVisitor, Emitter } from './compiler/passes/rewrite.ts';

// Custom ops: shape rule, reference semantics and kernel-IR lowering in one place.
export { registerOp } from './compiler/custom-op.ts';
export type { CustomOp, CustomOpSpec, KernelBuilder } from './compiler/custom-op.ts';
export type { KExpr, KernelIR, Scalar, UnaryOp, BinaryOp } from './backends/kernel-ir.ts';
