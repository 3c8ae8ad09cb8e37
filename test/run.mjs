// Runs every test/**/*.test.ts with uvu (through tsx, so no build step) and ends with the line CI reads:
// "N passed, N failed". Extra arguments are a file pattern, e.g. `npm test -- ir` (a regex on the path under test/).
//
// Files run in as many processes as there are CPUs (TSFUSE_TEST_JOBS overrides), each process (test/run-worker.mjs)
// living for the whole run and taking the next file when it is done with one: what a process loads (tsx's modules,
// tsfuse warmed up, Dawn, the fake CUDA, ts-morph's project) is loaded once per process, not once per file (a
// process per file cost the suite a fifth more CPU). The longest files start first, as long as they took last time
// (kept in node_modules/.cache/tsfuse/test-times.json); files that share an expensive set-up (`groups`) run one
// after another in one process. Output is printed whole, in path order, once the files before it are done. A file
// whose process fails (a crash, process.exit, a timeout) counts as one failure, and a fresh process takes the rest.
// The output has no colours. TSFUSE_TEST_TIMES=1 prints how long each file took, slowest first.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const testDir = path.join(root, 'test');
const workerScript = path.join(testDir, 'run-worker.mjs');
const timesFile = path.join(root, 'node_modules/.cache/tsfuse/test-times.json');
const pattern = process.argv[2] ?? '';
const jobs = Math.max(1, Number(process.env.TSFUSE_TEST_JOBS) || os.availableParallelism?.() || os.cpus().length);
const timeoutMs = (Number(process.env.TSFUSE_TEST_TIMEOUT) || 600) * 1000;

// As uvu picks files: the pattern (case-insensitive) against the path under test/, in locale order.
const matcher = new RegExp(`${pattern}.*\\.test\\.ts$`, 'i');
const files = walk(testDir).filter((rel) => matcher.test(rel)).sort((a, b) => a.localeCompare(b));

// Plain output: no FORCE_COLOR for uvu's colours, nor for what the tests spawn (which would inherit it).
const env = { ...process.env };
delete env.FORCE_COLOR;

const lastTimes = readTimes();
/** What a file is expected to take; a file never timed counts as a short one. */
const expected = (rel) => lastTimes[rel] ?? 1000;
// Files that share an expensive set-up, run in one process one after another: the model-script tests each parse the
// standard library, Node's types and tsfuse's sources with ts-morph (about 2.5 s) before their first script.
const groups = [/^compiler\/script(-[a-z]+)?\.test\.ts$/];
const items = [];
for (const rel of files) {
  const group = groups.findIndex((g) => g.test(rel));
  const same = group >= 0 ? items.find((it) => it.group === group) : undefined;
  if (same) {
    same.files.push(rel);
    same.ms += expected(rel);
  } else {
    items.push({ files: [rel], ms: expected(rel), group });
  }
}
// Longest first, so that no long file starts last.
const queue = items.sort((a, b) => b.ms - a.ms);
const index = new Map(files.map((rel, i) => [rel, i]));
const results = new Array(files.length);
let printed = 0;
await Promise.all(Array.from({ length: Math.min(jobs, items.length) }, async () => {
  let worker;
  while (queue.length) {
    const item = queue.shift();
    for (const rel of item.files) {
      worker ??= startWorker();
      const r = await worker.run(rel);
      if (!r.ok) worker = undefined; // it has ended; a fresh one takes the next file
      results[index.get(rel)] = r;
      // Print every finished file whose predecessors have all been printed.
      while (printed < files.length && results[printed]) process.stdout.write(results[printed++].output);
    }
  }
  await worker?.end();
}));

let passed = 0;
let failed = 0;
for (const r of results) {
  passed += r.passed;
  failed += r.failed;
}
if (files.length === 0) console.error(`test/run.mjs: no test file matches '${pattern}'`);
writeTimes(Object.fromEntries(files.map((rel, i) => [rel, results[i].ms])));
if (process.env.TSFUSE_TEST_TIMES === '1') {
  const order = files.map((rel, i) => [rel, results[i].ms]).sort((a, b) => b[1] - a[1]);
  for (const [rel, ms] of order) console.log(`${(ms / 1000).toFixed(1).padStart(6)} s  ${rel}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

/**
 * A process that runs test files one at a time (test/run-worker.mjs). run(rel) resolves with the file's output and
 * counts; where the process ends or times out meanwhile, with the file counted failed (the process is gone then).
 */
function startWorker() {
  const child = spawn(process.execPath, ['--import', 'tsx', workerScript], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  // What reaches the process's own stdout and stderr (children that inherit them, native code) goes with the file
  // that is running.
  let stray = '';
  child.stdout.on('data', (chunk) => { stray += chunk; });
  child.stderr.on('data', (chunk) => { stray += chunk; });
  let pending;
  const ready = new Promise((resolve) => child.once('message', resolve));
  child.on('message', (m) => {
    if (!pending || m.file !== pending.rel) return;
    const p = pending;
    pending = undefined;
    p.finish(m.output, m.code === 0, '');
  });
  child.on('exit', (code, signal) => {
    const p = pending;
    pending = undefined;
    p?.finish('', false, p.timedOut ? `timed out after ${timeoutMs / 1000} s` : `its process exited with ${signal ?? `code ${code}`}`);
  });
  return {
    async run(rel) {
      const started = Date.now();
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          pending.timedOut = true;
          child.kill('SIGKILL');
        }, timeoutMs);
        pending = {
          rel,
          timedOut: false,
          finish(output, ok, why) {
            clearTimeout(timer);
            const all = (output + stray).replace(/\x1b\[[0-9;]*m/g, '');
            stray = '';
            resolve(count(rel, all, ok, why, Date.now() - started));
          },
        };
        ready.then(() => { if (pending?.rel === rel) child.send({ file: rel }); });
      });
    },
    /** Asks the process to exit, and waits until it has (so that its CPU time is its parent's to count). */
    end() {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      const exited = new Promise((resolve) => child.once('exit', resolve));
      if (child.connected) child.send({ exit: true });
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      return exited.then(() => clearTimeout(timer));
    },
  };
}

/** A file's result from its output (uvu's summary); a file that failed without counting a failed test counts one. */
function count(rel, plain, ok, why, ms) {
  const num = (label) => Number(/* the last summary wins */ [...plain.matchAll(new RegExp(`${label}:\\s+(\\d+)`, 'g'))].pop()?.[1] ?? 0);
  const total = num('Total');
  const passed = num('Passed');
  const skipped = num('Skipped');
  let output = `${rel}\n${plain.startsWith(`${rel}\n`) ? plain.slice(rel.length + 1) : plain}`;
  if (why) output += `\n${rel}: ${why}\n`;
  // A failing file counts at least one failure, so CI never reads "0 failed" from a broken run.
  const failed = Math.max(total - passed - skipped, ok && !why ? 0 : 1);
  return { output, passed, failed, ms, ok: !why };
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
