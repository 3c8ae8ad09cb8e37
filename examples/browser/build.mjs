// Bundles the browser page (examples/browser/main.ts → examples/browser/dist/main.js) with esbuild. Node-only
// modules stay out: Dawn's device opener and the stack-frame source locator are replaced by browser stand-ins, and
// the node: built-ins that config.ts, safetensors.ts and tensor-reader.ts import for their file readers by an empty
// module. Exits
// non-zero if the bundle would still hold webgpu, koffi or any Node module.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const stub = (name) => path.join(here, 'stubs', name);

const browserStandIns = {
  name: 'browser-stand-ins',
  setup(build) {
    build.onResolve({ filter: /^node:(fs|path|url|module|os|worker_threads)$/ }, () => ({ path: stub('node-builtin.ts') }));
    build.onResolve({ filter: /\/source-location\.ts$/ }, () => ({ path: stub('source-location.ts') }));
    build.onResolve({ filter: /\/webgpu\/device\.ts$/ }, () => ({ path: stub('dawn.ts') }));
    build.onResolve({ filter: /^(webgpu|koffi|ts-morph)$|^node:/ }, (a) => ({ errors: [{ text: `${a.path} must not reach the browser bundle (imported by ${a.importer})` }] }));
  },
};

export async function buildPage({ quiet = false } = {}) {
  const r = await esbuild.build({
    entryPoints: [path.join(here, 'main.ts')],
    outfile: path.join(here, 'dist/main.js'),
    bundle: true, format: 'esm', platform: 'browser', target: 'es2022', sourcemap: true, metafile: true,
    logLevel: quiet ? 'error' : 'info',
    plugins: [browserStandIns],
  });
  const inputs = Object.keys(r.metafile.inputs);
  const banned = inputs.filter((f) => /node_modules\/(webgpu|koffi|ts-morph)\/|runtime\/webgpu\/device\.ts|runtime\/cuda\//.test(f));
  if (banned.length) throw new Error(`the browser bundle holds Node-only modules: ${banned.join(', ')}`);
  return { inputs, bytes: r.metafile.outputs[path.relative(process.cwd(), path.join(here, 'dist/main.js'))]?.bytes };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildPage();
