import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DType } from '../../ir/dtype.ts';
import { checkLlamaWeights, expectedLlamaTensors, readLlamaConfig } from '../../runtime/config.ts';
import {
  decodeBf16, decodeF16, encodeBf16, encodeF16, readCheckpoint, readSafetensors, WeightsError, writeSafetensors,
  type TensorToWrite,
} from '../../runtime/safetensors.ts';
import { fixturesDir } from '../fixtures-dir.ts';

const fixtures = fixturesDir + '/';
const fixture = (name: string) => path.join(fixtures, name);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-safetensors-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Runs `fn`, expecting a WeightsError whose message mentions every one of `parts`; returns the message. */
function throwsNaming(fn: () => unknown, ...parts: string[]): string {
  try {
    fn();
  } catch (e) {
    assert.instance(e, WeightsError);
    const msg = (e as Error).message;
    for (const part of parts) assert.ok(msg.includes(part), `message should mention ${JSON.stringify(part)}: ${msg}`);
    return msg;
  }
  throw new Error('expected a WeightsError, but nothing was thrown');
}

/** A safetensors file written by hand, so it can be broken in any way. */
function rawFile(name: string, header: unknown, data: Uint8Array | number, headerLength?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  const file = path.join(tmp, name);
  fs.writeFileSync(file, Buffer.concat([length, json, typeof data === 'number' ? Buffer.alloc(data) : data]));
  return file;
}

const bits16 = (...bits: number[]) => Uint16Array.from(bits);
const sameFloats = (got: Float32Array, want: number[]) =>
  want.forEach((w, i) => assert.ok(Object.is(got[i], w), `[${i}]: got ${got[i]}, want ${w}`));

// --- fixtures ---------------------------------------------------------------------------------------------------

for (const [name, dtype] of [['tiny-llama', DType.F32], ['tiny-llama3', DType.F32], ['tiny-llama3-bf16', DType.BF16]] as const) {
  test(`${name}: holds exactly the tensors its config implies`, () => {
    const cfg = readLlamaConfig(fixture(name));
    const ckpt = readCheckpoint(fixture(name));
    checkLlamaWeights(cfg, ckpt);
    const expected = expectedLlamaTensors(cfg);
    assert.equal(ckpt.tensors.map((t) => t.name).sort(), expected.map((t) => t.name).sort());
    for (const want of expected) {
      const t = ckpt.tensor(want.name);
      assert.is(t.dtype, dtype, want.name);
      assert.equal(t.shape, want.shape, want.name);
      assert.instance(t.data, Float32Array);
      assert.is(t.data.length, want.shape.reduce((a, b) => a * b, 1));
      assert.is(t.raw.length, t.data.length * (dtype === DType.F32 ? 4 : 2));
    }
    assert.equal(readSafetensors(path.join(fixture(name), 'model.safetensors')).metadata, { format: 'pt' });
  });
}

test('tiny-llama3-bf16 is tiny-llama3 rounded to bf16, within one bf16 ulp', () => {
  const f32 = readCheckpoint(fixture('tiny-llama3'));
  const bf16 = readCheckpoint(fixture('tiny-llama3-bf16'));
  for (const { name } of f32.tensors) {
    const ours = encodeBf16(f32.tensor(name).data);
    const t = bf16.tensor(name);
    const theirs = new Uint16Array(t.raw.buffer, t.raw.byteOffset, t.raw.length / 2);
    assert.equal(t.data, decodeBf16(theirs), name);
    // Same sign, so adjacent bit patterns are adjacent values.
    for (let i = 0; i < ours.length; i++) {
      if (Math.abs(ours[i] - theirs[i]) > 1) assert.unreachable(`${name}[${i}]: ${ours[i]} vs ${theirs[i]}`);
    }
  }
});

test('golden.safetensors: int32 input ids and float32 logits agree with golden.json', () => {
  const file = readSafetensors(path.join(fixture('tiny-llama'), 'golden.safetensors'));
  const golden = JSON.parse(fs.readFileSync(path.join(fixture('tiny-llama'), 'golden.json'), 'utf8'));
  const ids = file.tensor('input_ids');
  assert.is(ids.dtype, DType.I32);
  assert.equal([...ids.data], golden.input_ids);
  const logits = file.tensor('logits');
  assert.equal(logits.shape, [24, 512]);
  assert.equal([...logits.data.subarray(0, 512)], golden.logits_first.map(Math.fround));
});

// --- half precision -----------------------------------------------------------------------------------------------

test('f16 decodes by hand-computed bit patterns', () => {
  sameFloats(decodeF16(bits16(0x0000, 0x8000, 0x3c00, 0xc000, 0x3555, 0x7bff, 0x0400, 0x03ff, 0x0001, 0x8001)), [
    0, -0, 1, -2, 0.333251953125, 65504, 2 ** -14, 1023 * 2 ** -24, 2 ** -24, -(2 ** -24),
  ]);
  sameFloats(decodeF16(bits16(0x7c00, 0xfc00)), [Infinity, -Infinity]);
  assert.ok(decodeF16(bits16(0x7e00, 0x7c01, 0xfe00)).every(Number.isNaN));
});

test('bf16 decodes by hand-computed bit patterns', () => {
  sameFloats(decodeBf16(bits16(0x0000, 0x8000, 0x3f80, 0xc000, 0x3eab, 0x7f7f, 0x0080, 0x0001)), [
    0, -0, 1, -2, 0.333984375, 255 * 2 ** 120, 2 ** -126, 2 ** -133,
  ]);
  sameFloats(decodeBf16(bits16(0x7f80, 0xff80)), [Infinity, -Infinity]);
  assert.ok(decodeBf16(bits16(0x7fc0, 0x7f81, 0xffc0)).every(Number.isNaN));
});

test('f16 encodes with round-to-nearest-even, gradual underflow and overflow', () => {
  const cases: [number, number][] = [
    [1, 0x3c00], [-0, 0x8000], [65504, 0x7bff], [65519, 0x7bff], [65520, 0x7c00], [1e9, 0x7c00], [-Infinity, 0xfc00],
    [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], // ties go to the even mantissa
    [2 ** -24, 0x0001], [2 ** -25, 0x0000], [1.5 * 2 ** -25, 0x0001], [3 * 2 ** -25, 0x0002], [1e-10, 0x0000],
    [1023.5 * 2 ** -24, 0x0400], // the largest subnormal rounds up into the smallest normal
    [NaN, 0x7e00],
  ];
  assert.equal([...encodeF16(cases.map(([x]) => x))], cases.map(([, h]) => h));
});

test('bf16 encodes with round-to-nearest-even', () => {
  const cases: [number, number][] = [
    [1, 0x3f80], [-0, 0x8000], [1 + 2 ** -8, 0x3f80], [1 + 3 * 2 ** -8, 0x3f82], [1 + 2 ** -8 + 2 ** -20, 0x3f81],
    [3.4028234663852886e38, 0x7f80], [-Infinity, 0xff80], [2 ** -133, 0x0001], [NaN, 0x7fc0],
  ];
  assert.equal([...encodeBf16(cases.map(([x]) => x))], cases.map(([, h]) => h));
});

test('every non-NaN f16 and bf16 bit pattern survives decode then encode', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  for (const [decode, encode, isNaNBits] of [
    [decodeF16, encodeF16, (h: number) => (h & 0x7fff) > 0x7c00],
    [decodeBf16, encodeBf16, (h: number) => (h & 0x7fff) > 0x7f80],
  ] as const) {
    const back = encode(decode(all));
    for (let h = 0; h < 65536; h++) {
      if (!isNaNBits(h) && back[h] !== h) assert.unreachable(`${decode.name}: 0x${h.toString(16)} came back as 0x${back[h].toString(16)}`);
    }
  }
});

// --- writing ------------------------------------------------------------------------------------------------------

test('write then read round-trips every dtype, with an 8-byte-aligned header', () => {
  const file = path.join(tmp, 'roundtrip.safetensors');
  const floats = [0, -1.5, 3.14159, 1e-6, 70000, -0];
  const tensors: Record<string, TensorToWrite> = {
    a: { dtype: DType.F32, shape: [2, 3], data: floats },
    b: { dtype: DType.F16, shape: [6], data: floats },
    c: { dtype: DType.BF16, shape: [3, 2], data: floats },
    d: { dtype: DType.I32, shape: [3], data: [-(2 ** 31), 0, 2 ** 31 - 1] },
    empty: { dtype: DType.F32, shape: [0, 4], data: [] },
  };
  writeSafetensors(file, tensors, { format: 'pt' });
  const bytes = fs.readFileSync(file);
  assert.is(Number(bytes.readBigUInt64LE(0)) % 8, 0);

  const st = readSafetensors(file);
  assert.equal(st.metadata, { format: 'pt' });
  assert.equal(st.tensors.map((t) => [t.name, t.dtype, t.storedAs]), [
    ['a', 'f32', 'F32'], ['b', 'f16', 'F16'], ['c', 'bf16', 'BF16'], ['d', 'i32', 'I32'], ['empty', 'f32', 'F32'],
  ]);
  assert.equal([...st.tensor('a').data], floats.map(Math.fround));
  assert.equal(st.tensor('b').data, decodeF16(encodeF16(floats)));
  assert.is(st.tensor('b').data[4], Infinity); // 70000 overflows f16
  const c = st.tensor('c');
  assert.equal(c.shape, [3, 2]);
  assert.equal(new Uint16Array(c.raw.buffer, c.raw.byteOffset, 6), encodeBf16(floats));
  assert.equal(st.tensor('d').data, Int32Array.from([-(2 ** 31), 0, 2 ** 31 - 1]));
  assert.equal(st.tensor('empty').shape, [0, 4]);
  const info = st.info('c');
  assert.equal(bytes.subarray(info.byteOffset, info.byteOffset + info.byteLength), Buffer.from(c.raw));
});

test('writing refuses data that does not fit, naming the tensor, and leaves no file', () => {
  const file = path.join(tmp, 'refused.safetensors');
  throwsNaming(() => writeSafetensors(file, { w: { dtype: DType.F32, shape: [2, 2], data: [1, 2, 3] } }),
    file, "tensor 'w'", '3 values');
  throwsNaming(() => writeSafetensors(file, { ids: { dtype: DType.I32, shape: [2], data: [1, 2 ** 31] } }),
    file, "tensor 'ids'", String(2 ** 31));
  assert.not.ok(fs.existsSync(file));
  assert.equal(fs.readdirSync(tmp).filter((f) => f.startsWith('refused')), []);
});

// --- other stored dtypes ------------------------------------------------------------------------------------------

test('I64 narrows to i32, and a value that does not fit is an error naming the tensor', () => {
  const ok = BigInt64Array.from([1n, -2n, 2n ** 31n - 1n, -(2n ** 31n)]);
  const file = rawFile('i64.safetensors', { ids: { dtype: 'I64', shape: [4], data_offsets: [0, 32] } },
    new Uint8Array(ok.buffer));
  const ids = readSafetensors(file).tensor('ids');
  assert.is(ids.dtype, DType.I32);
  assert.equal(ids.data, Int32Array.from([1, -2, 2 ** 31 - 1, -(2 ** 31)]));

  const big = BigInt64Array.from([0n, 2n ** 31n]);
  const bad = rawFile('i64-big.safetensors', { ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } },
    new Uint8Array(big.buffer));
  throwsNaming(() => readSafetensors(bad).tensor('ids'), bad, "tensor 'ids'", '2147483648', 'index 1');
});

test('BOOL reads as bytes, U8 widens to u32, U32 as is', () => {
  const file = rawFile('small-ints.safetensors', {
    mask: { dtype: 'BOOL', shape: [3], data_offsets: [0, 3] },
    bytes: { dtype: 'U8', shape: [1], data_offsets: [3, 4] },
    words: { dtype: 'U32', shape: [1], data_offsets: [4, 8] },
  }, Uint8Array.from([1, 0, 1, 200, 255, 255, 255, 255]));
  const st = readSafetensors(file);
  assert.equal(st.tensor('mask'), { dtype: DType.Bool, shape: [3], data: Uint8Array.from([1, 0, 1]), raw: Uint8Array.from([1, 0, 1]) });
  assert.equal(st.tensor('bytes').data, Uint32Array.from([200]));
  assert.is(st.tensor('bytes').dtype, DType.U32);
  assert.equal(st.tensor('words').data, Uint32Array.from([2 ** 32 - 1]));
});

// --- broken files -------------------------------------------------------------------------------------------------

const okEntry = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

test('errors: file too short, header length too large, header not JSON or not an object', () => {
  const short = path.join(tmp, 'short.safetensors');
  fs.writeFileSync(short, Buffer.alloc(5));
  throwsNaming(() => readSafetensors(short), short, '5 bytes');
  const long = rawFile('long-header.safetensors', { x: okEntry }, 8, 1000n);
  throwsNaming(() => readSafetensors(long), long, 'header length 1000');
  const huge = rawFile('huge-header.safetensors', { x: okEntry }, 8, 2n ** 63n);
  throwsNaming(() => readSafetensors(huge), huge, 'header length');
  const json = rawFile('bad-json.safetensors', '{"x": {"dtype": "F32",', 8);
  throwsNaming(() => readSafetensors(json), json, 'not valid JSON');
  const array = rawFile('array.safetensors', '[1, 2]', 8);
  throwsNaming(() => readSafetensors(array), array, 'not a JSON object');
  const missing = path.join(tmp, 'nope.safetensors');
  throwsNaming(() => readSafetensors(missing), missing, 'cannot open');
});

test('errors: bad entries name the file and the tensor', () => {
  const cases: [string, unknown, string][] = [
    ['unknown dtype', { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] }, 'unknown dtype "F8_E4M3"'],
    ['negative dim', { dtype: 'F32', shape: [-2], data_offsets: [0, 8] }, 'shape must be a list of non-negative integers'],
    ['fractional dim', { dtype: 'F32', shape: [1.5], data_offsets: [0, 8] }, 'shape must be'],
    ['shape not a list', { dtype: 'F32', shape: 2, data_offsets: [0, 8] }, 'shape must be'],
    ['one offset', { dtype: 'F32', shape: [2], data_offsets: [8] }, 'data_offsets must be two integers'],
    ['offsets reversed', { dtype: 'F32', shape: [2], data_offsets: [8, 0] }, 'data_offsets must be'],
    ['offsets as strings', { dtype: 'F32', shape: [2], data_offsets: ['0', '8'] }, 'data_offsets must be'],
    ['wrong byte length', { dtype: 'BF16', shape: [2, 3], data_offsets: [0, 8] }, 'BF16[2,3] needs 12 bytes but data_offsets [0, 8] span 8'],
    ['entry not an object', [1, 2], 'not an object'],
  ];
  for (const [label, entry, expected] of cases) {
    const file = rawFile(`${label.replaceAll(' ', '-')}.safetensors`, { fine: okEntry, 'the.weight': entry }, 16);
    throwsNaming(() => readSafetensors(file), file, "tensor 'the.weight'", expected);
  }
  const meta = rawFile('bad-metadata.safetensors', { __metadata__: { n: 1 }, x: okEntry }, 8);
  throwsNaming(() => readSafetensors(meta), meta, '__metadata__');
});

test('errors: truncated data section and overlapping tensors', () => {
  const truncated = rawFile('truncated.safetensors', {
    a: okEntry, b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] },
  }, 20);
  throwsNaming(() => readSafetensors(truncated), truncated,
    "file is truncated: tensor 'b' needs bytes up to 24 but the data section has 20");
  const overlap = rawFile('overlap.safetensors', {
    a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [12, 20] },
  }, 20);
  throwsNaming(() => readSafetensors(overlap), overlap, "'a'", "'b'", 'overlap');
});

test('errors: asking for a tensor that is not there names it and the file', () => {
  const file = rawFile('one.safetensors', { a: okEntry }, 8);
  throwsNaming(() => readSafetensors(file).tensor('b'), file, "no tensor 'b'");
  throwsNaming(() => readCheckpoint(tmp), tmp, 'no model.safetensors');
});

// --- sharded checkpoints and checking against the config ---------------------------------------------------------

test('a sharded checkpoint reads as one lookup that knows each tensor\'s file', () => {
  const dir = fs.mkdtempSync(path.join(tmp, 'sharded-'));
  writeSafetensors(path.join(dir, 'part-1.safetensors'), { a: { dtype: DType.F32, shape: [2], data: [1, 2] } });
  writeSafetensors(path.join(dir, 'part-2.safetensors'), { b: { dtype: DType.BF16, shape: [1], data: [3] } });
  const index = path.join(dir, 'model.safetensors.index.json');
  fs.writeFileSync(index, JSON.stringify({ metadata: {}, weight_map: { a: 'part-1.safetensors', b: 'part-2.safetensors' } }));
  const ckpt = readCheckpoint(dir);
  assert.equal(ckpt.files, [path.join(dir, 'part-1.safetensors'), path.join(dir, 'part-2.safetensors')]);
  assert.is(ckpt.info('b').file, path.join(dir, 'part-2.safetensors'));
  assert.equal([...ckpt.tensor('a').data], [1, 2]);
  assert.equal([...ckpt.tensor('b').data], [3]);

  fs.writeFileSync(index, JSON.stringify({ weight_map: { a: 'part-2.safetensors' } }));
  throwsNaming(() => readCheckpoint(dir), index, "tensor 'a'", 'part-2.safetensors');
  fs.writeFileSync(index, JSON.stringify({ weight_map: { a: 'part-3.safetensors' } }));
  throwsNaming(() => readCheckpoint(dir), path.join(dir, 'part-3.safetensors'), 'cannot open');
  fs.writeFileSync(index, '{}');
  throwsNaming(() => readCheckpoint(dir), index, 'weight_map');
});

test('checkLlamaWeights reports every missing and misshapen tensor in one error', () => {
  const cfg = readLlamaConfig(fixture('tiny-llama'));
  const tensors: Record<string, TensorToWrite> = {};
  for (const { name, shape } of expectedLlamaTensors(cfg)) {
    tensors[name] = { dtype: DType.F32, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
  }
  delete tensors['model.layers.1.mlp.up_proj.weight'];
  delete tensors['lm_head.weight'];
  tensors['model.layers.0.self_attn.k_proj.weight'] = { dtype: DType.F32, shape: [128, 128], data: new Float32Array(128 * 128) };
  const dir = fs.mkdtempSync(path.join(tmp, 'misfit-'));
  const file = path.join(dir, 'model.safetensors');
  writeSafetensors(file, tensors);
  const msg = throwsNaming(() => checkLlamaWeights(cfg, readCheckpoint(dir)), dir, path.join(fixture('tiny-llama'), 'config.json'),
    "missing tensor 'model.layers.1.mlp.up_proj.weight' [352,128]",
    "missing tensor 'lm_head.weight' [512,128]",
    `tensor 'model.layers.0.self_attn.k_proj.weight': expected shape [64,128], found [128,128] in ${file}`);
  assert.is(msg.split('\n').length, 4);
});

test.run();
