// The IR text parser: print → parse → print is byte-identical, attribute values come back as the same JS values,
// broken inputs fail at the right line:column with a readable message, and ir/grammar.ts matches ir/grammar.ne.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DType } from '../../ir/dtype.ts';
import { Graph, KernelAttrs, Module } from '../../ir/graph.ts';
import { OpGroup, registerOpDef } from '../../ir/ops.ts';
import { IrParseError, parseGraph, parseModule } from '../../ir/parser.ts';
import { printModule } from '../../ir/printer.ts';
import { Dim } from '../../ir/shape.ts';
import { verifyModule } from '../../ir/verify.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const t = (dtype: DType, ...shape: Dim[]) => ({ dtype, shape });

// No built-in op has a string attribute; a test op covers JSON-quoted and bare strings.
registerOpDef({ name: 'test_label', group: OpGroup.Unary, arity: 1, attrs: { label: 'string' }, infer: ([x]) => x });
const labels = ['hello world', 'true', 'inf', 'quote " backslash \\ newline \n tab \t', 'ünïcödé ✓', '', 'model.layers.0'];
const floats = [1e-5, -0.5, Infinity, -Infinity, NaN, -0, 0, 0.1, 1e21, 1e-7, 3, 123456789.125, -2.5e-300];

function ffn(): Graph {
  const g = new Graph('ffn');
  const x = g.addInput('x', t(DType.F32, 4, 8));
  const w1 = g.addParam('w1', t(DType.F32, 8, 16));
  const w3 = g.addParam('w3', t(DType.F32, 8, 16));
  const h = g.addNode('silu', [g.addNode('matmul', [x, w1], {}, 'examples/ffn.ts:12')], {}, 'examples/ffn.ts:12');
  g.outputs.push(g.addNode('mul', [h, g.addNode('matmul', [x, w3], {}, 'examples/ffn.ts:13')], {}, 'examples/ffn.ts:14'));
  return g;
}

/** Every attribute kind, special floats and strings; locations on some nodes only. */
function attrs(): Graph {
  const g = new Graph('attrs');
  const x = g.addInput('x', t(DType.F32, 2, 3, 4));
  const s = g.addNode('sum', [x], { axes: [0, 2], keepdims: true }, 'a file with spaces.ts:7');
  const outs = [
    g.addNode('expand', [s], { shape: [2, 3, 4] }),
    g.addNode('mean', [x], { axes: [1], keepdims: false }),
    g.addNode('cast', [g.addNode('argmax', [x], { axis: 2, keepdims: false })], { dtype: DType.F16 }),
    g.addNode('permute', [x], { perm: [2, 0, 1] }),
    g.addNode('reshape', [x], { shape: [6, 4] }),
    g.addNode('slice', [x], { axis: 2, start: 1, end: 3 }),
    g.addNode('concat', [x, x, x], { axis: 0 }),
    g.addNode('softmax', [x], { axis: 2 }),
    g.addNode('arange', [], { n: 5, dtype: DType.I32 }),
    ...floats.map((value) => g.addNode('const', [], { value, dtype: DType.F32 })),
    ...labels.map((label) => g.addNode('test_label', [x], { label })),
  ];
  g.outputs.push(...outs);
  return g;
}

/** Symbolic dims and dotted parameter names, as a traced Llama has them. */
function embed(): Graph {
  const g = new Graph('prefill');
  const ids = g.addInput('ids', t(DType.I32, 'S'));
  const table = g.addParam('model.embed_tokens.weight', t(DType.BF16, 32, 8));
  const e = g.addNode('gather', [table, ids], {}, 'examples/llama.ts:40');
  const r = g.addNode('reshape', [e], { shape: [1, 'S', 8] });
  const pos = g.addNode('arange', [], { n: 'S', dtype: DType.I32 });
  g.outputs.push(r, pos);
  return g;
}

/** A KV-cache write: a state, update_slice and the state update. */
function decode(): Graph {
  const g = new Graph('decode');
  const x = g.addInput('x', t(DType.F32, 1, 8));
  const pos = g.addInput('pos', t(DType.I32));
  const cache = g.addState('model.layers.0.k_cache', t(DType.F32, 16, 8));
  const u = g.addNode('update_slice', [cache, x, pos], { axis: 0 }, 'examples/llama.ts:77');
  g.setState(cache, u);
  g.outputs.push(g.addNode('sum', [u], { axes: [0], keepdims: false }));
  return g;
}

/** Concatenated projection weights, computed at load time; derived params may build on derived params. */
function derived(): Graph {
  const g = new Graph('derived');
  const x = g.addInput('x', t(DType.BF16, 2, 8));
  const [q, k, v] = ['q', 'k', 'v'].map((p) => g.addParam(`model.layers.0.self_attn.${p}_proj.weight`, t(DType.BF16, 8, 8)));
  const qkv = g.addDerivedParam('model.layers.0.self_attn.qkv_proj.weight', 'concat', [q, k, v], { axis: 1 });
  const wide = g.addDerivedParam('wide', 'concat', [qkv, q], { axis: 1 });
  g.outputs.push(g.addNode('matmul', [x, qkv], {}, 'examples/llama.ts:61'), g.addNode('matmul', [x, wide]));
  return g;
}

/** Kernel attribute values of every kind, strings that must stay strings included. */
const kernelAttrs: KernelAttrs = {
  kind: 'contraction',
  rule: 'matmul → silu * matmul',
  tiles: [16, 64, 'S'],
  names: ['a b', 'true', '3', 'information'],
  empty: [],
  vectorize: true,
  score: -0.25,
  label: 'inf',
};

/** A fused decode step: a derived param, two kernels (one writing the KV cache), locations on some nodes. */
function fused(): Graph {
  const g = new Graph('fused');
  const x = g.addInput('x', t(DType.F32, 1, 8));
  const pos = g.addInput('pos', t(DType.I32));
  const w1 = g.addParam('w1', t(DType.F32, 8, 16));
  const w3 = g.addParam('w3', t(DType.F32, 8, 16));
  const w13 = g.addDerivedParam('w13', 'concat', [w1, w3], { axis: 1 });
  const cache = g.addState('k_cache', t(DType.F32, 16, 16));
  const h = g.addNode('matmul', [x, w13], {}, 'examples/ffn.ts:12');
  const a = g.addNode('silu', [g.addNode('slice', [h], { axis: 1, start: 0, end: 16 })], {}, 'examples/ffn.ts:13');
  const y = g.addNode('mul', [a, g.addNode('slice', [h], { axis: 1, start: 16, end: 32 })], {}, 'examples/ffn.ts:13');
  const u = g.addNode('update_slice', [cache, y, pos], { axis: 0 }, 'examples/llama.ts:77');
  g.setState(cache, u);
  g.outputs.push(y);
  g.kernels = [
    { name: 'k0', nodes: g.nodes.slice(0, 1), attrs: kernelAttrs },
    { name: 'ffn.gate_up', nodes: g.nodes.slice(1), attrs: { kind: 'state-write', rule: 'silu(a) * b; "quoted"\n' } },
  ];
  return g;
}

const module = (): Module => ({ graphs: [ffn(), attrs(), embed(), decode(), derived(), fused()] });

test('the test graphs are valid', () => {
  verifyModule(module());
});

test('print → parse → print is byte-identical, with and without locations', () => {
  for (const locations of [true, false]) {
    const text = printModule(module(), { locations });
    assert.is(printModule(parseModule(text), { locations }), text);
  }
  for (const g of module().graphs) {
    const text = printModule({ graphs: [g] });
    assert.is(printModule({ graphs: [parseGraph(text)] }), text);
  }
});

test('attribute values come back as the same JS values', () => {
  const g = parseModule(printModule(module())).graphs[1];
  const consts = g.nodes.filter((n) => n.op === 'const').map((n) => n.attrs.value);
  assert.is(consts.length, floats.length);
  consts.forEach((v, i) => assert.ok(Object.is(v, floats[i]), `const ${i}: got ${String(v)}, want ${floats[i]}`));
  assert.equal(g.nodes.filter((n) => n.op === 'test_label').map((n) => n.attrs.label), labels);
  const sum = g.nodes.find((n) => n.op === 'sum')!;
  assert.equal(sum.attrs, { axes: [0, 2], keepdims: true });
  assert.is(sum.loc, 'a file with spaces.ts:7');
  assert.is(g.nodes.find((n) => n.op === 'cast')!.attrs.dtype, 'f16');
  assert.is(g.nodes.find((n) => n.op === 'mean')!.loc, undefined);

  const p = parseModule(printModule(module())).graphs[2];
  assert.equal(p.params.map((v) => v.name), ['model.embed_tokens.weight']);
  assert.equal(p.nodes[1].attrs.shape, [1, 'S', 8]);
  assert.equal(p.outputs.map((v) => v.type), [t(DType.BF16, 1, 'S', 8), t(DType.I32, 'S')]);
});

test('state updates link the parsed state to the parsed node', () => {
  const g = parseModule(printModule(module())).graphs[3];
  assert.is(g.stateUpdates.length, 1);
  assert.is(g.stateUpdates[0].state, g.states[0]);
  assert.is(g.stateUpdates[0].value, g.nodes[0].output);
  assert.is(g.nodes[0].inputs[0], g.states[0]);
});

test('derived params come back with their op, attributes and the parsed params as operands', () => {
  const g = parseModule(printModule(module())).graphs[4];
  assert.is(g.params.length, 5);
  const [q, k, v, qkv, wide] = g.params;
  assert.is(g.derivations.size, 2);
  assert.equal(g.derivations.get(qkv), { op: 'concat', inputs: [q, k, v], attrs: { axis: 1 } });
  assert.equal(g.derivations.get(wide), { op: 'concat', inputs: [qkv, q], attrs: { axis: 1 } });
  assert.ok(g.derivations.get(qkv)!.inputs[0] === q && g.derivations.get(wide)!.inputs[0] === qkv);
  assert.equal(qkv.type, t(DType.BF16, 8, 24));
  assert.is(g.nodes[0].inputs[1], qkv);
});

test('kernels come back in order, over the parsed nodes, with attribute values of the same JS types', () => {
  const g = parseModule(printModule(module())).graphs[5];
  assert.equal(g.kernels.map((k) => k.name), ['k0', 'ffn.gate_up']);
  assert.ok(g.kernels.flatMap((k) => k.nodes).every((n, i) => n === g.nodes[i]));
  assert.equal(g.kernels.map((k) => k.nodes.length), [1, 5]);
  assert.equal(g.kernels[0].attrs, kernelAttrs);
  assert.equal(g.kernels[1].attrs, { kind: 'state-write', rule: 'silu(a) * b; "quoted"\n' });
  assert.is(g.nodes[5].loc, 'examples/llama.ts:77');
  assert.is(g.nodes[1].loc, undefined);
  assert.is(g.stateUpdates[0].value, g.kernels[1].nodes[4].output);
});

/** The fused graph without locations: what a fusion golden test pins. */
const FUSED = `graph @fused(%x: f32[1,8], %pos: i32[]) -> (f32[1,16]) {
  param %w1: f32[8,16]
  param %w3: f32[8,16]
  param %w13: f32[8,32] = concat %w1, %w3 [axis=1]
  state %k_cache: f32[16,16]
  kernel @k0 [empty=[], kind=contraction, label="inf", names=["a b","true","3",information], rule="matmul → silu * matmul", score=-0.25, tiles=[16,64,S], vectorize=true] {  # reads %x, %w13; writes %0
    %0: f32[1,32] = matmul %x, %w13
  }
  kernel @ffn.gate_up [kind="state-write", rule="silu(a) * b; \\"quoted\\"\\n"] {  # reads %0, %k_cache, %pos; writes %4, %5
    %1: f32[1,16] = slice %0 [axis=1, end=16, start=0]
    %2: f32[1,16] = silu %1
    %3: f32[1,16] = slice %0 [axis=1, end=32, start=16]
    %4: f32[1,16] = mul %2, %3
    %5: f32[16,16] = update_slice %k_cache, %4, %pos [axis=0]
  }
  state %k_cache <- %5
  return %4
}
`;

test('a fused graph prints as kernel blocks (golden) and reads back', () => {
  assert.is(printModule({ graphs: [fused()] }, { locations: false }), FUSED);
  assert.is(printModule({ graphs: [parseGraph(FUSED)] }, { locations: false }), FUSED);
});

test('hand-written kernels: the comment after "{" is ignored and regenerated, comment lines are skipped', () => {
  const text = [
    'graph @g(%x: f32[4]) -> (f32[4]) {',
    '  kernel @a [kind=elementwise] {   # stale: reads nothing',
    '    # a comment line',
    '    %y: f32[4] = neg %x   # here.ts:1',
    '  }',
    '  kernel @b [kind=elementwise]{',
    '    %z: f32[4] = exp %y',
    '  }   # end of @b',
    '  return %z',
    '}',
  ].join('\n');
  assert.is(printModule({ graphs: [parseGraph(text)] }, { locations: false }), [
    'graph @g(%x: f32[4]) -> (f32[4]) {',
    '  kernel @a [kind=elementwise] {  # reads %x; writes %0',
    '    %0: f32[4] = neg %x',
    '  }',
    '  kernel @b [kind=elementwise] {  # reads %0; writes %1',
    '    %1: f32[4] = exp %0',
    '  }',
    '  return %1',
    '}',
    '',
  ].join('\n'));
});

test('hand-written text: any spacing, comment lines and node names; printing normalises it', () => {
  const text = [
    '# a dump of the ffn',
    '',
    'graph @ffn( %x:f32[4,8] ,%w1: f32[8, 16] )->(f32[4,16]){   # header comment',
    '  # a comment line',
    '',
    '  %h :f32[4,16]= matmul %x,%w1#examples/ffn.ts:12',
    '\treturn %h',
    '}',
  ].join('\n');
  const g = parseGraph(text, 'ffn.ir');
  assert.is(g.nodes[0].loc, 'examples/ffn.ts:12');
  assert.is(printModule({ graphs: [g] }), [
    'graph @ffn(%x: f32[4,8], %w1: f32[8,16]) -> (f32[4,16]) {',
    `  ${'%0: f32[4,16] = matmul %x, %w1'.padEnd(70)}# examples/ffn.ts:12`,
    '  return %0',
    '}',
    '',
  ].join('\n'));
});

const BASE = `graph @ffn(%x: f32[4,8], %w1: f32[8,16]) -> (f32[4,16]) {
  param %w3: f32[8,16]
  state %k: f32[4,16]
  %0: f32[4,16] = matmul %x, %w1
  %1: f32[4,16] = silu %0                   # examples/ffn.ts:12
  %2: f32[4,16] = matmul %x, %w3
  %3: f32[4,16] = mul %1, %2
  state %k <- %3
  return %3
}
`;

/** BASE (or FUSED) with the first occurrence of `from` replaced. */
function edit(from: string, to: string, base = BASE): string {
  assert.ok(base.includes(from), `${base === BASE ? 'BASE' : 'FUSED'} has no ${from}`);
  return base.replace(from, to);
}

/** FUSED with lines `first..last` (1-based, inclusive) replaced by `lines`. */
function editLines(first: number, last: number, ...lines: string[]): string {
  const all = FUSED.split('\n');
  all.splice(first - 1, last - first + 1, ...lines);
  return all.join('\n');
}

const broken: [what: string, text: string, at: string, message: string][] = [
  ['missing type', edit('%0: f32[4,16] =', '%0: ='), '4:7', 'unexpected "=" — expected a type such as f32[4,8]'],
  ['missing op', edit('= silu', '= = silu'), '5:19', 'unexpected "=" — expected an op name such as matmul'],
  ['missing "="', edit('= silu', 'silu'), '5:17', 'unexpected "silu" — expected "="'],
  ['bad dtype', edit('%0: f32', '%0: f33'), '4:7', "unknown dtype 'f33' — expected one of f32, f16, bf16, i32, u32, bool"],
  ['negative dimension', edit('f32[8,16]', 'f32[8,-16]'), '1:31', 'dimension -16 of f32[8,-16] is negative'],
  ['unclosed type bracket', edit('f32[4,8]', 'f32[4,8)'), '1:23', 'unexpected ")" — expected "," or "]"'],
  ['unclosed attribute list', edit('mul %1, %2', 'mul %1, %2 [a=1'), '7:34', 'unexpected end of line — expected "," or "]"'],
  ['undefined value', edit('%x, %w3', '%x, %w9'), '6:30', 'undefined value %w9'],
  ['use before definition', edit('mul %1', 'mul %4'), '7:23', 'undefined value %4'],
  ['duplicate definition', edit('%1: f32[4,16] = silu', '%0: f32[4,16] = silu'), '5:3', '%0 is already defined at line 4:3'],
  ['duplicate input', edit('%w1: f32[8,16])', '%x: f32[8,16])'), '1:26', '%x is already defined at line 1:12'],
  ['unknown op', edit('matmul %x, %w1', 'matmull %x, %w1'), '4:19', "unknown op 'matmull'"],
  ['wrong declared type (verifier)', edit('%2: f32[4,16]', '%2: f32[4,8]'), '6:3',
    'graph @ffn, node %2 (matmul f32[4,8], f32[8,16]): declared type f32[4,8] but the op gives f32[4,16]'],
  ['missing attribute (verifier)', edit('%1: f32[4,16] = silu %0', '%1: f32[4,1] = sum %0 [axes=[1]]'), '5:3',
    'graph @ffn, node %1 (sum f32[4,16] [axes=[1]]) at examples/ffn.ts:12: sum needs attribute keepdims (bool)'],
  ['truncated text', BASE.slice(0, BASE.indexOf('%2:') + 10), '6:13', 'unexpected end of input — expected a dimension (integer or name)'],
  ['empty text', '\n  \n', '1:1', 'unexpected end of input — expected "graph"'],
  ['bad attribute value', edit('silu %0', 'sum %0 [axes=[1], keepdims=yes]'), '5:46', 'sum attribute keepdims must be true or false, got yes'],
  ['attribute of the wrong kind', edit('silu %0', 'sum %0 [axes=1, keepdims=true]'), '5:32', 'sum attribute axes must be a list of integers, got 1'],
  ['bad attribute syntax', edit('silu %0', 'sum %0 [axes=[1,true]]'), '5:35',
    'unexpected "true" — expected an integer, a number, a name or a string'],
  ['unknown attribute', edit('silu %0', 'silu %0 [axis=1]'), '5:28', 'silu has no attribute axis'],
  ['attribute given twice', edit('silu %0', 'sum %0 [axes=[1], axes=[0]]'), '5:37', 'attribute axes is given twice'],
  ['unterminated string', edit('silu %0', 'silu %0 [a="abc]'), '5:30', 'unterminated string or bad escape — expected an attribute value'],
  ['garbage character', edit('mul %1, %2', 'mul %1, $2'), '7:27', 'unexpected character "$" — expected a value name such as %x'],
  ['state update of an input', edit('state %k <-', 'state %x <-'), '8:9', '%x is not a state (it is an input)'],
  ['state update of the wrong type (verifier)', edit('state %k: f32[4,16]', 'state %k: f32[4,8]'), '8:9',
    'graph @ffn: state %k: f32[4,8] is set to a f32[4,16]'],
  ['state updated twice', edit('  return', '  state %k <- %2\n  return'), '9:9', 'state %k is updated twice'],
  ['return type differs from the header', edit('-> (f32[4,16])', '-> (f32[4,8])'), '9:10', '%3 is f32[4,16] but the header declares f32[4,8]'],
  ['return count differs from the header', edit('return %3', 'return %3, %2'), '9:3', 'return gives 2 values but the header declares 1'],
  ['empty return (verifier)', edit('-> (f32[4,16])', '-> ()').replace('return %3', 'return'), '9:3', 'graph @ffn returns nothing'],
  ['two graphs of one name', `${BASE}\n${BASE}`, '12:7', 'graph @ffn is defined twice (first at line 1)'],
  ['text after the last graph', `${BASE}}\n`, '11:1', 'unexpected "}" — expected "graph"'],

  // Derived params.
  ['derived param of the wrong type (verifier)', edit('%w13: f32[8,32]', '%w13: f32[8,16]', FUSED), '4:9',
    'graph @fused: derived param %w13: declared f32[8,16] but concat gives f32[8,32]'],
  ['derived param the op rejects (verifier)', edit('[axis=1]', '[axis=2]', FUSED), '4:9',
    'graph @fused: derived param %w13: concat(f32[8,16], f32[8,16]): axis 2 is out of range for rank 2'],
  ['derived param from an input', edit('concat %w1, %w3', 'concat %w1, %x', FUSED), '4:39',
    'a derived param is computed from params only, and %x is an input'],
  ['derived param from a later param', edit('concat %w1, %w3', 'concat %w1, %w4', FUSED), '4:39', 'undefined value %w4'],
  ['derived param from itself', edit('concat %w1, %w3', 'concat %w13, %w3', FUSED), '4:34', 'undefined value %w13'],
  ['derived param with an unknown op', edit('= concat', '= concatenate', FUSED), '4:27', "unknown op 'concatenate'"],
  ['derived param with a bad attribute', edit('[axis=1]', '[axes=1]', FUSED), '4:44', 'concat has no attribute axes (it has axis)'],
  ['derived param without an op', edit('= concat %w1, %w3 [axis=1]', '=', FUSED), '4:26', 'unexpected end of line — expected an op name such as matmul'],

  // Kernels.
  ['kernel defined twice', edit('@ffn.gate_up', '@k0', FUSED), '9:10', 'kernel @k0 is defined twice (first at line 6)'],
  ['empty kernel', editLines(7, 7), '6:10', 'kernel @k0 is empty'],
  ['node after a kernel, outside every kernel', editLines(14, 15, '  }', '  %5: f32[16,16] = update_slice %k_cache, %4, %pos [axis=0]'), '15:3',
    '%5 is outside every kernel, but this graph has kernels (@k0 at line 6); a fused graph has all its nodes in kernels'],
  ['kernel after a node outside every kernel', editLines(6, 8, '  %0: f32[1,32] = matmul %x, %w13'), '7:10',
    'kernel @ffn.gate_up in a graph with nodes outside kernels (%0 at line 6); a fused graph has all its nodes in kernels'],
  ['unknown kernel kind', edit('kind=contraction', 'kind=contractoin', FUSED), '6:30',
    'kernel @k0: unknown kind contractoin (expected elementwise, reduce, contraction, attention, state-write)'],
  ['kernel kind that is not a name', edit('kind=contraction', 'kind=3', FUSED), '6:30',
    'kernel @k0: unknown kind 3 (expected elementwise, reduce, contraction, attention, state-write)'],
  ['kernel without a kind', edit('kind=contraction, ', '', FUSED), '6:10',
    'kernel @k0 has no kind (expected [kind=...], one of elementwise, reduce, contraction, attention, state-write)'],
  ['kernel attribute given twice', edit('[kind="state-write",', '[kind="state-write", kind=x,', FUSED), '9:44', 'attribute kind is given twice'],
  ['bad kernel attribute syntax', edit('[kind="state-write",', '[kind="state-write", tiles=[true],', FUSED), '9:51',
    'unexpected "true" — expected "]", an integer, a number, a name or a string'],
  ['declaration inside a kernel', editLines(7, 7, '    param %w2: f32[8,16]'), '7:5', 'unexpected "param" — expected "}" or a value name such as %x'],
  ['nested kernel', editLines(7, 7, '    kernel @k9 {'), '7:5', 'unexpected "kernel" — expected "}" or a value name such as %x'],
  ['unclosed kernel', editLines(8, 8), '8:3', 'unexpected "kernel" — expected "}" or a value name such as %x'],
  ['kernel without a name', edit('kernel @k0', 'kernel', FUSED), '6:10', 'unexpected "[" — expected a graph name such as @main'],
  ['kernel without a body', editLines(6, 8, '  kernel @k0'), '6:13', 'unexpected end of line — expected "[" or "{"'],
];

for (const [what, text, at, message] of broken) {
  test(`error: ${what}`, () => {
    const e = catchParse(() => parseModule(text, 'bad.ir'));
    assert.is(`${e.line}:${e.column}`, at, e.message);
    const [first, source, caret] = e.message.split('\n');
    assert.is(first, `bad.ir:${at}: ${message}`);
    assert.is(source, text.split('\n')[e.line - 1]);
    assert.is(caret, `${' '.repeat(e.column - 1)}^`);
  });
}

test('error message format: location, reason, source line and caret', () => {
  const e = catchParse(() => parseModule(edit('%0: f32[4,16] =', '%0: ='), 'bad.ir'));
  assert.is(e.message, [
    'bad.ir:4:7: unexpected "=" — expected a type such as f32[4,8]',
    '  %0: = matmul %x, %w1',
    '      ^',
  ].join('\n'));
  assert.is(e.file, 'bad.ir');
  assert.is(e.reason, 'unexpected "=" — expected a type such as f32[4,8]');
});

test('parseGraph rejects a module of two graphs, at the second one', () => {
  const e = catchParse(() => parseGraph(printModule({ graphs: [ffn(), decode()] })));
  assert.is(e.message.split('\n')[0], '<input>:11:7: expected one graph, found 2');
});

test('ir/grammar.ts is what nearleyc makes of ir/grammar.ne (run `npm run build:grammar`)', () => {
  const nearleyc = `${root}node_modules/nearley/bin/nearleyc.js`;
  const generated = execFileSync(process.execPath, [nearleyc, 'ir/grammar.ne'], { cwd: root, encoding: 'utf8' });
  assert.ok(generated.length > 0);
  assert.ok(generated === readFileSync(`${root}ir/grammar.ts`, 'utf8'), 'ir/grammar.ts is stale: run npm run build:grammar');
});

function catchParse(f: () => unknown): IrParseError {
  try {
    f();
  } catch (e) {
    if (e instanceof IrParseError) return e;
    throw e;
  }
  throw new Error('expected an IrParseError, but the text parsed');
}

test.run();
