// Which errors describe bad input (printed as one line, no stack) and which are tsfuse's own bugs. Loaded only
// when a command fails, so that a successful run never loads the modules that define them.

import { UsageError } from './cli-args.ts';
import { describeFileError, isFileSystemError } from './cli-files.ts';

/** Errors that describe bad input, or a file system's answer to a path given: printed as one line, without a stack. */
export async function isUserError(e: unknown): Promise<boolean> {
  if (!(e instanceof Error)) return false;
  if (isFileSystemError(e)) return true;
  const [
    { ScriptError }, { TokenizerError }, { WebGpuUnavailableError }, { CudaUnavailableError }, { CompileUsageError },
    { LoweringError }, { TraceError }, { ConfigError }, { WeightsError }, { IrParseError }, { VerifyError },
    { GraphError }, { InterpretError }, { MegakernelRefused },
  ] = await Promise.all([
    import('./script-error.ts'), import('../runtime/tokenizer.ts'), import('../runtime/webgpu/errors.ts'),
    import('../runtime/cuda/errors.ts'), import('./cli-compile-command.ts'), import('../backends/lower.ts'),
    import('./trace.ts'), import('../runtime/config.ts'), import('../runtime/safetensors.ts'), import('../ir/parser.ts'),
    import('../ir/verify.ts'), import('../ir/graph.ts'), import('../backends/reference/interpreter.ts'),
    import('../backends/cuda/megakernel.ts'),
  ]);
  const userErrors = [
    UsageError, ScriptError, TokenizerError, WebGpuUnavailableError, CudaUnavailableError, CompileUsageError,
    LoweringError, TraceError, ConfigError, WeightsError, IrParseError, VerifyError, GraphError, InterpretError,
    RangeError, MegakernelRefused,
  ];
  return userErrors.some((cls) => e instanceof cls);
}

/** The line a user error prints: its message, or for a file-system error the path and what was expected there. */
export function userMessage(e: Error): string {
  return isFileSystemError(e) ? describeFileError(e) : e.message;
}
