// The compile report as `tsfuse compile --config NAME --report` prints it: sizes in one unit system (B, kB, MB,
// GB), each column named once, and Llama's kernels named as the README's table names them. (The figures
// themselves are tested in fusion.test.ts.)

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatBytes } from '../../compiler/report.ts';
import { tsfuse } from '../tsfuse-cli.ts';

/** `tsfuse compile --report ...args`, in this process (test/tsfuse-cli.ts). */
async function report(...args: string[]): Promise<string> {
  const r = await tsfuse(['compile', '--report', ...args]);
  assert.is(r.code, 0, r.stderr);
  return r.stdout;
}

/** The llama-tiny report, run once for the tests that read it. */
let tinyReport: Promise<string> | undefined;
const tiny = () => (tinyReport ??= report('--config', 'llama-tiny', '--cache-length', '64'));

/** The kernel rows of one step's table: name, role and layer. */
function kernels(text: string, step: string): { name: string; role: string; layer: string }[] {
  const section = text.split('\n\n').findIndex((s) => s.startsWith(`${step}\n`));
  assert.ok(section >= 0, `no @${step} in the report`);
  return text.split('\n\n')[section + 1].trimEnd().split('\n').slice(1).map((line) => {
    const m = /^ {2}(k\d+) +(.+?) +(\d+|-) +\d/.exec(line);
    assert.ok(m, `not a kernel row: ${line}`);
    return { name: m![1], role: m![2], layer: m![3] };
  });
}

test('bytes are written in decimal units, the same in every column', async () => {
  assert.equal([999, 1000, 12_290, 2_471_630_000, 5.5e6].map(formatBytes), ['999 B', '1.00 kB', '12.29 kB', '2.47 GB', '5.50 MB']);
  const text = await tiny();
  assert.not.match(text, /[KMG]iB/);
  const sizes = [...text.matchAll(/ (\d+(?:\.\d+)?) ([kMG]?B)\b/g)];
  assert.ok(sizes.length > 50, 'the report shows sizes');
  for (const [size, value, unit] of sizes) assert.ok(unit === 'B' ? /^\d+$/.test(value) : /^\d+\.\d\d$/.test(value), size);
});

test('each column of the kernel table is named once', async () => {
  const text = await tiny();
  const headers = text.split('\n').filter((l) => l.trimStart().startsWith('kernel '));
  assert.is(headers.length, 3, 'one kernel table per step');
  for (const h of headers) {
    const words = h.trim().split(/\s+/);
    assert.is(words.filter((w) => w === 'writes').length, 1, h);
    assert.is(words.filter((w) => w === 'reads').length, 1, h);
  }
});

test('decode kernels are named as the README names them: 6 per layer and 3 outside on llama-3.2-1b', async () => {
  const perLayer = ['QKV projection', 'KV-cache write', 'attention', 'output projection', 'gate/up projection', 'down projection'];
  const decode = kernels(await report('--config', 'llama-3.2-1b', '--cache-length', '160'), 'decode');
  assert.is(decode.length, 16 * 6 + 3);
  for (let layer = 0; layer < 16; layer++) {
    assert.equal(decode.slice(6 * layer, 6 * layer + 6).map((k) => `${k.layer} ${k.role}`), perLayer.map((r) => `${layer} ${r}`));
  }
  assert.equal(decode.slice(96).map((k) => k.role), ['final RMSNorm + LM head', 'next-token argmax', 'next-token argmax + token write']);
});

test('on WebGPU the KV-cache write joins the output projection, and attention still reads the whole cache', async () => {
  const text = await report('--config', 'llama-3.2-1b', '--cache-length', '160', '--backend', 'webgpu', '--kv-dtype', 'bf16');
  const perLayer = ['QKV projection', 'attention', 'output projection + KV-cache write', 'gate/up projection', 'down projection'];
  const decode = kernels(text, 'decode');
  assert.is(decode.length, 16 * 5 + 3);
  for (let layer = 0; layer < 16; layer++) {
    assert.equal(decode.slice(5 * layer, 5 * layer + 5).map((k) => `${k.layer} ${k.role}`), perLayer.map((r) => `${layer} ${r}`));
  }
  // Attention reads both caches (160 × 8 heads × 64, bf16: 163.84 kB each) besides the query; the projection
  // writes the new rows (8 × 64 × 2 bytes each) besides its output.
  const row = (name: string) => text.slice(text.indexOf('\ndecode\n')).split('\n').find((l) => l.startsWith(`  ${name} `))!;
  assert.match(row(decode[1].name), / 0 +(3[3-9]\d\.\d\d) kB /);
  assert.match(row(decode[2].name), / 10\.24 kB /);
});

test('with a long cache attention runs in chunks, and the prefill names its norms, LM head and positions', async () => {
  const text = await report('--config', 'llama-3.2-1b');
  const decode = kernels(text, 'decode');
  assert.equal(decode.slice(0, 8).map((k) => k.role), ['QKV projection', 'KV-cache write', 'attention', 'attention (combine)',
    'attention (combine)', 'output projection', 'gate/up projection', 'down projection']);
  const prefill = kernels(text, 'prefill');
  assert.equal(prefill.slice(0, 2).map((k) => k.role), ['RMSNorm', 'QKV projection']);
  const outside = prefill.filter((k) => k.layer === '-').map((k) => k.role);
  assert.equal(outside.slice(0, 2), ['final RMSNorm', 'LM head']);
  assert.ok(outside.includes('positions') && outside.includes('next-token argmax') && outside.at(-1) === 'token write', outside.join(', '));
  assert.not.ok(prefill.some((k) => ['reduce', 'contraction', 'elementwise'].includes(k.role)), 'every kernel has a role');
});

test.run();
