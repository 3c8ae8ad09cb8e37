// The compiled artifact of `tsfuse compile model.ts --out FILE`: a module, written with ts-morph, holding the launch
// plan for one backend (inputs, params, state, outputs, each kernel's buffers and memory-plan slots) with the
// kernels' source (JavaScript, WGSL or CUDA C), and a typed run(inputs, params) that calls tsfuse's runtime only.
// It imports `tsfuse/runtime/artifact` from the installed package, so it can be moved anywhere tsfuse resolves.
// FILE.ts (or .mts) is TypeScript; FILE.js (or .mjs) is JavaScript, with its declarations beside it (FILE.d.ts).

import fs from 'node:fs';
import path from 'node:path';
import { CodeBlockWriter, IndentationText, Project, QuoteKind, ts } from 'ts-morph';
import { renderJs } from '../backends/cpu/render-js.ts';
import { CUDA_BLOCK, renderCudaModule } from '../backends/cuda/render-cuda.ts';
import { KernelIR } from '../backends/kernel-ir.ts';
import { renderWgsl } from '../backends/wgsl/render-wgsl.ts';
import { formatType } from '../ir/shape.ts';
import type { ArtifactBuffer, ArtifactPlan } from '../runtime/artifact.ts';
import { CompiledGraph } from './compile-module.ts';

export type ArtifactBackend = ArtifactPlan['backend'];

/** What the artifact's module imports: the runtime, from the tsfuse package. */
const artifactRuntime = 'tsfuse/runtime/artifact';

/** The plan runtime/artifact.ts runs, from a compiled graph, with the kernels rendered for `backend`. */
export function artifactPlan(cg: CompiledGraph, backend: ArtifactBackend): ArtifactPlan {
  const g = cg.graph;
  const signature = {
    name: g.name,
    inputs: g.inputs.map((v) => ({ name: v.name!, dtype: v.type.dtype, shape: [...v.type.shape] })),
    params: g.params.map((v) => {
      const d = g.derivations.get(v);
      const base = { name: v.name!, dtype: v.type.dtype, shape: [...v.type.shape] };
      return d ? { ...base, derived: { op: d.op, inputs: d.inputs.map((i) => i.name!), attrs: d.attrs } } : base;
    }),
    states: g.states.map((v) => ({ name: v.name!, dtype: v.type.dtype, shape: [...v.type.shape] })),
    outputs: g.outputs.map((v) => ({ dtype: v.type.dtype, shape: [...v.type.shape] })),
  };
  const buffers = (k: KernelIR): ArtifactBuffer[] =>
    k.buffers.map((b) => ({ binding: b.binding, dtype: b.dtype, elems: b.elems, written: b.written }));
  switch (backend) {
    case 'cpu':
      return { backend, ...signature, kernels: cg.kernels.map((k) => ({ name: k.name, buffers: buffers(k), source: renderJs(k) })) };
    case 'webgpu': {
      // Without subgroups, with every buffer one binding, and each kernel one dispatch: the shaders then run on any
      // adapter, from a runtime of a few hundred lines.
      const shaders: string[] = [];
      const kernels = cg.kernels.map((k) => {
        const { code, bindings, rows } = renderWgsl(k, { keyChunks: false });
        let shader = shaders.indexOf(code);
        if (shader < 0) shader = shaders.push(code) - 1;
        return { name: k.name, buffers: buffers(k), rows, sizes: [...k.sizes], shader, bindings };
      });
      return { backend, ...signature, shaders, kernels };
    }
    case 'cuda': {
      const { source, functions } = renderCudaModule(cg.kernels, `${g.name}_`);
      const kernels = cg.kernels.map((k, i) => ({
        name: k.name, buffers: buffers(k), rows: functions[i].rows, sizes: [...k.sizes],
        function: functions[i].name, sharedBytes: functions[i].dynamicSharedBytes,
        ...(functions[i].clusterBlocks ? { clusterBlocks: functions[i].clusterBlocks } : {}),
        ...(functions[i].splitScratch ? { depthSplit: functions[i].splitScratch } : {}),
      }));
      return { backend, ...signature, threads: CUDA_BLOCK, source, kernels };
    }
    default: return backend satisfies never;
  }
}

export interface ArtifactSource {
  /** Where the module will be written: .ts or .mts for TypeScript, .js or .mjs for JavaScript with declarations. */
  readonly outFile: string;
  /** What it was compiled from, for its header: "examples/mlp.ts, entry mlp". */
  readonly from: string;
  /** The entry returned one tensor: run returns one too. */
  readonly single: boolean;
  readonly backend: ArtifactBackend;
}

/** The plan type each backend's artifact declares. */
const planType: Record<ArtifactBackend, string> = { cpu: 'CpuArtifactPlan', webgpu: 'WebGpuArtifactPlan', cuda: 'CudaArtifactPlan' };
const deviceName: Record<ArtifactBackend, string> = { cpu: 'the host', webgpu: 'a WebGPU device', cuda: 'the CUDA device' };

/** The artifact's TypeScript text. */
function artifactModule(cg: CompiledGraph, src: ArtifactSource): string {
  return buildSource(newProject(), 'artifact.ts', cg, src).getFullText();
}

/** The files of the artifact: the module, and for JavaScript its declarations. */
export function artifactFiles(cg: CompiledGraph, src: ArtifactSource): { file: string; text: string }[] {
  const ext = path.extname(src.outFile);
  if (ext === '.ts' || ext === '.mts') return [{ file: src.outFile, text: artifactModule(cg, src) }];
  if (ext !== '.js' && ext !== '.mjs') throw new Error(`${src.outFile}: an artifact is a .ts, .mts, .js or .mjs module`);
  const project = newProject();
  const base = path.basename(src.outFile, ext);
  buildSource(project, `/${base}${ext === '.mjs' ? '.mts' : '.ts'}`, cg, src);
  // Emitting needs no types: the runtime's import is left unresolved here and resolves where the module runs.
  const emitted = project.emitToMemory().getFiles();
  const dir = path.dirname(src.outFile);
  return emitted.map((f) => ({ file: path.join(dir, path.basename(f.filePath)), text: f.text }));
}

/** Writes the artifact's files (creating the folder); returns their paths. */
export function writeArtifact(cg: CompiledGraph, src: ArtifactSource): string[] {
  const files = artifactFiles(cg, src);
  fs.mkdirSync(path.dirname(path.resolve(src.outFile)), { recursive: true });
  for (const f of files) fs.writeFileSync(f.file, f.text);
  return files.map((f) => f.file);
}

function newProject(): Project {
  return new Project({
    useInMemoryFileSystem: true,
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ES2022, declaration: true, strict: true, noResolve: true },
    manipulationSettings: { indentationText: IndentationText.TwoSpaces, quoteKind: QuoteKind.Single },
  });
}

function buildSource(project: Project, name: string, cg: CompiledGraph, src: ArtifactSource) {
  const plan = artifactPlan(cg, src.backend);
  const gpu = src.backend !== 'cpu';
  const sf = project.createSourceFile(name);
  sf.addImportDeclaration({
    moduleSpecifier: artifactRuntime,
    namedImports: [
      'runArtifact', ...(gpu ? ['releaseArtifact'] : []),
      { name: planType[src.backend], isTypeOnly: true }, { name: 'HostTensor', isTypeOnly: true },
    ],
  });
  const tensorsInterface = (iname: string, doc: string, list: readonly { name: string; dtype: string; shape: readonly (number | string)[] }[]) =>
    sf.addInterface({
      name: iname, isExported: true, docs: [doc],
      properties: list.map((t) => ({
        name: /^[A-Za-z_$][\w$]*$/.test(t.name) ? t.name : `'${t.name}'`,
        type: 'HostTensor', isReadonly: true, docs: [formatType({ dtype: t.dtype as never, shape: t.shape })],
      })),
    });
  tensorsInterface('Inputs', `Inputs of @${plan.name}.`, plan.inputs);
  tensorsInterface('Params', `Parameters (weights) of @${plan.name}.`, plan.params.filter((p) => !p.derived));
  const outputs = plan.outputs.map((o) => formatType({ dtype: o.dtype as never, shape: o.shape }));
  sf.addTypeAlias({
    name: 'Outputs', isExported: true, docs: [`Outputs of @${plan.name}: ${outputs.join(', ')}.`],
    type: src.single ? 'HostTensor' : `[${outputs.map(() => 'HostTensor').join(', ')}]`,
  });
  sf.addStatements((w) => {
    w.writeLine('/** The launch plan: signature, kernels in launch order, each kernel\'s buffers (memory-plan slots as temps) and source. */');
    w.write(`export const plan: ${planType[src.backend]} = `);
    writeValue(w, plan);
    w.write(';');
  });
  const states = plan.states.length > 0;
  const result = src.single ? 'outs[0]' : 'outs as Outputs';
  sf.addFunction({
    name: 'run',
    isExported: true,
    isAsync: gpu,
    docs: [`Runs @${plan.name} on ${deviceName[src.backend]}.` +
      (states ? ` \`states\` holds its state tensors (${plan.states.map((s) => s.name).join(', ')}) across calls.` : '') +
      (gpu ? ' The device opens at the first call; weights stay on it until release(), uploaded again when other tensors are passed.' : '')],
    parameters: [
      { name: 'inputs', type: 'Inputs' },
      { name: 'params', type: 'Params' },
      ...(states ? [{ name: 'states', type: 'Map<string, HostTensor>', initializer: 'new Map()' }] : []),
    ],
    returnType: gpu ? 'Promise<Outputs>' : 'Outputs',
    statements: [
      `const outs = ${gpu ? 'await ' : ''}runArtifact(plan, { ...inputs }, { ...params }${states ? ', states' : ''});`,
      `return ${result};`,
    ],
  });
  if (gpu) {
    sf.addFunction({
      name: 'release', isExported: true, returnType: 'Promise<void>',
      docs: ['Frees what run() holds on the device and closes it (a later run opens it again).'],
      statements: ['return releaseArtifact(plan);'],
    });
  }
  const counts = cg.kernels.map((k) => `${k.name}: ${k.fused.length} nodes`).join(', ');
  sf.insertText(0, `// Compiled by tsfuse from ${src.from}, for ${src.backend}: ${plan.kernels.length} kernel(s) (${counts}).\n` +
    '// Generated code: run() executes the fused kernels below without tracing or compiling again.\n\n');
  return sf;
}

/**
 * A value as a readable literal: objects and lists that hold lists of objects or kernel sources are laid out one
 * entry per line, everything else is JSON on one line (a tensor, a buffer), and multi-line strings (kernel
 * sources) are template literals written as they are, so the generated code reads as code.
 */
function writeValue(w: CodeBlockWriter, value: unknown): void {
  if (isMultiline(value)) {
    // Escaped for a template literal; the writer leaves a literal's lines as they are.
    w.write('`').write(value.replace(/\\/g, '\\\\').replace(/`/g, '\\`').replace(/\$\{/g, '\\${')).write('`');
    return;
  }
  if (!laidOut(value)) {
    w.write(JSON.stringify(value));
    return;
  }
  const entries = Array.isArray(value) ? value.map((v) => ['', v] as const) : Object.entries(value as object);
  w.write(Array.isArray(value) ? '[' : '{').newLine();
  w.indent(() => {
    for (const [key, item] of entries) {
      if (key) w.write(`${/^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key)}: `);
      writeValue(w, item);
      w.write(',').newLine();
    }
  });
  w.write(Array.isArray(value) ? ']' : '}');
}

const isMultiline = (v: unknown): v is string => typeof v === 'string' && v.includes('\n');

function laidOut(value: unknown): boolean {
  if (Array.isArray(value)) return value.some((v) => (typeof v === 'object' && v !== null) || isMultiline(v));
  if (typeof value === 'object' && value !== null) return Object.values(value).some((v) => (Array.isArray(v) && laidOut(v)) || isMultiline(v));
  return false;
}
