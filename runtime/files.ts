// Checking a path before reading it: a FIFO or a device would block or stream forever, a directory fails with a
// bare EISDIR; each is refused with the path and what was expected instead.

import fs from 'node:fs';

/** What a path is, in words, for messages. */
function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Throws `make(message)` unless `file` is a regular file (symbolic links followed); `what` says what it should be
 * (`a safetensors file`). Returns false, without throwing, where the path does not exist and `optional` is set.
 */
export function checkRegularFile(file: string, what: string, make: (message: string) => Error, optional = false): boolean {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(file, { throwIfNoEntry: false });
  } catch (e) {
    throw make(`${file}: cannot read ${what}: ${(e as Error).message}`);
  }
  if (!st) {
    if (optional) return false;
    throw make(`${file}: cannot open: no such file (expected ${what})`);
  }
  if (!st.isFile()) throw make(`${file} is ${kindOf(st)}, expected ${what}`);
  return true;
}
