// Llama on WebGPU: prefill and decode graphs compiled to WGSL, weights and KV cache on the device, and a decode
// loop that never waits for the GPU: the next-token kernel feeds each chosen token back on the device, steps are
// encoded in batches, and the host reads the token history back asynchronously, only to report it.

import { compileModule, CompiledModule } from '../../compiler/compile-module.ts';
import { nextTokenParamsBytes } from '../../backends/next-token-params.ts';
import { nextTokenWgsl } from '../../backends/wgsl/next-token.ts';
import { traceLlama } from '../../examples/llama.ts';
import { DType } from '../../ir/dtype.ts';
import { checkTokens, LoadedLlama } from '../llama.ts';
import { HostTensor } from '../../ir/host-tensor.ts';
import { openDevice } from './device.ts';
import { WebGpuProgram } from './program.ts';

export interface Sampling {
  /** 0 (the default) is greedy. */
  readonly temperature?: number;
  readonly topP?: number;
  readonly seed?: number;
}

export interface WebGpuOptions {
  /** Split storage bindings above this many bytes (tests force the split path on small models). */
  readonly maxBindingBytes?: number;
  /** Decode steps recorded per command buffer. */
  readonly stepsPerSubmit?: number;
}

export class WebGpuLlama {
  private readonly history: GPUBuffer;
  private readonly pick: { pipeline: GPUComputePipeline; prefill: GPUBindGroup; decode: GPUBindGroup; prefillParams: GPUBuffer; decodeParams: GPUBuffer };

  private constructor(
    readonly device: GPUDevice,
    readonly model: LoadedLlama,
    readonly compiled: CompiledModule,
    readonly program: WebGpuProgram,
    readonly cacheLength: number,
  ) {
    this.history = device.createBuffer({ size: 4 * (cacheLength + 1), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    const module = device.createShaderModule({ code: nextTokenWgsl, label: 'next-token' });
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: 'next-token' });
    const params = () => device.createBuffer({ size: 32, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    const [prefillParams, decodeParams] = [params(), params()];
    const group = (graph: string, p: GPUBuffer) => device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: program.buffer(graph, { kind: 'output', index: 1 }) } },
        { binding: 1, resource: { buffer: program.buffer(graph, { kind: 'output', index: 0 }) } },
        { binding: 2, resource: { buffer: program.buffer(graph, { kind: 'input', name: 'tokens' }) } },
        { binding: 3, resource: { buffer: program.buffer(graph, { kind: 'input', name: 'pos' }) } },
        { binding: 4, resource: { buffer: this.history } },
        { binding: 5, resource: { buffer: p } },
      ],
    });
    this.pick = { pipeline, prefill: group('prefill', prefillParams), decode: group('decode', decodeParams), prefillParams, decodeParams };
  }

  static async create(model: LoadedLlama, cacheLength: number, opts: WebGpuOptions = {}): Promise<WebGpuLlama> {
    const device = await openDevice();
    const module = traceLlama(model.cfg, { weightDType: model.weightDType, cacheLength });
    const compiled = compileModule(module);
    // Shader or binding mistakes surface here as one error, not as garbage output later.
    device.pushErrorScope('validation');
    const program = new WebGpuProgram(device, compiled, (n) => model.weights.tensor(n), {
      maxSizes: { S: cacheLength },
      maxBindingBytes: opts.maxBindingBytes,
    });
    const session = new WebGpuLlama(device, model, compiled, program, cacheLength);
    const error = await device.popErrorScope();
    if (error) throw new Error(`WebGPU rejected the compiled program: ${error.message}`);
    return session;
  }

  /** Logits at every position of one forward pass over `ids` with an empty cache. */
  async logits(ids: readonly number[]): Promise<HostTensor> {
    checkTokens(this.model.cfg, ids);
    this.checkFits(ids.length);
    this.resetCache();
    const graph = ids.length === 1 ? 'decode' : 'prefill';
    const sizes = { S: ids.length };
    this.writeInputs(ids, 0);
    this.program.setSizes(graph, sizes);
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    this.program.encode(pass, graph, sizes);
    pass.end();
    const vocab = this.model.cfg.vocabSize;
    const data = await this.readBack(enc, this.program.buffer(graph, { kind: 'output', index: 0 }), ids.length * vocab * 4);
    return { dtype: DType.F32, shape: [ids.length, vocab], data: new Float32Array(data) };
  }

  /**
   * Generates `maxNewTokens` after the prompt. Every step is recorded ahead of time; `onToken` hears tokens as
   * their batch's asynchronous read-back completes, while the GPU already runs the next batch.
   */
  async generate(prompt: readonly number[], maxNewTokens: number, sampling: Sampling = {}, onToken?: (t: number) => void,
    opts: WebGpuOptions = {}): Promise<number[]> {
    checkTokens(this.model.cfg, prompt);
    this.checkFits(prompt.length + maxNewTokens - 1);
    this.resetCache();
    const vocab = this.model.cfg.vocabSize;
    const common = { vocab, temperature: sampling.temperature ?? 0, topP: sampling.topP ?? 1, seed: sampling.seed ?? 0 };
    this.device.queue.writeBuffer(this.pick.prefillParams, 0, nextTokenParamsBytes({ ...common, row: prompt.length - 1, advance: prompt.length }));
    this.device.queue.writeBuffer(this.pick.decodeParams, 0, nextTokenParamsBytes({ ...common, row: 0, advance: 1 }));
    this.device.queue.writeBuffer(this.history, 0, new Int32Array([0]));
    this.writeInputs(prompt, 0);
    const prefill = prompt.length === 1 ? 'decode' : 'prefill';
    this.program.setSizes(prefill, { S: prompt.length });

    const batch = opts.stepsPerSubmit ?? 32;
    const tokens: number[] = [];
    const pending: Promise<void>[] = [];
    let step = 0;
    while (step < maxNewTokens) {
      const enc = this.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      const end = Math.min(maxNewTokens, step + batch);
      for (; step < end; step++) {
        const graph = step === 0 ? prefill : 'decode';
        this.program.encode(pass, graph, { S: step === 0 ? prompt.length : 1 });
        pass.setPipeline(this.pick.pipeline);
        pass.setBindGroup(0, step === 0 && prefill === 'prefill' ? this.pick.prefill : this.pick.decode);
        pass.dispatchWorkgroups(1);
      }
      pass.end();
      // Read the history so far without waiting: the next batch is encoded and submitted meanwhile.
      const upTo = step;
      pending.push(this.readBack(enc, this.history, 4 * (upTo + 1)).then((buf) => {
        const h = new Int32Array(buf);
        for (let i = tokens.length; i < upTo; i++) {
          tokens.push(h[i + 1]);
          onToken?.(h[i + 1]);
        }
      }));
    }
    for (const p of pending) await p;
    return tokens;
  }

  /** Per-step figures for the benchmark: kernels per decode step (the graph's and the next-token kernel). */
  decodeKernels(): number {
    return this.program.kernelCount('decode') + 1;
  }

  private checkFits(lastPos: number): void {
    if (lastPos > this.cacheLength) throw new RangeError(`positions up to ${lastPos} do not fit a KV cache of ${this.cacheLength}`);
  }

  private writeInputs(ids: readonly number[], pos: number): void {
    this.device.queue.writeBuffer(this.program.buffer('prefill', { kind: 'input', name: 'tokens' }), 0, Int32Array.from(ids));
    this.device.queue.writeBuffer(this.program.buffer('prefill', { kind: 'input', name: 'pos' }), 0, new Int32Array([pos]));
  }

  private resetCache(): void {
    const enc = this.device.createCommandEncoder();
    for (const g of this.compiled.graphs) {
      for (const s of g.graph.states) enc.clearBuffer(this.program.buffer(g.graph.name, { kind: 'state', name: s.name! }));
    }
    this.device.queue.submit([enc.finish()]);
  }

  /** Submits `enc` with a copy of `src` into a staging buffer, and resolves with the bytes when the GPU is done. */
  private async readBack(enc: GPUCommandEncoder, src: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    const staging = this.device.createBuffer({ size: Math.ceil(bytes / 4) * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    enc.copyBufferToBuffer(src, 0, staging, 0, staging.size);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    return out;
  }

  destroy(): void {
    this.device.destroy();
  }
}
