// The artifact checks of `npm run test:package` (scripts/test-package.mjs), in the project that installed the packed
// tarball: `tsfuse compile MODEL.ts --out FILE.js` for cpu, webgpu and cuda with the installed bin; each module is
// moved to another folder, imported with plain `node` and run, and its output compared with the reference
// interpreter's (relative error ‖got − want‖ / ‖want‖ at most 1e-5 on cpu, 1e-3 on webgpu); the declarations are
// type-checked by a strict project; the GPU artifacts name the package to install when it is missing, and the cuda
// one, where no CUDA driver loads, rejects with CudaUnavailableError.

import fs from 'node:fs';
import path from 'node:path';

/** The model's body, written both into the script the CLI compiles and into the reference run beside it. */
const body = `const h = x.mul(x.pow(2).mean(-1, { keepdims: true }).add(1e-5).rsqrt());
  return x.add(h.matmul(param('up', DType.BF16, [16, 32])).silu().matmul(param('down', DType.F32, [32, 16])));`;

const script = `import { DType, param, type Tensor } from 'tsfuse';

export function block(x: Tensor<'f32', ['S', 16]>): Tensor {
  ${body}
}
`;

// Runs an artifact (argv[2]) and the reference interpreter on the same inputs; prints one line of JSON: the output's
// shape and relative error, or the error's name and message.
const runner = `import { compile, tensor, param, DType } from 'tsfuse';
import { pathToFileURL } from 'node:url';

function block(x) {
  ${body}
}
const values = (n, seed) => Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.5);
const params = { up: tensor(values(16 * 32, 1), [16, 32], 'bf16'), down: tensor(values(32 * 16, 2), [32, 16]) };
const x = tensor(values(5 * 16, 3), [5, 16]);
const want = compile(block, { backend: 'reference', params })(x);
const artifact = await import(pathToFileURL(process.argv[2]).href);
try {
  const got = await artifact.run({ x }, params);
  let diff = 0;
  let norm = 0;
  want.data.forEach((w, i) => { diff += (got.data[i] - w) ** 2; norm += w ** 2; });
  console.log(JSON.stringify({ shape: got.shape, error: Math.sqrt(diff / norm) }));
} catch (e) {
  console.log(JSON.stringify({ name: e.name, message: e.message }));
} finally {
  await artifact.release?.();
}
`;

/**
 * `check(name, f)` records a check, `run(cmd, args, opts)` runs a command that must succeed; `app` is the project,
 * `bin` the installed tsfuse command, `root` the checkout (for tsc and the optional packages it has installed).
 */
export function checkArtifacts({ check, run, app, bin, root, npm }) {
  fs.writeFileSync(path.join(app, 'block.ts'), script);
  fs.writeFileSync(path.join(app, 'run-artifact.mjs'), runner);
  const moved = path.join(app, 'moved');
  fs.mkdirSync(moved, { recursive: true });
  /** Compiles block.ts for `backend` into build/, then moves the module and its declarations to moved/. */
  const writeArtifact = (backend) => {
    const out = JSON.parse(run(process.execPath, [bin, 'compile', 'block.ts', '--backend', backend, '--out', `build/block-${backend}.js`, '--json'], { cwd: app }).stdout);
    if (out.out !== `build/block-${backend}.js`) throw new Error(JSON.stringify(out));
    for (const f of [`block-${backend}.js`, `block-${backend}.d.ts`]) fs.renameSync(path.join(app, 'build', f), path.join(moved, f));
    const text = fs.readFileSync(path.join(moved, `block-${backend}.js`), 'utf8');
    const imports = [...text.matchAll(/from '([^']+)'/g)].map((m) => m[1]);
    if (imports.join() !== 'tsfuse/runtime/artifact') throw new Error(`the artifact imports ${imports.join(', ')}`);
    return text;
  };
  const runArtifact = (backend) => JSON.parse(run(process.execPath, ['run-artifact.mjs', `moved/block-${backend}.js`], { cwd: app }).stdout);
  const agrees = (backend, tolerance, r = runArtifact(backend)) => {
    if (r.name) throw new Error(`${backend}: ${r.name}: ${r.message}`);
    if (JSON.stringify(r.shape) !== '[5,16]' || !(r.error <= tolerance)) throw new Error(`${backend}: ${JSON.stringify(r)}, tolerance ${tolerance}`);
    console.log(`  (${backend}: relative error ${r.error.toExponential(2)})`);
  };
  const refuses = (backend, name, message, r = runArtifact(backend)) => {
    if (r.name !== name || !r.message.includes(message)) throw new Error(`${backend}: expected ${name} (${message}), got ${JSON.stringify(r)}`);
  };

  check('a cpu artifact written by the installed bin runs in plain Node from another folder, as the reference does', () => {
    writeArtifact('cpu');
    agrees('cpu', 1e-5);
  });

  check('webgpu and cuda artifacts are written with their kernel sources, and name the package they need', () => {
    if (!writeArtifact('webgpu').includes('@compute @workgroup_size(')) throw new Error('no WGSL in the webgpu artifact');
    if (!writeArtifact('cuda').includes('extern "C" __global__')) throw new Error('no CUDA C in the cuda artifact');
    refuses('webgpu', 'WebGpuUnavailableError', 'npm install webgpu');
    refuses('cuda', 'CudaUnavailableError', 'npm install koffi');
  });

  check('the artifacts\' declarations type-check a strict project against the installed package', () => {
    fs.writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: false, types: [] },
      files: ['use-artifacts.ts'],
    }));
    fs.writeFileSync(path.join(app, 'use-artifacts.ts'), `
import { tensor, type HostTensor } from 'tsfuse';
import { run, type Params } from './moved/block-cpu.js';
import { run as runWebGpu, release } from './moved/block-webgpu.js';
import { run as runCuda } from './moved/block-cuda.js';
declare const params: Params;
const x = tensor([[1, 2]]);
const y: HostTensor = run({ x }, params);
const onGpus: Promise<HostTensor[]> = Promise.all([runWebGpu({ x }, params), runCuda({ x }, params)]).finally(release);
export { y, onGpus };
`);
    run(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', '.'], { cwd: app });
  });

  check('with the optional packages linked in: the webgpu artifact agrees with the reference, the cuda one needs a driver', () => {
    const linked = ['webgpu', 'koffi'].map((p) => path.join(root, 'node_modules', p)).filter((p) => fs.existsSync(p));
    if (linked.length < 2) throw new Error(`the checkout has not installed ${['webgpu', 'koffi'].join(' and ')}`);
    run(npm, ['install', '--omit=optional', '--no-audit', '--no-fund', ...linked], { cwd: app });
    for (const p of ['webgpu', 'koffi']) if (!fs.existsSync(path.join(app, 'node_modules', p))) throw new Error(`${p} was not installed`);
    const webgpu = runArtifact('webgpu');
    if (webgpu.name === 'WebGpuUnavailableError' && /no WebGPU adapter/.test(webgpu.message)) console.log(`  (webgpu did not run: ${webgpu.message})`);
    else agrees('webgpu', 1e-3, webgpu);
    // On a machine with an NVIDIA GPU and its driver, the cuda artifact runs and is checked as the others are.
    const cuda = runArtifact('cuda');
    if (cuda.name) refuses('cuda', 'CudaUnavailableError', 'no CUDA driver', cuda);
    else agrees('cuda', 1e-3, cuda);
  });
}
