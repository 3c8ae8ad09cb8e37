// The CUDA backend's errors, apart from the FFI so that the CLI can name them without loading koffi.

/** CUDA cannot be used here: no driver library, or the driver finds no usable device. A user error: one line. */
export class CudaUnavailableError extends Error {
  override name = 'CudaUnavailableError';
}

/** A driver call failed. */
export class CudaError extends Error {
  override name = 'CudaError';
  constructor(readonly call: string, readonly code: number, message: string) {
    super(`${call} failed: ${message}`);
  }
}

/** NVRTC rejected generated source: the message holds its log. */
export class CudaCompileError extends Error {
  override name = 'CudaCompileError';
}
