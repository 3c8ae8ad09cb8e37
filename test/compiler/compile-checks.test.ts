// compile() checks what it is given before any kernel runs: host tensors (shape, dtype, data), parameters and
// states against what the graph declares, index inputs against their range, input and size names; symbolic sizes
// of any name run correctly (kernels name them apart from their own identifiers); indices computed out of range
// stop host kernels with a named error and are clamped on GPUs (README, Numerics).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { arange, compile, DType, param, scalar, state, tensor, Tensor, type HostTensor } from '../../index.ts';

const hostBackends = ['cpu', 'reference'] as const;

/** Expects fn to throw an error whose message holds every part. */
function throwsWith(fn: () => unknown, ...parts: string[]): void {
  try {
    fn();
  } catch (e) {
    const msg = (e as Error).message;
    for (const p of parts) assert.ok(msg.includes(p), `message should mention ${JSON.stringify(p)}: ${msg}`);
    return;
  }
  throw new Error(`expected an error mentioning ${parts.join(', ')}`);
}

async function rejectsWith(p: () => Promise<unknown>, ...parts: string[]): Promise<void> {
  try {
    await p();
  } catch (e) {
    const msg = (e as Error).message;
    for (const part of parts) assert.ok(msg.includes(part), `message should mention ${JSON.stringify(part)}: ${msg}`);
    return;
  }
  throw new Error(`expected a rejection mentioning ${parts.join(', ')}`);
}

async function webgpu(): Promise<boolean> {
  try {
    const { openDevice } = await import('../../runtime/devices/open.ts');
    (await openDevice('webgpu')).destroy();
    return true;
  } catch {
    return false;
  }
}

test('host tensors are checked: data length, typed array, dtype, shape, and not-a-tensor, naming the input', () => {
  for (const backend of hostBackends) {
    const f = compile((x: Tensor, y: Tensor) => x.add(y), { backend });
    const good = tensor([1, 2, 3, 4], [2, 2]);
    throwsWith(() => f({ dtype: DType.F32, shape: [2, 2], data: new Float32Array(3) }, good), 'input x', 'f32[2,2] (4 elements) but holds 3 values');
    throwsWith(() => f(good, { dtype: DType.F32, shape: [2, 2], data: new Int32Array(4) }), 'input y', 'Int32Array', 'Float32Array');
    throwsWith(() => f(good, { dtype: 'f64' as DType, shape: [2, 2], data: new Float32Array(4) }), 'input y', "unknown dtype 'f64'");
    throwsWith(() => f(good, { dtype: DType.F32, shape: [2, -2], data: new Float32Array(4) }), 'input y', 'bad shape');
    throwsWith(() => f(good, [[1, 2], [3, 4]] as unknown as HostTensor), 'input y', 'not a host tensor', 'tensor(data, shape, dtype)');
    throwsWith(() => f(good, 3 as unknown as HostTensor), 'input y', 'not a host tensor');
    assert.equal([...(f(good, good) as HostTensor).data], [2, 4, 6, 8]);
  }
});

test('parameters and states are checked against what the graph declares, naming them', () => {
  for (const backend of hostBackends) {
    const w = compile((x: Tensor) => x.mul(param('w', DType.F32, [2])), { backend, params: { w: tensor([1, 2, 3]) } });
    throwsWith(() => w(tensor([1, 2])), "parameter 'w'", 'must be f32[2], got f32[3]');
    const wi = compile((x: Tensor) => x.mul(param('w', DType.F32, [2])), { backend, params: { w: tensor([1, 2], [2], DType.I32) } });
    throwsWith(() => wi(tensor([1, 2])), "parameter 'w'", 'must be f32[2], got i32[2]');
    const short = compile((x: Tensor) => x.mul(param('w', DType.F32, [2])), { backend, params: { w: { dtype: DType.F32, shape: [2], data: new Float32Array(1) } } });
    throwsWith(() => short(tensor([1, 2])), "parameter 'w'", 'holds 1 values');
    const states = new Map([['s', tensor([1, 2, 3])]]);
    const s = compile((x: Tensor) => {
      const st = state('s', DType.F32, [4]);
      return st.write(x, scalar(0, DType.I32), 0).sum();
    }, { backend, states });
    throwsWith(() => s(tensor([5])), "state 's'", 'must be f32[4], got f32[3]');
  }
});

test('symbolic sizes of any name run (row, b, Math, rows, fn, sizes, sz_S, t0)', async () => {
  const names = ['row', 'b', 'Math', 'rows', 'fn', 'sizes', 'sz_S', 't0', 'S'];
  const backends: string[] = [...hostBackends, ...((await webgpu()) ? ['webgpu'] : [])];
  for (const backend of backends) {
    for (const name of names) {
      const f = compile((x: Tensor) => x.mul(2).sum(0, { keepdims: true }).add(arange(name, DType.F32).reshape(-1, 1).sum(0)),
        { backend: backend as 'cpu', dynamic: { x: { 0: name } }, buckets: [4, 8] });
      const got = await f(tensor([[1, 2], [3, 4], [5, 6]])) as HostTensor;
      // padded rows are zeros: the column sums are 2·(1+3+5), 2·(2+4+6), plus arange over the bucket (0+1+2+3)
      assert.equal([...got.data], [18 + 6, 24 + 6], `${name} on ${backend}`);
    }
  }
  throwsWith(() => compile((x: Tensor) => x, { dynamic: { x: { 0: 'not a name' } } }), 'must be named by an identifier', '"not a name"');
});

test('input names: identifiers, distinct; options.inputs names inputs where parameters cannot (bundlers rename them)', () => {
  throwsWith(() => compile((x: Tensor) => x, { inputs: ['a b'] }), 'options.inputs must be identifiers');
  throwsWith(() => compile((x: Tensor, y: Tensor) => x.add(y), { inputs: ['a', 'a'] }), "name 'a' twice");
  // A destructured or minified parameter list gives x0, x1...; options.inputs gives the names dynamic refers to.
  const f = compile((...[a, b]: Tensor[]) => a.add(b), { inputs: ['tokens', 'bias'], dynamic: { tokens: { 0: 'S' } } });
  assert.equal(f.inputNames, ['tokens', 'bias']);
  throwsWith(() => compile((x: Tensor) => x, { backend: 'cuda ' as 'cpu' }), "unknown backend 'cuda '");
});

test('gather rows and state-write positions from inputs are checked on the host, named, on every backend', async () => {
  const backends: string[] = [...hostBackends, ...((await webgpu()) ? ['webgpu'] : [])];
  for (const backend of backends) {
    const g = compile((ids: Tensor) => param('table', DType.F32, [4, 2]).gather(ids), { backend: backend as 'cpu', params: { table: tensor([0, 1, 2, 3, 4, 5, 6, 7], [4, 2]) } });
    await rejectsWith(async () => g(tensor([1, 4], [2], DType.I32)), 'input ids[1] = 4 is out of range [0, 4)', 'gather');
    await rejectsWith(async () => g(tensor([-1], [1], DType.I32)), 'input ids[0] = -1');
    assert.equal([...(await g(tensor([3, 0], [2], DType.I32)) as HostTensor).data], [6, 7, 0, 1]);
    const w = compile((x: Tensor, pos: Tensor) => state('cache', DType.F32, [4, 2]).write(x, pos, 0).sum(), { backend: backend as 'cpu' });
    await rejectsWith(async () => w(tensor([[1, 2], [3, 4]]), tensor([3], [], DType.I32)), 'input pos[0] = 3 is out of range [0, 3)', "state 'cache'");
  }
});

test('indices computed out of range: host kernels stop with a named error, GPUs clamp', async () => {
  const table = tensor([0, 1, 2, 3, 4, 5, 6, 7], [4, 2]);
  // The row is computed in the graph (ids + 3), so no input check can see it.
  const fn = (ids: Tensor) => param('table', DType.F32, [4, 2]).gather(ids.add(3));
  throwsWith(() => compile(fn, { backend: 'cpu', params: { table } })(tensor([2], [1], DType.I32)), 'index 5 is out of range [0, 4)');
  throwsWith(() => compile(fn, { backend: 'reference', params: { table } })(tensor([2], [1], DType.I32)), 'gather index 5 is out of range');
  if (await webgpu()) {
    const got = await compile(fn, { backend: 'webgpu', params: { table } })(tensor([2, -9], [2], DType.I32));
    assert.equal([...got.data], [6, 7, 0, 1], 'rows clamped into the table');
  }
});

test.run();
