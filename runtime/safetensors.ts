// Reads and writes Hugging Face safetensors files and checkpoints. A file's whole header is checked when it is
// opened, so a broken checkpoint fails before any compute with an error naming the file and the tensor; tensor bytes
// are read and decoded only when asked for, so a multi-GB checkpoint never has to sit in memory at once. A model's
// start reads all its weights at once (readInto): each file front to back in large reads, several in flight, straight
// into the buffers the device uploads from, 16-bit floats as they are stored.

import fs from 'node:fs';
import path from 'node:path';
import { DType } from '../ir/dtype.ts';
import { formatShape, numel } from '../ir/shape.ts';
import { decodeBf16, decodeF16, encodeBf16, encodeF16 } from '../ir/half.ts';
import { checkRegularFile } from './files.ts';
import { NonFinite, readTensors, ScanKind, TensorReadError } from './tensor-reader.ts';

export { decodeBf16, decodeF16, encodeBf16, encodeF16 };

export class WeightsError extends Error {
  override name = 'WeightsError';
}

export type TensorData = Float32Array | Int32Array | Uint32Array | Uint8Array;

/** Where a tensor lives on disk. `byteOffset` counts from the start of the file, not of the data section. */
export interface TensorInfo {
  readonly name: string;
  readonly file: string;
  readonly dtype: DType;
  readonly storedAs: StoredDType;
  readonly shape: readonly number[];
  readonly byteOffset: number;
  readonly byteLength: number;
}

/**
 * A tensor read from disk: `data` decoded for the host (halves widened exactly to f32), `raw` the bytes as stored,
 * which GPU backends upload as they are. `data` may share memory with `raw`; treat both as read-only.
 */
export interface Tensor {
  readonly dtype: DType;
  readonly shape: number[];
  readonly data: TensorData;
  readonly raw: Uint8Array;
  /** NaN and ±∞ among its elements where it was scanned as it was read (readInto), null for none. */
  readonly nonFinite?: NonFinite;
}

/** A tensor's stored bytes to be read into `into`, which holds exactly its byteLength. */
export interface ReadRequest {
  readonly name: string;
  readonly into: Uint8Array;
}

/** A name → tensor lookup; single files and sharded checkpoints both are one. */
export interface TensorSource {
  /** The file or directory, for messages. */
  readonly location: string;
  readonly tensors: readonly TensorInfo[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  tensor(name: string): Tensor;
  /**
   * Reads the stored bytes of many tensors into the buffers given (each file front to back, in large reads), and
   * calls `landed` with each tensor (its `raw` the buffer given) once its bytes are all there. Sources held in
   * memory have none: their tensors are read one by one.
   */
  readInto?(requests: readonly ReadRequest[], landed?: (name: string, t: Tensor) => void): Promise<void>;
}

/** The source, calling `first` the first time each tensor is read (to count or check what loads). */
export function onFirstRead(src: TensorSource, first: (name: string, t: Tensor) => void): TensorSource {
  const seen = new Set<string>();
  const once = (name: string, t: Tensor) => {
    if (seen.has(name)) return;
    seen.add(name);
    first(name, t);
  };
  const readInto = src.readInto?.bind(src);
  return {
    location: src.location,
    tensors: src.tensors,
    has: (name) => src.has(name),
    info: (name) => src.info(name),
    tensor: (name) => {
      const t = src.tensor(name);
      once(name, t);
      return t;
    },
    ...(readInto ? {
      readInto: (requests, landed) => readInto(requests, (name, t) => {
        once(name, t);
        landed?.(name, t);
      }),
    } : {}),
  };
}

export interface SafetensorsFile extends TensorSource {
  readonly metadata: Readonly<Record<string, string>>;
}

export interface Checkpoint extends TensorSource {
  readonly files: readonly string[];
}

// ---------------------------------------------------------------------------------------------------------------
// Dtypes as stored: size on disk, the IR dtype they load as, and how their bytes decode.

interface Stored {
  readonly bytes: number;
  readonly dtype: DType;
  decode(raw: Uint8Array, info: TensorInfo): TensorData;
}

// Typed-array views below assume a little-endian host (as safetensors is), and rely on `raw` being freshly
// allocated, hence aligned.
const stored = {
  F32: { bytes: 4, dtype: DType.F32, decode: (raw) => new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4) },
  F16: { bytes: 2, dtype: DType.F16, decode: (raw) => decodeF16(halves(raw)) },
  BF16: { bytes: 2, dtype: DType.BF16, decode: (raw) => decodeBf16(halves(raw)) },
  I32: { bytes: 4, dtype: DType.I32, decode: (raw) => new Int32Array(raw.buffer, raw.byteOffset, raw.length / 4) },
  I64: { bytes: 8, dtype: DType.I32, decode: narrowI64 },
  U32: { bytes: 4, dtype: DType.U32, decode: (raw) => new Uint32Array(raw.buffer, raw.byteOffset, raw.length / 4) },
  // The IR has no u8; bytes widen to u32 so that a tensor's dtype always says what its data array is.
  U8: { bytes: 1, dtype: DType.U32, decode: (raw) => Uint32Array.from(raw) },
  BOOL: { bytes: 1, dtype: DType.Bool, decode: (raw) => raw },
} satisfies Record<string, Stored>;

export type StoredDType = keyof typeof stored;

function isStoredDType(s: unknown): s is StoredDType {
  return typeof s === 'string' && Object.hasOwn(stored, s);
}

function halves(raw: Uint8Array): Uint16Array {
  return new Uint16Array(raw.buffer, raw.byteOffset, raw.length / 2);
}

/** `raw` where a typed array of `size`-byte elements can view it, else a copy that can. */
function aligned(raw: Uint8Array, size: number): Uint8Array {
  return raw.byteOffset % size === 0 ? raw : raw.slice();
}

function narrowI64(raw: Uint8Array, info: TensorInfo): Int32Array {
  const words = new Int32Array(raw.buffer, raw.byteOffset, raw.length / 4);
  const out = new Int32Array(words.length / 2);
  for (let i = 0; i < out.length; i++) {
    const lo = words[2 * i];
    // An int64 fits in 32 bits exactly when its high word is the sign extension of its low word.
    if (words[2 * i + 1] !== lo >> 31) {
      const value = new BigInt64Array(raw.buffer, raw.byteOffset, out.length)[i];
      throw new WeightsError(`${info.file}: tensor '${info.name}': I64 value ${value} at index ${i} does not fit in i32`);
    }
    out[i] = lo;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading.

/** Opens and validates one file; tensor data is read from disk on each `tensor()` call. */
export function readSafetensors(file: string): SafetensorsFile {
  const fd = openFile(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw new WeightsError(`${file}: file is ${size} bytes, too short for the 8-byte header length`);
    const headerLength = new DataView(readAt(fd, file, 0, 8, 'header length').buffer).getBigUint64(0, true);
    if (headerLength > BigInt(size - 8)) {
      throw new WeightsError(`${file}: header length ${headerLength} is larger than the file (${size} bytes)`);
    }
    const dataStart = 8 + Number(headerLength);
    const header = parseHeader(file, readAt(fd, file, 8, dataStart - 8, 'header'));
    const { tensors, metadata } = parseEntries(file, header, dataStart, size - dataStart);
    return { ...lookup(file, tensors), metadata };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Reads `model.safetensors`, or the shards that `model.safetensors.index.json` names, as one lookup. Every file is
 * checked to be a regular file first (a FIFO would block, a directory fail without its name), and a shard name must
 * stay inside the checkpoint folder (`../x.safetensors` or `/etc/passwd` in an index are refused, never opened).
 */
export function readCheckpoint(dir: string): Checkpoint {
  const weightsError = (m: string) => new WeightsError(m);
  const single = path.join(dir, 'model.safetensors');
  if (fs.existsSync(single) || isLink(single)) {
    checkRegularFile(single, 'a safetensors file', weightsError);
    return { ...lookup(dir, readSafetensors(single).tensors), files: [single] };
  }
  const indexFile = path.join(dir, 'model.safetensors.index.json');
  if (!checkRegularFile(indexFile, 'the index of a sharded checkpoint', weightsError, true)) {
    throw new WeightsError(`${dir}: no model.safetensors or model.safetensors.index.json in this directory`);
  }
  const weightMap = parseIndex(indexFile);
  const shards = new Map<string, SafetensorsFile>();
  const tensors: TensorInfo[] = [];
  for (const [name, shardName] of weightMap) {
    let shard = shards.get(shardName);
    if (!shard) shards.set(shardName, (shard = readSafetensors(shardPath(dir, indexFile, name, shardName))));
    if (!shard.has(name)) {
      throw new WeightsError(`${indexFile}: weight_map puts tensor '${name}' in ${shardName}, which has no such tensor`);
    }
    tensors.push(shard.info(name));
  }
  return { ...lookup(dir, tensors), files: [...shards.values()].map((s) => s.location) };
}

/** A shard's path: a file name inside the checkpoint folder (subfolders allowed, nothing above it), a regular file. */
function shardPath(dir: string, indexFile: string, tensor: string, shard: string): string {
  const rel = path.normalize(shard);
  if (shard === '' || path.isAbsolute(shard) || rel === '..' || rel.startsWith(`..${path.sep}`) || rel === '.' || shard.includes('\0')) {
    throw new WeightsError(`${indexFile}: weight_map puts tensor '${tensor}' in ${JSON.stringify(shard)}, outside the checkpoint folder ${dir}`);
  }
  const file = path.join(dir, rel);
  checkRegularFile(file, `a safetensors shard (named in ${indexFile})`, (m) => new WeightsError(m));
  return file;
}

function isLink(p: string): boolean {
  return fs.lstatSync(p, { throwIfNoEntry: false })?.isSymbolicLink() ?? false;
}

function parseIndex(indexFile: string): Map<string, string> {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
  } catch (e) {
    throw new WeightsError(`${indexFile}: cannot read the index: ${(e as Error).message}`);
  }
  const weightMap = isObject(index) ? index.weight_map : undefined;
  if (!isObject(weightMap)) throw new WeightsError(`${indexFile}: no weight_map object`);
  const entries = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string') throw new WeightsError(`${indexFile}: weight_map entry for '${name}' is not a file name`);
    entries.set(name, shard);
  }
  return entries;
}

function lookup(location: string, tensors: readonly TensorInfo[]): TensorSource {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const info = (name: string): TensorInfo => {
    const t = byName.get(name);
    if (!t) throw new WeightsError(`${location}: no tensor '${name}'`);
    return t;
  };
  return {
    location, tensors, has: (name) => byName.has(name), info, tensor: (name) => loadTensor(info(name)),
    readInto: (requests, landed) => readInto(requests.map((r) => ({ info: info(r.name), into: r.into })), landed),
  };
}

/** The scan each stored float format gets as it is read. */
const scanKinds: Partial<Record<StoredDType, ScanKind>> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

async function readInto(requests: readonly { info: TensorInfo; into: Uint8Array }[], landed?: (name: string, t: Tensor) => void): Promise<void> {
  for (const { info, into } of requests) {
    if (into.byteLength !== info.byteLength) {
      throw new RangeError(`${info.file}: tensor '${info.name}' is ${info.byteLength} bytes, read into a buffer of ${into.byteLength}`);
    }
  }
  const reads = requests.map(({ info, into }) => ({ file: info.file, byteOffset: info.byteOffset, into, scan: scanKinds[info.storedAs], name: info.name }));
  try {
    await readTensors(reads, (i, nonFinite) => {
      const { info, into } = requests[i];
      landed?.(info.name, storedTensor(info, into, nonFinite));
    });
  } catch (e) {
    throw e instanceof TensorReadError ? new WeightsError(e.message) : e;
  }
}

function loadTensor(info: TensorInfo): Tensor {
  const fd = openFile(info.file, 'r');
  let raw: Uint8Array;
  try {
    raw = readAt(fd, info.file, info.byteOffset, info.byteLength, `tensor '${info.name}'`);
  } finally {
    fs.closeSync(fd);
  }
  return storedTensor(info, raw);
}

/** The tensor whose stored bytes are `raw` (which it keeps, and views where it can). */
function storedTensor(info: TensorInfo, raw: Uint8Array, nonFinite?: NonFinite): Tensor {
  const scanned = nonFinite === undefined ? {} : { nonFinite };
  const decode = () => stored[info.storedAs].decode(aligned(raw, stored[info.storedAs].bytes), info);
  // 16-bit floats are widened when `data` is first read: GPU devices upload `raw` as it is and never need it (other
  // dtypes decode at once: a view, or a check that may fail).
  if (info.storedAs !== 'F16' && info.storedAs !== 'BF16') return { dtype: info.dtype, shape: [...info.shape], data: decode(), raw, ...scanned };
  let data: TensorData | undefined;
  return {
    dtype: info.dtype,
    shape: [...info.shape],
    get data() { return (data ??= decode()); },
    raw,
    ...scanned,
  };
}

function parseHeader(file: string, bytes: Uint8Array): Record<string, unknown> {
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new WeightsError(`${file}: header is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(header)) throw new WeightsError(`${file}: header is not a JSON object`);
  return header;
}

function parseEntries(file: string, header: Record<string, unknown>, dataStart: number, dataLength: number) {
  const metadata: Record<string, string> = {};
  const tensors: (TensorInfo & { begin: number; end: number })[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(entry) || !Object.values(entry).every((v) => typeof v === 'string')) {
        throw new WeightsError(`${file}: __metadata__ must be an object of strings`);
      }
      Object.assign(metadata, entry);
      continue;
    }
    const bad = (msg: string) => new WeightsError(`${file}: tensor '${name}': ${msg}`);
    if (!isObject(entry)) throw bad('header entry is not an object');
    const { dtype, shape, data_offsets: offsets } = entry;
    if (!isStoredDType(dtype)) {
      throw bad(`unknown dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(stored).join(', ')})`);
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw bad(`shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
      throw bad(`data_offsets must be two integers [begin, end] with begin <= end, got ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    const needed = numel(shape) * stored[dtype].bytes;
    if (end - begin !== needed) {
      throw bad(`${dtype}${formatShape(shape)} needs ${needed} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    }
    if (end > dataLength) {
      throw new WeightsError(
        `${file}: file is truncated: tensor '${name}' needs bytes up to ${end} but the data section has ${dataLength}`);
    }
    tensors.push({
      name, file, dtype: stored[dtype].dtype, storedAs: dtype, shape, byteOffset: dataStart + begin, byteLength: needed,
      begin, end,
    });
  }
  const byPosition = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < byPosition.length; i++) {
    const [prev, cur] = [byPosition[i - 1], byPosition[i]];
    if (cur.begin < prev.end) {
      throw new WeightsError(`${file}: tensors '${prev.name}' (bytes ${prev.begin}..${prev.end}) and '${cur.name}' `
        + `(bytes ${cur.begin}..${cur.end}) overlap`);
    }
  }
  return { tensors: tensors.map(({ begin, end, ...info }) => info), metadata };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

function openFile(file: string, flags: 'r' | 'w'): number {
  try {
    return fs.openSync(file, flags);
  } catch (e) {
    throw new WeightsError(`${file}: cannot open: ${(e as Error).message}`);
  }
}

/** Reads exactly `length` bytes into a fresh (so aligned) buffer; a short read means the file shrank since opened. */
function readAt(fd: number, file: string, position: number, length: number, what: string): Uint8Array {
  const buf = new Uint8Array(length);
  for (let done = 0; done < length;) {
    const n = fs.readSync(fd, buf, done, Math.min(length - done, 1 << 30), position + done);
    if (n === 0) throw new WeightsError(`${file}: file is truncated: ${what} got ${done} of ${length} bytes`);
    done += n;
  }
  return buf;
}

/** write(2) may stop short (Linux caps one call near 2 GiB), so loop. */
/** write(2) stops short near 2 GiB a call: loop, at most 1 GiB at a time. */
function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30));
}

// ---------------------------------------------------------------------------------------------------------------
// Writing.

/**
 * A tensor to write: values (floats are rounded to the dtype, integers must fit it), or its bytes as stored, asked
 * for when it is written, so a multi-gigabyte checkpoint is in memory one tensor at a time.
 */
export type TensorToWrite =
  | { readonly dtype: DType; readonly shape: readonly number[]; readonly data: ArrayLike<number> }
  | { readonly dtype: DType; readonly shape: readonly number[]; readonly bytes: () => Uint8Array };

const encoders: Record<DType, { name: StoredDType; encode(values: ArrayLike<number>, where: string): ArrayBufferView }> = {
  [DType.F32]: { name: 'F32', encode: (v) => (v instanceof Float32Array ? v : Float32Array.from(v)) },
  [DType.F16]: { name: 'F16', encode: (v) => encodeF16(v) },
  [DType.BF16]: { name: 'BF16', encode: (v) => encodeBf16(v) },
  [DType.I32]: { name: 'I32', encode: (v, where) => Int32Array.from(checkIntegers(v, -(2 ** 31), 2 ** 31 - 1, where)) },
  [DType.U32]: { name: 'U32', encode: (v, where) => Uint32Array.from(checkIntegers(v, 0, 2 ** 32 - 1, where)) },
  [DType.Bool]: { name: 'BOOL', encode: (v, where) => Uint8Array.from(checkIntegers(v, 0, 1, where)) },
};

function checkIntegers(values: ArrayLike<number>, min: number, max: number, where: string): ArrayLike<number> {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isInteger(v) || v < min || v > max) throw new WeightsError(`${where}: value ${v} at index ${i} is out of range`);
  }
  return values;
}

/**
 * Writes tensors in the given order. The header is padded with spaces to a multiple of 8 bytes, as Hugging Face
 * does, so every tensor starts 8-byte aligned. Writes to a temporary name first so a failed write leaves no file.
 */
export function writeSafetensors(
  file: string, tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>,
): void {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (!t.shape.every(isCount)) throw new WeightsError(`${file}: tensor '${name}': bad shape ${formatShape(t.shape)}`);
    const n = numel(t.shape);
    if ('data' in t && t.data.length !== n) {
      throw new WeightsError(`${file}: tensor '${name}': ${t.data.length} values for shape ${formatShape(t.shape)}`);
    }
    const storedAs = encoders[t.dtype].name;
    const end = offset + n * stored[storedAs].bytes;
    header[name] = { dtype: storedAs, shape: [...t.shape], data_offsets: [offset, end] };
    offset = end;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));

  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openFile(tmp, 'w');
  try {
    try {
      writeAll(fd, length);
      writeAll(fd, Buffer.from(json));
      for (const [name, t] of Object.entries(tensors)) {
        const where = `${file}: tensor '${name}'`;
        const bytes = 'data' in t ? encoders[t.dtype].encode(t.data, where) : t.bytes();
        const want = numel(t.shape) * stored[encoders[t.dtype].name].bytes;
        if (bytes.byteLength !== want) throw new WeightsError(`${where}: ${bytes.byteLength} bytes, its shape needs ${want}`);
        writeAll(fd, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      }
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
