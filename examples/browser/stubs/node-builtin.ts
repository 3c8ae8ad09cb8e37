// Stands in for node:fs, node:path, node:url, node:module, node:os and node:worker_threads in the browser bundle:
// tsfuse's modules that also read files in Node (config.ts, safetensors.ts, tensor-reader.ts) import them at the
// top, but the page never calls those functions.
const unavailable = (): never => {
  throw new Error('not available in the browser');
};
export default new Proxy({}, { get: () => unavailable });
export const fileURLToPath = unavailable;
export const findSourceMap = unavailable;
export const Worker = unavailable;
