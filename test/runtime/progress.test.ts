// Progress on stderr: shown only on a terminal and not under --json (decided from an injected stream here), a
// spinner that appears once a step has run past its delay, turns while the step blocks the main thread, stays off
// the line while a bar is drawn, and is erased at the end; and nothing at all on stderr when it is not a TTY.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { progress, setSpinners, showProgress, spinner, step } from '../../runtime/progress.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-progress-'));
const s = suite('progress');
s.after(() => {
  setSpinners(false);
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A stand-in for stderr: a file, said to be a terminal or not; `text()` reads what was drawn on it. */
function fakeStream(name: string, isTTY: boolean) {
  const file = path.join(tmp, name);
  const fd = fs.openSync(file, 'w');
  return { stream: { isTTY, fd }, text: () => fs.readFileSync(file, 'utf8'), close: () => fs.closeSync(fd) };
}

/** Blocks the main thread, as tracing and NVRTC do: for `ms`, or until `done()` (at most 10 s, on a loaded machine). */
function busy(ms: number, done?: () => boolean): void {
  const until = Date.now() + (done ? 10_000 : ms);
  while (Date.now() < until && !done?.());
}

/** The frames a spinner drew (each begins by erasing the line). */
const frames = (text: string) => text.split('\r\x1b[2K').filter(Boolean);

s('progress is shown on a terminal, and neither when piped nor under --json', () => {
  assert.is(showProgress(false, { isTTY: true, fd: 2 }), true);
  assert.is(showProgress(true, { isTTY: true, fd: 2 }), false);
  assert.is(showProgress(false, { isTTY: false, fd: 2 }), false);
  assert.is(showProgress(false, { fd: 2 }), false);
});

s('a spinner turns on a terminal while the main thread is blocked, and is erased when stopped', () => {
  const out = fakeStream('tty', true);
  const sp = spinner('compiling llama', true, { stream: out.stream, delayMs: 0 });
  busy(0, () => frames(out.text()).length >= 3);
  sp.stop();
  const text = out.text();
  out.close();
  assert.ok(frames(text).length >= 3, `several frames drawn while blocked: ${JSON.stringify(text)}`);
  for (const f of frames(text)) assert.match(f, /^[|/\\-] compiling llama \(\d+ s\)$/);
  assert.ok(text.endsWith('\r\x1b[2K'), 'the line is erased at the end');
});

s('nothing is drawn where the stream is not a terminal, where spinners are off, or before the delay', () => {
  const piped = fakeStream('piped', false);
  const sp = spinner('compiling', true, { stream: piped.stream, delayMs: 0 });
  busy(300);
  sp.stop();
  assert.is(piped.text(), '');
  piped.close();

  const tty = fakeStream('tty-off', true);
  setSpinners(false);
  assert.is(step('compiling', () => (busy(300), 7), { stream: tty.stream, delayMs: 0 }), 7);
  setSpinners(true);
  step('compiling', () => busy(100), { stream: tty.stream });
  assert.is(tty.text(), '', 'a step shorter than its delay (a second) draws nothing');
  tty.close();
});

s('steps: errors and promises end the spinner, and a step inside another shows none of its own', async () => {
  setSpinners(true);
  const outer = fakeStream('outer', true);
  const inner = fakeStream('inner', true);
  const value = await step('loading', () => new Promise<number>((resolve) => {
    step('compiling kernels', () => busy(0, () => outer.text().includes('loading')), { stream: inner.stream, delayMs: 0 });
    setTimeout(() => resolve(3), 100);
  }), { stream: outer.stream, delayMs: 0 });
  assert.is(value, 3);
  assert.match(outer.text(), 'loading');
  assert.ok(outer.text().endsWith('\r\x1b[2K'));
  assert.is(inner.text(), '');
  const before = outer.text().length;
  assert.throws(() => step('failing', () => {
    busy(0, () => outer.text().includes('failing'));
    throw new Error('no');
  }, { stream: outer.stream, delayMs: 0 }), /no/);
  assert.ok(outer.text().length > before, 'the failing step was drawn');
  assert.ok(outer.text().endsWith('\r\x1b[2K'), 'erased after the error too');
  outer.close();
  inner.close();
});

s('a spinner keeps off the line while a bar is drawn', () => {
  const out = fakeStream('bar', true);
  // The bar draws on the test's stderr, which is not a terminal here: it counts as shown all the same.
  const bar = progress('reading weights', 2, true);
  const sp = spinner('compiling', true, { stream: out.stream, delayMs: 0 });
  busy(300);
  assert.is(out.text(), '', 'hidden while the bar is up');
  bar.tick('a');
  bar.tick('b');
  busy(0, () => out.text().includes('compiling'));
  sp.stop();
  assert.match(out.text(), 'compiling', 'drawn once the bar is gone');
  out.close();
});

s('a spinner ends at the first output on stdout, so a printed result is neither drawn over nor erased', () => {
  const out = fakeStream('stdout', true);
  const write = process.stdout.write;
  const sp = spinner('compiling', true, { stream: out.stream, delayMs: 0 });
  busy(0, () => out.text().includes('compiling'));
  process.stdout.write('');
  const drawn = out.text();
  assert.match(drawn, 'compiling');
  assert.ok(drawn.endsWith('\r\x1b[2K'), 'erased before the write went out');
  assert.is(process.stdout.write, write, 'stdout is as it was');
  busy(250);
  assert.is(out.text(), drawn, 'nothing drawn after');
  sp.stop();
  out.close();
});

s('the command line prints nothing extra on stderr when it is not a terminal', () => {
  const r = spawnSync(process.execPath, ['bin/tsfuse.mjs', 'compile', '--config', 'llama-3.2-1b', '--report', '--no-cache'], { cwd: root, encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, 'compile report: builtin:llama-3.2-1b');
  assert.is(r.stderr, '');
});

s.run();
