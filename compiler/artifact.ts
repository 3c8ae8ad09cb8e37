// The compiled artifact of `tsfuse compile model.ts --out FILE`: a standalone TypeScript module, written with
// ts-morph, holding the launch plan (inputs, params, state, outputs, each kernel's buffers and memory-plan slots)
// and the rendered JavaScript kernels, with a typed run(inputs, params) that calls tsfuse's runtime only.

import path from 'node:path';
import { CodeBlockWriter, IndentationText, Project, QuoteKind, VariableDeclarationKind } from 'ts-morph';
import { renderJs } from '../backends/cpu/render-js.ts';
import { formatType } from '../ir/shape.ts';
import type { ArtifactPlan } from '../runtime/artifact.ts';
import { CompiledGraph } from './compile-module.ts';

/** The plan runtime/artifact.ts runs, from a compiled graph. */
export function artifactPlan(cg: CompiledGraph): ArtifactPlan {
  const g = cg.graph;
  return {
    name: g.name,
    inputs: g.inputs.map((v) => ({ name: v.name!, dtype: v.type.dtype, shape: [...v.type.shape] })),
    params: g.params.map((v) => {
      const d = g.derivations.get(v);
      const base = { name: v.name!, dtype: v.type.dtype, shape: [...v.type.shape] };
      return d ? { ...base, derived: { op: d.op, inputs: d.inputs.map((i) => i.name!), attrs: d.attrs } } : base;
    }),
    states: g.states.map((v) => ({ name: v.name!, dtype: v.type.dtype, shape: [...v.type.shape] })),
    outputs: g.outputs.map((v) => ({ dtype: v.type.dtype, shape: [...v.type.shape] })),
    kernels: cg.kernels.map((k) => ({
      name: k.name,
      source: renderJs(k),
      buffers: k.buffers.map((b) => ({ binding: b.binding, dtype: b.dtype, elems: b.elems })),
    })),
  };
}

export interface ArtifactSource {
  /** Where the module will be written (imports are relative to it). */
  readonly outFile: string;
  /** What it was compiled from, for its header: "examples/mlp.ts, entry mlp". */
  readonly from: string;
  /** The entry returned one tensor: run returns one too. */
  readonly single: boolean;
  /** The import of runtime/artifact.ts; default: a relative path from outFile to this checkout's. */
  readonly runtimeImport?: string;
}

const runtimeFile = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../runtime/artifact.ts');

/** The artifact's TypeScript text. */
export function artifactModule(cg: CompiledGraph, src: ArtifactSource): string {
  const plan = artifactPlan(cg);
  let spec = src.runtimeImport ?? path.relative(path.dirname(path.resolve(src.outFile)), runtimeFile).split(path.sep).join('/');
  if (!spec.startsWith('.') && !src.runtimeImport) spec = `./${spec}`;
  const project = new Project({
    useInMemoryFileSystem: true,
    manipulationSettings: { indentationText: IndentationText.TwoSpaces, quoteKind: QuoteKind.Single },
  });
  const sf = project.createSourceFile('artifact.ts');
  const kernels = plan.kernels.map((k) => ` ${k.name}: ${k.source.split('\n').filter((l) => l.startsWith('//   ')).length} nodes`).join(',');
  sf.addImportDeclaration({
    moduleSpecifier: spec,
    namedImports: ['runArtifact', { name: 'ArtifactPlan', isTypeOnly: true }, { name: 'HostTensor', isTypeOnly: true }],
  });
  const tensorsInterface = (name: string, doc: string, list: readonly { name: string; dtype: string; shape: readonly (number | string)[] }[]) =>
    sf.addInterface({
      name, isExported: true, docs: [doc],
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
  sf.addVariableStatement({
    declarationKind: VariableDeclarationKind.Const,
    isExported: true,
    docs: ['The launch plan: signature, kernels in launch order, each kernel\'s buffers (memory-plan slots as temps).'],
    declarations: [{ name: 'plan', type: 'ArtifactPlan', initializer: (w) => writePlan(w, plan) }],
  });
  const states = plan.states.length > 0;
  sf.addFunction({
    name: 'run',
    isExported: true,
    docs: [states
      ? `Runs @${plan.name}. \`states\` holds its state tensors (${plan.states.map((s) => s.name).join(', ')}) across calls.`
      : `Runs @${plan.name}.`],
    parameters: [
      { name: 'inputs', type: 'Inputs' },
      { name: 'params', type: 'Params' },
      ...(states ? [{ name: 'states', type: 'Map<string, HostTensor>', initializer: 'new Map()' }] : []),
    ],
    returnType: 'Outputs',
    statements: [
      `const outs = runArtifact(plan, { ...inputs }, { ...params }${states ? ', states' : ''});`,
      src.single ? 'return outs[0];' : 'return outs as Outputs;',
    ],
  });
  sf.insertText(0, `// Compiled by tsfuse from ${src.from}: ${plan.kernels.length} kernel(s) (${kernels.trim()}).\n` +
    '// Generated code: run() executes the fused kernels below without tracing or compiling again.\n\n');
  return sf.getFullText();
}

/** The plan as a readable object literal: one line per tensor and buffer, kernel sources as template literals. */
function writePlan(w: CodeBlockWriter, plan: ArtifactPlan): void {
  const { kernels, ...rest } = plan;
  w.write('{').newLine();
  for (const [key, value] of Object.entries(rest)) {
    if (!Array.isArray(value)) {
      w.writeLine(`  ${key}: ${JSON.stringify(value)},`);
      continue;
    }
    w.writeLine(`  ${key}: [`);
    for (const item of value) w.writeLine(`    ${JSON.stringify(item)},`);
    w.writeLine('  ],');
  }
  w.writeLine('  kernels: [');
  for (const k of kernels) {
    w.writeLine('    {');
    w.writeLine(`      name: ${JSON.stringify(k.name)},`);
    w.writeLine('      buffers: [');
    for (const b of k.buffers) w.writeLine(`        ${JSON.stringify(b)},`);
    w.writeLine('      ],');
    // A string, so written as it is (escaped for a template literal, not reindented).
    w.write('      source: `').write(k.source.replace(/\\/g, '\\\\').replace(/`/g, '\\`').replace(/\$\{/g, '\\${')).write('`,').newLine();
    w.writeLine('    },');
  }
  w.write('  ],').newLine().write('}');
}
