// Reading a model's weights at once (TensorSource.readInto, ParamStore.preload, runtime/tensor-reader.ts): every
// tensor byte for byte what reading it alone gives (bf16, f16, f32, i32, a tensor at an odd offset, one larger than a
// read, a sharded checkpoint), straight into the buffers given (a concatenation's parts in place, nothing copied
// after), on libuv's threads or in worker threads over shared memory, each tensor heard once as it lands with its
// NaN scan (for the warning and the progress bar); a file that ends early or a header that lies about sizes is one
// line naming the file and the tensor; the NaN scan agrees with counting element by element.

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { tensorType } from '../../ir/shape.ts';
import { nonFinite } from '../../runtime/llama.ts';
import { readTensors, scanNonFinite, TensorReadError, type NonFinite, type ScanKind } from '../../runtime/tensor-reader.ts';
import { ParamStore } from '../../runtime/params.ts';
import {
  onFirstRead, readCheckpoint, readSafetensors, Tensor, TensorSource, WeightsError, writeSafetensors, type TensorToWrite,
} from '../../runtime/safetensors.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-weight-reading-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const bytesOf = (dtype: DType) => (dtype === DType.F16 || dtype === DType.BF16 ? 2 : dtype === DType.Bool ? 1 : 4);

/** Fresh random stored bytes of a tensor (any bit pattern: NaNs and infinities included). */
function randomTensor(dtype: DType, shape: number[]): TensorToWrite {
  const n = shape.reduce((a, b) => a * b, 1);
  const bytes = dtype === DType.Bool ? Uint8Array.from(crypto.randomBytes(n), (b) => b & 1) : new Uint8Array(crypto.randomBytes(n * bytesOf(dtype)));
  return { dtype, shape, bytes: () => bytes };
}

/** Reads `requests` through readInto into fresh buffers; returns them with the tensors heard, by name. */
async function readAll(src: TensorSource, names: readonly string[]) {
  const buffers = new Map(names.map((n) => [n, new Uint8Array(src.info(n).byteLength)]));
  const heard = new Map<string, Tensor>();
  await src.readInto!(names.map((name) => ({ name, into: buffers.get(name)! })), (name, t) => {
    assert.not.ok(heard.has(name), `${name} heard once`);
    heard.set(name, t);
  });
  return { buffers, heard };
}

function sameBytes(got: Uint8Array, want: Uint8Array, what: string): void {
  assert.is(got.byteLength, want.byteLength, `${what}: length`);
  assert.ok(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength)), `${what}: bytes`);
}

test('readInto gives every tensor byte for byte as reading it alone, straight into the buffers given', async () => {
  const tensors: Record<string, TensorToWrite> = {
    'a.bf16': randomTensor(DType.BF16, [37, 129]),
    'b.flag': randomTensor(DType.Bool, [3]), // three bytes: what follows starts at an odd offset
    'c.f32': randomTensor(DType.F32, [7, 5]),
    'd.f16': randomTensor(DType.F16, [1001]),
    'e.i32': randomTensor(DType.I32, [13]),
    'f.empty': randomTensor(DType.F32, [0, 4]),
    // Larger than one read (32 MiB): read in pieces, heard once.
    'g.big': randomTensor(DType.BF16, [17 << 20]),
  };
  const file = path.join(tmp, 'mixed.safetensors');
  writeSafetensors(file, tensors);
  const src = readSafetensors(file);
  assert.ok(src.info('c.f32').byteOffset % 2 === 1, 'c.f32 sits at an odd offset in the file');
  // Asked for in another order than the file's.
  const names = ['g.big', 'e.i32', 'a.bf16', 'f.empty', 'c.f32', 'b.flag', 'd.f16'];
  const { buffers, heard } = await readAll(src, names);
  assert.equal([...heard.keys()].sort(), [...names].sort(), 'every tensor heard');
  for (const name of names) {
    const alone = src.tensor(name);
    sameBytes(buffers.get(name)!, alone.raw, name);
    sameBytes(buffers.get(name)!, (tensors[name] as { bytes: () => Uint8Array }).bytes(), `${name} as written`);
    const t = heard.get(name)!;
    assert.ok(t.raw === buffers.get(name), `${name}: the tensor heard holds the buffer given, not a copy`);
    assert.is(t.dtype, alone.dtype);
    assert.equal(t.shape, alone.shape);
    // Decoded values too (16-bit floats widened; NaN payloads compare by bits through Object.is on each value).
    assert.is(t.data.length, alone.data.length, `${name}: decoded length`);
    for (let i = 0; i < t.data.length; i++) {
      if (!Object.is(t.data[i], alone.data[i])) assert.unreachable(`${name}[${i}]: ${t.data[i]} vs ${alone.data[i]}`);
    }
  }
});

test('a sharded checkpoint reads across its files; a bad buffer size is refused before reading', async () => {
  const dir = path.join(tmp, 'sharded');
  fs.mkdirSync(dir);
  const shard1 = { x: randomTensor(DType.BF16, [64, 3]), y: randomTensor(DType.F32, [9]) };
  const shard2 = { z: randomTensor(DType.F16, [5, 5]) };
  writeSafetensors(path.join(dir, 's1.safetensors'), shard1);
  writeSafetensors(path.join(dir, 's2.safetensors'), shard2);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: 's1.safetensors', y: 's1.safetensors', z: 's2.safetensors' } }));
  const ckpt = readCheckpoint(dir);
  const { buffers } = await readAll(ckpt, ['z', 'x', 'y']);
  for (const name of ['x', 'y', 'z']) sameBytes(buffers.get(name)!, ckpt.tensor(name).raw, name);
  await ckpt.readInto!([{ name: 'x', into: new Uint8Array(3) }]).then(
    () => assert.unreachable('a buffer of the wrong size'),
    (e: Error) => assert.match(e.message, /tensor 'x' is 384 bytes, read into a buffer of 3/),
  );
});

/** The one-line message of the WeightsError `p` rejects with. */
async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, WeightsError);
    const message = (e as Error).message;
    assert.not.ok(message.includes('\n'), `one line: ${message}`);
    return message;
  }
  throw new Error('expected a WeightsError');
}

test('a file cut short after it was opened is one line naming the file and the tensor', async () => {
  const file = path.join(tmp, 'cut.safetensors');
  writeSafetensors(file, { first: randomTensor(DType.F32, [100]), second: randomTensor(DType.BF16, [1000]) });
  const src = readSafetensors(file);
  const second = src.info('second');
  fs.truncateSync(file, second.byteOffset + 300);
  const message = await rejection(readAll(src, ['first', 'second']));
  assert.ok(message.startsWith(`${file}: file is truncated: tensor 'second' got 300 of 2000 bytes`), message);
});

test('a header that lies about sizes is refused when the file opens, naming the file and the tensor', async () => {
  const write = (name: string, header: object, dataBytes: number) => {
    const json = Buffer.from(JSON.stringify(header));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    const file = path.join(tmp, name);
    fs.writeFileSync(file, Buffer.concat([length, json, Buffer.alloc(dataBytes)]));
    return file;
  };
  const past = write('past.safetensors', { w: { dtype: 'BF16', shape: [4, 4], data_offsets: [0, 32] } }, 20);
  assert.throws(() => readSafetensors(past), (e: Error) => e instanceof WeightsError
    && e.message === `${past}: file is truncated: tensor 'w' needs bytes up to 32 but the data section has 20`);
  const span = write('span.safetensors', { w: { dtype: 'F32', shape: [4], data_offsets: [0, 8] } }, 8);
  assert.throws(() => readSafetensors(span), (e: Error) => e instanceof WeightsError
    && e.message === `${span}: tensor 'w': F32[4] needs 16 bytes but data_offsets [0, 8] span 8`);
});

test('onFirstRead hears each tensor once, whether read alone or all at once', async () => {
  const file = path.join(tmp, 'heard.safetensors');
  writeSafetensors(file, { p: randomTensor(DType.BF16, [8]), q: randomTensor(DType.F32, [3]), r: randomTensor(DType.F16, [2]) });
  const heard: string[] = [];
  const src = onFirstRead(readSafetensors(file), (name) => heard.push(name));
  src.tensor('q');
  await readAll(src, ['p', 'q', 'r']);
  src.tensor('p');
  assert.equal(heard.sort(), ['p', 'q', 'r']);
});

test('preload reads a concatenation\'s parts straight into its buffer; bytes() and tensor() give what reading one by one gives', async () => {
  const file = path.join(tmp, 'proj.safetensors');
  const stored = { 'q.weight': randomTensor(DType.BF16, [6, 4]), 'k.weight': randomTensor(DType.BF16, [2, 4]), 'norm.weight': randomTensor(DType.BF16, [4]), 'wide.weight': randomTensor(DType.F32, [3]) };
  writeSafetensors(file, stored);
  const g = new Graph('g');
  const q = g.addParam('q.weight', tensorType(DType.BF16, [6, 4]));
  const k = g.addParam('k.weight', tensorType(DType.BF16, [2, 4]));
  g.addParam('norm.weight', tensorType(DType.BF16, [4]));
  // Stored as f32, used as bf16: not its device bytes, so left to be converted as asked for.
  g.addParam('wide.weight', tensorType(DType.BF16, [3]));
  g.addDerivedParam('qk.weight', 'concat', [q, k], { axis: 0 });
  const src = readSafetensors(file);
  let oneByOne = 0;
  const preloaded = new ParamStore((n) => (oneByOne++, src.tensor(n)));
  await preloaded.preload([g], src);
  assert.is(oneByOne, 0, 'nothing read one by one');
  const reference = new ParamStore((n) => src.tensor(n));
  for (const name of ['q.weight', 'k.weight', 'norm.weight', 'qk.weight', 'wide.weight']) {
    sameBytes(preloaded.bytes(g, name), reference.bytes(g, name), name);
    assert.equal(Array.from(preloaded.tensor(g, name).data), Array.from(reference.tensor(g, name).data), `${name} values`);
  }
  assert.is(oneByOne, 1, 'only the converted one read alone');
  const whole = preloaded.bytes(g, 'qk.weight');
  const [qb, kb] = [preloaded.bytes(g, 'q.weight'), preloaded.bytes(g, 'k.weight')];
  assert.ok(qb.buffer === whole.buffer && qb.byteOffset === whole.byteOffset, 'q read into the start of the concatenation');
  assert.ok(kb.buffer === whole.buffer && kb.byteOffset === whole.byteOffset + qb.byteLength, 'k read right after it');
  assert.ok(preloaded.readMs > 0);
});

test('preload of a source held in memory reads nothing ahead', async () => {
  const src = readSafetensors(path.join(tmp, 'proj.safetensors'));
  const memory: TensorSource = { location: 'memory', tensors: src.tensors, has: src.has, info: src.info, tensor: src.tensor };
  const g = new Graph('g');
  g.addParam('norm.weight', tensorType(DType.BF16, [4]));
  let reads = 0;
  const store = new ParamStore((n) => (reads++, memory.tensor(n)));
  await store.preload([g], memory);
  assert.is(reads, 0);
  sameBytes(store.bytes(g, 'norm.weight'), src.tensor('norm.weight').raw, 'norm.weight');
  assert.is(reads, 1);
});

/** NaN and infinities counted one element at a time, the plain way. */
function countNonFinite(raw: Uint8Array, dtype: DType) {
  const size = dtype === DType.F32 ? 4 : 2;
  const [exp, mant] = dtype === DType.F32 ? [0x7f800000, 0x007fffff] : dtype === DType.BF16 ? [0x7f80, 0x007f] : [0x7c00, 0x03ff];
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  let nan = 0;
  let inf = 0;
  let first = -1;
  for (let i = 0; i < Math.floor(raw.byteLength / size); i++) {
    const v = size === 2 ? view.getUint16(2 * i, true) : view.getUint32(4 * i, true);
    if ((v & exp) >>> 0 !== exp >>> 0) continue;
    if (v & mant) nan++;
    else inf++;
    if (first < 0) first = i;
  }
  return first < 0 ? undefined : { nan, inf, first };
}

test('the NaN scan counts as element by element does: every dtype, any length and alignment, sparse and dense', () => {
  for (let trial = 0; trial < 600; trial++) {
    const dtype = [DType.F32, DType.BF16, DType.F16][trial % 3];
    const size = dtype === DType.F32 ? 4 : 2;
    const length = crypto.randomInt(0, 12_000);
    const buf = new Uint8Array(crypto.randomBytes(length + 3));
    // Mostly finite (the top exponent bit cleared), a few elements left random, so blocks with and without hits.
    const keep = [0, 0.0005, 0.01, 1][crypto.randomInt(0, 4)];
    for (let i = size - 1; i < buf.length; i += size) if (Math.random() >= keep) buf[i] &= 0x3f;
    const offset = crypto.randomInt(0, 4);
    const raw = buf.subarray(offset, offset + length);
    assert.equal(nonFinite(raw, dtype), countNonFinite(raw, dtype), `${dtype}, ${length} bytes at offset ${offset}`);
  }
  assert.is(nonFinite(new Uint8Array(8), DType.I32), undefined, 'integers hold no NaN');
});

test('worker threads read into shared memory what reading alone gives, each tensor scanned whole across its reads', async () => {
  const file = path.join(tmp, 'threads.safetensors');
  const big = randomTensor(DType.BF16, [17 << 20]) as { dtype: DType; shape: number[]; bytes: () => Uint8Array };
  // Finite everywhere but two NaNs and an infinity, all past the first 32 MiB read of the big tensor.
  const halves = new Uint16Array(big.bytes().buffer);
  for (let i = 0; i < halves.length; i++) halves[i] &= 0xbfff;
  halves[(16 << 20) + 5] = 0x7fc1;
  halves[(16 << 20) + 9] = 0xff80;
  halves[(17 << 20) - 1] = 0x7f81;
  const tensors = { big, flag: randomTensor(DType.Bool, [5]), odd: randomTensor(DType.F32, [1000]), half: randomTensor(DType.F16, [333]) };
  writeSafetensors(file, tensors);
  const src = readSafetensors(file);
  const kinds: Record<string, ScanKind | undefined> = { big: 'bf16', flag: undefined, odd: 'f32', half: 'f16' };
  for (const workers of [1, 3]) {
    const names = Object.keys(tensors);
    const reads = names.map((name) => ({
      name, file, byteOffset: src.info(name).byteOffset, scan: kinds[name],
      into: new Uint8Array(new SharedArrayBuffer(src.info(name).byteLength)),
    }));
    const found = new Map<string, NonFinite | undefined>();
    await readTensors(reads, (i, bad) => found.set(names[i], bad), { workers });
    for (const [i, name] of names.entries()) {
      sameBytes(reads[i].into, src.tensor(name).raw, `${name} (${workers} threads)`);
      assert.equal(found.get(name), kinds[name] ? scanNonFinite(src.tensor(name).raw, kinds[name]!) : undefined, `${name}: its scan`);
    }
    assert.equal(found.get('big'), { nan: 2, inf: 1, first: (16 << 20) + 5 });
  }
  await readTensors([{ name: 'odd', file, byteOffset: src.info('odd').byteOffset, into: new Uint8Array(4000) }], undefined, { workers: 2 }).then(
    () => assert.unreachable('threads into memory that is not shared'),
    (e: Error) => assert.match(e.message, 'shared memory'),
  );
});

test('worker threads: a file cut short names the file and the tensor', async () => {
  const file = path.join(tmp, 'threads-cut.safetensors');
  writeSafetensors(file, { a: randomTensor(DType.F32, [64]), b: randomTensor(DType.BF16, [4096]) });
  const src = readSafetensors(file);
  fs.truncateSync(file, src.info('b').byteOffset + 1000);
  const reads = ['a', 'b'].map((name) => ({ name, file, byteOffset: src.info(name).byteOffset, into: new Uint8Array(new SharedArrayBuffer(src.info(name).byteLength)) }));
  await readTensors(reads, undefined, { workers: 2 }).then(
    () => assert.unreachable('read past the end'),
    (e: Error) => {
      assert.instance(e, TensorReadError);
      assert.is(e.message, `${file}: file is truncated: tensor 'b' got 1000 of 8192 bytes`);
    },
  );
});

test.run();
