// Running a cuda artifact: its CUDA C module compiled by NVRTC for the device at the first run (the image cached
// on disk, as the CUDA device caches its own), its kernels launched on the driver's stream. Weights stay on the
// device between runs; the other buffers grow to the largest sizes seen. Where there is no driver, the first run
// rejects with CudaUnavailableError.

import { evalSize } from '../backends/kernel-ir.ts';
import { DType } from '../ir/dtype.ts';
import { HostTensor } from '../ir/host-tensor.ts';
import { numel, resolveShape } from '../ir/shape.ts';
import { BoundCall, bufferBytes, bufferKey, CudaArtifactPlan } from './artifact.ts';
import { CudaDriver, DevicePtr, Handle, KernelArgs } from './cuda/driver.ts';
import { compileCuda } from './cuda/nvrtc.ts';
import { allocSplitScratch, freeSplitScratch, SplitScratch } from './cuda/split-scratch.ts';
import { cudaByteLength, fromDevice, toDevice } from './devices/device-bytes.ts';

/** Largest grid.x CUDA accepts; kernels grid-stride over any rows beyond it. */
const MAX_GRID = 2 ** 31 - 1;

interface DeviceBuffer {
  readonly ptr: DevicePtr;
  readonly bytes: number;
}

interface Loaded {
  readonly cuda: CudaDriver;
  readonly module: Handle;
  /** Each kernel's function, in launch order. */
  readonly functions: readonly Handle[];
  /** Inputs, state, outputs and temporaries by bufferKey, each as large as the largest run so far needed. */
  readonly buffers: Map<string, DeviceBuffer>;
  /** Each parameter with the tensor it was uploaded from. */
  readonly params: Map<string, DeviceBuffer & { readonly tensor: HostTensor }>;
  /** Kernel arguments by size binding; cleared when a buffer moves. */
  readonly args: Map<string, KernelArgs[]>;
  /** The depth-split GEMMs' workspace and counters (none where no kernel splits). */
  readonly scratch?: SplitScratch;
}

const loaded = new Map<CudaArtifactPlan, Loaded>();

export async function runCuda(plan: CudaArtifactPlan, call: BoundCall, inputs: Readonly<Record<string, HostTensor>>,
  states: Map<string, HostTensor>): Promise<HostTensor[]> {
  let g = loaded.get(plan);
  if (!g) loaded.set(plan, (g = load(plan)));
  const cuda = g.cuda;
  for (const [key, bytes] of bufferBytes(plan, call, cudaByteLength)) {
    const have = g.buffers.get(key);
    if (have && have.bytes >= bytes) continue;
    if (have) cuda.free(have.ptr);
    const buf = alloc(cuda, bytes);
    cuda.fill(buf.ptr, 0, buf.bytes);
    g.buffers.set(key, buf);
    g.args.clear();
  }
  for (const [name, tensor] of call.params) {
    const have = g.params.get(name);
    if (have?.tensor === tensor) continue;
    if (have) cuda.free(have.ptr);
    const bytes = toDevice(tensor, 'bytes');
    const buf = alloc(cuda, bytes.byteLength);
    cuda.upload(buf.ptr, bytes);
    g.params.set(name, { ...buf, tensor });
    g.args.clear();
  }
  const buffer = (key: string): DeviceBuffer => {
    const b = key.startsWith('param:') ? g.params.get(key.slice(6)) : g.buffers.get(key);
    if (!b) throw new Error(`@${plan.name}: no buffer ${key}`);
    return b;
  };
  for (const t of plan.inputs) upload(cuda, buffer(`input:${t.name}`), inputs[t.name]);
  for (const s of plan.states) {
    const t = states.get(s.name);
    if (t) upload(cuda, buffer(`state:${s.name}`), t);
    else cuda.fill(buffer(`state:${s.name}`).ptr, 0, buffer(`state:${s.name}`).bytes);
  }
  const sizesKey = JSON.stringify(Object.entries(call.sizes).sort());
  let args = g.args.get(sizesKey);
  if (!args) {
    args = plan.kernels.map((k) => cuda.kernelArgs([
      ...k.buffers.map((b) => buffer(bufferKey(b.binding)).ptr),
      ...k.sizes.map((s) => ({ int: call.sizes[s] })),
      ...(k.depthSplit ? [g.scratch!.workspace, g.scratch!.counters] : []),
    ]));
    g.args.set(sizesKey, args);
  }
  plan.kernels.forEach((k, i) => {
    const rows = evalSize(k.rows, call.sizes);
    const cluster = k.clusterBlocks ? evalSize(k.clusterBlocks, call.sizes) : 1;
    if (rows > 0) cuda.launch(g.functions[i], Math.min(rows, MAX_GRID), plan.threads, args[i], k.sharedBytes, false, cluster);
  });
  const bound = new Map(Object.entries(call.sizes));
  const read = (key: string, dtype: DType, shape: number[]) => {
    const bytes = new Uint8Array(cudaByteLength(dtype, numel(shape)));
    // download waits for everything queued on the stream.
    if (bytes.byteLength > 0) cuda.download(bytes, buffer(key).ptr);
    return fromDevice(dtype, shape, bytes, 'bytes');
  };
  const outputs = plan.outputs.map((o, i) => read(`output:${i}`, o.dtype as DType, call.outputShapes[i]));
  for (const s of plan.states) states.set(s.name, read(`state:${s.name}`, s.dtype as DType, resolveShape(s.shape, bound)));
  return outputs;
}

/** Frees the plan's buffers and module, and closes the driver. */
export function releaseCuda(plan: CudaArtifactPlan): void {
  const g = loaded.get(plan);
  if (!g) return;
  loaded.delete(plan);
  g.cuda.synchronize();
  for (const b of [...g.buffers.values(), ...g.params.values()]) g.cuda.free(b.ptr);
  freeSplitScratch(g.cuda, g.scratch);
  g.cuda.unloadModule(g.module);
  g.cuda.destroy();
}

/** Opens the driver (CudaUnavailableError where there is none) and compiles the module for its device. */
function load(plan: CudaArtifactPlan): Loaded {
  const cuda = CudaDriver.open();
  try {
    const image = compileCuda(plan.source, cuda.info.computeCapability, `${plan.name}.cu`);
    const module = cuda.loadModule(image.image);
    const byName = new Map<string, Handle>();
    const functions = plan.kernels.map((k) => {
      let fn = byName.get(k.function);
      if (!fn) byName.set(k.function, (fn = cuda.getFunction(module, k.function, k.sharedBytes)));
      return fn;
    });
    return { cuda, module, functions, buffers: new Map(), params: new Map(), args: new Map(), scratch: allocSplitScratch(cuda, plan.kernels.flatMap((k) => (k.depthSplit ? [k.depthSplit] : []))) };
  } catch (e) {
    cuda.destroy();
    throw e;
  }
}

/** Rounded up so 16-byte vector loads of the last elements never leave the allocation. */
function alloc(cuda: CudaDriver, bytes: number): DeviceBuffer {
  const rounded = Math.ceil(Math.max(bytes, 4) / 256) * 256;
  return { ptr: cuda.alloc(rounded), bytes: rounded };
}

function upload(cuda: CudaDriver, buf: DeviceBuffer, t: HostTensor): void {
  const bytes = toDevice(t, 'bytes');
  if (bytes.byteLength > 0) cuda.upload(buf.ptr, bytes);
}
