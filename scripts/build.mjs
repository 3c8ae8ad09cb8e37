// `npm run build` (and `npm pack`): compiles the library and the command line to dist/ as JavaScript with
// declarations. tsc rewrites the sources' `.ts` import specifiers to `.js` in the JavaScript it emits but not in
// declarations, so they are rewritten here: a consumer's tsc then resolves every `.d.ts` import without
// allowImportingTsExtensions.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const dist = path.join(root, 'dist');
fs.rmSync(dist, { recursive: true, force: true });
const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);

const relativeTs = /((?:from|import)\s*\(?\s*['"])(\.{1,2}\/[^'"]+)\.ts(['"])/g;
let files = 0;
for (const file of fs.readdirSync(dist, { recursive: true, encoding: 'utf8' })) {
  if (!file.endsWith('.d.ts')) continue;
  const full = path.join(dist, file);
  const text = fs.readFileSync(full, 'utf8');
  const fixed = text.replace(relativeTs, '$1$2.js$3');
  if (fixed !== text) fs.writeFileSync(full, fixed);
  files++;
}
console.error(`dist/: ${files} declaration files`);
