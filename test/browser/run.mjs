// `npm run test:browser`: builds the browser page, serves it with the tiny-llama fixture, opens it in headless
// Chromium with WebGPU (Debian's chromium, driven by playwright-core; set CHROMIUM to another binary), and checks
// that its greedy tokens equal the fixture's golden ones. Ends with the line "N passed, N failed"; with no
// Chromium installed it says so and counts nothing.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { buildPage } from '../../examples/browser/build.mjs';
import { serve } from '../../examples/browser/serve.mjs';

const root = fileURLToPath(new URL('../../', import.meta.url));
const fixture = path.join(root, '../shared/fixtures/tiny-llama');
const golden = JSON.parse(fs.readFileSync(path.join(fixture, 'golden.json'), 'utf8'));
const executablePath = process.env.CHROMIUM ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
let passed = 0;
let failed = 0;

async function check(name, f) {
  try {
    await f();
    passed++;
    console.log(`✓ ${name}`);
  } catch (e) {
    failed++;
    console.log(`✗ ${name}\n  ${String(e?.message ?? e).split('\n').join('\n  ')}`);
  }
}

if (!executablePath) {
  console.log('no Chromium found (apt-get install chromium, or set CHROMIUM): browser tests not run');
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(0);
}

let bundle;
await check('the page bundles without Node modules, Dawn or koffi', async () => {
  bundle = await buildPage({ quiet: true });
  const nodeOnly = bundle.inputs.filter((f) => /node_modules\/(webgpu|koffi|ts-morph)\//.test(f));
  if (nodeOnly.length) throw new Error(nodeOnly.join(', '));
});

const { server, url } = await serve(fixture);
const browser = await chromium.launch({
  executablePath, headless: true,
  args: ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-angle=swiftshader', '--use-webgpu-adapter=swiftshader'],
});
try {
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  const n = golden.greedy_new_tokens.length;
  await check(`the page generates the ${n} golden greedy tokens on WebGPU and shows ms/token`, async () => {
    await page.goto(`${url}?model=/checkpoint&ids=${golden.input_ids.join(',')}&n=${n}`);
    await page.waitForFunction(() => globalThis.tsfuse?.status !== 'running', null, { timeout: 240_000 });
    const result = await page.evaluate(() => globalThis.tsfuse);
    if (result.status !== 'done') throw new Error(`page: ${result.error}\n${logs.slice(-10).join('\n')}`);
    if (JSON.stringify(result.tokens) !== JSON.stringify(golden.greedy_new_tokens)) {
      throw new Error(`tokens ${result.tokens.join(' ')}\nexpected ${golden.greedy_new_tokens.join(' ')}`);
    }
    const shown = await page.textContent('#tokens');
    if (shown.trim() !== golden.greedy_new_tokens.join(' ')) throw new Error(`streamed: ${shown}`);
    const timing = await page.textContent('#timing');
    if (!/[\d.]+ ms\/token/.test(timing)) throw new Error(`timing: ${timing}`);
    console.log(`  (${await page.textContent('#status')}; ${timing})`);
  });
} finally {
  await browser.close();
  server.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
