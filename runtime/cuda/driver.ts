// The CUDA driver API through koffi (no native build step): one context on device 0, one stream, device memory,
// modules, kernel launches, stream capture into CUDA graphs, and events. Every call is checked; a failure names
// the call and the driver's own description of the error.

import koffi from 'koffi';
import { CudaError, CudaUnavailableError } from './errors.ts';

export { CudaError, CudaUnavailableError };

/** A device address (CUdeviceptr); below 2^53 on every driver, so a plain number. */
export type DevicePtr = number;
/** An opaque driver handle (CUmodule, CUfunction, CUstream, CUevent, CUgraph, CUgraphExec), or a host pointer. */
export type Handle = unknown;

const CUDA_SUCCESS = 0;
const CUDA_ERROR_NOT_READY = 600;
const ATTR_MULTIPROCESSOR_COUNT = 16;
const ATTR_CC_MAJOR = 75;
const ATTR_CC_MINOR = 76;
const ATTR_MAX_SHARED_OPTIN = 97;
const FUNC_ATTR_MAX_DYNAMIC_SHARED = 8;
const FUNC_ATTR_LOCAL_SIZE_BYTES = 3;
const FUNC_ATTR_NUM_REGS = 4;
const STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;
const LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4;
const LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6;
// CUlaunchConfig: grid x, y, z, block x, y, z and shared bytes as u32s, the stream at byte 32, the attributes'
// address at 40, their count at 48. CUlaunchAttribute: the id, 4 bytes of padding, a 64-byte value.
const LAUNCH_CONFIG_BYTES = 56;
const LAUNCH_ATTRIBUTE_BYTES = 72;

/** Where libcuda may be: TSFUSE_LIBCUDA alone when set, else the loader's search path. */
export function libcudaCandidates(): string[] {
  return process.env.TSFUSE_LIBCUDA ? [process.env.TSFUSE_LIBCUDA] : ['libcuda.so.1', 'libcuda.so'];
}

/** Loads the first library of `names` that opens; the errors of all of them when none does. */
export function loadFirst(names: readonly string[], what: string): koffi.IKoffiLib {
  const errors: string[] = [];
  for (const name of names) {
    try {
      return koffi.load(name);
    } catch (e) {
      errors.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new CudaUnavailableError(`cannot load ${what} (${errors.join('; ')})`);
}

type Fn = (...args: unknown[]) => number;

/** The bindings, declared once per process. */
function bind(lib: koffi.IKoffiLib) {
  const f = (proto: string) => lib.func(proto) as unknown as Fn;
  /** The first of several exported names (newer drivers version some calls, older ones lack the new names). */
  const either = (...protos: string[]): Fn => {
    for (const p of protos) {
      try {
        return f(p);
      } catch { /* try the next name */ }
    }
    throw new CudaUnavailableError(`the CUDA driver lacks ${protos.map((p) => /(\w+)\(/.exec(p)![1]).join(' / ')}`);
  };
  /** A call older drivers may lack: undefined there. */
  const optional = (proto: string): Fn | undefined => {
    try {
      return f(proto);
    } catch {
      return undefined;
    }
  };
  return {
    cuInit: f('int cuInit(unsigned int flags)'),
    cuDriverGetVersion: f('int cuDriverGetVersion(_Out_ int *version)'),
    cuGetErrorName: f('int cuGetErrorName(int error, _Out_ const char **str)'),
    cuGetErrorString: f('int cuGetErrorString(int error, _Out_ const char **str)'),
    cuDeviceGetCount: f('int cuDeviceGetCount(_Out_ int *count)'),
    cuDeviceGet: f('int cuDeviceGet(_Out_ int *device, int ordinal)'),
    cuDeviceGetName: f('int cuDeviceGetName(void *name, int len, int dev)'),
    cuDeviceGetAttribute: f('int cuDeviceGetAttribute(_Out_ int *value, int attrib, int dev)'),
    cuDevicePrimaryCtxRetain: f('int cuDevicePrimaryCtxRetain(_Out_ void **ctx, int dev)'),
    cuDevicePrimaryCtxRelease: either('int cuDevicePrimaryCtxRelease_v2(int dev)', 'int cuDevicePrimaryCtxRelease(int dev)'),
    cuCtxSetCurrent: f('int cuCtxSetCurrent(void *ctx)'),
    cuCtxSynchronize: f('int cuCtxSynchronize()'),
    cuModuleLoadData: f('int cuModuleLoadData(_Out_ void **module, const void *image)'),
    cuModuleUnload: f('int cuModuleUnload(void *module)'),
    cuModuleGetFunction: f('int cuModuleGetFunction(_Out_ void **fn, void *module, const char *name)'),
    cuFuncSetAttribute: f('int cuFuncSetAttribute(void *fn, int attrib, int value)'),
    cuFuncGetAttribute: f('int cuFuncGetAttribute(_Out_ int *value, int attrib, void *fn)'),
    cuOccupancyMaxActiveBlocksPerMultiprocessor: f('int cuOccupancyMaxActiveBlocksPerMultiprocessor(_Out_ int *blocks, void *fn, int blockSize, size_t sharedBytes)'),
    cuMemAlloc: f('int cuMemAlloc_v2(_Out_ uint64_t *ptr, size_t bytes)'),
    cuMemFree: f('int cuMemFree_v2(uint64_t ptr)'),
    cuMemAllocHost: f('int cuMemAllocHost_v2(_Out_ void **ptr, size_t bytes)'),
    cuMemFreeHost: f('int cuMemFreeHost(void *ptr)'),
    cuMemcpyHtoD: f('int cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t bytes)'),
    cuMemcpyDtoH: f('int cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t bytes)'),
    cuMemcpyHtoDAsync: f('int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t bytes, void *stream)'),
    cuMemcpyDtoHAsync: f('int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t bytes, void *stream)'),
    cuMemcpyDtoDAsync: f('int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *stream)'),
    cuMemsetD8Async: f('int cuMemsetD8Async(uint64_t dst, uint8_t value, size_t count, void *stream)'),
    cuStreamCreate: f('int cuStreamCreate(_Out_ void **stream, unsigned int flags)'),
    cuStreamDestroy: f('int cuStreamDestroy_v2(void *stream)'),
    cuStreamSynchronize: f('int cuStreamSynchronize(void *stream)'),
    cuLaunchKernel: f('int cuLaunchKernel(void *fn, unsigned int gx, unsigned int gy, unsigned int gz, '
      + 'unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared, void *stream, void *params, void *extra)'),
    cuLaunchKernelEx: optional('int cuLaunchKernelEx(const void *config, void *fn, void *params, void *extra)'),
    cuOccupancyMaxActiveClusters: optional('int cuOccupancyMaxActiveClusters(_Out_ int *clusters, void *fn, const void *config)'),
    cuStreamBeginCapture: f('int cuStreamBeginCapture_v2(void *stream, int mode)'),
    cuStreamEndCapture: f('int cuStreamEndCapture(void *stream, _Out_ void **graph)'),
    cuGraphInstantiate: f('int cuGraphInstantiateWithFlags(_Out_ void **exec, void *graph, unsigned long long flags)'),
    cuGraphLaunch: f('int cuGraphLaunch(void *exec, void *stream)'),
    cuGraphDestroy: f('int cuGraphDestroy(void *graph)'),
    cuGraphExecDestroy: f('int cuGraphExecDestroy(void *exec)'),
    cuEventCreate: f('int cuEventCreate(_Out_ void **event, unsigned int flags)'),
    cuEventDestroy: f('int cuEventDestroy_v2(void *event)'),
    cuEventRecord: f('int cuEventRecord(void *event, void *stream)'),
    cuEventQuery: f('int cuEventQuery(void *event)'),
    cuEventSynchronize: f('int cuEventSynchronize(void *event)'),
    cuEventElapsedTime: either('int cuEventElapsedTime_v2(_Out_ float *ms, void *start, void *end)',
      'int cuEventElapsedTime(_Out_ float *ms, void *start, void *end)'),
  };
}

type Api = ReturnType<typeof bind>;
const bound = new Map<string, Api>();

export interface DeviceInfo {
  readonly name: string;
  /** e.g. 90 for compute capability 9.0. */
  readonly computeCapability: number;
  readonly multiprocessors: number;
  readonly maxSharedPerBlock: number;
  readonly driverVersion: number;
}

/** Kernel arguments in native memory that stays put, as cuLaunchKernel's `void **kernelParams` wants them. */
export interface KernelArgs {
  readonly params: Handle;
  readonly values: Handle;
}

/** One CUDA context (the device's primary context) and one stream, with every call checked. */
export class CudaDriver {
  readonly info: DeviceInfo;
  readonly stream: Handle;
  /**
   * Whether a launch may overlap its predecessor (programmatic dependent launch): sm_90, and a driver that keeps
   * it in captured graphs (12.3).
   */
  readonly overlapLaunches: boolean;
  /**
   * Whether a launch may group its blocks into clusters (sm_90: blocks of a cluster run at once on neighbouring
   * multiprocessors and read each other's shared memory); where the driver cannot, the blocks launch alone and a
   * kernel that would use its cluster takes its other path (%cluster_nctarank reads 1).
   */
  readonly clusterLaunches: boolean;
  /**
   * The CUlaunchConfig of a launch with attributes: first the cluster's size, then the overlap, the config pointing
   * at the ones a launch sets (native memory, kept).
   */
  private readonly exConfig: Handle;
  private readonly exAttributes: Handle;
  /** Clusters of a function that run at once, by function and cluster size (clustersAtOnce). */
  private readonly clustersAtOnceOf = new Map<Handle, Map<number, number>>();
  private readonly device: number;
  private readonly nativeAllocs: Handle[] = [];
  private destroyed = false;

  private constructor(private readonly api: Api, libName: string) {
    const init = api.cuInit(0);
    if (init !== CUDA_SUCCESS) {
      throw new CudaUnavailableError(`the CUDA driver (${libName}) did not initialise: ${this.describe(init)}`);
    }
    const count = [0];
    this.check('cuDeviceGetCount', api.cuDeviceGetCount(count));
    if (count[0] === 0) throw new CudaUnavailableError(`the CUDA driver (${libName}) finds no GPU`);
    const dev = [0];
    this.check('cuDeviceGet', api.cuDeviceGet(dev, 0));
    this.device = dev[0];
    const ctx = [null];
    this.check('cuDevicePrimaryCtxRetain', api.cuDevicePrimaryCtxRetain(ctx, this.device));
    this.check('cuCtxSetCurrent', api.cuCtxSetCurrent(ctx[0]));
    const attr = (a: number) => {
      const v = [0];
      this.check('cuDeviceGetAttribute', api.cuDeviceGetAttribute(v, a, this.device));
      return v[0];
    };
    const name = new Uint8Array(256);
    this.check('cuDeviceGetName', api.cuDeviceGetName(name, name.length, this.device));
    const version = [0];
    this.check('cuDriverGetVersion', api.cuDriverGetVersion(version));
    this.info = {
      name: new TextDecoder().decode(name.subarray(0, name.indexOf(0))),
      computeCapability: attr(ATTR_CC_MAJOR) * 10 + attr(ATTR_CC_MINOR),
      multiprocessors: attr(ATTR_MULTIPROCESSOR_COUNT),
      maxSharedPerBlock: attr(ATTR_MAX_SHARED_OPTIN),
      driverVersion: version[0],
    };
    const stream = [null];
    // Flags 0: the stream also orders against the legacy default stream, so plain copies never race it.
    this.check('cuStreamCreate', api.cuStreamCreate(stream, 0));
    this.stream = stream[0];
    this.overlapLaunches = api.cuLaunchKernelEx !== undefined && this.info.computeCapability >= 90 && version[0] >= 12030;
    this.clusterLaunches = api.cuLaunchKernelEx !== undefined && api.cuOccupancyMaxActiveClusters !== undefined && this.info.computeCapability >= 90;
    const attributes = koffi.alloc('uint8', 2 * LAUNCH_ATTRIBUTE_BYTES);
    koffi.encode(attributes, 0, 'uint32', LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION);
    for (const offset of [8, 12, 16]) koffi.encode(attributes, offset, 'uint32', 1);
    koffi.encode(attributes, LAUNCH_ATTRIBUTE_BYTES, 'uint32', LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
    koffi.encode(attributes, LAUNCH_ATTRIBUTE_BYTES + 8, 'int32', 1);
    this.exAttributes = attributes;
    this.exConfig = koffi.alloc('uint8', LAUNCH_CONFIG_BYTES);
    for (const [offset, v] of [[4, 1], [8, 1], [16, 1], [20, 1]]) koffi.encode(this.exConfig, offset, 'uint32', v);
    koffi.encode(this.exConfig, 32, 'uint64', koffi.address(this.stream));
    this.nativeAllocs.push(attributes, this.exConfig);
  }

  /** Opens the driver; `libraries` overrides where libcuda is looked for (tests point it at a missing file). */
  static open(libraries: readonly string[] = libcudaCandidates()): CudaDriver {
    let lastError: unknown;
    for (const name of libraries) {
      let api = bound.get(name);
      if (!api) {
        let lib: koffi.IKoffiLib;
        try {
          lib = koffi.load(name);
        } catch (e) {
          lastError = e;
          continue;
        }
        try {
          api = bind(lib);
        } catch (e) {
          if (e instanceof CudaUnavailableError) throw e;
          throw new CudaUnavailableError(`${name} is not a usable CUDA driver: ${(e as Error).message}`);
        }
        bound.set(name, api);
      }
      return new CudaDriver(api, name);
    }
    const why = lastError instanceof Error ? lastError.message : 'no library to try';
    throw new CudaUnavailableError(`no CUDA driver: cannot load ${libraries.join(' or ')} (${why}); is this a machine with an NVIDIA GPU and its driver?`);
  }

  /** "CUDA_ERROR_X (n): description" for a result code. */
  describe(code: number): string {
    const name = [null as string | null];
    const text = [null as string | null];
    this.api.cuGetErrorName(code, name);
    this.api.cuGetErrorString(code, text);
    return `${name[0] ?? 'CUDA error'} (${code})${text[0] ? `: ${text[0]}` : ''}`;
  }

  check(call: string, code: number): void {
    if (code !== CUDA_SUCCESS) throw new CudaError(call, code, this.describe(code));
  }

  // ---- memory ----

  alloc(bytes: number): DevicePtr {
    const p = [0];
    this.check('cuMemAlloc', this.api.cuMemAlloc(p, Math.max(bytes, 16)));
    return p[0];
  }

  free(p: DevicePtr): void {
    this.check('cuMemFree', this.api.cuMemFree(p));
  }

  /** Page-locked host memory (for asynchronous read-back), seen from JS as an ArrayBuffer over it. */
  allocHost(bytes: number): { ptr: Handle; view: ArrayBuffer } {
    const p = [null];
    this.check('cuMemAllocHost', this.api.cuMemAllocHost(p, bytes));
    return { ptr: p[0], view: koffi.view(p[0], bytes) };
  }

  freeHost(ptr: Handle): void {
    this.check('cuMemFreeHost', this.api.cuMemFreeHost(ptr));
  }

  /** Host → device on the stream (returns once `src` may be reused). */
  upload(dst: DevicePtr, src: ArrayBufferView, byteOffset = 0): void {
    const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    this.check('cuMemcpyHtoDAsync', this.api.cuMemcpyHtoDAsync(dst + byteOffset, bytes, bytes.byteLength, this.stream));
  }

  /** Device → host after everything queued on the stream. */
  download(dst: ArrayBufferView, src: DevicePtr): void {
    this.synchronize();
    const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
    this.check('cuMemcpyDtoH', this.api.cuMemcpyDtoH(bytes, src, bytes.byteLength));
  }

  /** Device → pinned host memory, queued on the stream. */
  downloadAsync(dst: Handle, src: DevicePtr, bytes: number): void {
    this.check('cuMemcpyDtoHAsync', this.api.cuMemcpyDtoHAsync(dst, src, bytes, this.stream));
  }

  /** Device → device on the stream. */
  copy(dst: DevicePtr, src: DevicePtr, bytes: number): void {
    this.check('cuMemcpyDtoDAsync', this.api.cuMemcpyDtoDAsync(dst, src, bytes, this.stream));
  }

  /** Device-to-device copy bandwidth in bytes per second, counting bytes read and written (as copy benchmarks do). */
  copyBandwidth(bytes: number, repeats: number): number {
    const [a, b] = [this.alloc(bytes), this.alloc(bytes)];
    const [start, end] = [this.event(), this.event()];
    try {
      this.copy(b, a, bytes);
      this.record(start);
      for (let i = 0; i < repeats; i++) this.copy(i % 2 ? a : b, i % 2 ? b : a, bytes);
      this.record(end);
      return (2 * bytes * repeats) / (this.elapsed(start, end) / 1000);
    } finally {
      this.synchronize();
      this.destroyEvent(start);
      this.destroyEvent(end);
      this.free(a);
      this.free(b);
    }
  }

  fill(dst: DevicePtr, value: number, bytes: number): void {
    this.check('cuMemsetD8Async', this.api.cuMemsetD8Async(dst, value, bytes, this.stream));
  }

  // ---- code ----

  loadModule(image: Uint8Array): Handle {
    const m = [null];
    this.check('cuModuleLoadData', this.api.cuModuleLoadData(m, image));
    return m[0];
  }

  unloadModule(module: Handle): void {
    this.check('cuModuleUnload', this.api.cuModuleUnload(module));
  }

  getFunction(module: Handle, name: string, dynamicSharedBytes = 0): Handle {
    const fn = [null];
    this.check(`cuModuleGetFunction(${name})`, this.api.cuModuleGetFunction(fn, module, name));
    // Opted in whatever the size: static and dynamic shared memory together past 48 KiB need it (a kernel with both
    // a tile form's static arrays and its row form's arrays given at launch).
    if (dynamicSharedBytes > 0) {
      if (dynamicSharedBytes > this.info.maxSharedPerBlock) {
        throw new CudaError('cuFuncSetAttribute', 0, `kernel ${name} needs ${dynamicSharedBytes} bytes of shared memory; the device allows ${this.info.maxSharedPerBlock}`);
      }
      this.check('cuFuncSetAttribute', this.api.cuFuncSetAttribute(fn[0], FUNC_ATTR_MAX_DYNAMIC_SHARED, dynamicSharedBytes));
    }
    return fn[0];
  }

  /**
   * What ptxas gave a loaded kernel: registers a thread, and bytes of local memory a thread (registers spilled and
   * the stack; 0 where nothing spills).
   */
  resources(fn: Handle): { registers: number; localBytes: number } {
    const [registers, localBytes] = [[0], [0]];
    this.check('cuFuncGetAttribute', this.api.cuFuncGetAttribute(registers, FUNC_ATTR_NUM_REGS, fn));
    this.check('cuFuncGetAttribute', this.api.cuFuncGetAttribute(localBytes, FUNC_ATTR_LOCAL_SIZE_BYTES, fn));
    return { registers: registers[0], localBytes: localBytes[0] };
  }

  /** Blocks of `block` threads and `sharedBytes` of dynamic shared memory each that one multiprocessor holds at once. */
  residentBlocks(fn: Handle, block: number, sharedBytes: number): number {
    const n = [0];
    this.check('cuOccupancyMaxActiveBlocksPerMultiprocessor', this.api.cuOccupancyMaxActiveBlocksPerMultiprocessor(n, fn, block, sharedBytes));
    return n[0];
  }

  /**
   * Kernel arguments laid out once: pointers and 32-bit ints, each in an 8-byte slot, and the array of slot
   * addresses. The memory lives until the driver is destroyed, so a captured graph may refer to it.
   */
  kernelArgs(args: readonly (DevicePtr | { int: number })[]): KernelArgs {
    const n = Math.max(args.length, 1);
    const values = koffi.alloc('uint64', n);
    const params = koffi.alloc('uint64', n);
    const base = koffi.address(values);
    args.forEach((a, i) => {
      if (typeof a === 'number') koffi.encode(values, i * 8, 'uint64', a);
      else koffi.encode(values, i * 8, 'int32', a.int);
      koffi.encode(params, i * 8, 'uint64', base + BigInt(i * 8));
    });
    this.nativeAllocs.push(values, params);
    return { params, values };
  }

  /**
   * Queues a kernel. `overlap`: the kernel may start while its predecessor on the stream finishes (it waits for it
   * inside, tf_grid_wait); `cluster`: blocks a cluster (dividing the grid). Where the driver cannot, it launches as
   * any other.
   */
  launch(fn: Handle, grid: number, block: number, args: KernelArgs, sharedBytes = 0, overlap = false, cluster = 1): void {
    const clustered = this.inClusters(fn, grid, block, sharedBytes, cluster).clustered;
    const overlapping = overlap && this.overlapLaunches;
    if (clustered || overlapping) {
      this.exLaunchConfig(grid, block, sharedBytes, clustered ? cluster : 1, overlapping);
      this.check('cuLaunchKernelEx', this.api.cuLaunchKernelEx!(this.exConfig, fn, args.params, null));
      return;
    }
    this.check('cuLaunchKernel', this.api.cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, sharedBytes, this.stream, args.params, null));
  }

  /** Fills the CUlaunchConfig of a launch with attributes: the cluster's size first, so a launch without one points past it. */
  private exLaunchConfig(grid: number, block: number, sharedBytes: number, cluster: number, overlap: boolean): void {
    const c = this.exConfig;
    koffi.encode(c, 0, 'uint32', grid);
    koffi.encode(c, 12, 'uint32', block);
    koffi.encode(c, 24, 'uint32', sharedBytes);
    koffi.encode(this.exAttributes, 8, 'uint32', cluster);
    koffi.encode(c, 40, 'uint64', koffi.address(this.exAttributes) + BigInt(cluster > 1 ? 0 : LAUNCH_ATTRIBUTE_BYTES));
    koffi.encode(c, 48, 'uint32', (cluster > 1 ? 1 : 0) + (overlap ? 1 : 0));
  }

  /**
   * Whether a grid of `fn` launches in clusters of `cluster` blocks: only where they all run at once (`atOnce`, asked
   * of the device where the driver launches clusters), as a second wave waits for the first's clusters to finish (on
   * the H200 a 32-token prompt's 32 clusters of 4 took 1.63–1.65 → 1.76–1.82 ms; its 48 clusters of 2 gained).
   */
  inClusters(fn: Handle, grid: number, block: number, sharedBytes: number, cluster: number): { readonly clustered: boolean; readonly atOnce?: number } {
    if (cluster <= 1) return { clustered: false };
    if (grid % cluster) throw new RangeError(`a grid of ${grid} blocks does not divide into clusters of ${cluster}`);
    if (!this.clusterLaunches) return { clustered: false };
    const atOnce = this.clustersAtOnce(fn, block, sharedBytes, cluster);
    return { clustered: grid / cluster <= atOnce, atOnce };
  }

  /** How many clusters of `cluster` blocks of `fn` the device runs at once (asked once a function and size). */
  private clustersAtOnce(fn: Handle, block: number, sharedBytes: number, cluster: number): number {
    let sizes = this.clustersAtOnceOf.get(fn);
    if (!sizes) this.clustersAtOnceOf.set(fn, (sizes = new Map()));
    let n = sizes.get(cluster);
    if (n === undefined) {
      this.exLaunchConfig(cluster, block, sharedBytes, cluster, false);
      const out = [0];
      this.check('cuOccupancyMaxActiveClusters', this.api.cuOccupancyMaxActiveClusters!(out, fn, this.exConfig));
      sizes.set(cluster, (n = out[0]));
    }
    return n;
  }

  // ---- graphs and synchronisation ----

  /** Records what `enqueue` puts on the stream as a CUDA graph, ready to replay. */
  capture(enqueue: () => void): Handle {
    this.check('cuStreamBeginCapture', this.api.cuStreamBeginCapture(this.stream, STREAM_CAPTURE_MODE_THREAD_LOCAL));
    try {
      enqueue();
    } catch (e) {
      const g = [null];
      this.api.cuStreamEndCapture(this.stream, g);
      if (g[0]) this.api.cuGraphDestroy(g[0]);
      throw e;
    }
    const graph = [null];
    this.check('cuStreamEndCapture', this.api.cuStreamEndCapture(this.stream, graph));
    const exec = [null];
    try {
      this.check('cuGraphInstantiate', this.api.cuGraphInstantiate(exec, graph[0], 0));
    } finally {
      this.api.cuGraphDestroy(graph[0]);
    }
    return exec[0];
  }

  replay(exec: Handle): void {
    this.check('cuGraphLaunch', this.api.cuGraphLaunch(exec, this.stream));
  }

  destroyGraph(exec: Handle): void {
    this.check('cuGraphExecDestroy', this.api.cuGraphExecDestroy(exec));
  }

  event(): Handle {
    const e = [null];
    this.check('cuEventCreate', this.api.cuEventCreate(e, 0));
    return e[0];
  }

  record(event: Handle): void {
    this.check('cuEventRecord', this.api.cuEventRecord(event, this.stream));
  }

  /** Whether the work before `event` has finished, without waiting. */
  done(event: Handle): boolean {
    const r = this.api.cuEventQuery(event);
    if (r === CUDA_ERROR_NOT_READY) return false;
    this.check('cuEventQuery', r);
    return true;
  }

  /** Milliseconds between two recorded events (both must have completed). */
  elapsed(start: Handle, end: Handle): number {
    this.check('cuEventSynchronize', this.api.cuEventSynchronize(end));
    const ms = [0];
    this.check('cuEventElapsedTime', this.api.cuEventElapsedTime(ms, start, end));
    return ms[0];
  }

  destroyEvent(event: Handle): void {
    this.check('cuEventDestroy', this.api.cuEventDestroy(event));
  }

  synchronize(): void {
    this.check('cuStreamSynchronize', this.api.cuStreamSynchronize(this.stream));
  }

  /** Frees the stream and the argument memory; device buffers and modules go with the context's release. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.api.cuStreamSynchronize(this.stream);
    this.api.cuStreamDestroy(this.stream);
    for (const p of this.nativeAllocs) koffi.free(p);
    this.nativeAllocs.length = 0;
    this.api.cuDevicePrimaryCtxRelease(this.device);
  }
}
