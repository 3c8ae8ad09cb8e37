#!/usr/bin/env node
// The `tsfuse` command. An installed package runs its compiled JavaScript (dist/). A checkout runs the TypeScript
// sources through tsx, so a fresh clone needs no build step, an edit is never hidden behind a stale build, and model
// scripts in the checkout (which import the sources) share the modules the command line runs;
// TSFUSE_DIST=1 runs a checkout's dist/ instead (after `npm run build`).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const compiled = path.join(root, 'dist/compiler/cli.js');
const source = path.join(root, 'compiler/cli.ts');

if (fs.existsSync(compiled) && (!fs.existsSync(source) || process.env.TSFUSE_DIST === '1')) {
  await import(pathToFileURL(compiled).href);
} else {
  const { register } = await import('tsx/esm/api');
  register({ tsconfig: path.join(root, 'tsconfig.json') });
  await import(pathToFileURL(source).href);
}
