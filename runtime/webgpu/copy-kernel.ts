// Copies between buffers as compute dispatches. A decode step ends with two copies (its token and position become
// the next step's inputs); as transfers they would end the compute pass, with a barrier on either side, between
// every two steps. As dispatches, a whole batch of steps is one compute pass. A copy larger than one storage
// binding may be is a dispatch per binding-sized chunk.

const THREADS = 256;
/** Workgroups one dispatch may have along x; larger copies loop. */
const MAX_GROUPS = 65535;

const code = `override words: u32;
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(${THREADS})
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  for (var i = id.x; i < words; i += groups.x * ${THREADS}u) { dst[i] = src[i]; }
}
`;

/** A copy's dispatch (of one chunk): its pipeline (by size), its bind group and its workgroups. */
export interface CopyDispatch {
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly groups: number;
}

export class CopyKernels {
  private readonly layout: GPUPipelineLayout;
  private readonly bindGroupLayout: GPUBindGroupLayout;
  private readonly module: GPUShaderModule;
  /** A pipeline per count of words copied (the count is a constant of the shader). */
  private readonly pipelines = new Map<number, GPUComputePipeline>();

  /** Bytes a chunk's bindings hold: the largest binding, in multiples of the 256 bytes offsets must be. */
  private readonly chunkBytes: number;

  constructor(private readonly gpu: GPUDevice, maxBindingBytes: number) {
    this.chunkBytes = Math.floor(maxBindingBytes / 256) * 256;
    this.bindGroupLayout = gpu.createBindGroupLayout({
      entries: [
        { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } },
        { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
      ],
    });
    this.layout = gpu.createPipelineLayout({ bindGroupLayouts: [this.bindGroupLayout] });
    this.module = gpu.createShaderModule({ code, label: 'copy' });
  }

  /** The dispatches copying `bytes` (whole words) from the start of `from` to the start of `to`. */
  prepare(from: GPUBuffer, to: GPUBuffer, bytes: number): CopyDispatch[] {
    const dispatches: CopyDispatch[] = [];
    for (let offset = 0; offset < bytes; offset += this.chunkBytes) {
      const size = Math.min(this.chunkBytes, bytes - offset);
      const bindGroup = this.gpu.createBindGroup({
        layout: this.bindGroupLayout,
        entries: [{ binding: 0, resource: { buffer: from, offset, size } }, { binding: 1, resource: { buffer: to, offset, size } }],
        label: `copy ${from.label} → ${to.label}`,
      });
      dispatches.push({ pipeline: this.pipeline(size / 4), bindGroup, groups: Math.min(Math.ceil(size / 4 / THREADS), MAX_GROUPS) });
    }
    return dispatches;
  }

  private pipeline(words: number): GPUComputePipeline {
    let pipeline = this.pipelines.get(words);
    if (!pipeline) {
      pipeline = this.gpu.createComputePipeline({ layout: this.layout, compute: { module: this.module, entryPoint: 'main', constants: { words } }, label: `copy ${words} words` });
      this.pipelines.set(words, pipeline);
    }
    return pipeline;
  }
}
