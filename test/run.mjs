// Runs every test/**/*.test.ts with uvu (through tsx, so no build step) and ends with the line CI reads:
// "N passed, N failed". Extra arguments are a file pattern, e.g. `npm test -- ir` (a regex on the path under test/).
//
// Files run in parallel processes, as many at once as there are CPUs (TSFUSE_TEST_JOBS overrides): each long file in
// a process of its own, neighbouring short ones together (a process costs ~0.4 s of start-up; the old runner ran
// every file in one process, so files already share one), and so are neighbours that share an expensive set-up
// (`groups`); the longest first — as long as they took last time, kept in node_modules/.cache/tsfuse/test-times.json.
// Output is printed whole, in path order, once the files before it are done. A process that fails without counting a
// failed test (a crash, a syntax error, a timeout) counts as one failure. The output has no colours.
// TSFUSE_TEST_TIMES=1 prints how long each process took, slowest first.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const testDir = path.join(root, 'test');
const uvuBin = path.join(root, 'node_modules/uvu/bin.js');
const timesFile = path.join(root, 'node_modules/.cache/tsfuse/test-times.json');
const pattern = process.argv[2] ?? '';
const jobs = Math.max(1, Number(process.env.TSFUSE_TEST_JOBS) || os.availableParallelism?.() || os.cpus().length);
const timeoutMs = (Number(process.env.TSFUSE_TEST_TIMEOUT) || 600) * 1000;

// As uvu picks files: the pattern (case-insensitive) against the path under test/, in locale order.
const matcher = new RegExp(`${pattern}.*\\.test\\.ts$`, 'i');
const files = walk(testDir).filter((rel) => matcher.test(rel)).sort((a, b) => a.localeCompare(b));

// Plain output: uvu forces colours (FORCE_COLOR=1, which what the tests spawn inherits) unless told --no-color.
const env = { ...process.env };
delete env.FORCE_COLOR;

const lastTimes = readTimes();
/** What a file is expected to take; a file never timed counts as a short one. */
const expected = (rel) => lastTimes[rel] ?? 1000;
// Runs of neighbouring short files share a process, up to about BATCH_MS of expected time; longer files run alone,
// except neighbours of one group below.
const BATCH_MS = 3000;
// Files that share an expensive set-up, run in one process: the model-script tests each parse the standard library,
// Node's types and tsfuse's sources with ts-morph (about 2.5 s) before their first script.
const groups = [/^compiler\/script(-[a-z]+)?\.test\.ts$/];
const groupOf = (rel) => groups.findIndex((g) => g.test(rel));
const batches = [];
for (const rel of files) {
  const last = batches[batches.length - 1];
  const ms = expected(rel);
  const group = groupOf(rel);
  if (last && (group >= 0 ? last.group === group : last.group < 0 && ms < BATCH_MS && last.ms + ms <= BATCH_MS)) {
    last.files.push(rel);
    last.ms += ms;
  } else {
    batches.push({ files: [rel], ms, group });
  }
}
const results = new Array(batches.length);
let printed = 0;
const queue = batches.map((_, i) => i).sort((a, b) => batches[b].ms - batches[a].ms);
await Promise.all(Array.from({ length: Math.min(jobs, batches.length) }, async () => {
  while (queue.length) {
    const i = queue.shift();
    results[i] = await runFiles(batches[i].files);
    // Print every finished batch whose predecessors have all been printed.
    while (printed < batches.length && results[printed]) process.stdout.write(results[printed++].output);
  }
}));

let passed = 0;
let failed = 0;
for (const r of results) {
  passed += r.passed;
  failed += r.failed;
}
if (files.length === 0) console.error(`test/run.mjs: no test file matches '${pattern}'`);
// A batch's time is shared among its files by what they were expected to take.
writeTimes(Object.fromEntries(batches.flatMap((b, i) => b.files.map((rel) => [rel, Math.round(results[i].ms * expected(rel) / b.ms)]))));
if (process.env.TSFUSE_TEST_TIMES === '1') {
  const order = batches.map((b, i) => [b.files.join(' '), results[i].ms]).sort((a, b) => b[1] - a[1]);
  for (const [names, ms] of order) console.log(`${(ms / 1000).toFixed(1).padStart(6)} s  ${names}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

/** Runs test files with uvu in a process of their own; the output (stdout and stderr, interleaved) is kept. */
function runFiles(rels) {
  const started = Date.now();
  const exact = `^(${rels.map((rel) => rel.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})$`;
  const rel = rels.join(', ');
  const child = spawn(process.execPath, ['--import', 'tsx', uvuBin, 'test', exact, '--no-color'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (chunk) => { out += chunk; });
  child.stderr.on('data', (chunk) => { out += chunk; });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const plain = out.replace(/\x1b\[[0-9;]*m/g, '');
      const num = (label) => Number(/* the last summary wins */ [...plain.matchAll(new RegExp(`${label}:\\s+(\\d+)`, 'g'))].pop()?.[1] ?? 0);
      const total = num('Total');
      const passed = num('Passed');
      const skipped = num('Skipped');
      const ok = code === 0 && !timedOut;
      let output = plain;
      if (!ok) output += `\n${rel}: ${timedOut ? `timed out after ${timeoutMs / 1000} s` : `exited with ${signal ?? `code ${code}`}`}\n`;
      // A failing process counts at least one failure, so CI never reads "0 failed" from a broken run.
      const failed = Math.max(total - passed - skipped, ok ? 0 : 1);
      resolve({ output, passed, failed, ms: Date.now() - started });
    });
  });
}

/** Paths of the *.test.ts files under dir, relative to it, skipping node_modules and dot-directories. */
function walk(dir, prefix = '') {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...walk(path.join(dir, entry.name), rel));
    else if (entry.name.endsWith('.test.ts')) out.push(rel);
  }
  return out;
}

function readTimes() {
  try {
    return JSON.parse(fs.readFileSync(timesFile, 'utf8'));
  } catch {
    return {};
  }
}

/** Keeps this run's times (and earlier times of files it did not run) for ordering the next run. */
function writeTimes(times) {
  try {
    fs.mkdirSync(path.dirname(timesFile), { recursive: true });
    fs.writeFileSync(timesFile, JSON.stringify({ ...readTimes(), ...times }, null, 1));
  } catch {
    // Ordering is only an optimisation.
  }
}
