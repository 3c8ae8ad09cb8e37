import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { printGraph } from '../../ir/printer.ts';
import { verifyGraph } from '../../ir/verify.ts';

test('prints an ffn graph with types, attributes and renumbered results', () => {
  const g = new Graph('ffn');
  const x = g.addInput('x', { dtype: DType.F32, shape: [4, 8] });
  const w1 = g.addParam('w1', { dtype: DType.F32, shape: [8, 16] });
  const h = g.addNode('matmul', [x, w1], {}, 'examples/ffn.ts:12');
  const s = g.addNode('sum', [h], { keepdims: true, axes: [1] });
  g.outputs.push(s);
  verifyGraph(g);
  assert.is(printGraph(g, { locations: false }), [
    'graph @ffn(%x: f32[4,8]) -> (f32[4,1]) {',
    '  param %w1: f32[8,16]',
    '  %0: f32[4,16] = matmul %x, %w1',
    '  %1: f32[4,1] = sum %0 [axes=[1], keepdims=true]',
    '  return %1',
    '}',
    '',
  ].join('\n'));
});

test.run();
