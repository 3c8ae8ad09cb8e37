// The compile cache (compiler/compile-cache.ts): a second start with the same model and options reads the compiled
// module back (nothing traced) and it is the module compiling gives — the same fused IR, memory plan, kernel IR and
// generated code, NaN, −0 and infinite literals included, and kernels alike stay alike (scheduled once); a change of
// options, of the pass context or of the entry's contents misses; a corrupt entry is ignored and written again; the
// cache can be turned off. A session opened twice says so in its start timings (cold, then warm), and the first
// generate() adds its first token.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { printJs } from '../../backends/cpu/render-js.ts';
import { printCudaModule } from '../../backends/cuda/render-cuda.ts';
import { cpuCaps, cudaCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { scheduleKernel, scheduleOrigin } from '../../backends/schedule.ts';
import { printWgsl } from '../../backends/wgsl/render-wgsl.ts';
import { CacheOptions, compileCached, compileCacheDir, compileCacheEnabled, tsfuseVersion } from '../../compiler/compile-cache.ts';
import { CompiledModule, compileModule } from '../../compiler/compile-module.ts';
import { scalar, trace, where } from '../../compiler/index.ts';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { traceLlama } from '../../examples/llama.ts';
import { DType } from '../../ir/dtype.ts';
import { Module } from '../../ir/graph.ts';
import { printModule } from '../../ir/printer.ts';
import { builtinConfig } from '../../runtime/config.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { fixture } from '../fixtures-dir.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-compile-cache-'));
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

const cfg = builtinConfig('llama-tiny');
const options = { weightDType: DType.BF16, cacheLength: 48, sampling: true };

/** compileCached on llama-tiny, counting how often it traced. */
function compileTiny(opts: typeof options, cache: CacheOptions = { dir }, ctx?: { dims: Map<string, number> }) {
  let traces = 0;
  const trace = (): Module => {
    traces++;
    return traceLlama(cfg, opts);
  };
  const r = compileCached({ model: 'llama', cfg, ...opts }, trace, { ...cache, ctx });
  return { ...r, traces };
}

/** Everything a compiled module determines, as text: fused IR, plans, kernel IR, and the code of every target. */
function fingerprint(m: CompiledModule): string {
  const numbers = (_k: string, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : Object.is(v, -0) ? '-0' : v);
  return m.graphs.map((c) => {
    const slots = c.graph.nodes.map((n) => c.plan.slotOf.get(n.output) ?? -1).join(',');
    const code = [
      printCudaModule(c.kernels.map((k) => scheduleKernel(k, cudaCaps()))).source,
      ...c.kernels.map((k) => printWgsl(scheduleKernel(k, webgpuCaps({ subgroups: true }))).code),
      ...c.kernels.map((k) => printJs(scheduleKernel(k, cpuCaps))),
    ].join('\n');
    return [printModule({ graphs: [c.graph] }), slots, c.plan.slotBytes.join(','), c.plan.peakBytes,
      JSON.stringify(c.kernels, numbers), code].join('\n');
  }).join('\n');
}

const entries = () => fs.readdirSync(dir).filter((f) => f.endsWith('.json'));

test('a warm start reads the module back without tracing, equal to compiling', () => {
  const cold = compileTiny(options);
  assert.is(cold.hit, false);
  assert.is(cold.traces, 1);
  assert.equal(entries(), [`${cold.key}.json`]);
  const warm = compileTiny(options);
  assert.is(warm.hit, true, 'the second start hits');
  assert.is(warm.traces, 0, 'nothing traced on a hit');
  assert.is(warm.key, cold.key);
  const traced = traceLlama(cfg, options);
  assert.equal(warm.tracedNodes, Object.fromEntries(traced.graphs.map((g) => [g.name, g.nodes.length])));
  assert.equal(cold.tracedNodes, warm.tracedNodes);
  const fresh = compileModule(traced);
  assert.ok(fingerprint(fresh).includes('inf'), 'the sampler\'s graphs hold infinite literals');
  assert.ok(fresh.graphs.some((c) => c.kernels.some((k) => k.gemm)) && fresh.graphs.some((c) => c.kernels.some((k) => k.flash)), 'GEMM and flash kernels to read back');
  assert.is(fingerprint(warm.module), fingerprint(fresh));
});

test('kernels alike read back alike: each distinct kernel is scheduled once, as after compiling', () => {
  const warm = compileTiny(options);
  assert.is(warm.hit, true);
  const fresh = compileModule(traceLlama(cfg, options));
  /** Kernels, and the schedules made for them (the others are copies of these). */
  const device = cudaCaps();
  const schedules = (m: CompiledModule) => {
    const kernels = m.graphs.flatMap((c) => c.kernels);
    return { kernels: kernels.length, made: new Set(kernels.map((k) => scheduleOrigin(scheduleKernel(k, device)))).size };
  };
  const made = schedules(fresh);
  assert.ok(made.made < made.kernels / 2, `${made.made} schedules for ${made.kernels} kernels after compiling`);
  assert.equal(schedules(warm.module), made);
});

test('a change of trace options or of the pass context misses', () => {
  const base = compileTiny(options);
  assert.is(base.hit, true);
  const longer = compileTiny({ ...options, cacheLength: 64 });
  assert.is(longer.hit, false);
  assert.is.not(longer.key, base.key);
  const greedy = compileTiny({ ...options, sampling: false });
  assert.is(greedy.hit, false);
  const prompt = compileTiny(options, { dir }, { dims: new Map([['S', 128]]) });
  assert.is(prompt.hit, false, 'another assumed prompt length');
  assert.is(compileTiny({ ...options, cacheLength: 64 }).hit, true);
});

test('a corrupt or truncated entry is ignored and written again', () => {
  const first = compileTiny(options);
  const file = path.join(dir, `${first.key}.json`);
  const good = fs.readFileSync(file, 'utf8');
  const corruptions = [
    good.slice(0, good.length >> 1),
    good.replace('"nodes"', '"nodez"'),
    '',
    'not a cache entry',
  ];
  for (const bad of corruptions) {
    fs.writeFileSync(file, bad);
    const again = compileTiny(options);
    assert.is(again.hit, false, `corrupt entry ${JSON.stringify(bad.slice(0, 20))} ignored`);
    assert.is(again.traces, 1);
    assert.is(fs.readFileSync(file, 'utf8'), good, 'rewritten whole');
    assert.is(compileTiny(options).hit, true);
  }
});

test('with the cache off nothing is read or written', () => {
  const off = fs.mkdtempSync(path.join(dir, 'off-'));
  const r = compileTiny(options, { dir: off, enabled: false });
  const again = compileTiny(options, { dir: off, enabled: false });
  assert.is(r.hit || again.hit, false);
  assert.equal(fs.readdirSync(off), []);
});

test('NaN, −0 and ±∞ read back as they were, wherever they are (IR literals, kernel constants)', () => {
  const specials = (): Module => ({
    graphs: [trace('specials', [{ name: 'x', dtype: DType.F32, shape: [4, 8] }], (x) =>
      where(x.gt(0), x.mul(-0), scalar(-Infinity)).add(x.mul(Number.NaN)).maximum(scalar(Infinity)).sum(1))],
  });
  const what = { test: 'specials', nonce: Math.random() };
  const cold = compileCached(what, specials, { dir });
  const warm = compileCached(what, specials, { dir });
  assert.is(cold.hit, false);
  assert.is(warm.hit, true);
  const text = fingerprint(warm.module);
  for (const literal of ['-0', 'NaN', '-Infinity', 'Infinity']) assert.ok(text.includes(literal), `${literal} in the module`);
  assert.is(text, fingerprint(compileModule(specials())));
});

test('the key holds tsfuse\'s version', () => {
  const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  assert.is(tsfuseVersion(), pkg.version);
});

test('a session opened twice starts cold, then warm; another option misses; the first token is timed', async () => {
  const model = loadLlama(fixture('tiny-llama'));
  const sessionDir = fs.mkdtempSync(path.join(dir, 'session-'));
  const open = (sampling: boolean, enabled = true) => openLlamaSession(model, { backend: 'cpu', cacheLength: 12, sampling, compileCache: { dir: sessionDir, enabled } });
  const starts = [];
  for (const [sampling, enabled] of [[false, true], [false, true], [true, true], [false, false]]) {
    const session = await open(sampling, enabled);
    try {
      const s = session.startup!;
      assert.ok(s.compileMs > 0 && s.readMs >= 0 && s.uploadMs >= 0 && s.readyMs >= s.compileMs, JSON.stringify(s));
      assert.is(s.firstTokenMs, undefined, 'no token yet');
      const tokens = await session.generate([5, 9, 13], 3);
      assert.is(tokens.length, 3);
      assert.ok(s.firstTokenMs! > 0 && s.totalMs! >= s.readyMs + s.firstTokenMs!, JSON.stringify(s));
      const again = { ...s };
      await session.generate([5, 9, 13], 3);
      assert.equal({ ...s }, again, 'only the first generate() is the first token');
      starts.push(s.compileCache);
    } finally {
      session.close();
    }
  }
  assert.equal(starts, ['miss', 'hit', 'miss', 'off']);
  assert.is(fs.readdirSync(sessionDir).filter((f) => f.endsWith('.json')).length, 2, 'one entry per option set; none with the cache off');
});

test('TSFUSE_CACHE_DIR moves the cache and TSFUSE_NO_CACHE=1 turns it off', () => {
  const saved = { dir: process.env.TSFUSE_CACHE_DIR, off: process.env.TSFUSE_NO_CACHE };
  try {
    process.env.TSFUSE_CACHE_DIR = path.join(dir, 'env');
    assert.is(compileCacheDir(), path.join(dir, 'env', 'compile'));
    assert.is(compileCacheEnabled(), true);
    process.env.TSFUSE_NO_CACHE = '1';
    assert.is(compileCacheEnabled(), false);
  } finally {
    if (saved.dir === undefined) delete process.env.TSFUSE_CACHE_DIR;
    else process.env.TSFUSE_CACHE_DIR = saved.dir;
    if (saved.off === undefined) delete process.env.TSFUSE_NO_CACHE;
    else process.env.TSFUSE_NO_CACHE = saved.off;
  }
});

test.run();
