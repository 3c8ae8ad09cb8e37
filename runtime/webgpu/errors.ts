// The WebGPU device's errors, apart from Dawn so that the CLI can name them without loading it.

/** No WebGPU adapter here: a user error, one line. */
export class WebGpuUnavailableError extends Error {
  override name = 'WebGpuUnavailableError';
}
