// File-system errors of the command line's reads and writes as one line naming the path and what was expected
// there ("out/k is a file, expected a folder"), never as `internal error: ENOTDIR: …`.

import fs from 'node:fs';
import path from 'node:path';
import { checkRegularFile } from '../runtime/files.ts';
import { UsageError } from './cli-args.ts';

type FileSystemError = NodeJS.ErrnoException & { readonly syscall: string };

/** A Node file-system error: a code such as ENOTDIR and the call that failed (and mostly the path). */
export function isFileSystemError(e: unknown): e is FileSystemError {
  const x = e as Partial<FileSystemError>;
  return e instanceof Error && /^E[A-Z0-9]+$/.test(x.code ?? '') && typeof x.syscall === 'string';
}

/**
 * What is wrong at the error's path, in words, and what was expected there. A write to an open file (ENOSPC)
 * has no path in its error: then `where`, the path being written.
 */
export function describeFileError(e: FileSystemError, where?: string): string {
  const p = e.path ?? where;
  const at = p === undefined ? '' : `${p}: `;
  switch (e.code) {
    case 'EISDIR': return `${p ?? 'a path'} is a folder, expected a file`;
    case 'ENOTDIR': return `${(p && fileOnPath(p)) ?? p ?? 'a path'} is a file, expected a folder`;
    case 'EEXIST': return e.syscall === 'mkdir' ? `${(p && fileOnPath(p)) ?? p} is a file, expected a folder` : `${p} already exists`;
    case 'ENOENT': return `${at}no such file or folder`;
    case 'EACCES': case 'EPERM': return `${at}permission denied`;
    case 'ENOSPC': return `${at}no space left on the device`;
    case 'EDQUOT': return `${at}over the disk quota`;
    case 'EROFS': return `${at}a read-only file system`;
    case 'ENAMETOOLONG': return `${at}the name is too long`;
    case 'ELOOP': return `${at}too many levels of symbolic links`;
    default: return `${at}${e.code} (${e.syscall})`;
  }
}

/** The first file (not a folder) on the way to `p`, from the root down: what stops a folder from being made. */
function fileOnPath(p: string): string | undefined {
  const ways: string[] = [];
  for (let q = p; !ways.includes(q); q = path.dirname(q)) ways.push(q);
  return ways.reverse().find((q) => {
    try {
      return !fs.statSync(q).isDirectory();
    } catch {
      return false;
    }
  });
}

/**
 * Reads a text file a command was given as `what` (`an IR file`). A folder, a FIFO or a device is refused by name
 * before it is read: a FIFO would block, and /dev/zero would stream forever.
 */
export function readTextFile(file: string, what: string): string {
  checkRegularFile(file, what, (message) => new UsageError(message));
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (isFileSystemError(e)) throw new UsageError(`cannot read ${what}: ${describeFileError(e, file)}`);
    throw e;
  }
}

/**
 * Runs `write`, which writes `target`, the path an option names; a file-system error becomes a UsageError naming
 * both: "--out x/m.ts: cannot write the artifact: x is a file, expected a folder".
 */
export function writingFor<T>(option: string, target: string, what: string, write: () => T): T {
  try {
    return write();
  } catch (e) {
    if (isFileSystemError(e)) throw new UsageError(`${option} ${target}: cannot write ${what}: ${describeFileError(e, target)}`);
    throw e;
  }
}
