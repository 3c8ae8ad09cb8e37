// tsc (strict) over compiled artifacts and their consumers, as a project of the user's would check them, with
// `tsfuse/runtime/artifact` mapped to this checkout's sources. tsc runs incrementally: its build info (each file's
// hash and diagnostics) is kept in node_modules/.cache/tsfuse/tsc between runs, so the tsfuse sources an artifact
// pulls in are checked again only when they change (about half of tsc's time), and the artifacts every time.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'uvu/assert';

const root = fileURLToPath(new URL('../', import.meta.url));

/**
 * Type-checks `files` in a project written to `dir` (a temporary folder of the test's); `name` names the build info
 * kept between runs (one per test file, so that concurrent runs of different tests do not share one).
 */
export function typeCheck(dir: string, name: string, files: string[]): void {
  const kept = path.join(root, 'node_modules/.cache/tsfuse/tsc', `${name}.tsbuildinfo`);
  // Paths in the build info are relative to it: beside the artifacts, in a folder as deep as every run's.
  const info = path.join(dir, 'tsc.tsbuildinfo');
  if (fs.existsSync(kept)) fs.copyFileSync(kept, info);
  const tsconfig = path.join(dir, 'tsconfig.json');
  fs.writeFileSync(tsconfig, JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true,
      allowImportingTsExtensions: true, skipLibCheck: true, types: ['node'], typeRoots: [path.join(root, 'node_modules/@types')],
      // Artifacts import tsfuse/runtime/artifact: here, this checkout's.
      paths: { 'tsfuse/runtime/artifact': [path.join(root, 'runtime/artifact.ts')] },
      incremental: true, tsBuildInfoFile: info,
    },
    files,
  }));
  const r = spawnSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', tsconfig], { encoding: 'utf8' });
  assert.is(r.status, 0, `tsc on the artifacts:\n${r.stdout}${r.stderr}`);
  try {
    // Replaced whole (a rename), as another run may be reading it.
    fs.mkdirSync(path.dirname(kept), { recursive: true });
    fs.copyFileSync(info, `${kept}.${process.pid}`);
    fs.renameSync(`${kept}.${process.pid}`, kept);
  } catch {
    // Only a cache.
  }
}
