// `tsfuse compile model.ts`: a model script's entry traced, run through the pass pipeline, and shown (IR after any
// pass with the script's source text beside each node, the generated kernels) or written as a compiled artifact.

import { Module } from '../ir/graph.ts';
import { printModule } from '../ir/printer.ts';
import { ArtifactBackend, writeArtifact } from './artifact.ts';
import { parseDump, writeKernels } from './cli-compile.ts';
import { writingFor } from './cli-files.ts';
import { compileModule } from './compile-module.ts';
import { passNames } from './passes/pipeline.ts';
import { sourceTextOf, traceScript } from './script.ts';
import type { ScriptLimits } from './script-limits.ts';
import { displayPath } from './source-location.ts';
import { progress, showProgress } from '../runtime/progress.ts';

export interface ScriptCompileRequest {
  readonly script: string;
  readonly entry?: string;
  readonly backend: string;
  readonly dumpIr?: string;
  readonly dumpKernels?: string;
  /** Where to write the artifact (checked by the caller: a module's file name, not the script, a backend with kernels). */
  readonly out?: string;
  readonly json: boolean;
  /** Bounds on loading the script and tracing its entry. */
  readonly limits?: ScriptLimits;
}

export async function runScriptCompile(req: ScriptCompileRequest): Promise<void> {
  const dump = parseDump(req.dumpIr, passNames());
  // Compiled tsfuse (dist/) runs without tsx: register it so that the TypeScript model script can be imported.
  if (import.meta.url.endsWith('.js')) (await import('tsx/esm/api')).register();
  const traced = await traceScript(req.script, req.entry, req.limits);
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
    const src = { outFile: req.out, from, single: traced.single, backend: req.backend as ArtifactBackend };
    writingFor('--out', req.out, 'the artifact', () => writeArtifact(cg, src));
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
