// Reading many tensors of files at once, at disk speed: each file's tensors in file order make runs of consecutive
// bytes, cut into reads of at most CHUNK_BYTES scattered straight into the buffers the caller gives (readv), so
// nothing is copied after reading; every float tensor is scanned for NaN and infinities on the way. Into shared
// memory (SharedArrayBuffer) and past WORKERS_FROM bytes, worker threads read and scan chunks side by side (a
// Llama-3.2-1B is 2.5 GB: one thread scans about 2 GB/s); otherwise reads run on libuv's threads, IN_FLIGHT at a
// time, and the scan on this one as each tensor lands.

import fs from 'node:fs';
import os from 'node:os';
import { Worker } from 'node:worker_threads';

/** Bytes one read asks for at most. */
const CHUNK_BYTES = 32 << 20;
/** Reads in flight at once on libuv's threads (it runs four file reads at a time by default). */
const IN_FLIGHT = 4;
/** Buffers one readv fills at most (Linux's IOV_MAX is 1024). */
const CHUNK_BUFFERS = 512;
/** Below this many bytes, starting worker threads costs more than it saves. */
const WORKERS_FROM = 64 << 20;
const MAX_WORKERS = 8;

/** NaN and ±∞ counted among a tensor's elements, and the index of the first; null when there are none. */
export type NonFinite = { readonly nan: number; readonly inf: number; readonly first: number } | null;

/** The float formats the scan knows. */
export type ScanKind = 'f32' | 'f16' | 'bf16';

/** One tensor to read: where its bytes are, the buffer they go into (exactly as long), and how to scan them. */
export interface TensorRead {
  readonly file: string;
  readonly byteOffset: number;
  readonly into: Uint8Array;
  readonly scan?: ScanKind;
  /** The tensor's name, for messages. */
  readonly name: string;
}

/** Thrown for a file that cannot be opened or ends early; the message names the file and the tensor. */
export class TensorReadError extends Error {
  override name = 'TensorReadError';
}

/**
 * The scan, as JavaScript source: this thread and the reading workers (which load no TypeScript) run the same
 * code. Each element's exponent field plus its lowest bit carries into the bit above the field exactly when the
 * field is all ones (NaN or ±∞): one add tests a 32-bit word (two halves at once), and OR-ing a block of words finds
 * the blocks worth counting in, about twice as fast as testing halves one by one.
 */
const scanSource = `(function scan(raw, kind) {
  const half = kind !== 'f32';
  const size = half ? 2 : 4;
  const exp = kind === 'f32' ? 0x7f800000 : kind === 'bf16' ? 0x7f80 : 0x7c00;
  const mant = kind === 'f32' ? 0x007fffff : kind === 'bf16' ? 0x007f : 0x03ff;
  const n = Math.floor(raw.byteLength / size);
  // 32-bit words in place where the bytes are aligned, else copied once; little-endian hosts.
  const bytes = raw.byteOffset % 4 === 0 ? raw : raw.slice();
  const words = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 2);
  let nan = 0, inf = 0, first = -1;
  const count = (i) => {
    const v = half ? bytes[2 * i] | (bytes[2 * i + 1] << 8) : words[i];
    if ((v & exp) !== exp) return;
    if (v & mant) nan++; else inf++;
    if (first < 0) first = i;
  };
  const mask = half ? exp | (exp << 16) : exp;
  const carry = half ? (exp & -exp) * 0x10001 : exp & -exp;
  const top = half ? 0x80008000 | 0 : 0x80000000 | 0;
  const perWord = half ? 2 : 1;
  for (let b = 0; b < words.length; b += 1024) {
    const end = Math.min(words.length, b + 1024);
    let acc = 0, i = b;
    for (; i + 4 <= end; i += 4) {
      acc |= (((words[i] & mask) + carry) | 0) | (((words[i + 1] & mask) + carry) | 0)
        | (((words[i + 2] & mask) + carry) | 0) | (((words[i + 3] & mask) + carry) | 0);
    }
    for (; i < end; i++) acc |= ((words[i] & mask) + carry) | 0;
    if (acc & top) for (let e = b * perWord; e < Math.min(n, end * perWord); e++) count(e);
  }
  for (let e = words.length * perWord; e < n; e++) count(e);
  return first < 0 ? null : { nan, inf, first };
})`;

// eslint-disable-next-line no-new-func -- one scan for this thread and the workers (see scanSource)
const scan = new Function(`return ${scanSource}`)() as (raw: Uint8Array, kind: ScanKind) => NonFinite;

/** NaN and ±∞ among stored floats of `kind`, counted from their exponent bits (all ones). */
export function scanNonFinite(raw: Uint8Array, kind: ScanKind): NonFinite {
  return scan(raw, kind);
}

/** One read: consecutive bytes of a file from `position`, scattered over `pieces` in order. */
interface Chunk {
  readonly file: string;
  readonly position: number;
  readonly pieces: readonly { readonly read: number; readonly view: Uint8Array; readonly at: number }[];
}

/**
 * Reads every tensor into its buffer and scans it; `landed(i, nonFinite)` hears tensor `i` once its last byte has
 * arrived and been scanned (undefined for a tensor without a scan kind), while later reads go on. `opts.workers`
 * sets how many threads read (0: libuv's; default: by size, where every buffer is shared memory).
 */
export async function readTensors(reads: readonly TensorRead[], landed?: (i: number, nonFinite: NonFinite | undefined) => void,
  opts: { readonly workers?: number } = {}): Promise<void> {
  const chunks = planChunks(reads);
  const bytes = reads.reduce((n, r) => n + r.into.byteLength, 0);
  const shared = reads.every((r) => r.into.buffer instanceof SharedArrayBuffer);
  const cpus = os.availableParallelism();
  const auto = shared && bytes >= WORKERS_FROM && cpus > 1 ? Math.min(MAX_WORKERS, cpus) : 0;
  const workers = Math.min(opts.workers ?? auto, chunks.length);
  if (workers > 0 && !shared) throw new RangeError('reading in worker threads needs every buffer in shared memory (SharedArrayBuffer)');
  const tally = new Tally(reads, landed);
  // Zero-byte tensors are in no read: they are there at once.
  reads.forEach((r, i) => r.into.byteLength === 0 && tally.add(i, 0, undefined));
  if (workers > 0) await readInWorkers(chunks, reads, tally, workers);
  else await readHere(chunks, reads, tally);
}

/** Counts each tensor's bytes as its pieces arrive, joins their scans, and says when a tensor is whole. */
class Tally {
  private readonly left: number[];
  private readonly found: (NonFinite | undefined)[];

  constructor(private readonly reads: readonly TensorRead[], private readonly landed?: (i: number, nonFinite: NonFinite | undefined) => void) {
    this.left = reads.map((r) => r.into.byteLength);
    this.found = reads.map((r) => (r.scan ? null : undefined));
  }

  /** `bytes` more of tensor `i` arrived, starting at element `at`, holding `bad` (a piece's own scan). */
  add(i: number, bytes: number, bad: NonFinite | undefined, at = 0): void {
    const f = this.found[i];
    if (bad && f !== undefined) {
      this.found[i] = f === null ? { ...bad, first: at + bad.first }
        : { nan: f.nan + bad.nan, inf: f.inf + bad.inf, first: Math.min(f.first, at + bad.first) };
    }
    if ((this.left[i] -= bytes) === 0) this.landed?.(i, this.found[i]);
  }

  elementSize(i: number): number {
    return this.reads[i].scan === 'f32' ? 4 : 2;
  }
}

/** The reads for `reads`: each file's tensors in file order, consecutive bytes read together. */
function planChunks(reads: readonly TensorRead[]): Chunk[] {
  const order = reads.map((_, i) => i).filter((i) => reads[i].into.byteLength > 0).sort((a, b) => {
    const [x, y] = [reads[a], reads[b]];
    return x.file < y.file ? -1 : x.file > y.file ? 1 : x.byteOffset - y.byteOffset;
  });
  const chunks: (Chunk & { end: number; pieces: Chunk['pieces'][number][] })[] = [];
  let cur: (typeof chunks)[number] | undefined;
  for (const read of order) {
    const { file, byteOffset, into } = reads[read];
    for (let at = 0; at < into.byteLength;) {
      const position = byteOffset + at;
      const joins = cur && cur.file === file && cur.end === position && cur.end - cur.position < CHUNK_BYTES && cur.pieces.length < CHUNK_BUFFERS;
      if (!joins) chunks.push((cur = { file, position, end: position, pieces: [] }));
      const n = Math.min(into.byteLength - at, CHUNK_BYTES - (cur!.end - cur!.position));
      cur!.pieces.push({ read, view: into.subarray(at, at + n), at });
      cur!.end += n;
      at += n;
    }
  }
  return chunks;
}

/** The message for a chunk whose file ended `got` bytes into piece `piece`. */
function truncated(c: Chunk, reads: readonly TensorRead[], piece: number, got: number): TensorReadError {
  const p = c.pieces[piece];
  const r = reads[p.read];
  return new TensorReadError(`${c.file}: file is truncated: tensor '${r.name}' got ${p.at + got} of ${r.into.byteLength} bytes`);
}

// ---- on libuv's threads ----

async function readHere(chunks: readonly Chunk[], reads: readonly TensorRead[], tally: Tally): Promise<void> {
  const handles = new Map<string, Promise<fs.promises.FileHandle>>();
  const open = (file: string) => {
    let h = handles.get(file);
    if (!h) {
      h = fs.promises.open(file, 'r').catch((e: Error) => {
        throw new TensorReadError(`${file}: cannot open: ${e.message}`);
      });
      handles.set(file, h);
    }
    return h;
  };
  let next = 0;
  const reader = async () => {
    for (let c = chunks[next++]; c; c = chunks[next++]) {
      await readFully(await open(c.file), c, reads);
      for (const { read, view, at } of c.pieces) {
        const kind = reads[read].scan;
        tally.add(read, view.byteLength, kind ? scan(view, kind) : undefined, at / tally.elementSize(read));
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, chunks.length) }, reader));
  } finally {
    await Promise.all([...handles.values()].map((h) => h.then((fh) => fh.close(), () => {})));
  }
}

/** Fills a chunk's pieces, reading again after a short read; none at all means the file ended early. */
async function readFully(fh: fs.promises.FileHandle, c: Chunk, reads: readonly TensorRead[]): Promise<void> {
  let first = 0;
  let views = c.pieces.map((p) => p.view);
  let position = c.position;
  while (first < c.pieces.length) {
    const { bytesRead } = await fh.readv(views, position);
    if (bytesRead === 0) throw truncated(c, reads, first, c.pieces[first].view.byteLength - views[0].byteLength);
    position += bytesRead;
    // Drop what is full; the first piece not full goes on from where the read stopped.
    let done = bytesRead;
    while (views.length > 0 && done >= views[0].byteLength) {
      done -= views[0].byteLength;
      views = views.slice(1);
      first++;
    }
    if (done > 0) views = [views[0].subarray(done), ...views.slice(1)];
  }
}

// ---- in worker threads ----

/** What a worker is sent: one chunk, its pieces as places in shared buffers. */
interface WorkerJob {
  readonly file: string;
  readonly position: number;
  readonly pieces: readonly { buffer: SharedArrayBuffer; byteOffset: number; byteLength: number; scan?: ScanKind }[];
}

type WorkerReply = { found: (NonFinite | undefined)[] } | { short: { piece: number; got: number } } | { error: string };

async function readInWorkers(chunks: readonly Chunk[], reads: readonly TensorRead[], tally: Tally, count: number): Promise<void> {
  const pool = Array.from({ length: count }, () => new Worker(readerWorker, { eval: true, workerData: { scanSource } }));
  let next = 0;
  const run = (worker: Worker) => new Promise<void>((resolve, reject) => {
    let c: Chunk | undefined;
    const send = () => {
      c = chunks[next++];
      if (!c) return resolve();
      const job: WorkerJob = {
        file: c.file, position: c.position,
        pieces: c.pieces.map((p) => ({ buffer: p.view.buffer as SharedArrayBuffer, byteOffset: p.view.byteOffset, byteLength: p.view.byteLength, scan: reads[p.read].scan })),
      };
      worker.postMessage(job);
    };
    worker.on('message', (m: WorkerReply) => {
      if ('error' in m) return reject(new TensorReadError(m.error));
      if ('short' in m) return reject(truncated(c!, reads, m.short.piece, m.short.got));
      c!.pieces.forEach(({ read, view, at }, i) => tally.add(read, view.byteLength, m.found[i], at / tally.elementSize(read)));
      send();
    });
    worker.on('error', reject);
    worker.on('exit', (code) => reject(new Error(`a weight-reading thread stopped (exit code ${code})`)));
    send();
  });
  try {
    await Promise.all(pool.map(run));
  } finally {
    await Promise.all(pool.map((w) => w.terminate()));
  }
}

/** A reading thread: reads each chunk it is sent into shared memory (readv, again after a short read) and scans it. */
const readerWorker = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const scan = new Function('return ' + workerData.scanSource)();
const fds = new Map();
parentPort.on('message', (job) => {
  try {
    let fd = fds.get(job.file);
    if (fd === undefined) {
      try {
        fd = fs.openSync(job.file, 'r');
      } catch (e) {
        return parentPort.postMessage({ error: job.file + ': cannot open: ' + e.message });
      }
      fds.set(job.file, fd);
    }
    const views = job.pieces.map((p) => new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
    let first = 0, rest = views, position = job.position;
    while (first < views.length) {
      const n = fs.readvSync(fd, rest, position);
      if (n === 0) return parentPort.postMessage({ short: { piece: first, got: views[first].byteLength - rest[0].byteLength } });
      position += n;
      let done = n;
      while (rest.length > 0 && done >= rest[0].byteLength) { done -= rest[0].byteLength; rest = rest.slice(1); first++; }
      if (done > 0) rest = [rest[0].subarray(done), ...rest.slice(1)];
    }
    parentPort.postMessage({ found: job.pieces.map((p, i) => (p.scan ? scan(views[i], p.scan) : undefined)) });
  } catch (e) {
    parentPort.postMessage({ error: job.file + ': ' + e.message });
  }
});
`;
