// A copy kernel, timed on the same device as a benchmark: the bandwidth ceiling decode is measured against.

const copyWgsl = /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = arrayLength(&src);
  let stride = nwg.x * 256u;
  for (var i = gid.x; i < n; i += stride) { dst[i] = src[i]; }
}`;

/** Bytes per second, counting both the read and the write, of copying one buffer into another. */
export async function measureCopyBandwidth(device: GPUDevice, bytes = Math.min(1 << 30, device.limits.maxStorageBufferBindingSize), iterations = 20): Promise<number> {
  const usage = GPUBufferUsage.STORAGE;
  const src = device.createBuffer({ size: bytes, usage });
  const dst = device.createBuffer({ size: bytes, usage });
  const module = device.createShaderModule({ code: copyWgsl });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: src } }, { binding: 1, resource: { buffer: dst } }] });
  const run = async (n: number) => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    for (let i = 0; i < n; i++) pass.dispatchWorkgroups(Math.min(65535, Math.ceil(bytes / 16 / 256 / 4)));
    pass.end();
    const t = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t;
  };
  await run(2);
  const ms = Math.min(await run(iterations), await run(iterations));
  src.destroy();
  dst.destroy();
  return (2 * bytes * iterations) / (ms / 1e3);
}
