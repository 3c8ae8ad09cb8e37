// What a kernel's profile counts as the bytes it moves: its buffers whole, but not a table it reads only at rows
// computed from other loads (a gather of embedding rows), which would make a decode step's first kernel seem to
// stream the whole embedding.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { param, trace } from '../../compiler/index.ts';
import { DType } from '../../ir/dtype.ts';
import { kernelBytes } from '../../runtime/device.ts';

const bytes4 = (_d: DType, n: number) => 4 * n;

test('a gathered table is not counted; the weights a product streams are, whole', () => {
  const g = trace('embed', [{ name: 'ids', dtype: DType.I32, shape: [1] }], (ids) => {
    const emb = param('emb', DType.F32, [1000, 64]);
    return { y: emb.gather(ids).matmul(param('w', DType.F32, [64, 32])) };
  });
  const kernels = compileModule({ graphs: [g] }).graphs[0].kernels;
  const total = kernels.reduce((s, k) => s + kernelBytes(k, {}, bytes4), 0);
  // ids (1) + w (64 · 32) + y (32), each kernel's temporaries besides; never the 64,000 of emb.
  assert.ok(total >= 4 * (1 + 64 * 32 + 32), `${total}`);
  assert.ok(total < 4 * 64000, `${total} counts the table`);
});

test('a table read at loop indices (the tied LM head) is counted whole', () => {
  const g = trace('head', [{ name: 'x', dtype: DType.F32, shape: [1, 64] }], (x) => ({ y: x.matmul(param('emb', DType.F32, [1000, 64]).transpose()) }));
  const [k] = compileModule({ graphs: [g] }).graphs[0].kernels;
  assert.is(kernelBytes(k, {}, bytes4), 4 * (64 + 64000 + 1000));
});

test.run();
