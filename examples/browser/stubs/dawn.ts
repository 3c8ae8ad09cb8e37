// The browser's runtime/webgpu/device.ts: Dawn is Node's WebGPU; a page opens its device with openBrowserWebGpu().
export async function openDevice(): Promise<GPUDevice> {
  throw new Error('Dawn (the webgpu package) is Node-only; in a browser use openBrowserWebGpu()');
}
