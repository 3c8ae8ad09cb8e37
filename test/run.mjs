// Runs every test/**/*.test.ts with uvu (through tsx, so no build step) and ends with the line CI reads:
// "N passed, N failed". Extra arguments are a file pattern, e.g. `npm test -- ir`.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const pattern = process.argv[2] ?? '';
const args = ['--import', 'tsx', path.join(root, 'node_modules/uvu/bin.js'), 'test', `${pattern}.*\\.test\\.ts$`];
const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
let out = '';
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  out += chunk.toString();
});
child.on('close', (code) => {
  const plain = out.replace(/\x1b\[[0-9;]*m/g, '');
  const num = (label) => Number(/* last summary wins */ [...plain.matchAll(new RegExp(`${label}:\\s+(\\d+)`, 'g'))].pop()?.[1] ?? 0);
  const total = num('Total');
  const passed = num('Passed');
  const skipped = num('Skipped');
  // A crash before the summary counts as one failure, so CI never reads "0 failed" from a broken run.
  const failed = total === 0 && code !== 0 ? 1 : total - passed - skipped;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(code === 0 && failed === 0 ? 0 : 1);
});
