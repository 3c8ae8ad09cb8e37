// One of test/run.mjs's processes: it runs the test files the runner sends, one at a time and one after another,
// with uvu, and sends back each file's output (stdout and stderr, as written) and uvu's exit code. The process lives
// for the whole run, so what a process loads once (tsx's compiled modules, tsfuse's modules warmed up by V8, Dawn,
// ts-morph's project, the fake CUDA) is loaded once per process, not once per file: the suite on one process took
// 153 s of CPU where a process per file took 191 s.

import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const testDir = path.dirname(fileURLToPath(import.meta.url));

// uvu queues the suites a file runs and runs them at exec(), as its own command line does (UVU_DEFER).
globalThis.UVU_DEFER = 1;
const uvu = await import('uvu');

const streams = [process.stdout, process.stderr];
const writes = streams.map((s) => s.write);

/** Runs test file `rel` (under test/); its output is what it writes through process.stdout and process.stderr. */
async function runFile(rel) {
  let output = '';
  for (const s of streams) {
    s.write = (chunk, ...rest) => {
      output += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      const done = rest.find((r) => typeof r === 'function');
      if (done) done();
      return true;
    };
  }
  let code = 0;
  try {
    process.exitCode = undefined;
    globalThis.UVU_INDEX = 0;
    globalThis.UVU_QUEUE = [[rel]];
    await import(pathToFileURL(path.join(testDir, rel)).href);
    await uvu.exec();
    code = process.exitCode ?? 0;
  } catch (e) {
    // A file that does not load (a syntax error, a throw at its top level) fails as uvu's command line would.
    output += `${e?.stack ?? e}\n`;
    code = 1;
  } finally {
    streams.forEach((s, i) => { s.write = writes[i]; });
    process.exitCode = undefined;
  }
  return { output, code };
}

process.on('message', async (message) => {
  if (message.exit) process.exit(0);
  const started = Date.now();
  const { output, code } = await runFile(message.file);
  process.send({ file: message.file, output, code, ms: Date.now() - started });
});
// The runner gone (killed, interrupted), nothing is left to do.
process.on('disconnect', () => process.exit(0));
process.send({ ready: true });
