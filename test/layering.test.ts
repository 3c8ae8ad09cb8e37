// Folders follow the data flow (DESIGN.md): ir/ at the bottom; compiler/ (tracing, passes) and backends/
// (lowering, scheduling, rendering) over it; runtime/ (devices, sessions) runs what the backends produce; the CLI,
// compile() and the examples wire them together on top. Any import that runs upward fails here, with its line.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const root = fileURLToPath(new URL('../', import.meta.url));

/** The files of compiler/ that wire the layers together (they may import anything). */
const wiring = new Set([
  'compiler/cli.ts', 'compiler/cli-compile.ts', 'compiler/cli-generate.ts', 'compiler/cli-script.ts',
  'compiler/compile.ts', 'compiler/compile-module.ts', 'compiler/compile-cache.ts', 'compiler/compile-cache-entry.ts', 'compiler/custom-op.ts',
  'compiler/artifact.ts',
  'compiler/open-session.ts', 'compiler/session-choices.ts',
  // bisect runs the compiled program on a device beside the reference interpreter
  'compiler/bisect.ts', 'compiler/bisect-call.ts', 'compiler/bisect-reference.ts', 'compiler/bisect-format.ts',
]);

type Layer = 'ir' | 'compiler' | 'backends' | 'runtime' | 'top';

function layerOf(file: string): Layer {
  const top = file.split('/')[0];
  if (top === 'ir' || top === 'backends' || top === 'runtime') return top;
  // Every command of the command line (compiler/cli*.ts) is wiring too.
  if (top === 'compiler' && !wiring.has(file) && !/^compiler\/cli(-[a-z-]+)?\.ts$/.test(file)) return 'compiler';
  return 'top';
}

/** What each layer may import, besides itself. */
const allowed: Record<Layer, readonly Layer[]> = {
  ir: ['ir'],
  compiler: ['ir', 'compiler'],
  backends: ['ir', 'backends'],
  runtime: ['ir', 'backends', 'runtime'],
  top: ['ir', 'compiler', 'backends', 'runtime', 'top'],
};

function sources(dir: string): string[] {
  return fs.readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) return sources(rel);
    return e.name.endsWith('.ts') ? [rel] : [];
  });
}

/** Relative imports of a file (static and dynamic), with their lines. */
function importsOf(file: string): { target: string; line: number }[] {
  const text = fs.readFileSync(path.join(root, file), 'utf8');
  const out: { target: string; line: number }[] = [];
  text.split('\n').forEach((line, i) => {
    for (const m of line.matchAll(/(?:from\s+|import\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g)) {
      out.push({ target: path.posix.normalize(path.posix.join(path.posix.dirname(file), m[1])), line: i + 1 });
    }
  });
  return out;
}

const files = ['ir', 'compiler', 'backends', 'runtime', 'examples'].flatMap(sources);

test('the layer table knows every wiring file', () => {
  for (const f of wiring) assert.ok(fs.existsSync(path.join(root, f)), `${f} is listed as wiring but does not exist`);
  assert.ok(files.length > 50, `found ${files.length} source files`);
});

test('no import runs upward', () => {
  const violations: string[] = [];
  for (const file of files) {
    const from = layerOf(file);
    for (const { target, line } of importsOf(file)) {
      const to = layerOf(target);
      if (!allowed[from].includes(to)) violations.push(`${file}:${line} (${from}) imports ${target} (${to})`);
    }
  }
  assert.equal(violations, [], violations.join('\n'));
});

test('an upward import is caught (the check itself can fail)', () => {
  assert.not.ok(allowed.runtime.includes(layerOf('compiler/compile-module.ts')));
  assert.not.ok(allowed.backends.includes(layerOf('runtime/session.ts')));
  assert.not.ok(allowed.ir.includes(layerOf('backends/lower.ts')));
  assert.not.ok(allowed.compiler.includes(layerOf('examples/llama.ts')));
});

test.run();
