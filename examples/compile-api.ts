// The compile() API as a framework author uses it: a function compiled on first call and reused while its guards
// hold, a dynamic axis padded to buckets, a custom op that fuses with its neighbours, a pass of your own, and the
// IR printed and parsed back. Run: node --import tsx examples/compile-api.ts

import {
  arange, compile, defaultPasses, insertPass, keepNode, Op, param, parseModule, printGraph, printModule, registerOp,
  rewriteGraph, tensor, Tensor, trace, validLength, where, DType, type Pass,
} from 'tsfuse';

const show = (t: { shape: number[]; data: ArrayLike<number> }) =>
  `[${t.shape.join(',')}] ${Array.from(t.data, (v) => +v.toFixed(4)).join(' ')}`;

// 1. Guards and the cache: the first call traces and compiles; a call with the same dtypes and shapes reuses the
//    compiled graph; a new shape or dtype compiles again, and stats say which guard failed.
const scaleShift = compile((x: Tensor, w: Tensor) => x.mul(w).add(1).silu());
scaleShift(tensor([[1, 2], [3, 4]]), tensor([0.5, 2]));
scaleShift(tensor([[5, 6], [7, 8]]), tensor([1, 1]));          // cache hit
scaleShift(tensor([[1, 2, 3]]), tensor([1, 1, 1]));            // new static shape: compiles
scaleShift(tensor([[1, 2]], undefined, 'f16'), tensor([1, 1], undefined, 'f16')); // new dtype: compiles
const s = scaleShift.stats;
console.log(`scaleShift: ${s.calls} calls, ${s.compilations} compilations, ${s.cacheHits} cache hit(s)`);
for (const c of s.compiles) console.log(`  compiled ${c.key}: ${c.failed ? `guard failed: ${c.failed.message}` : 'first call'}`);

// 2. A dynamic axis: rows of any count run padded to the next power of two, one compilation per bucket. The mean
//    over rows masks the padding with validLength('S'); the per-row output is sliced back to the real count.
const normalizeRows = compile((x: Tensor) => {
  const valid = arange(x.dim(0)).lt(validLength('S')).reshape(-1, 1);
  const mean = where(valid, x, 0).sum(0).div(validLength('S').cast(DType.F32));
  return [x.sub(mean), mean];
}, { dynamic: { x: { 0: 'S' } } });
for (const rows of [3, 4, 5, 7]) {
  const x = tensor(Array.from({ length: rows * 2 }, (_, i) => i), [rows, 2]);
  const [centered, mean] = normalizeRows(x);
  console.log(`normalizeRows(${rows} rows): mean ${show(mean)}, centered ${show(centered).slice(0, 40)}…`);
}
console.log(`normalizeRows: ${normalizeRows.stats.compilations} compilations for 4 calls (buckets ${[...normalizeRows.cache.keys()].join(', ')})`);

// 3. A custom op: its shape rule (the default elementwise one), reference semantics and kernel-IR lowering.
//    It fuses with the matmul before it and the add after it into one kernel.
const geluTanh = registerOp({
  name: 'gelu_tanh',
  arity: 1,
  reference: ([x]) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
  lower: ([x], b) => {
    const cube = b.mul(b.mul(x, x), x);
    const inner = b.mul(b.const(Math.sqrt(2 / Math.PI)), b.add(x, b.mul(b.const(0.044715), cube)));
    return b.mul(b.mul(b.const(0.5), x), b.add(b.const(1), b.unary('tanh', inner)));
  },
});
const ffn = compile((x: Tensor) => geluTanh(x.matmul(param('w', DType.F32, [2, 3]))).add(1), {
  params: { w: tensor([[1, 0, -1], [0.5, 2, 0]]) },
});
console.log(`ffn: ${show(ffn(tensor([[1, 2]])))}`);
const fused = [...ffn.cache.values()][0].compiled!.graphs[0].graph;
console.log(`ffn compiles to ${fused.kernels.length} kernel:\n${printGraph(fused, { locations: false })}`);

// 4. A pass of your own, inserted into the pipeline: log(exp(x)) = x.
const logExp: Pass = {
  name: 'log-exp',
  run: (g) => rewriteGraph(g, (n, ins, out) =>
    n.op === Op.Log && n.inputs[0].producer?.op === Op.Exp ? ins[0].producer!.inputs[0] : keepNode(n, ins, out)),
};
const passes = insertPass(defaultPasses, { after: 'simplify' }, logExp);
const roundTrip = compile((x: Tensor) => x.exp().log().mul(2), { passes });
console.log(`roundTrip: ${show(roundTrip(tensor([1, 2, 3])))}; after log-exp the graph has ${[...roundTrip.cache.values()][0].compiled!.graphs[0].graph.nodes.length} node(s)`);

// 5. trace() and the IR text format: print, parse back, print again.
const g = trace('axpy', [{ name: 'a', dtype: DType.F32, shape: [] }, { name: 'x', dtype: DType.F32, shape: [4] }], (a, x) => x.mul(a).add(x));
const text = printModule({ graphs: [g] }, { locations: false });
console.log(`${text}parsed back identically: ${printModule(parseModule(text), { locations: false }) === text}`);
