// Where a megakernel first goes wrong: the graph's kernels run one by one (the multi-kernel path) and the
// megakernel's tasks run kernel by kernel from the same state, each kernel's writes compared byte for byte (both
// run the same code on the same inputs, so any difference is the megakernel's: a task's rows, a wait, the pool).
// The first kernel whose writes differ is named, and within it the task that wrote the first differing element:
// its tasks run again one at a time over writes filled with a marker, each task's elements being those it changed.

import { DType } from '../ir/dtype.ts';
import { BufferKey } from './device.ts';
import { cudaByteLength, fromDevice } from './devices/device-bytes.ts';

/** A buffer a kernel writes. */
export interface BisectWrite {
  readonly key: BufferKey;
  /** As stored (a bf16 temporary stays bf16). */
  readonly dtype: DType;
  /** Whether the kernel reads it too (its elements cannot be marked before a task runs). */
  readonly alsoRead: boolean;
  /** Written whole by the step before anything reads it (a temporary or an output; a state carries on). */
  readonly fresh: boolean;
}

/** What bisecting needs of a program whose graph runs as a megakernel. */
export interface BisectTarget {
  readonly kernels: readonly {
    readonly name: string;
    /** The last op fused into it, for the report. */
    readonly last: string;
    readonly writes: readonly BisectWrite[];
    /** Its tasks in the megakernel: the rows each runs and the block it is dealt to. */
    readonly tasks: readonly { readonly from: number; readonly to: number; readonly block: number }[];
  }[];
  /** Queues kernel i alone, as the graph launches it without the megakernel. */
  runKernel(i: number): void;
  /** Queues the megakernel with only kernel i's tasks (or only its task `task`), none waiting. */
  runTasks(i: number, task?: number): void;
  /** Queues copies of the buffers aside; restore copies them back; release frees the copies. */
  save(keys: readonly BufferKey[]): Saved;
  /** Every byte of a buffer, once the queue is past what came before. */
  read(key: BufferKey): Uint8Array;
  /** Queues filling a buffer with one byte value. */
  fill(key: BufferKey, byte: number): void;
}

export interface Saved {
  restore(): void;
  release(): void;
}

/** The first place the megakernel and the kernels one by one disagree. */
export interface MegakernelDifference {
  readonly kernel: number;
  readonly name: string;
  readonly last: string;
  readonly buffer: BufferKey;
  readonly element: number;
  /** The element as the megakernel wrote it, and as the kernel launched alone did. */
  readonly megakernel: number;
  readonly expected: number;
  /** Elements of the buffer that differ. */
  readonly differing: number;
  /**
   * The task that wrote the first differing element; absent where no task writes it (rows missing from the tasks)
   * or where the kernel reads what it writes (its elements cannot be marked).
   */
  readonly task?: { readonly index: number; readonly from: number; readonly to: number; readonly block: number };
}

/** A marker no finite value of any dtype the kernels store is likely to equal byte for byte. */
const MARK = 0xa5;

/**
 * Runs the step both ways from the buffers as they are, and puts every buffer the kernels write back as it was
 * (the caller resets the megakernel's counters). Undefined: every kernel's writes agree.
 */
export function bisectMegakernel(t: BisectTarget): MegakernelDifference | undefined {
  const writes = t.kernels.flatMap((k) => k.writes);
  const keys = [...new Set(writes.map((w) => w.key))];
  const fresh = [...new Set(writes.filter((w) => w.fresh).map((w) => w.key))];
  const start = t.save(keys);
  // Both runs start from the buffers as they are, the temporaries and outputs marked (the step writes them before
  // reading them), so that an element the megakernel leaves unwritten differs from the kernels' value.
  const prime = () => {
    start.restore();
    for (const key of fresh) t.fill(key, MARK);
  };
  try {
    prime();
    const expected = t.kernels.map((k, i) => {
      t.runKernel(i);
      return k.writes.map((w) => t.read(w.key));
    });
    prime();
    for (let i = 0; i < t.kernels.length; i++) {
      const k = t.kernels[i];
      const before = t.save(k.writes.map((w) => w.key));
      try {
        t.runTasks(i);
        for (let j = 0; j < k.writes.length; j++) {
          const got = t.read(k.writes[j].key);
          const at = firstDifference(got, expected[i][j], k.writes[j].dtype);
          if (at === undefined) continue;
          const w = k.writes[j];
          const value = (bytes: Uint8Array) => elementValue(bytes, w.dtype, at);
          return {
            kernel: i, name: k.name, last: k.last, buffer: w.key, element: at, megakernel: value(got), expected: value(expected[i][j]),
            differing: countDifferences(got, expected[i][j], w.dtype),
            ...(w.alsoRead || k.writes.some((x) => x.alsoRead) ? {} : { task: writerOf(t, i, j, at, before) }),
          };
        }
      } finally {
        before.release();
      }
    }
    return undefined;
  } finally {
    start.restore();
    start.release();
  }
}

/**
 * The task of kernel i that writes element `at` of its write j: each task run alone from the buffers as they were
 * before the kernel, its writes marked (it reads none of them).
 */
function writerOf(t: BisectTarget, i: number, j: number, at: number, before: Saved): MegakernelDifference['task'] {
  const k = t.kernels[i];
  const size = bytesOf(k.writes[j].dtype);
  for (let task = 0; task < k.tasks.length; task++) {
    before.restore();
    for (const w of k.writes) t.fill(w.key, MARK);
    t.runTasks(i, task);
    const bytes = t.read(k.writes[j].key).subarray(at * size, (at + 1) * size);
    if (bytes.some((b) => b !== MARK)) return { index: task, ...k.tasks[task] };
  }
  return undefined;
}

/** Bytes of one element as the CUDA device stores it. */
const bytesOf = (dtype: DType) => cudaByteLength(dtype, 1);

/** The first element whose bytes differ (a NaN equals any NaN). */
function firstDifference(a: Uint8Array, b: Uint8Array, dtype: DType): number | undefined {
  const size = bytesOf(dtype);
  for (let at = 0; at * size < a.length; at++) if (differs(a, b, dtype, at)) return at;
  return undefined;
}

function countDifferences(a: Uint8Array, b: Uint8Array, dtype: DType): number {
  let n = 0;
  for (let at = 0; at * bytesOf(dtype) < a.length; at++) if (differs(a, b, dtype, at)) n++;
  return n;
}

function differs(a: Uint8Array, b: Uint8Array, dtype: DType, at: number): boolean {
  const size = bytesOf(dtype);
  for (let x = at * size; x < (at + 1) * size; x++) {
    if (a[x] !== b[x]) return !(Number.isNaN(elementValue(a, dtype, at)) && Number.isNaN(elementValue(b, dtype, at)));
  }
  return false;
}

function elementValue(bytes: Uint8Array, dtype: DType, at: number): number {
  const size = bytesOf(dtype);
  const one = bytes.slice(at * size, (at + 1) * size);
  return Number(fromDevice(dtype, [1], one, 'bytes').data[0]);
}

/** The difference in words, or that there is none (`kernels` and `tasks`: how much was compared). */
export function formatMegakernelDifference(d: MegakernelDifference | undefined, kernels: number): string {
  if (!d) return `the megakernel agrees with the ${kernels} kernels run one by one: every write of the step, byte for byte`;
  const where = d.task ? `written by task ${d.task.index} (rows ${d.task.from}..${d.task.to - 1}) on block ${d.task.block}`
    : 'written by no task when each runs alone (rows missing from the tasks, or a kernel that reads what it writes)';
  return `the megakernel first differs at kernel ${d.kernel} (${d.name}, ending in ${d.last}): ${d.buffer} element ${d.element} is `
    + `${d.megakernel} where the kernel run alone gives ${d.expected} (${d.differing} element${d.differing === 1 ? '' : 's'} differ); ${where}`;
}
