// The IR text at its limits: parsing is linear in the length of operand lists (a 20,000-operand concat), and what
// the printer could print ambiguously never gets into a graph: names that are node numbers or that the lexer would
// split, sizes past 2^53, integer constants that are not integers, u32 arithmetic, and one state with two types.
// Each is refused with file:line:column; everything accepted prints back byte-identical.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DType } from '../../ir/dtype.ts';
import { Graph, GraphError } from '../../ir/graph.ts';
import { IrParseError, parseModule } from '../../ir/parser.ts';
import { printModule } from '../../ir/printer.ts';

function concatText(n: number): string {
  const ins = Array.from({ length: n }, (_, i) => `%x${i}: f32[1]`).join(', ');
  const ops = Array.from({ length: n }, (_, i) => `%x${i}`).join(', ');
  return `graph @g(${ins}) -> (f32[${n}]) {\n  %0: f32[${n}] = concat ${ops} [axis=0]\n  return %0\n}\n`;
}

test('parsing is linear: 20,000 operands and inputs in well under a few seconds, and the text prints back', () => {
  const small = concatText(2000);
  let t0 = performance.now();
  parseModule(small);
  const tSmall = performance.now() - t0;
  const big = concatText(20000);
  t0 = performance.now();
  const m = parseModule(big);
  const tBig = performance.now() - t0;
  assert.is(printModule(m), big);
  // Ten times the operands in well under a hundred times the time (a quadratic parser took 4 s for 5,000).
  assert.ok(tBig < 30 * Math.max(tSmall, 20), `2,000 operands: ${tSmall.toFixed(0)} ms; 20,000: ${tBig.toFixed(0)} ms`);
});

/** Expects an IrParseError at line:col whose reason mentions every part. */
function refused(text: string, at: string, ...parts: string[]): void {
  try {
    parseModule(text, 'bad.ir');
  } catch (e) {
    assert.instance(e, IrParseError);
    const msg = (e as Error).message;
    assert.ok(msg.startsWith(`bad.ir:${at}: `), `at ${at}: ${msg}`);
    for (const p of parts) assert.ok(msg.includes(p), `should mention ${JSON.stringify(p)}: ${msg}`);
    return;
  }
  throw new Error(`accepted:\n${text}`);
}

test('what would not print back is refused where it is written', () => {
  refused('graph @g(%0: f32[2]) -> (f32[2]) {\n  %0: f32[2] = neg %0\n  return %0\n}\n', '1:10', '%0 cannot be declared', 'not a number');
  refused('graph @g(%x: f32[1000000000000000000000]) -> (f32[2]) {\n  %0: f32[2] = neg %x\n  return %0\n}\n', '1:14', 'not exact');
  refused('graph @g(%x: f32[4]) -> (f32[2]) {\n  %0: f32[2] = slice %x [axis=0, end=9007199254740993, start=0]\n  return %0\n}\n', '2:38', 'below 2^53');
  refused('graph @g(%x: i32[2]) -> (i32[2]) {\n  %0: i32[] = const [dtype=i32, value=0.5]\n  %1: i32[2] = add %x, %0\n  return %1\n}\n', '2:3', 'dtype i32 needs an integer', '0.5');
  refused('graph @g(%x: i32[2]) -> (i32[2]) {\n  %0: i32[] = const [dtype=i32, value=inf]\n  %1: i32[2] = add %x, %0\n  return %1\n}\n', '2:3', 'got Infinity');
  refused('graph @g(%x: u32[2]) -> (u32[2]) {\n  %0: u32[2] = add %x, %x\n  return %0\n}\n', '2:3', 'does not compute on u32');
  refused('graph @a(%x: f32[2]) -> (f32[2]) {\n  state %s: f32[2]\n  %0: f32[2] = add %x, %s\n  return %0\n}\n'
    + 'graph @b(%x: f32[2]) -> (f32[2]) {\n  state %s: f32[3]\n  %0: f32[2] = neg %x\n  return %0\n}\n', '1:1', 'state %s is f32[2] in graph @a but f32[3] in graph @b');
});

test('graphs built in code refuse the same names and sizes', () => {
  const g = new Graph('g');
  for (const bad of ['0', '12', 'a b', 'x/y', '']) assert.throws(() => g.addInput(bad, { dtype: DType.F32, shape: [1] }), (e: Error) => e instanceof GraphError);
  assert.throws(() => g.addParam('w', { dtype: DType.F32, shape: [2 ** 60] }), /bad dimension/);
  assert.throws(() => g.addParam('w', { dtype: DType.F32, shape: ['S T'] }), /bad dimension/);
  g.addParam('model.layers.0.w', { dtype: DType.F32, shape: ['S', 3] });
});

test('special values print and parse back', () => {
  const text = 'graph @g(%x: f32[2]) -> (f32[2]) {\n'
    + '  %0: f32[] = const [dtype=f32, value=nan]\n  %1: f32[] = const [dtype=f32, value=-inf]\n'
    + '  %2: f32[] = const [dtype=f32, value=-0]\n  %3: f32[] = const [dtype=f32, value=1e+300]\n'
    + '  %4: i32[] = const [dtype=i32, value=-2147483648]\n  %5: u32[] = const [dtype=u32, value=4294967295]\n'
    + '  %6: f32[2] = add %x, %0\n  %7: f32[2] = mul %6, %1\n  %8: f32[2] = sub %7, %2\n  %9: f32[2] = add %8, %3\n'
    + '  return %9\n}\n';
  assert.is(printModule(parseModule(text)), text);
});

test.run();
