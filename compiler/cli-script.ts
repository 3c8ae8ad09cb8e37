// `tsfuse compile model.ts`: a model script's entry traced, run through the pass pipeline, and shown (IR after any
// pass with the script's source text beside each node, the generated kernels) or written as a compiled artifact.

import fs from 'node:fs';
import path from 'node:path';
import { Module } from '../ir/graph.ts';
import { printModule } from '../ir/printer.ts';
import { artifactModule } from './artifact.ts';
import { CompileUsageError, parseDump, writeKernels } from './cli-compile.ts';
import { compileModule } from './compile-module.ts';
import { passNames } from './passes/pipeline.ts';
import { sourceTextOf, traceScript } from './script.ts';
import { displayPath } from './source-location.ts';
import { progress, showProgress } from '../runtime/progress.ts';

export interface ScriptCompileRequest {
  readonly script: string;
  readonly entry?: string;
  readonly backend: string;
  readonly dumpIr?: string;
  readonly dumpKernels?: string;
  readonly out?: string;
  readonly json: boolean;
  /** Where the artifact imports tsfuse's runtime from (default: a relative path to this checkout's). */
  readonly runtimeImport?: string;
}

export async function runScriptCompile(req: ScriptCompileRequest): Promise<void> {
  if (req.out && req.backend !== 'cpu') {
    throw new CompileUsageError(`--out writes a JavaScript (cpu) artifact; --backend ${req.backend} cannot be written`);
  }
  if (req.out) checkOut(req.out, req.script);
  const dump = parseDump(req.dumpIr, passNames());
  // Compiled tsfuse (dist/) runs without tsx: register it so that the TypeScript model script can be imported.
  if (import.meta.url.endsWith('.js')) (await import('tsx/esm/api')).register();
  const traced = await traceScript(req.script, req.entry);
  const source = sourceTextOf(traced.info);
  const print = (m: Module) => printModule(m, { source });
  const bar = progress(`compiling ${traced.entry.name}`, passNames().length, showProgress(req.json));
  const after = (pass: string, m: Module) => {
    bar.tick(pass);
    if (dump.all || dump.after === pass) process.stdout.write(`# after ${pass}\n${print(m)}\n`);
  };
  let compiled;
  try {
    compiled = compileModule({ graphs: [traced.graph] }, { after });
  } finally {
    bar.stop();
  }
  const cg = compiled.graphs[0];
  if (dump.final) process.stdout.write(print({ graphs: [cg.graph] }));
  if (req.dumpKernels) writeKernels(req.dumpKernels, req.backend, [{ name: cg.graph.name, kernels: cg.kernels }]);
  const from = `${displayPath(traced.info.file)}, entry ${traced.entry.name}`;
  if (req.out) {
    const text = artifactModule(cg, { outFile: req.out, from, single: traced.single, runtimeImport: req.runtimeImport });
    fs.mkdirSync(path.dirname(path.resolve(req.out)), { recursive: true });
    fs.writeFileSync(req.out, text);
  }
  const summary = {
    script: displayPath(traced.info.file),
    entry: traced.entry.name,
    inputs: traced.entry.inputs.map((i) => `${i.name}: ${i.dtype}[${i.shape.join(',')}]`),
    nodes: traced.graph.nodes.length,
    kernels: cg.kernels.length,
    ...(req.out ? { out: req.out } : {}),
  };
  if (req.json) console.log(JSON.stringify(summary));
  else if (!dump.final && !dump.all && !dump.after) {
    console.log(`${from}(${summary.inputs.join(', ')}): ${summary.nodes} nodes → ${summary.kernels} kernels` +
      (req.out ? `; artifact written to ${req.out}` : ''));
  }
}

/** --out names a file to write, and never the script being compiled (nor a folder). */
function checkOut(out: string, script: string): void {
  const target = path.resolve(out);
  if (target === path.resolve(script)) throw new CompileUsageError(`--out ${out} is the model script itself; choose another file`);
  if (fs.existsSync(target) && fs.statSync(target).isDirectory()) {
    throw new CompileUsageError(`--out ${out} is a folder; name a file in it, such as ${path.join(out, 'model.ts')}`);
  }
}
