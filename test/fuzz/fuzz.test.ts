// A seeded, bounded fuzz suite (well under a minute): thousands of generated inputs, each of which must end in a
// named error of the right kind or a correct result, never a crash, a hang or an "internal" TypeError:
//   - IR text mutations: an IrParseError with file:line:column, or a module that prints back and parses again;
//   - config.json corruptions: a ConfigError naming the file, or a config;
//   - safetensors corruptions (header bytes, truncations): a WeightsError naming the file, or readable tensors;
//   - compile() misuse: wrong inputs, options and parameters end in an error that names what is wrong;
//   - special values through random elementwise graphs: the CPU kernels equal the reference bit for bit (NaN = NaN).
// The special-value table itself runs on every backend in test/backends/special-values.test.ts; command-line
// arguments are fuzzed in test/fuzz/cli-args.test.ts.
//
//   FUZZ_SEED=7 FUZZ_SCALE=10 npm test -- fuzz      another seed, ten times the cases

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { interpret } from '../../backends/reference/interpreter.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { compile, DType, param, Tensor, tensor, trace, where } from '../../index.ts';
import { Graph } from '../../ir/graph.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { IrParseError, parseModule } from '../../ir/parser.ts';
import { printGraph, printModule } from '../../ir/printer.ts';
import { ConfigError, llamaConfigFromJson } from '../../runtime/config.ts';
import { HostDevice } from '../../runtime/devices/host.ts';
import { openDevice } from '../../runtime/devices/open.ts';
import { runOnce } from '../../runtime/executor.ts';
import { ParamStore } from '../../runtime/params.ts';
import { readSafetensors, WeightsError, writeSafetensors } from '../../runtime/safetensors.ts';
import { Rng } from '../backends/rng.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const fixtures = process.env.TSFUSE_FIXTURES ?? path.join(root, '../shared/fixtures');
const SEED = Number(process.env.FUZZ_SEED ?? 1);
const SCALE = Number(process.env.FUZZ_SCALE ?? 3);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-fuzz-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Errors that betray a bug of ours rather than naming the problem in the input. */
const internal = /Cannot read propert|is not a function|is not iterable|undefined \(reading|Maximum call stack|Invalid array length|Invalid typed array/;

function pick<T>(r: Rng, xs: readonly T[]): T {
  return xs[r.int(0, xs.length - 1)];
}

// ---- IR text ----

const irFiles = fs.readdirSync(path.join(root, 'test/golden'), { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.ir')).map((f) => fs.readFileSync(path.join(root, 'test/golden', f), 'utf8'));

const irPieces = ['%0', '%x', '%999', ',', '[', ']', '(', ')', '{', '}', ':', '=', '->', '<-', 'f32', 'i32', 'u32', 'bf16',
  'add', 'matmul', 'const', 'inf', '-inf', 'nan', '0.5', '-1', '1e+21', '9007199254740993', 'S', '%', '@g', '"s"', '#', '\n', ' ',
  'state %s: f32[2]', 'param %w: f32[2]', 'kernel @k [kind=elementwise] {', 'return', '[dtype=i32, value=0.5]', '[axis=7]', '\t', '\u00e9'];

function mutateIr(r: Rng, text: string): string {
  let t = text;
  for (let k = r.int(1, 3); k > 0; k--) {
    const at = r.int(0, t.length);
    switch (r.int(0, 4)) {
      case 0: t = t.slice(0, at) + t.slice(at + r.int(1, 8)); break; // delete
      case 1: t = t.slice(0, at) + pick(r, irPieces) + t.slice(at); break; // insert a token
      case 2: { // duplicate a line
        const lines = t.split('\n');
        const i = r.int(0, lines.length - 1);
        lines.splice(i, 0, lines[i]);
        t = lines.join('\n');
        break;
      }
      case 3: t = t.replace(/\d+/g, (m) => (r.chance(0.15) ? String(pick(r, [0, 1, 3, 2 ** 31, 2 ** 53 + 1, 1e21])) : m)); break;
      default: t = t.slice(0, at); // truncate
    }
  }
  return t;
}

test('IR text mutations: a located IrParseError, or a module that prints back and parses again', () => {
  const r = new Rng(SEED);
  let accepted = 0;
  const cases = 600 * SCALE;
  for (let i = 0; i < cases; i++) {
    const text = mutateIr(r, pick(r, irFiles));
    let printed: string;
    try {
      printed = printModule(parseModule(text, 'fuzz.ir'));
    } catch (e) {
      assert.ok(e instanceof IrParseError, `case ${i}: ${(e as Error).stack}\n--- text ---\n${text}`);
      assert.match((e as Error).message, /^fuzz\.ir:\d+:\d+: /);
      continue;
    }
    accepted++;
    // What was accepted prints as text that reads back to itself.
    assert.is(printModule(parseModule(printed, 'printed.ir')), printed, `case ${i}`);
  }
  assert.ok(accepted > 0 && accepted < cases, `${accepted} of ${cases} accepted`);
});

// ---- config.json ----

const configJson: Record<string, unknown> = JSON.parse(fs.readFileSync(path.join(fixtures, 'tiny-llama/config.json'), 'utf8'));
const oddValues: unknown[] = [null, 0, -1, 1.5, 1e300, NaN, '', 'llama', 'silu', 'gelu', true, [], [1, 2], {}, { rope_type: 'yarn' },
  { rope_type: 'dynamic', factor: 2 }, { rope_type: 'llama3', factor: 8 }, 'constructor', 2 ** 53, -0];

test('config.json corruptions: a ConfigError naming the file and key, or a config', () => {
  const r = new Rng(SEED + 1);
  const keys = [...Object.keys(configJson), 'rope_scaling', 'rope_theta', 'architectures', 'quantization_config', '__proto__', 'constructor'];
  for (let i = 0; i < 1500 * SCALE; i++) {
    const obj: Record<string, unknown> = structuredClone(configJson);
    for (let k = r.int(1, 3); k > 0; k--) {
      const key = pick(r, keys);
      if (r.chance(0.2)) delete obj[key];
      else obj[key] = structuredClone(pick(r, oddValues));
    }
    try {
      const cfg = llamaConfigFromJson(obj, 'fuzz/config.json');
      assert.ok(cfg.hiddenSize > 0 && cfg.headDim > 0 && Number.isFinite(cfg.rope.theta), `case ${i}`);
    } catch (e) {
      assert.ok(e instanceof ConfigError, `case ${i}: ${(e as Error).stack}\n${JSON.stringify(obj)}`);
      assert.match((e as Error).message, /^fuzz\/config\.json: /);
    }
  }
});

// ---- safetensors ----

test('safetensors corruptions: a WeightsError naming the file, or tensors that read', () => {
  const r = new Rng(SEED + 2);
  const good = path.join(tmp, 'good.safetensors');
  writeSafetensors(good, {
    a: { dtype: DType.F32, shape: [3, 2], data: [1, 2, 3, 4, 5, 6] },
    b: { dtype: DType.BF16, shape: [4], data: [1, -2, NaN, Infinity] },
    c: { dtype: DType.I32, shape: [2], data: [7, -8] },
  });
  const bytes = fs.readFileSync(good);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const file = path.join(tmp, 'fuzz.safetensors');
  for (let i = 0; i < 500 * SCALE; i++) {
    const b = Buffer.from(bytes);
    let data: Buffer = b;
    switch (r.int(0, 3)) {
      case 0: for (let k = r.int(1, 4); k > 0; k--) b[r.int(8, 8 + headerLength - 1)] = r.int(32, 126); break; // header text
      case 1: b.writeBigUInt64LE(BigInt(pick(r, [0, 1, 7, headerLength - 3, headerLength + 9, 2 ** 40, bytes.length])), 0); break;
      case 2: data = b.subarray(0, r.int(0, b.length - 1)); break; // truncated
      default: for (let k = r.int(1, 4); k > 0; k--) b[r.int(0, b.length - 1)] = r.int(0, 255);
    }
    fs.writeFileSync(file, data);
    try {
      const st = readSafetensors(file);
      for (const t of st.tensors) {
        const x = st.tensor(t.name);
        assert.is(x.data.length, t.shape.reduce((p, q) => p * q, 1), `case ${i}: ${t.name}`);
      }
    } catch (e) {
      assert.ok(e instanceof WeightsError, `case ${i}: ${(e as Error).stack}`);
      assert.ok((e as Error).message.includes(file), `case ${i}: ${(e as Error).message}`);
    }
  }
});

// ---- compile() misuse ----

const junk: unknown[] = [undefined, null, 3, 'x', [], [[1, 2]], {}, { dtype: 'f32' }, { dtype: 'f32', shape: [2], data: [1, 2] },
  { dtype: 'f32', shape: [2], data: new Float32Array(1) }, { dtype: 'i32', shape: [2], data: new Float32Array(2) },
  { dtype: 'f32', shape: [-1], data: new Float32Array(0) }, tensor([1, 2, 3]), tensor([[1, 2], [3, 4]]), tensor([1, 2], [2], DType.I32)];

test('compile() misuse: inputs, options, parameters and backends end in an error naming them', () => {
  const r = new Rng(SEED + 3);
  const fns: ((...x: Tensor[]) => Tensor)[] = [
    (x: Tensor) => x.mul(2),
    (x: Tensor, y: Tensor) => x.add(y),
    (x: Tensor) => x.matmul(param('w', DType.F32, [2, 2])),
    (ids: Tensor) => param('table', DType.F32, [3, 2]).gather(ids),
  ];
  const optionsPool: Record<string, unknown>[] = [{}, { backend: 'reference' }, { backend: 'gpu' }, { inputs: ['a b'] },
    { dynamic: { x: { 0: 'S' } } }, { dynamic: { nope: { 0: 'S' } } }, { dynamic: { x: { 0: '1x' } } }, { params: { w: tensor([1, 2, 3]) } },
    { params: { w: tensor([1, 0, 0, 1], [2, 2]), table: tensor([1, 2, 3, 4, 5, 6], [3, 2]) } }, { buckets: [1] }, { padValue: NaN }];
  let ok = 0;
  for (let i = 0; i < 400 * SCALE; i++) {
    const fn = pick(r, fns);
    const opts = pick(r, optionsPool);
    const args = Array.from({ length: r.int(0, 3) }, () => pick(r, junk));
    try {
      const f = compile(fn as (...x: Tensor[]) => Tensor, opts as object);
      (f as unknown as (...a: unknown[]) => unknown)(...args);
      ok++;
    } catch (e) {
      const msg = (e as Error)?.message ?? String(e);
      assert.ok(e instanceof Error && msg.length > 0, `case ${i}: threw ${String(e)}`);
      assert.not.match(msg, internal, `case ${i}: ${(e as Error).stack}\nargs: ${args.map((a) => JSON.stringify(a)).join(', ')}`);
    }
  }
  assert.ok(ok > 0, 'some calls succeed');
});

// ---- special values through random elementwise graphs ----

const specials = [NaN, Infinity, -Infinity, 0, -0, 1, -1, 0.5, 3e38, -3e38, 1e-40, 65504, 70000, 2 ** 24 + 1, 2 ** 31, -(2 ** 31)];
/**
 * On a GPU, without the known differences (README, Numerics): f32 subnormals (flushed to zero), the sign of zero
 * (Vulkan need not keep it), and sums (the host accumulates in float64, so cancellations round differently);
 * products of 1e30 still overflow.
 */
const gpuSpecials = specials.filter((v) => !Object.is(v, -0) && v !== 1e-40).map((v) => (Math.abs(v) === 3e38 ? Math.sign(v) * 1e30 : v));

/** A random chain of elementwise ops, reductions and casts over two f32 inputs and one i32 input. */
function specialGraph(r: Rng, i: number, floats = specials, gpu = false): { g: Graph; inputs: Record<string, HostTensor> } {
  const n = 6;
  const specs = [{ name: 'x', dtype: DType.F32, shape: [2, n] }, { name: 'y', dtype: DType.F32, shape: [2, n] }, { name: 'k', dtype: DType.I32, shape: [2, n] }];
  const g = trace(`sv${i}`, specs, (x: Tensor, y: Tensor, k: Tensor) => {
    let f = x;
    let q = k;
    const outs: Tensor[] = [];
    for (let s = r.int(2, 6); s > 0; s--) {
      const other = r.chance(0.5) ? y : x;
      const c = pick(r, gpu ? [NaN, Infinity, -Infinity, 0, 2, -3, 0.5] : [NaN, Infinity, -Infinity, 0, -0, 2, -3, 0.5]);
      // On a GPU only what must be exact there: no transcendental functions (a few units in the last place, and
      // Vulkan compilers rewrite sqrt(x)·sqrt(x) to |x|), no division or negative powers (the sign of zero).
      const op = gpu ? pick(r, [0, 1, 3, 4, 6, 8, 9, 10, 11, 12, 13, 14, 16]) : r.int(0, 15);
      switch (op) {
        case 0: f = f.add(other); break;
        case 1: f = f.mul(other); break;
        case 2: f = f.div(other); break;
        case 3: f = f.maximum(other); break;
        case 4: f = f.minimum(c); break;
        case 5: f = f.pow(pick(r, [2, 3, 0.5, -1, 0])); break;
        case 16: f = f.pow(pick(r, [2, 3, 0])); break;
        case 6: f = where(f.ne(f), c, f); break;
        case 7: f = pick(r, [f.exp(), f.log(), f.sqrt(), f.rsqrt(), f.tanh(), f.sigmoid(), f.silu(), f.floor(), f.abs(), f.neg(), f.recip()]); break;
        case 8: outs.push(f.max(1)); break;
        case 9: outs.push(f.argmax(1)); break;
        case 10: outs.push(f.cast(DType.I32)); break;
        case 11: f = f.cast(pick(r, [DType.F16, DType.BF16])).cast(DType.F32); break;
        case 12: q = q.div(pick(r, [k, k.add(1), k.mul(-1)])); break;
        case 13: q = q.mul(k).add(pick(r, [k, k.neg(), k.abs()])); break;
        case 14: outs.push(f.lt(other).or(f.ge(c))); break;
        default: outs.push(gpu ? f.max(1) : f.mean(1)); break;
      }
    }
    return [f, q, ...outs];
  });
  const values = (dtype: DType) => Array.from({ length: 2 * n }, () => (dtype === DType.I32 ? pick(r, [0, 1, -1, 7, -7, 2 ** 31 - 1, -(2 ** 31), 65536]) : pick(r, floats)));
  return { g, inputs: Object.fromEntries(specs.map((s) => [s.name, hostTensor(s.dtype, s.shape, values(s.dtype))])) };
}

test('special values through random graphs: CPU kernels equal the reference, NaN for NaN', () => {
  const r = new Rng(SEED + 4);
  const cpu = new HostDevice('cpu');
  const noParams = new ParamStore((n) => { throw new Error(`no parameter ${n}`); });
  for (let i = 0; i < 120 * SCALE; i++) {
    const { g, inputs } = specialGraph(r, i);
    const want = interpret(g, { inputs, param: () => { throw new Error('no params'); }, states: new Map() });
    const program = cpu.load(compileModule({ graphs: [g] }), noParams, { maxSizes: {} }) as ReturnType<HostDevice['load']>;
    const got = runOnce(program as never, g.name, inputs, new Map()) as HostTensor[];
    got.forEach((t, o) => {
      for (let j = 0; j < t.data.length; j++) {
        const [a, b] = [t.data[j], want[o].data[j]];
        const same = Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b)) || a === b;
        assert.ok(same, `graph ${i}, output ${o}, element ${j}: cpu ${a}, reference ${b}\ninputs: ${JSON.stringify(Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, [...v.data].map(String)])))}\n${printGraph(g, { locations: false })}`);
      }
    });
  }
});

test('special values through random graphs: WebGPU kernels (lavapipe) equal the reference too', async () => {
  let device;
  try {
    device = await openDevice('webgpu');
  } catch (e) {
    if (/Unavailable/.test((e as Error).name)) return;
    throw e;
  }
  const r = new Rng(SEED + 5);
  const noParams = new ParamStore((n) => { throw new Error(`no parameter ${n}`); });
  try {
    for (let i = 0; i < 25 * SCALE; i++) {
      const { g, inputs } = specialGraph(r, i, gpuSpecials, true);
      const want = interpret(g, { inputs, param: () => { throw new Error('no params'); }, states: new Map() });
      const program = await device.load(compileModule({ graphs: [g] }), noParams, { maxSizes: {} });
      try {
        const got = await runOnce(program, g.name, inputs, new Map());
        got.forEach((t, o) => {
          for (let j = 0; j < t.data.length; j++) {
            const [a, b] = [t.data[j], want[o].data[j]];
            // GPU transcendental functions are a few units in the last place off; special values are exact.
            const same = a === b || (Number.isNaN(a) && Number.isNaN(b)) || (Number.isFinite(b) && Math.abs(a - b) <= 1e-5 * Math.abs(b) + 1e-6);
            assert.ok(same, `graph ${i}, output ${o}, element ${j}: webgpu ${a}, reference ${b}\ninputs: ${JSON.stringify(Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, [...v.data].map(String)])))}\n${printGraph(g, { locations: false })}`);
          }
        });
      } finally {
        program.destroy();
      }
    }
  } finally {
    device.destroy();
  }
});

test.run();
