// The one device interface: cpu, reference, webgpu and cuda each implement it, and everything above (the session,
// compile()'s host-tensor calls, the benchmarks) is written once against it.
//
// A device loads a lowered module as a Program: its kernels compiled for the device, every buffer allocated once
// for the largest sizes (weights uploaded, state zeroed). Buffers are named (BufferKey): inputs, weights and state
// by their names, shared by every graph of the module; outputs by graph and output name; temporaries by graph and
// memory-plan slot. Work is queued in order (writes, graph runs, copies) and nothing waits for the device until a
// read's promise resolves.

import { LoweredModule } from '../backends/lowered.ts';
import { Binding, evalSize } from '../backends/kernel-ir.ts';
// What a kernel moves and computes, for profiles (and the megakernel's cost model, which the backends own).
export { gemmFlops, kernelBytes } from '../backends/kernel-cost.ts';
import { DType } from '../ir/dtype.ts';
import { Graph, Value } from '../ir/graph.ts';
import { HostTensor } from '../ir/host-tensor.ts';
import { numel, resolveShape } from '../ir/shape.ts';
import { ParamStore } from './params.ts';

export const deviceKinds = ['cpu', 'reference', 'webgpu', 'cuda'] as const;
export type DeviceKind = (typeof deviceKinds)[number];

export function isDeviceKind(name: string): name is DeviceKind {
  return (deviceKinds as readonly string[]).includes(name);
}

/** A buffer's name: `input:tokens`, `param:w`, `state:cache.k.0`, `output:decode:logits`, `temp:decode:3`. */
export type BufferKey = string;

/** Symbolic sizes (S) bound to numbers. */
export type Sizes = Readonly<Record<string, number>>;

export interface LoadOptions {
  /** The largest value of every symbolic size: buffers are allocated for it. */
  readonly maxSizes: Sizes;
}

export interface Device {
  readonly kind: DeviceKind;
  /** What it is, for reports: `cpu`, `NVIDIA H200 (sm_90)`, the WebGPU adapter's name. */
  readonly description: string;
  /**
   * Starts compiling `module`'s kernels (where that takes long: CUDA's NVRTC), before the weights are ready; load
   * finishes what it started. Optional: devices without it compile in load.
   */
  prepare?(module: LoweredModule): void;
  /** Compiles every kernel of `module` for this device and allocates its buffers. */
  load(module: LoweredModule, params: ParamStore, opts: LoadOptions): Program | Promise<Program>;
  destroy(): void;
}

/** Kernels `from` (included) to `to` (excluded) of a graph, in launch order: part of a run. */
export interface KernelRange {
  readonly from: number;
  readonly to: number;
}

/** The kernels of `range` among `count`: all of them without one; a range outside them is an error. */
export function kernelSpan(count: number, range?: KernelRange): KernelRange {
  if (!range) return { from: 0, to: count };
  const { from, to } = range;
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to < from || to > count) {
    throw new RangeError(`kernels ${from}..${to} are not a range of the graph's ${count} kernels`);
  }
  return range;
}

/** A weight a kernel reads: uploaded once, from the parameter store. */
export interface ParamUse {
  readonly key: BufferKey;
  readonly graph: Graph;
  readonly name: string;
}

/**
 * The buffers a module needs: every input, state and output of every graph and every buffer a kernel binds, at the
 * largest size any graph uses it with (`bytes` of `elems` elements of a dtype, as the device stores them), and the
 * weights its kernels read, each once (concatenated projections' parts are not kept apart).
 */
export function planBuffers(module: LoweredModule, maxSizes: Sizes, bytes: (d: DType, elems: number) => number):
  { sizes: Map<BufferKey, number>; params: ParamUse[] } {
  const sizes = new Map<BufferKey, number>();
  const params = new Map<BufferKey, ParamUse>();
  const want = (key: BufferKey, n: number) => sizes.set(key, Math.max(sizes.get(key) ?? 0, n));
  const max = new Map(Object.entries(maxSizes));
  for (const { graph: g, kernels } of module.graphs) {
    const valueBytes = (v: Value) => bytes(v.type.dtype, numel(resolveShape(v.type.shape, max)));
    for (const v of g.inputs) want(`input:${v.name}`, valueBytes(v));
    for (const v of g.states) want(`state:${v.name}`, valueBytes(v));
    g.outputs.forEach((v, i) => want(outputKey(g, i), valueBytes(v)));
    for (const k of kernels) {
      for (const b of k.buffers) {
        const key = bufferKey(g, b.binding);
        if (b.binding.kind !== 'param') want(key, bytes(b.dtype, evalSize(b.elems, maxSizes)));
        else if (!params.has(key)) params.set(key, { key, graph: g, name: b.binding.name });
      }
    }
  }
  return { sizes, params: [...params.values()] };
}

/** Refuses a run at sizes larger than the program's buffers were allocated for. */
export function checkSizes(sizes: Sizes, maxSizes: Sizes): void {
  for (const [name, max] of Object.entries(maxSizes)) {
    if ((sizes[name] ?? 0) > max) throw new RangeError(`${name}=${sizes[name]} exceeds the ${max} the buffers were allocated for`);
  }
}

/** The launches and copies of one step, recorded once for replay (each device keeps its own form). */
export interface Recording {
  /** Commands recorded. */
  readonly commands: number;
}

/** A point on the device's queue, for timing: `elapsedMs(a, b)` once both are reached. */
export interface Mark {
  readonly id: number;
}

/** One kernel of a profile (Program.profile): each kernel launched and timed alone, in launch order. */
export interface KernelTime {
  readonly kernel: string;
  readonly kind: string;
  /**
   * When it started, in µs after the first kernel of the profile started: on the device's clock where it has one
   * (CUDA events, WebGPU timestamps), else the host's. A kernel starts no earlier than the one before it ended.
   */
  readonly startUs: number;
  readonly us: number;
  /** Bytes of the buffers it reads and writes (each once): what it must move at least. */
  readonly bytes: number;
  /** Multiply-adds × 2 of a GEMM kernel (undefined for others): its achieved FLOP/s is flops / us. */
  readonly flops?: number;
  /**
   * CUDA: registers a thread, and bytes of local memory a thread (registers spilled and the stack), as ptxas
   * compiled it; undefined elsewhere.
   */
  readonly registers?: number;
  readonly localBytes?: number;
  /** The IR lines of the nodes it fuses, in order. */
  readonly fused: readonly string[];
  /** The last of them, to tell kernels apart. */
  readonly last: string;
}

export interface Program {
  readonly device: Device;
  readonly module: LoweredModule;
  graph(name: string): Graph;
  has(key: BufferKey): boolean;
  /** Queues host values into a buffer (an input or a state); 16-bit floats are stored as 16 bits. */
  write(key: BufferKey, t: HostTensor): void;
  /** Queues zeroing a buffer. */
  zero(key: BufferKey): void;
  /** Queues every kernel of a graph with its symbolic sizes bound; with `kernels`, only those (bisect runs one at a time). */
  run(graph: string, sizes: Sizes, kernels?: KernelRange): void;
  /** Queues a copy of the first `count` elements of dtype `dtype` from one buffer to another, on the device. */
  copy(from: BufferKey, to: BufferKey, dtype: DType, count: number): void;
  /** Records what `body` queues (runs and copies, at fixed sizes) once, for replay: a CUDA graph on CUDA. */
  record(body: () => void): Recording;
  replay(r: Recording): void;
  /** Reads a buffer back after everything queued before it. Host devices answer at once. */
  read(key: BufferKey, dtype: DType, shape: readonly number[]): HostTensor | Promise<HostTensor>;
  /** A point on the queue for timing (device time on GPUs, host time on host devices). */
  mark(): Mark;
  /** Milliseconds between two marks; waits for the later one. */
  elapsedMs(a: Mark, b: Mark): Promise<number>;
  /** Waits until everything queued is done. */
  finish(): Promise<void>;
  kernelCount(graph: string): number;
  /** Each kernel of one run of `graph`, launched and timed one by one (GPU devices). */
  profile(graph: string, sizes: Sizes): Promise<KernelTime[]>;
  destroy(): void;
}

/** The buffer a kernel binding names, in a graph. */
export function bufferKey(graph: Graph, b: Binding): BufferKey {
  switch (b.kind) {
    case 'param': case 'state': case 'input': return `${b.kind}:${b.name}`;
    case 'output': return outputKey(graph, b.index);
    case 'temp': return `temp:${graph.name}:${b.slot}`;
    default: return b satisfies never;
  }
}

/** The buffer of a graph's output `i`: named by the output's name where it has one. */
export function outputKey(graph: Graph, i: number): BufferKey {
  return `output:${graph.name}:${graph.outputNames[i] || i}`;
}

/** The buffer of the output called `name`; throws naming the graph's outputs when there is none. */
export function namedOutputKey(graph: Graph, name: string): BufferKey {
  const i = graph.outputNames.indexOf(name);
  if (i < 0) {
    const names = graph.outputNames.filter(Boolean);
    throw new Error(`graph @${graph.name} has no output '${name}' (it has ${names.length ? names.map((n) => `'${n}'`).join(', ') : 'no named outputs'})`);
  }
  return outputKey(graph, i);
}

/** Bytes an element of `d` takes in device memory (bools as bytes on CUDA, words on WebGPU: the larger). */
export function bytesPer(d: DType): number {
  return d === DType.F16 || d === DType.BF16 ? 2 : 4;
}
