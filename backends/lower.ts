// Lowering: each fused kernel of a graph becomes one KernelIR: what each row computes (which dimensions are rows:
// backends/row-split.ts; what is reduced cooperatively, what is kept in a row-local array). How the threads of a
// workgroup share a row is the scheduler's (backends/schedule.ts); the renderers only print the result.
//
// Every value of a kernel is an expression of its index: views become index arithmetic, elementwise ops become
// math, values from outside become loads. A reduction or matmul evaluated at an index that is the same for the
// whole row becomes a cooperative reduction computed once per row; one that varies along a single row-local
// dimension becomes a row-local array; anything else is a serial loop.

import { DType, isFloat } from '../ir/dtype.ts';
import { Graph, Kernel, kernelIOs, Node, Value } from '../ir/graph.ts';
import { isElementwise, Op } from '../ir/ops.ts';
import { RowOptions, RowSplit, rowSplit } from './row-split.ts';
import { kernelsNodeLines, printAttrs } from '../ir/printer.ts';
import { rounderFor } from '../ir/host-tensor.ts';
import { Dim, formatType, Shape } from '../ir/shape.ts';
import {
  add, BinaryOp, Binding, FlashIR, FreshRange, idiv, imod, int, ivar, KBuffer, KernelIR, KExpr, KStmt, mul, ReduceOp, ROW,
  loadsOf, Scalar, offsetAlong, simplifyIndex, sub, sumTerms, UnaryOp, varsOf,
} from './kernel-ir.ts';

export class LoweringError extends Error {}

export function scalarOf(d: DType): Scalar {
  return isFloat(d) ? 'f32' : d === DType.Bool ? 'bool' : 'i32';
}

const unaryOps: Partial<Record<string, UnaryOp>> = {
  [Op.Neg]: 'neg', [Op.Abs]: 'abs', [Op.Exp]: 'exp', [Op.Log]: 'log', [Op.Sqrt]: 'sqrt', [Op.Rsqrt]: 'rsqrt',
  [Op.Recip]: 'recip', [Op.Sin]: 'sin', [Op.Cos]: 'cos', [Op.Tanh]: 'tanh', [Op.Sigmoid]: 'sigmoid', [Op.Silu]: 'silu',
  [Op.Floor]: 'floor', [Op.Not]: 'not',
};
const binaryOps: Partial<Record<string, BinaryOp>> = {
  [Op.Add]: 'add', [Op.Sub]: 'sub', [Op.Mul]: 'mul', [Op.Div]: 'div', [Op.Pow]: 'pow', [Op.Maximum]: 'max',
  [Op.Minimum]: 'min', [Op.Eq]: 'eq', [Op.Ne]: 'ne', [Op.Lt]: 'lt', [Op.Le]: 'le', [Op.Gt]: 'gt', [Op.Ge]: 'ge',
  [Op.And]: 'and', [Op.Or]: 'or', [Op.Random]: 'random',
};

/** Custom ops (registerOp) give their lowering here: operands' expressions in, the result's expression out. */
export type LoweringRule = (operands: (idx: KExpr[]) => KExpr[], idx: KExpr[], node: Node) => KExpr;
const customLowerings = new Map<string, LoweringRule>();
export function registerLowering(op: string, rule: LoweringRule): void {
  customLowerings.set(op, rule);
}

/**
 * Kernels lowered so far, by what their lowering depends on (kernelShape): shared by the graphs of one module, the
 * prompt graph's layers are the prefill's.
 */
export type LoweredKernels = Map<string, { readonly ir: KernelIR; readonly classes: readonly number[] }>;

/**
 * Lowers every kernel of a fused graph; `slotOf` is the memory plan's slot of each intermediate. Kernels alike but
 * for the buffers they are bound to (every transformer layer's) are lowered once: the others take the first one's
 * kernel IR, with their own name, comment and bindings (`lowered` holds them: one map for one choice of `rows`).
 */
export function lowerGraph(g: Graph, slotOf: ReadonlyMap<Value, number>, lowered: LoweredKernels = new Map(), rows: RowOptions = {}): KernelIR[] {
  const ios = kernelIOs(g);
  const lines = kernelsNodeLines(g);
  return g.kernels.map((k, i) => {
    const shape = kernelShape(g, k, ios[i], slotOf);
    const hit = shape && lowered.get(shape.key);
    if (shape && hit) {
      const buffers = hit.ir.buffers.map((b, j) => ({ ...b, binding: shape.bindings[hit.classes[j]] }));
      return { ...hit.ir, name: k.name, fused: lines[i], buffers };
    }
    const ir = new KernelLowering(g, k, slotOf, rows).lower(ios[i].writes, lines[i]);
    const classes = shape && ir.buffers.map((b) => shape.classOf.get(bindingKey(b.binding)));
    if (shape && classes?.every((c) => c !== undefined)) lowered.set(shape.key, { ir, classes: classes as number[] });
    return ir;
  });
}

/**
 * What lowering a kernel depends on, as text: its nodes (ops, attributes, types, and operands by position inside
 * the kernel or by order of first read outside it), what it writes, and which of the values it reads or writes
 * share a buffer; not which buffers they are. Also those bindings, in order, and the class (position of the first
 * equal binding) of each binding by its bindingKey. Undefined for kernels with custom ops (their lowering rules may
 * read anything), or when a binding cannot be made (lowering then reports it).
 */
function kernelShape(g: Graph, k: Kernel, io: { readonly reads: readonly Value[]; readonly writes: readonly Value[] },
  slotOf: ReadonlyMap<Value, number>): { key: string; bindings: Binding[]; classOf: Map<string, number> } | undefined {
  if (k.nodes.some((n) => customLowerings.has(n.op))) return undefined;
  // Each operand by position: `#i` computed by the kernel's i-th node, `$j` the j-th value it reads.
  const refs = new Map<Value, string>();
  io.reads.forEach((v, j) => refs.set(v, `$${j}`));
  k.nodes.forEach((n, i) => refs.set(n.output, `#${i}`));
  const parts: string[] = [k.attrs.kind];
  for (const n of k.nodes) {
    let operands = '';
    for (let i = 0; i < n.inputs.length; i++) operands += `${i ? ',' : ''}${refs.get(n.inputs[i])}`;
    parts.push(`${n.op} ${printAttrs(n.attrs)} ${formatType(n.output.type)} ${operands}`);
  }
  const bindings: Binding[] = [];
  const classOf = new Map<string, number>();
  const bind = (b: Binding) => {
    const key = bindingKey(b);
    if (!classOf.has(key)) classOf.set(key, bindings.length);
    bindings.push(b);
    return `${b.kind}:${classOf.get(key)}`;
  };
  try {
    for (const v of io.reads) {
      const p = v.producer;
      parts.push(`read ${v.kind} ${formatType(v.type)} ${p ? `${p.op} ${p.inputs.map((x) => formatType(x.type)).join(',')}` : ''} ${bind(bindingOf(g, k, v, slotOf))}`);
    }
    for (const v of io.writes) {
      const p = v.producer!;
      const outputs = g.outputs.flatMap((o, j) => (o === v ? [j] : []));
      const bs: Binding[] = p.op !== Op.UpdateSlice && outputs.length ? outputs.map((index) => ({ kind: 'output', index })) : [bindingOf(g, k, v, slotOf)];
      parts.push(`write ${refs.get(v)} ${bs.map(bind).join(',')}`);
    }
  } catch (e) {
    if (e instanceof LoweringError) return undefined;
    throw e;
  }
  return { key: parts.join('\n'), bindings, classOf };
}

/** Where value v of kernel k lives in memory. */
function bindingOf(g: Graph, k: Kernel, v: Value, slotOf: ReadonlyMap<Value, number>): Binding {
  if (v.kind === 'input' || v.kind === 'param' || v.kind === 'state') return { kind: v.kind, name: v.name! };
  const p = v.producer!;
  if (p.op === Op.UpdateSlice) return bindingOf(g, k, p.inputs[0], slotOf);
  const out = g.outputs.indexOf(v);
  if (out >= 0) return { kind: 'output', index: out };
  const slot = slotOf.get(v);
  if (slot === undefined) throw new LoweringError(`kernel @${k.name}: no memory slot for an intermediate ${p.op}`);
  return { kind: 'temp', slot };
}

class KernelLowering {
  private readonly inside: Set<Value>;
  private readonly buffers: KBuffer[] = [];
  private readonly bufferIndex = new Map<string, number>();
  private readonly sizes = new Set<string>();
  private readonly body: KStmt[] = [];
  /** Names that hold the same value in every thread of a row. */
  private readonly uniform = new Set<string>([ROW]);
  private readonly memo = new Map<string, KExpr>();
  /** Loop variables of reductions (cooperative or serial). */
  private readonly reductionVars = new Set<string>();
  /** Static extents of loop variables: v % m is v when v < m. */
  private readonly bounds = new Map<string, number>();
  /** A 'columns' row: the let holding its first column, and how many neighbouring columns it covers. */
  private columnRow: { readonly base: string; readonly tile: number } | undefined;
  /** Nodes being computed into a row-local array: evaluated serially there. */
  private readonly serial = new Set<Node>();
  /** How many nodes of the kernel read each value. */
  private readonly uses = new Map<Value, number>();
  /** Position in the kernel of the node computing each value it computes (memo keys). */
  private readonly position = new Map<Value, number>();
  /** In a GEMM's epilogue: each product's accumulator, and the index (m, n) it holds. */
  private readonly gemmAccs = new Map<Node, { readonly key: string; readonly value: KExpr }>();
  private counter = 0;

  constructor(readonly g: Graph, readonly k: Kernel, readonly slotOf: ReadonlyMap<Value, number>, readonly rows: RowOptions) {
    this.inside = new Set(k.nodes.map((n) => n.output));
    k.nodes.forEach((n, i) => { if (!this.position.has(n.output)) this.position.set(n.output, i); });
    for (const n of k.nodes) for (const x of new Set(n.inputs)) this.uses.set(x, (this.uses.get(x) ?? 0) + 1);
  }

  /** `writes`: what the kernel writes (kernelIO); `fused`: its nodes as the graph prints them. */
  lower(writes: readonly Value[], fused: readonly string[]): KernelIR {
    const gemm = gemmOperands(this.k, writes);
    const flash = gemm ? undefined : flashOperands(this.k, writes);
    if (gemm || flash) {
      try {
        const tiles = gemm ? this.lowerGemm(gemm, writes, fused) : this.lowerFlash(flash!, writes, fused);
        // An operand that needed statements of its own (a row-local array) does not fit the tiles.
        if (this.body.length > 0) throw new NotGemm();
        // The row form beside it, over the same buffers: the products are reductions again.
        this.gemmAccs.clear();
        const rows = this.lowerRows(writes, fused);
        return { ...rows, buffers: this.buffers, sizes: [...this.sizes].sort(), gemm: tiles.gemm, flash: tiles.flash };
      } catch (e) {
        if (!(e instanceof NotGemm)) throw e;
        // An epilogue that reads a product at another index: lowered row by row, by a fresh lowering.
        return new KernelLowering(this.g, this.k, this.slotOf, this.rows).lowerRows(writes, fused);
      }
    }
    return this.lowerRows(writes, fused);
  }

  /**
   * Attention over many query rows as tiles: the scores' product's operands at (b, i, d) and (b, d, t), the
   * scores at (b, i, t) reading the product, v at (b, t, e), and the written values at (b, i, e) reading the
   * output; b runs over the batch dimensions (the heads) as one index.
   */
  private lowerFlash(f: FlashOperands, writes: readonly Value[], fused: readonly string[]): KernelIR {
    const batch = f.batchShape.reduce((a, x) => a * x, 1);
    // (Not `b…` or `t…`: the printers name buffers b0, b1… and temporaries t0, t1….)
    const [b, i] = [this.bounded('head', int(batch)), this.fresh('i')];
    const [t, d, e] = [this.bounded('key', int(f.keys)), this.bounded('d', int(f.depth)), this.bounded('e', int(f.width))];
    const [bv, tv, dv, ev] = [b, t, d, e].map(ivar);
    // One query row (decode): its index is 0 wherever the graph reads it (a dimension of 1 is indexed so).
    const iv = f.queries === 1 ? int(0) : ivar(i);
    const bIdx = this.delinear(bv, f.batchShape);
    const lead = (v: Value) => this.broadcastIndex(bIdx, v.type.shape.slice(0, -2));
    const [qk, pv] = [f.qk, f.pv];
    const updates = writes.filter((w) => w.producer!.op === Op.UpdateSlice);
    const q = this.expr(qk.inputs[0], [...lead(qk.inputs[0]), iv, dv]);
    const k = this.expr(qk.inputs[1], [...lead(qk.inputs[1]), dv, tv]);
    const v = this.expr(pv.inputs[1], [...lead(pv.inputs[1]), tv, ev]);
    const [qkName, outName] = [this.fresh('qk'), this.fresh('out')];
    this.gemmAccs.set(qk, { key: JSON.stringify([...bIdx, iv, tv]), value: { k: 'var', name: qkName, t: 'f32' } });
    this.gemmAccs.set(pv, { key: JSON.stringify([...bIdx, iv, ev]), value: { k: 'var', name: outName, t: 'f32' } });
    const score = this.expr(f.scores, [...bIdx, iv, tv]);
    const reads = (x: KExpr, ...names: string[]) => names.some((n) => varsOf(x).has(n));
    if (reads(q, t, e) || reads(k, i, e) || reads(v, i, d) || reads(score, d, e)) throw new NotGemm();
    const stores = this.tileStores(writes.filter((w) => !updates.includes(w)), [...bIdx, iv, ev]);
    const fresh = this.freshRanges(k, qk.inputs[1], v, pv.inputs[1]);
    // Only the decode forms compute new rows in place of the cache's (FreshRange.value); with several query rows
    // (an update of one position read by a prompt's attention) the row form runs, reading the update where it covers.
    if ((updates.length || fresh.k?.value || fresh.v?.value) && f.queries !== 1) throw new NotGemm();
    const queries = this.dim(f.queries);
    return {
      name: this.k.name,
      kind: this.k.attrs.kind,
      fused,
      buffers: this.buffers,
      sizes: [...this.sizes].sort(),
      rows: mul(int(batch), queries),
      body: [],
      flash: {
        b, i, t, d, e, batch, queries, keys: f.keys, depth: f.depth, width: f.width, q, score, qk: qkName,
        k: fresh.k?.value ? staleOf(k) : k, v: fresh.v?.value ? staleOf(v) : v,
        limit: causalLimit(score, t), out: outName, stores, ...(fresh.k || fresh.v ? { fresh } : {}),
        ...(updates.length ? { updates: updates.map((w) => this.updateStore(w.producer!, int(0), int(1))) } : {}),
      },
    };
  }

  /**
   * The keys' and values' fresh elements (FlashIR.fresh): where an operand is a plain load of a state that an
   * update_slice along its first axis writes in this step, the run of the state that the update covers, and where
   * this kernel computes the update (a select between it and the state: lowering of update_slice), the update's
   * value there; undefined where that is not so, or where saying so needs more than the graph's inputs.
   */
  private freshRanges(k: KExpr, kValue: Value, v: KExpr, vValue: Value): NonNullable<FlashIR['fresh']> {
    const range = (e: KExpr, value: Value): FreshRange | undefined => {
      let x = value;
      while (x.producer && [Op.Reshape, Op.Permute, Op.Slice, Op.Expand, Op.Cast].includes(x.producer.op as Op)) x = x.producer.inputs[0];
      const n = x.producer;
      if (n?.op !== Op.UpdateSlice || n.attrs.axis !== 0) return undefined;
      const here = this.inside.has(x);
      const load = here ? (e.k === 'select' ? e.b : undefined) : e;
      if (load?.k !== 'load' || JSON.stringify(this.buffers[load.buf].binding) !== JSON.stringify(bindingOf(this.g, this.k, x, this.slotOf))) return undefined;
      const [target, update] = n.inputs;
      const at = this.updateStart(n);
      const row = this.numel(target.type.shape.slice(1));
      const fresh = { from: mul(at, row), to: mul(add(at, this.dim(update.type.shape[0])), row), ...(here ? { value: (e as Extract<KExpr, { k: 'select' }>).a } : {}) };
      const inputsOnly = (x: KExpr): boolean => loadsOf(x).every((l) => ['input', 'param'].includes(this.buffers[l.buf].binding.kind));
      return inputsOnly(fresh.from) && inputsOnly(fresh.to) ? fresh : undefined;
    };
    const [kr, vr] = [range(k, kValue), range(v, vValue)];
    return { ...(kr ? { k: kr } : {}), ...(vr ? { v: vr } : {}) };
  }

  /**
   * A contraction of many rows as tiles: the products' shared left operand at (m, k), each right operand at
   * (k, n), and the written values at (m, n) with the products read as the accumulators.
   */
  private lowerGemm(mm: GemmOperands, writes: readonly Value[], fused: readonly string[]): KernelIR {
    const [m, n, k] = [this.fresh('m'), this.bounded('n', int(mm.columns)), this.bounded('k', int(mm.depth))];
    const [mv, nv, kv] = [ivar(m), ivar(n), ivar(k)];
    const a = this.expr(mm.matmuls[0].inputs[0], [mv, kv]);
    const b = mm.matmuls.map((x) => this.expr(x.inputs[1], [kv, nv]));
    if (varsOf(a).has(n) || b.some((e) => varsOf(e).has(m))) throw new NotGemm();
    const accs = mm.matmuls.map((x) => {
      const name = this.fresh('acc');
      this.gemmAccs.set(x, { key: JSON.stringify([mv, nv]), value: { k: 'var', name, t: 'f32' } });
      return name;
    });
    const stores = this.tileStores(writes, [mv, nv]);
    return {
      name: this.k.name,
      kind: this.k.attrs.kind,
      fused,
      buffers: this.buffers,
      sizes: [...this.sizes].sort(),
      rows: this.dim(mm.rows),
      body: [],
      gemm: { rows: this.dim(mm.rows), m, n, k, columns: mm.columns, depth: mm.depth, a, b, accs, stores },
    };
  }

  /** A tile kernel's stores: each written value at `idx`, into every buffer it fills (as `store` has it). */
  private tileStores(writes: readonly Value[], idx: KExpr[]): { buf: number; index: KExpr; value: KExpr }[] {
    return writes.flatMap((v) => {
      const value = this.expr(v, idx);
      const index = this.linear(idx, v.type.shape);
      const outputs = this.g.outputs.flatMap((o, j) => (o === v ? [j] : []));
      const bindings: Binding[] = outputs.length ? outputs.map((index) => ({ kind: 'output', index })) : [this.binding(v)];
      return bindings.map((binding) => ({ buf: this.buffer(v, true, binding), index, value }));
    });
  }

  private lowerRows(writes: readonly Value[], fused: readonly string[]): KernelIR {
    const split = rowSplit(this.k, writes, this.rows);
    const rowShape = split.rowAxes.map((a, i) => {
      const d = split.domain[a];
      return i === split.rowAxes.length - 1 && split.tile > 1 ? (d as number) / split.tile : d;
    });
    const rows = this.numel(rowShape);
    if (rows.k === 'const') this.bounds.set(ROW, rows.value);
    const rowIdx = this.delinear(ivar(ROW), rowShape).map((e, i) => this.bindUniform(`r${i}`, e, rowShape[i]));
    if (split.by === 'columns' && split.tile > 1) {
      // The row's first column, named so that reductions can tell "this row's columns" in their index.
      const base = this.fresh('c');
      this.body.push({ k: 'let', name: base, value: mul(rowIdx[rowIdx.length - 1], int(split.tile)) });
      this.uniform.add(base);
      this.columnRow = { base, tile: split.tile };
    }
    for (const v of writes) {
      const p = v.producer!;
      if (p.op === Op.UpdateSlice) this.body.push(this.updateStore(p, ivar(ROW), rows));
      else if (split.by === 'columns') this.storeColumns(v, split, rowIdx);
      else this.storeValue(v, rowIdx, split.tile);
    }
    const spread = rows.k === 'const' && rows.value === 1 ? spreadStores(this.body) : undefined;
    return {
      name: this.k.name,
      kind: this.k.attrs.kind,
      fused,
      buffers: this.buffers,
      sizes: [...this.sizes].sort(),
      rows: spread?.rows ?? rows,
      body: spread?.body ?? this.body,
    };
  }

  /** The position of v's node in the kernel, -1 if the kernel does not compute v (as findIndex has it). */
  private indexOf(v: Value): number {
    return this.position.get(v) ?? -1;
  }

  /** Whether v is computed by this kernel with more than index arithmetic (views of memory are not). */
  private computedHere(v: Value): boolean {
    if (!this.inside.has(v)) return false;
    const n = v.producer!;
    return ![Op.Reshape, Op.Permute, Op.Slice, Op.Expand].includes(n.op as Op) || this.computedHere(n.inputs[0]);
  }

  private storeValue(v: Value, rowIdx: KExpr[], tile: number): void {
    const local = tile > 1 ? [tile] : v.type.shape.slice(rowIdx.length);
    const i = this.bounded('i', this.numel(local));
    const idx = tile > 1
      ? [...rowIdx.slice(0, -1), add(mul(rowIdx[rowIdx.length - 1], int(tile)), ivar(i))]
      : [...rowIdx, ...this.delinear(ivar(i), local)];
    this.store(v, idx, i, this.numel(local));
  }

  /**
   * A write of a 'columns' row: the reduction's result, one element per column of the tile; or a value of the
   * input's shape, over the reduced dimensions and the tile's columns (innermost, so that neighbouring threads
   * write neighbouring columns).
   */
  private storeColumns(v: Value, split: RowSplit, rowIdx: KExpr[]): void {
    const shape = v.type.shape;
    const full = shape.length === split.domain.length;
    const reduced = full ? split.domain.map((_, a) => a).filter((a) => !split.rowAxes.includes(a) && shape[a] !== 1) : [];
    const local = [...reduced.map((a) => split.domain[a]), split.tile];
    const i = this.bounded('i', this.numel(local));
    const at = this.delinear(ivar(i), local);
    const column = this.columnRow ? add(ivar(this.columnRow.base), at[at.length - 1]) : rowIdx[rowIdx.length - 1];
    const keptIdx = [...rowIdx.slice(0, -1), column];
    const idx = full
      ? split.domain.map((_, a) => (split.rowAxes.includes(a) ? keptIdx[split.rowAxes.indexOf(a)]
        : reduced.includes(a) ? at[reduced.indexOf(a)] : int(0)))
      : keptIdx;
    this.store(v, idx, i, this.numel(local));
  }

  /** Stores v at idx for i over [0, n), into every buffer it fills. */
  private store(v: Value, idx: KExpr[], i: string, n: KExpr): void {
    const value = this.expr(v, idx);
    const index = this.linear(idx, v.type.shape);
    // A value the graph returns more than once (return %3, %3) fills every output buffer it is returned in.
    const outputs = this.g.outputs.flatMap((o, j) => (o === v ? [j] : []));
    const bindings: Binding[] = outputs.length ? outputs.map((index) => ({ kind: 'output', index })) : [this.binding(v)];
    for (const binding of bindings) {
      this.body.push({ k: 'store', buf: this.buffer(v, true, binding), v: i, n, index, value });
    }
  }

  /**
   * A KV-cache write: the update's elements stored in place into the state at the given position, row `row` of
   * `rows` storing its run of them (a kernel of many rows, attention's heads, shares the write out).
   */
  private updateStore(n: Node, row: KExpr, rows: KExpr): Extract<KStmt, { k: 'store' }> {
    const [target, update] = n.inputs;
    const axis = n.attrs.axis as number;
    const count = this.numel(update.type.shape);
    // One row stores it all (a kernel of one row may then be spread over many: spreadStores).
    const whole = rows.k === 'const' && rows.value === 1;
    const share = whole ? count : count.k === 'const' && rows.k === 'const' ? int(Math.ceil(count.value / rows.value)) : idiv(add(count, sub(rows, int(1))), rows);
    const first = whole ? int(0) : mul(row, share);
    const i = this.bounded('i', share);
    const uIdx = this.delinear(add(first, ivar(i)), update.type.shape);
    const at = this.updateStart(n);
    const tIdx = uIdx.map((e, d) => (d === axis ? add(e, at) : e));
    const value = this.expr(update, uIdx);
    const buf = this.buffer(n.output, true);
    const stored: KExpr = whole ? count : { k: 'binary', op: 'min', a: share, b: sub(count, first), t: 'i32' };
    return { k: 'store', buf, v: i, n: simplifyIndex(stored, this.bounds), index: this.linear(tIdx, target.type.shape), value };
  }

  /** Where an update_slice writes along its axis: checked (or, on GPUs, clamped) to keep the update inside the state. */
  private updateStart(n: Node): KExpr {
    const [target, update, index] = n.inputs;
    const axis = n.attrs.axis as number;
    const room = sub(add(this.dim(target.type.shape[axis]), int(1)), this.dim(update.type.shape[axis]));
    return { k: 'binary', op: 'index', a: this.expr(index, index.type.shape.map(() => int(0))), b: room, t: 'i32' };
  }

  /**
   * A state's new value read inside the kernel that writes it (a decode step's cache read by its attention): the
   * update where it covers the index, else the state as it was. Nothing is read back from memory this kernel writes.
   */
  private updatedExpr(n: Node, idx: KExpr[], t: Scalar): KExpr {
    const [target, update] = n.inputs;
    const axis = n.attrs.axis as number;
    const off = sub(idx[axis], this.updateStart(n));
    const extent = this.dim(update.type.shape[axis]);
    const cond: KExpr = { k: 'binary', op: 'and', a: { k: 'binary', op: 'ge', a: off, b: int(0), t: 'bool' }, b: { k: 'binary', op: 'lt', a: off, b: extent, t: 'bool' }, t: 'bool' };
    // An update of one position is read at 0 along the axis (the select takes it only there), not at idx − start.
    const along = update.type.shape[axis] === 1 ? int(0) : off;
    return { k: 'select', cond, a: this.expr(update, idx.map((e, d) => (d === axis ? along : e))), b: this.expr(target, idx), t };
  }

  // ---- buffers ----

  private binding(v: Value): Binding {
    return bindingOf(this.g, this.k, v, this.slotOf);
  }

  private buffer(v: Value, written: boolean, binding = this.binding(v)): number {
    const key = JSON.stringify(binding);
    let i = this.bufferIndex.get(key);
    if (i === undefined) {
      const shape = binding.kind === 'state' && v.producer ? v.producer.inputs[0].type.shape : v.type.shape;
      i = this.buffers.push({ binding, dtype: v.type.dtype, elems: this.numel(shape), written }) - 1;
      this.bufferIndex.set(key, i);
    } else if (written && !this.buffers[i].written) {
      this.buffers[i] = { ...this.buffers[i], written: true };
    }
    return i;
  }

  // ---- index arithmetic ----

  private dim(d: Dim): KExpr {
    if (typeof d === 'number') return int(d);
    this.sizes.add(d);
    this.uniform.add(d);
    return ivar(d);
  }

  private numel(shape: Shape): KExpr {
    return shape.reduce<KExpr>((n, d) => mul(n, this.dim(d)), int(1));
  }

  private linear(idx: KExpr[], shape: Shape): KExpr {
    let lin: KExpr = int(0);
    let stride: KExpr = int(1);
    for (let i = shape.length - 1; i >= 0; i--) {
      lin = add(lin, mul(idx[i], stride));
      stride = mul(stride, this.dim(shape[i]));
    }
    return simplifyIndex(lin, this.bounds);
  }

  private delinear(lin: KExpr, shape: Shape): KExpr[] {
    const out: KExpr[] = new Array(shape.length);
    let stride: KExpr = int(1);
    for (let i = shape.length - 1; i >= 0; i--) {
      const q = idiv(lin, stride);
      out[i] = i === 0 ? q : imod(q, this.dim(shape[i]));
      if (shape[i] === 1) out[i] = int(0);
      out[i] = simplifyIndex(out[i], this.bounds);
      stride = mul(stride, this.dim(shape[i]));
    }
    return out;
  }

  /**
   * The input index of a reshape. Inserting or dropping size-1 dimensions maps indices one to one; anything else
   * goes through the linear index (division and remainder, which also hides contiguity from the renderers).
   */
  private reshapeIndex(idx: KExpr[], outShape: Shape, inShape: Shape): KExpr[] {
    const outDims = outShape.map((d, i) => [d, i] as const).filter(([d]) => d !== 1);
    const inDims = inShape.map((d, i) => [d, i] as const).filter(([d]) => d !== 1);
    if (outDims.length === inDims.length && outDims.every(([d], i) => d === inDims[i][0])) {
      const inIdx = inShape.map(() => int(0));
      inDims.forEach(([, at], i) => { inIdx[at] = idx[outDims[i][1]]; });
      return inIdx;
    }
    return this.delinear(this.linear(idx, outShape), inShape);
  }

  /** Index of an operand broadcast to `outShape` (numpy rules: leading dims dropped, size-1 dims pinned to 0). */
  private broadcastIndex(idx: KExpr[], shape: Shape): KExpr[] {
    const lead = idx.length - shape.length;
    return shape.map((d, i) => (d === 1 ? int(0) : idx[lead + i]));
  }

  private fresh(prefix: string): string {
    return `${prefix}${this.counter++}`;
  }

  /** A fresh loop variable whose values lie in [0, extent) (recorded for index simplification). */
  private bounded(prefix: string, extent: KExpr): string {
    const v = this.fresh(prefix);
    if (extent.k === 'const') this.bounds.set(v, extent.value);
    return v;
  }

  private bindUniform(prefix: string, value: KExpr, extent?: Dim): KExpr {
    if (value.k === 'const' || value.k === 'var') return value;
    const name = this.fresh(prefix);
    if (typeof extent === 'number') this.bounds.set(name, extent);
    this.body.push({ k: 'let', name, value });
    this.uniform.add(name);
    return ivar(name);
  }

  private isUniform(idx: KExpr[]): boolean {
    return idx.every((e) => [...varsOf(e)].every((v) => this.uniform.has(v)));
  }

  // ---- values as expressions of their index ----

  /**
   * A row-uniform value that several nodes of the kernel read is computed once, into a `let` (inlined at every
   * use, a chain of such values — the sampler's bisection reads each step's bounds twice — grows exponentially).
   */
  expr(v: Value, idx: KExpr[]): KExpr {
    if (!this.inside.has(v) || this.serial.size > 0 || (this.uses.get(v) ?? 0) < 2 || !isElementwise(v.producer!.op) || !this.isUniform(idx)) {
      return this.valueExpr(v, idx);
    }
    const key = `let:${this.indexOf(v)}@${JSON.stringify(idx)}`;
    const hit = this.memo.get(key);
    if (hit) return hit;
    const value = this.valueExpr(v, idx);
    // Small expressions stay inline: the printers compute each once per statement anyway.
    const out: KExpr = exprSizeAtLeast(value, 12) ? { k: 'var', name: this.fresh('u'), t: value.t } : value;
    if (out.k === 'var' && out !== value) {
      this.body.push({ k: 'let', name: out.name, value });
      this.uniform.add(out.name);
    }
    this.memo.set(key, out);
    return out;
  }

  private valueExpr(v: Value, idx: KExpr[]): KExpr {
    const t = scalarOf(v.type.dtype);
    if (!this.inside.has(v)) return { k: 'load', buf: this.buffer(v, false), index: this.linear(idx, v.type.shape), t };
    const n = v.producer!;
    const operand = (i: number, at = idx) => this.expr(n.inputs[i], this.broadcastIndex(at, n.inputs[i].type.shape));
    const u = unaryOps[n.op];
    if (u) return round16(v, { k: 'unary', op: u, a: operand(0), t });
    const b = binaryOps[n.op];
    if (b) return round16(v, { k: 'binary', op: b, a: operand(0), b: operand(1), t });
    switch (n.op) {
      case Op.Where: return { k: 'select', cond: operand(0), a: operand(1), b: operand(2), t };
      case Op.Cast: {
        // Floats of every width compute in f32, but an explicit cast to a 16-bit float still loses its precision.
        const [from, to] = [n.inputs[0].type.dtype, v.type.dtype];
        // u32 values compute as i32 bits: a conversion between u32 and a float says so.
        const u32 = (from === DType.U32 && isFloat(to)) || (isFloat(from) && to === DType.U32) ? { u32: true } : {};
        if (to === DType.F16 || to === DType.BF16) return { k: 'cast', a: operand(0), t, round: to, ...u32 };
        return t === scalarOf(from) ? operand(0) : { k: 'cast', a: operand(0), t, ...u32 };
      }
      // The literal as its dtype holds it (0.1 as the f32 nearest 0.1, 2.7 as the i32 2), as the reference has it.
      case Op.Const: return { k: 'const', value: rounderFor(v.type.dtype)(n.attrs.value as number), t };
      case Op.Arange: return t === 'i32' ? idx[0] : { k: 'cast', a: idx[0], t };
      case Op.Reshape: return this.expr(n.inputs[0], this.reshapeIndex(idx, v.type.shape, n.inputs[0].type.shape));
      case Op.Permute: {
        const perm = n.attrs.perm as number[];
        const inIdx: KExpr[] = new Array(perm.length);
        perm.forEach((p, i) => { inIdx[p] = idx[i]; });
        return this.expr(n.inputs[0], inIdx);
      }
      case Op.Expand: return operand(0);
      case Op.Slice: {
        const axis = n.attrs.axis as number;
        return this.expr(n.inputs[0], idx.map((e, i) => (i === axis ? add(e, int(n.attrs.start as number)) : e)));
      }
      case Op.Concat: return this.concat(n, idx, t);
      case Op.UpdateSlice: return this.updatedExpr(n, idx, t);
      case Op.Gather: {
        const ids = n.inputs[1];
        // The row, checked (or, on GPUs, clamped) to lie in the table.
        const row: KExpr = { k: 'binary', op: 'index', a: this.expr(ids, idx.slice(0, ids.type.shape.length)), b: this.dim(n.inputs[0].type.shape[0]), t: 'i32' };
        return this.expr(n.inputs[0], [row, ...idx.slice(ids.type.shape.length)]);
      }
      case Op.Sum: case Op.Mean: case Op.Max: case Op.Argmax: return round16(v, this.reduction(n, idx, t));
      case Op.Matmul: {
        const acc = this.gemmAccs.get(n);
        if (acc) {
          if (acc.key !== JSON.stringify(idx)) throw new NotGemm();
          return round16(v, acc.value);
        }
        return round16(v, this.matmul(n, idx, t));
      }
      default: {
        const rule = customLowerings.get(n.op);
        if (rule) return rule((at) => n.inputs.map((x) => this.expr(x, this.broadcastIndex(at, x.type.shape))), idx, n);
        throw new LoweringError(`kernel @${this.k.name}: ${n.op} cannot be lowered inside a kernel`);
      }
    }
  }

  private concat(n: Node, idx: KExpr[], t: Scalar): KExpr {
    const axis = n.attrs.axis as number;
    const parts = n.inputs.map((x) => x.type.shape[axis] as number);
    let start = parts.reduce((a, b) => a + b, 0);
    let out: KExpr | undefined;
    for (let i = n.inputs.length - 1; i >= 0; i--) {
      start -= parts[i];
      const here = this.expr(n.inputs[i], idx.map((e, d) => (d === axis ? sub(e, int(start)) : e)));
      out = out === undefined ? here : { k: 'select', cond: { k: 'binary', op: 'lt', a: idx[axis], b: int(start + parts[i]), t: 'bool' }, a: here, b: out, t };
    }
    return out!;
  }

  /** sum / mean / max / argmax at an index of its result. */
  private reduction(n: Node, idx: KExpr[], t: Scalar): KExpr {
    const x = n.inputs[0];
    const axes = n.op === Op.Argmax ? [n.attrs.axis as number] : (n.attrs.axes as number[]);
    const keep = n.attrs.keepdims as boolean;
    const reducedShape = axes.map((a) => x.type.shape[a]);
    const op: ReduceOp = n.op === Op.Max ? 'max' : n.op === Op.Argmax ? 'argmax' : 'sum';
    const at = (v: string) => {
      const local = this.delinear(ivar(v), reducedShape);
      const inIdx: KExpr[] = [];
      let kept = 0;
      for (let d = 0; d < x.type.shape.length; d++) {
        const ai = axes.indexOf(d);
        if (ai >= 0) {
          inIdx.push(local[ai]);
          if (keep) kept++;
        } else {
          inIdx.push(idx[kept++]);
        }
      }
      return this.expr(x, inIdx);
    };
    const size = this.numel(reducedShape);
    const count: KExpr = { k: 'cast', a: size, t: 'f32' };
    // The mean of no elements is 0 / 0 = NaN; said outright, as a shader compiler may fold x / 0.0 to anything.
    const empty = size.k === 'const' && size.value === 0;
    const finish = n.op === Op.Mean
      ? (r: KExpr): KExpr => (empty ? { k: 'const', value: NaN, t } : { k: 'binary', op: 'div', a: r, b: count, t })
      : undefined;
    return this.reduce(n, idx, op, this.numel(reducedShape), at, t, finish);
  }

  /** out[..., m, n] = Σ_k a[..., m, k] · b[..., k, n], operands broadcast over the batch dimensions. */
  private matmul(n: Node, idx: KExpr[], t: Scalar): KExpr {
    const [a, b] = n.inputs;
    const r = idx.length;
    const kSize = a.type.shape[a.type.shape.length - 1];
    const batch = idx.slice(0, r - 2);
    const aIdx = (kk: KExpr) => [...this.broadcastIndex(batch, a.type.shape.slice(0, -2)), idx[r - 2], kk];
    const bIdx = (kk: KExpr) => [...this.broadcastIndex(batch, b.type.shape.slice(0, -2)), kk, idx[r - 1]];
    // Inside a loop, a computed row of `a` is read once per output: keep it in a row-local array.
    // (A row that is only a view of memory needs no copy: its loads are as cheap from the cache.)
    const aRow = !this.isUniform(idx) && this.computedHere(a) && typeof kSize === 'number' && this.isUniform(aIdx(int(0)))
      ? this.rowArray(a, aIdx(int(0)), aIdx(int(0)).length - 1, kSize)
      : undefined;
    const term = (v: string): KExpr => ({
      k: 'binary', op: 'mul', a: aRow ? aRow(ivar(v)) : this.expr(a, aIdx(ivar(v))), b: this.expr(b, bIdx(ivar(v))), t,
    });
    return this.reduce(n, idx, 'sum', this.dim(kSize), term, t);
  }

  /**
   * A reduction at an index: computed cooperatively once per row when the index is row-uniform; kept in a
   * row-local array when it varies along one dimension (attention scores, read by the softmax and by p·v);
   * otherwise a serial loop.
   */
  /**
   * `finish` turns the accumulated value into the node's result (a mean's division). A row-local array holds
   * the node's result, finished already, so its elements are returned as they are.
   */
  private reduce(n: Node, idx: KExpr[], op: ReduceOp, size: KExpr, body: (v: string) => KExpr, t: Scalar,
    finish: (acc: KExpr) => KExpr = (acc) => acc): KExpr {
    const key = `${this.indexOf(n.output)}@${JSON.stringify(idx)}`;
    const hit = this.memo.get(key);
    if (hit) return hit;
    let out: KExpr;
    if (this.isUniform(idx) && !this.serial.has(n)) {
      const v = this.bounded('k', size);
      this.reductionVars.add(v);
      const name = this.fresh('acc');
      this.body.push({ k: 'coop', name, op, v, n: size, body: body(v) });
      this.uniform.add(name);
      out = { k: 'var', name, t: op === 'argmax' ? 'i32' : t };
    } else {
      const varying = idx.map((e, i) => (this.isUniform([e]) ? -1 : i)).filter((i) => i >= 0);
      // At one of this row's columns (a reduction over other than the last axes): an array of the row's columns.
      const column = varying.length === 1 && !this.serial.has(n) ? this.columnOffset(idx[varying[0]]) : undefined;
      if (column && this.columnRow) {
        const base = ivar(this.columnRow.base);
        const chunk = idx.map((e, i) => (i === varying[0] ? add(base, ivar('__at')) : e));
        return this.chunkArray(n.output, chunk, varying[0], base, this.columnRow.tile)(column);
      }
      const dimSize = varying.length === 1 ? n.output.type.shape[varying[0]] : undefined;
      if (typeof dimSize === 'number' && idx[varying[0]].k === 'var' && !this.serial.has(n)) {
        const elem = this.rowArray(n.output, idx, varying[0], dimSize);
        return elem(idx[varying[0]]);
      }
      // Along a row-uniform offset plus a bounded loop variable (a chunk of the scores): an array of that chunk.
      const along = varying.length === 1 ? this.offsetLoop(idx[varying[0]]) : undefined;
      if (along && along.extent <= 2048 && !this.serial.has(n)) {
        const chunk = idx.map((e, i) => (i === varying[0] ? add(along.base, ivar('__at')) : e));
        const elem = this.chunkArray(n.output, chunk, varying[0], along.base, along.extent);
        return elem(ivar(along.v));
      }
      const v = this.bounded('k', size);
      this.reductionVars.add(v);
      out = { k: 'reduce', op, v, n: size, body: body(v), t: op === 'argmax' ? 'i32' : t };
    }
    out = finish(out);
    this.memo.set(key, out);
    return out;
  }

  /** e when x = the row's first column + e. */
  private columnOffset(x: KExpr): KExpr | undefined {
    if (!this.columnRow) return undefined;
    const terms = sumTerms(x);
    const at = terms.findIndex((t) => t.k === 'var' && t.name === this.columnRow!.base);
    return at < 0 ? undefined : terms.filter((_, i) => i !== at).reduce<KExpr>((a, t) => add(a, t), int(0));
  }

  /** v + base with v a bounded loop variable and base row-uniform. */
  private offsetLoop(e: KExpr): { v: string; base: KExpr; extent: number } | undefined {
    // Only a reduction's own loop: a store's loop over outputs keeps its per-output mapping (one subgroup each).
    for (const v of this.reductionVars) {
      const extent = this.bounds.get(v);
      if (extent === undefined) continue;
      const base = offsetAlong(e, v);
      if (base && this.isUniform([base])) return { v, base, extent };
    }
    return undefined;
  }

  /** Materialises v at base + j, j < extent, along one dimension, in a row-local array indexed by j. */
  private chunkArray(v: Value, idx: KExpr[], dim: number, base: KExpr, extent: number): (at: KExpr) => KExpr {
    const key = `chunk:${this.indexOf(v)}@${JSON.stringify(idx)}`;
    let name = (this.memo.get(key) as { name: string } | undefined)?.name;
    if (!name) {
      name = this.fresh('arr');
      const j = this.bounded('j', int(extent));
      const n = v.producer!;
      this.serial.add(n);
      const value = this.expr(v, idx.map((e, d) => (d === dim ? add(base, ivar(j)) : e)));
      this.serial.delete(n);
      this.body.push({ k: 'array', name, v: j, n: extent, value });
      this.memo.set(key, { k: 'var', name, t: 'f32' });
    }
    const array = name;
    return (at) => ({ k: 'elem', array, index: at, t: scalarOf(v.type.dtype) });
  }

  /** Materialises v along one dimension (the rest of `idx` row-uniform) in a row-local array. */
  private rowArray(v: Value, idx: KExpr[], dim: number, size: number): (at: KExpr) => KExpr {
    const key = `array:${this.indexOf(v)}@${JSON.stringify(idx.map((e, i) => (i === dim ? null : e)))}`;
    let name = (this.memo.get(key) as { name: string } | undefined)?.name;
    if (!name) {
      name = this.fresh('arr');
      const i = this.bounded('j', int(size));
      const n = v.producer!;
      this.serial.add(n);
      const value = this.expr(v, idx.map((e, d) => (d === dim ? ivar(i) : e)));
      this.serial.delete(n);
      this.body.push({ k: 'array', name, v: i, n: size, value });
      this.memo.set(key, { k: 'var', name, t: 'f32' });
    }
    const array = name;
    return (at) => ({ k: 'elem', array, index: at, t: scalarOf(v.type.dtype) });
  }
}

/**
 * Elements one row of a spread store loop covers: one per thread of a 256-thread workgroup (each element recomputes
 * its rotary angle: with 16 a thread a 32-token prompt's KV write had 4 workgroups). Measured on the H200 against
 * 4,096 (BENCHMARKS.md, issue 10): decode 0.999 → 0.988 ms a token, 32-token prefill 2.58–2.69 → 2.40–2.64 ms.
 */
const SPREAD_CHUNK = 256;

/**
 * A one-row kernel of store loops over equal ranges (a prefill's KV-cache write: S × heads × dims elements with
 * rotary recomputed for each) runs on one workgroup; spread over rows of SPREAD_CHUNK elements, each row's loops
 * cover their chunk: element row · chunk + j for j < min(chunk, n − row · chunk).
 */
function spreadStores(body: readonly KStmt[]): { rows: KExpr; body: KStmt[] } | undefined {
  const stores = body.filter((s): s is Extract<KStmt, { k: 'store' }> => s.k === 'store');
  if (stores.length !== body.length || stores.length === 0) return undefined;
  const n = stores[0].n;
  if (!stores.every((s) => JSON.stringify(s.n) === JSON.stringify(n))) return undefined;
  if (n.k === 'const' && n.value <= SPREAD_CHUNK) return undefined;
  const start = mul(ivar(ROW), int(SPREAD_CHUNK));
  const left: KExpr = { k: 'binary', op: 'min', a: int(SPREAD_CHUNK), b: sub(n, start), t: 'i32' };
  return {
    rows: idiv(add(n, int(SPREAD_CHUNK - 1)), int(SPREAD_CHUNK)),
    body: stores.map((s) => {
      const at = add(start, ivar(s.v));
      return { ...s, n: left, index: substituteVar(s.index, s.v, at), value: substituteVar(s.value, s.v, at) };
    }),
  };
}

/** e with every read of the variable `name` replaced by `by` (unchanged parts shared). */
function substituteVar(e: KExpr, name: string, by: KExpr): KExpr {
  switch (e.k) {
    case 'const': return e;
    case 'var': return e.name === name ? by : e;
    case 'load': case 'elem': {
      const index = substituteVar(e.index, name, by);
      return index === e.index ? e : { ...e, index };
    }
    case 'unary': case 'cast': {
      const a = substituteVar(e.a, name, by);
      return a === e.a ? e : { ...e, a };
    }
    case 'binary': {
      const [a, b] = [substituteVar(e.a, name, by), substituteVar(e.b, name, by)];
      return a === e.a && b === e.b ? e : { ...e, a, b };
    }
    case 'select': {
      const [cond, a, b] = [substituteVar(e.cond, name, by), substituteVar(e.a, name, by), substituteVar(e.b, name, by)];
      return cond === e.cond && a === e.a && b === e.b ? e : { ...e, cond, a, b };
    }
    case 'reduce': {
      if (e.v === name) return e;
      const [n, body] = [substituteVar(e.n, name, by), substituteVar(e.body, name, by)];
      return n === e.n && body === e.body ? e : { ...e, n, body };
    }
    default: return e satisfies never;
  }
}

interface FlashOperands {
  readonly qk: Node;
  readonly pv: Node;
  readonly scores: Value;
  readonly batchShape: readonly number[];
  readonly queries: Dim;
  readonly keys: number;
  readonly depth: number;
  readonly width: number;
}

/**
 * An attention kernel of many query rows: probs·v where probs = exp(s − max s) / Σ exp(s − max s) over the keys
 * (as `decompose` writes softmax), the scores s computed in the kernel from one product q·k, and the kernel writing
 * only values of the output's shape (and, with one query row, the cache writes of the step). One query row (decode)
 * too: the scheduler gives it the decode form, or the row form.
 */
export function flashOperands(k: Kernel, writes: readonly Value[]): FlashOperands | undefined {
  if (k.attrs.kind !== 'attention') return undefined;
  const matmuls = k.nodes.filter((n) => n.op === Op.Matmul);
  const reductions = k.nodes.filter((n) => [Op.Sum, Op.Mean, Op.Max, Op.Argmax].includes(n.op as Op));
  if (matmuls.length !== 2 || reductions.length !== 2) return undefined;
  const pv = matmuls.find((n) => n.inputs[0].producer?.op === Op.Div);
  const div = pv?.inputs[0].producer;
  const [ex, z] = div ? div.inputs.map((v) => v.producer) : [];
  if (!pv || ex?.op !== Op.Exp || z?.op !== Op.Sum || z.inputs[0] !== div!.inputs[0]) return undefined;
  const sub = ex.inputs[0].producer;
  const max = sub?.op === Op.Sub ? sub.inputs[1].producer : undefined;
  if (!sub || max?.op !== Op.Max || max.inputs[0] !== sub.inputs[0]) return undefined;
  const scores = sub.inputs[0];
  const shape = scores.type.shape;
  const r = shape.length;
  const lastAxis = (n: Node) => (n.attrs.axes as number[]).join() === String(r - 1) && n.attrs.keepdims === true;
  if (!lastAxis(max) || !lastAxis(z)) return undefined;
  const qk = matmuls.find((n) => n !== pv);
  const [queries, keys] = [shape[r - 2], shape[r - 1]];
  const depth = qk?.inputs[0].type.shape.at(-1);
  const width = pv.output.type.shape.at(-1);
  const batchShape = shape.slice(0, -2);
  if (!qk || typeof keys !== 'number' || typeof depth !== 'number' || typeof width !== 'number') return undefined;
  if (!batchShape.every((x): x is number => typeof x === 'number') || JSON.stringify(qk.output.type.shape) !== JSON.stringify(shape)) return undefined;
  const outShape = JSON.stringify(pv.output.type.shape);
  // Besides the output, a decode step's cache writes (compiler/passes/fuse.ts): FlashIR.updates.
  if (!writes.every((w) => w.producer?.op === Op.UpdateSlice || JSON.stringify(w.type.shape) === outShape)) return undefined;
  return { qk, pv, scores, batchShape, queries, keys, depth, width };
}

/**
 * The keys a score leaves finite: t < limit when the score is where(t ≤ x, s, −∞) (or t < x) with x not reading t
 * (the causal mask: x = pos + i). Undefined when the score is not of that form (every key is then visited).
 */
function causalLimit(score: KExpr, t: string): KExpr | undefined {
  if (score.k !== 'select' || score.b.k !== 'const' || score.b.value !== -Infinity) return undefined;
  const c = score.cond;
  if (c.k !== 'binary' || (c.op !== 'le' && c.op !== 'lt') || c.a.k !== 'var' || c.a.name !== t || varsOf(c.b).has(t)) return undefined;
  return c.op === 'le' ? add(c.b, int(1)) : c.b;
}

/** What memory held before an update: the state's side of the select updatedExpr builds. */
function staleOf(e: KExpr): KExpr {
  if (e.k !== 'select') throw new Error('lowering: an updated state read as no select');
  return e.b;
}

/** An epilogue read a product at an index other than its own: the kernel is lowered row by row instead. */
class NotGemm extends Error {}

interface GemmOperands {
  readonly matmuls: readonly Node[];
  readonly rows: Dim;
  readonly columns: number;
  readonly depth: number;
}

/**
 * The products of a contraction kernel that runs as tiles: matmuls of one left operand [rows, depth] (rows not 1:
 * a projection of many positions) by right operands [depth, columns], writing only values of their [rows, columns]
 * shape, with no other reduction in the kernel (an RMSNorm's is its own kernel then: compiler/passes/fuse.ts).
 */
export function gemmOperands(k: Kernel, writes: readonly Value[]): GemmOperands | undefined {
  if (k.attrs.kind !== 'contraction') return undefined;
  const matmuls = k.nodes.filter((n) => n.op === Op.Matmul);
  if (matmuls.length === 0) return undefined;
  const a = matmuls[0].inputs[0];
  const [rows, depth] = a.type.shape;
  const out = matmuls[0].output.type.shape;
  const columns = out[1];
  if (a.type.shape.length !== 2 || rows === 1 || typeof depth !== 'number' || typeof columns !== 'number') return undefined;
  const same = (s: Shape) => s.length === 2 && s[0] === rows && s[1] === columns;
  if (!matmuls.every((x) => x.inputs[0] === a && x.inputs[1].type.shape.length === 2 && same(x.output.type.shape))) return undefined;
  if (k.nodes.some((n) => n.op !== Op.Matmul && [Op.Sum, Op.Mean, Op.Max, Op.Argmax, Op.UpdateSlice].includes(n.op as Op))) return undefined;
  if (!writes.every((v) => same(v.type.shape))) return undefined;
  return { matmuls, rows, columns, depth };
}

/**
 * A 16-bit float result of arithmetic, rounded to its dtype as the reference rounds every op's result (kernels
 * compute in f32: without it, 60000 + 60000 in f16 would not overflow inside a kernel). f32 graphs get nothing.
 */
function round16(v: Value, e: KExpr): KExpr {
  const d = v.type.dtype;
  return (d === DType.F16 || d === DType.BF16) && e.t === 'f32' ? { k: 'cast', a: e, t: 'f32', round: d } : e;
}

/** Whether an expression has at least `n` nodes (counted until there are that many). */
function exprSizeAtLeast(e: KExpr, n: number): boolean {
  let left = n;
  const visit = (x: KExpr): void => {
    if (--left <= 0) return;
    switch (x.k) {
      case 'const': case 'var': break;
      case 'load': case 'elem': visit(x.index); break;
      case 'unary': case 'cast': visit(x.a); break;
      case 'binary': visit(x.a); visit(x.b); break;
      case 'select': visit(x.cond); visit(x.a); visit(x.b); break;
      case 'reduce': visit(x.n); visit(x.body); break;
      default: x satisfies never;
    }
  };
  visit(e);
  return left <= 0;
}

/** A binding as text: equal for equal bindings. */
function bindingKey(b: Binding): string {
  return `${b.kind}:${b.kind === 'output' ? b.index : b.kind === 'temp' ? b.slot : b.name}`;
}
