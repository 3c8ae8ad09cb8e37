// `npm run test:package`: tsfuse as a user installs it. Packs the tarball (which builds dist/), installs it into an
// empty project without the optional packages (webgpu, koffi, ts-morph), and checks that plain Node imports it,
// that a strict tsc project type-checks against its declarations, that the bin runs compiled JavaScript quickly, and
// that the GPU backends name what to install; then, with ts-morph added, that artifacts written by the installed bin
// run in plain Node (test/package/artifacts.mjs). Skips (exit 0) when the npm registry cannot be reached. Ends with the
// line "N passed, N failed".
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkArtifacts } from '../test/package/artifacts.mjs';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const fixture = path.join(root, '../shared/fixtures/tiny-llama');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-package-'));
let passed = 0;
let failed = 0;

function check(name, f) {
  try {
    f();
    passed++;
    console.log(`✓ ${name}`);
  } catch (e) {
    failed++;
    console.log(`✗ ${name}\n  ${String(e.message ?? e).split('\n').join('\n  ')}`);
  }
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: tmp, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}\n${r.stdout}\n${r.stderr}`);
  return r;
}

try {
  const packed = JSON.parse(execFileSync(npm, ['pack', '--json', '--pack-destination', tmp], {
    cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'],
  }))[0];
  const tarball = path.join(tmp, packed.filename);
  const files = packed.files.map((f) => f.path);

  check('the tarball holds dist/ with declarations, the bin and LICENSE, and no tests or sources', () => {
    for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/compiler/cli.js', 'bin/tsfuse.mjs', 'LICENSE', 'package.json']) {
      if (!files.includes(f)) throw new Error(`missing ${f}`);
    }
    const stray = files.filter((f) => f.startsWith('test/') || (f.endsWith('.ts') && !f.endsWith('.d.ts')));
    if (stray.length) throw new Error(`should not ship: ${stray.slice(0, 5).join(', ')}`);
  });

  const app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  const install = spawnSync(npm, ['install', '--omit=optional', '--no-audit', '--no-fund', tarball], { cwd: app, encoding: 'utf8' });
  if (install.status !== 0) {
    if (/ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|network/i.test(install.stderr)) {
      console.log(`skipped: the npm registry cannot be reached\n${install.stderr.split('\n').slice(-4).join('\n')}`);
      console.log(`${passed} passed, ${failed} failed`);
      process.exit(failed ? 1 : 0);
    }
    throw new Error(`npm install of the tarball failed:\n${install.stderr}`);
  }
  const installed = path.join(app, 'node_modules');

  check('the optional GPU packages and ts-morph are not installed with --omit=optional', () => {
    for (const p of ['webgpu', 'koffi', 'ts-morph']) if (fs.existsSync(path.join(installed, p))) throw new Error(`${p} installed`);
  });

  check("plain Node: import { compile, tensor } from 'tsfuse' runs a compiled function on the cpu", () => {
    fs.writeFileSync(path.join(app, 'app.mjs'), `
import { compile, tensor } from 'tsfuse';
const f = compile((x, w) => x.mul(w).add(1));
const y = f(tensor([[1, 2], [3, 4]]), tensor([0.5, 2]));
console.log(JSON.stringify({ shape: y.shape, data: Array.from(y.data), kernels: f.stats.compilations }));
`);
    const out = JSON.parse(run(process.execPath, ['app.mjs'], { cwd: app }).stdout);
    if (JSON.stringify(out.data) !== JSON.stringify([1.5, 5, 2.5, 9])) throw new Error(`got ${JSON.stringify(out)}`);
  });

  check('a strict tsc project type-checks against the declarations (skipLibCheck off)', () => {
    fs.writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: false, types: [] },
      files: ['app.ts'],
    }));
    fs.writeFileSync(path.join(app, 'app.ts'), `
import { compile, tensor, type Tensor, type HostTensor } from 'tsfuse';
const f = compile((x: Tensor, w: Tensor) => x.mul(w).silu());
const y = f(tensor([[1, 2]]), tensor([1, 1])) as HostTensor;
const n: number = y.shape[0];
export { n };
`);
    run(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', '.'], { cwd: app });
  });

  const bin = path.join(installed, 'tsfuse/bin/tsfuse.mjs');
  check('the bin runs compiled JavaScript: --version, and --help in well under 0.5 s', () => {
    const version = run(process.execPath, [bin, '--version']).stdout.trim();
    if (version !== packed.version) throw new Error(`--version printed ${version}`);
    const t = performance.now();
    const help = run(process.execPath, [bin, '--help']).stdout;
    const ms = performance.now() - t;
    if (!help.startsWith('usage: tsfuse')) throw new Error(help);
    if (ms > 500) throw new Error(`--help took ${ms.toFixed(0)} ms`);
    console.log(`  (--help in ${ms.toFixed(0)} ms)`);
  });

  if (fs.existsSync(fixture)) {
    check('generate on the cpu from the installed package gives the golden greedy tokens', () => {
      const golden = JSON.parse(fs.readFileSync(path.join(fixture, 'golden.json'), 'utf8'));
      const out = run(process.execPath, [bin, 'generate', '--model', fixture, '--ids', golden.input_ids.join(','), '--max-new-tokens', '4', '--json']).stdout;
      const tokens = JSON.parse(out).tokens;
      if (JSON.stringify(tokens) !== JSON.stringify(golden.greedy_new_tokens.slice(0, 4))) throw new Error(`got ${tokens}`);
    });
    check('without the optional packages, webgpu and cuda say what to install', () => {
      for (const [backend, pkg] of [['webgpu', 'npm install webgpu'], ['cuda', 'npm install koffi']]) {
        const r = spawnSync(process.execPath, [bin, 'generate', '--model', fixture, '--ids', '1,2', '--backend', backend], { encoding: 'utf8' });
        if (r.status !== 1 || !r.stderr.includes(pkg) || r.stderr.includes('internal error')) throw new Error(`${backend}: exit ${r.status}: ${r.stderr}`);
      }
    });
  }

  check('with ts-morph added, the installed bin compiles a model script importing tsfuse', () => {
    const version = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).optionalDependencies['ts-morph'];
    // --omit=optional: tsfuse's GPU packages stay out (the artifact checks below add the checkout's).
    run(npm, ['install', '--omit=optional', '--no-audit', '--no-fund', `ts-morph@${version}`], { cwd: app });
    fs.writeFileSync(path.join(app, 'mlp.ts'), `
import { DType, param, type Tensor } from 'tsfuse';
export function mlp(x: Tensor<'f32', ['S', 8]>): Tensor {
  return x.matmul(param('w', DType.F32, [8, 8])).silu();
}
`);
    const out = JSON.parse(run(process.execPath, [bin, 'compile', 'mlp.ts', '--json'], { cwd: app }).stdout);
    if (out.entry !== 'mlp' || out.inputs[0] !== 'x: f32[S,8]' || !(out.kernels >= 1)) throw new Error(JSON.stringify(out));
  });

  checkArtifacts({ check, run, app, bin, root, npm });
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
