// Dawn prints warnings about the adapter's limits (lavapipe: "Warning: maxDynamicUniformBuffersPerPipelineLayout
// artificially reduced ...") straight to file descriptor 2 while an adapter is requested, where no JavaScript can
// catch them. The request runs with fd 2 pointed at /dev/null (dup2 through koffi, when it is installed, on Linux);
// TSFUSE_DEBUG=1 keeps them.

export async function withNativeStderrSilenced<T>(f: () => Promise<T>): Promise<T> {
  if (process.platform !== 'linux' || process.env.TSFUSE_DEBUG) return f();
  let calls;
  try {
    const koffi = (await import('koffi')).default;
    const libc = koffi.load('libc.so.6');
    calls = {
      dup: libc.func('int dup(int)'), dup2: libc.func('int dup2(int, int)'), close: libc.func('int close(int)'),
      open: libc.func('int open(const char *, int)'),
    };
  } catch {
    return f();
  }
  const saved = calls.dup(2) as number;
  const devNull = calls.open('/dev/null', 1 /* O_WRONLY */) as number;
  if (saved < 0 || devNull < 0) return f();
  calls.dup2(devNull, 2);
  calls.close(devNull);
  try {
    return await f();
  } finally {
    calls.dup2(saved, 2);
    calls.close(saved);
  }
}
