// `tsfuse run FILE.ir`: an IR text file (dumped by trace or compile, edited by hand) compiled and run on a backend,
// so "dump, edit, run" holds. Inputs come from the command line; parameters and state from a safetensors file, or
// zero; outputs (and state tensors, with --states) are printed.

import { DType } from '../ir/dtype.ts';
import { Graph } from '../ir/graph.ts';
import { hostTensor, HostTensor } from '../ir/host-tensor.ts';
import { parseModule } from '../ir/parser.ts';
import { formatType } from '../ir/shape.ts';
import { verifyModule } from '../ir/verify.ts';
import { openDevice } from '../runtime/devices/open.ts';
import { bindSizes, runOnce } from '../runtime/executor.ts';
import { ParamStore, StoredTensor } from '../runtime/params.ts';
import { readSafetensors } from '../runtime/safetensors.ts';
import { backendOption, checkBackend, defineCommand, jsonOption, UsageError } from './cli-args.ts';
import { readTextFile } from './cli-files.ts';
import { readIrFile } from './cli-inspect.ts';
import { checkRegularFile } from '../runtime/files.ts';
import { lowerFor } from './open-session.ts';

export const runCommand = defineCommand({
  synopsis: 'FILE.ir --inputs SPEC [options]',
  about: 'Compiles one graph of an IR text file (as `tsfuse trace --dump-ir` or `compile --dump-ir` print it, edited or\n' +
    'not) and runs it once on a backend. --inputs gives every graph input, as NAME=VALUE pairs separated by ";",\n' +
    'each VALUE JSON: a number for a scalar, nested arrays whose nesting is the shape, or a flat array reshaped to the\n' +
    "declared shape: --inputs 'x=[[1,2],[3,4]]; pos=3'. A JSON object ({\"x\": [...], \"pos\": 3}) or @FILE.json works\n" +
    'too. The dtype is the one the graph declares. Parameters and state start from --weights (a safetensors file,\n' +
    'tensors by name) or at zero. Prints every output (--json: {"outputs": {NAME: {dtype, shape, data}}}).',
  options: {
    inputs: { type: 'string', value: 'SPEC', help: "the graph's inputs: 'NAME=JSON; NAME=JSON', a JSON object, or @FILE.json" },
    graph: { type: 'string', value: 'NAME', help: 'which graph of the file to run (default: the first)' },
    weights: { type: 'string', value: 'FILE', help: 'a safetensors file holding parameters (and state) by name; others are zero' },
    backend: backendOption,
    states: { type: 'boolean', default: false, help: 'print the state tensors after the run too' },
    json: jsonOption,
  },
  positionals: true,
  async run(values, positionals) {
    if (positionals.length !== 1) throw new UsageError('run takes one IR file');
    const file = positionals[0];
    const backend = checkBackend(values.backend);
    const module = parseModule(readIrFile(file), file);
    verifyModule(module);
    const g = values.graph === undefined ? module.graphs[0] : module.graphs.find((x) => x.name === values.graph);
    if (!g) throw new UsageError(`--graph ${values.graph}: no such graph in ${file} (have ${module.graphs.map((x) => x.name).join(', ')})`);
    const inputs = parseInputs(g, values.inputs ?? '');
    const sizes = bindSizes(g, inputs);

    if (values.weights !== undefined) checkRegularFile(values.weights, 'a safetensors file', (m) => new UsageError(m));
    const weights = values.weights !== undefined ? readSafetensors(values.weights) : undefined;
    const stored = new Set(weights?.tensors.map((t) => t.name) ?? []);
    const load = (name: string): StoredTensor => {
      if (stored.has(name)) return weights!.tensor(name);
      const v = g.params.find((p) => p.name === name)!;
      return zeros(v.type.dtype, v.type.shape, name);
    };
    const states = new Map<string, HostTensor>();
    for (const v of g.states) if (stored.has(v.name!)) states.set(v.name!, weights!.tensor(v.name!));

    const zeroed = g.params.map((v) => v.name!).filter((n) => !stored.has(n) && !g.derivations.has(g.params.find((p) => p.name === n)!));
    if (zeroed.length > 0) console.error(`tsfuse run: ${zeroed.length} parameter(s) not in --weights, taken as zero: ${zeroed.slice(0, 4).join(', ')}${zeroed.length > 4 ? ', …' : ''}`);
    const lowered = lowerFor(backend, { graphs: [g] });
    const device = await openDevice(backend);
    let outputs: HostTensor[];
    try {
      const program = await device.load(lowered, new ParamStore(load), { maxSizes: sizes });
      outputs = await runOnce(program, g.name, inputs, states);
    } finally {
      device.destroy();
    }

    const named: [string, HostTensor][] = outputs.map((t, i) => [g.outputNames[i] || `output${i}`, t]);
    if (values.states) for (const v of g.states) named.push([`state:${v.name}`, states.get(v.name!)!]);
    if (values.json) {
      console.log(JSON.stringify({ outputs: Object.fromEntries(named.map(([n, t]) => [n, { dtype: t.dtype, shape: t.shape, data: Array.from(t.data) }])) }));
      return;
    }
    for (const [n, t] of named) console.log(`${n}: ${formatType({ dtype: t.dtype, shape: t.shape })} = ${formatValues(t)}`);
  },
});

function zeros(dtype: DType, shape: readonly (number | string)[], name: string): HostTensor {
  if (shape.some((d) => typeof d !== 'number')) throw new UsageError(`parameter %${name} has a symbolic shape`);
  const n = (shape as number[]).reduce((a, b) => a * b, 1);
  return hostTensor(dtype, shape as number[], new Array<number>(n).fill(0));
}

/** NAME=JSON pairs separated by ";", a JSON object, or @FILE.json; every input of `g` must be given. */
export function parseInputs(g: Graph, spec: string): Record<string, HostTensor> {
  let text = spec.trim();
  if (text.startsWith('@')) {
    text = readTextFile(text.slice(1), 'a JSON file of inputs').trim();
  }
  let raw: Record<string, unknown>;
  if (text.startsWith('{')) {
    raw = parseJson(text, '--inputs') as Record<string, unknown>;
  } else {
    raw = {};
    for (const part of text.split(';').map((p) => p.trim()).filter(Boolean)) {
      const eq = part.indexOf('=');
      if (eq < 1) throw new UsageError(`--inputs: expected NAME=VALUE, got '${part}'`);
      raw[part.slice(0, eq).trim()] = parseJson(part.slice(eq + 1), `--inputs ${part.slice(0, eq).trim()}`);
    }
  }
  const known = new Set(g.inputs.map((v) => v.name!));
  for (const name of Object.keys(raw)) {
    if (!known.has(name)) throw new UsageError(`--inputs: @${g.name} has no input '${name}' (inputs: ${[...known].join(', ') || 'none'})`);
  }
  const out: Record<string, HostTensor> = {};
  for (const v of g.inputs) {
    const name = v.name!;
    if (!(name in raw)) throw new UsageError(`--inputs: no value for ${name}: ${formatType(v.type)} (give --inputs '${name}=...')`);
    out[name] = toTensor(raw[name], v.type.dtype, v.type.shape, name);
  }
  return out;
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${what}: not JSON (${(e as Error).message}): ${text.trim().slice(0, 40)}`);
  }
}

function toTensor(value: unknown, dtype: DType, declared: readonly (number | string)[], name: string): HostTensor {
  const flat: number[] = [];
  const shape: number[] = [];
  const walk = (x: unknown, depth: number): void => {
    if (Array.isArray(x)) {
      if (shape.length === depth) shape.push(x.length);
      else if (shape[depth] !== x.length) throw new UsageError(`--inputs ${name}: ragged nested arrays at depth ${depth}`);
      for (const y of x) walk(y, depth + 1);
    } else if (typeof x === 'number' || typeof x === 'boolean') {
      if (depth !== shape.length) throw new UsageError(`--inputs ${name}: ragged nested arrays`);
      flat.push(Number(x));
    } else {
      throw new UsageError(`--inputs ${name}: expected numbers or arrays of numbers, got ${JSON.stringify(x)}`);
    }
  };
  walk(value, 0);
  let final = shape;
  if (shape.length !== declared.length) {
    // A flat list (or a scalar) for a tensor whose shape is declared with numbers only: reshape it.
    const fixed = declared.every((d) => typeof d === 'number') ? (declared as number[]) : undefined;
    const n = fixed?.reduce((a, b) => a * b, 1);
    if (!fixed || shape.length > 1 || n !== flat.length) {
      throw new UsageError(`--inputs ${name}: ${flat.length} value(s) in shape [${shape.join(',')}] do not fit ${dtype}[${declared.join(',')}]`);
    }
    final = fixed;
  }
  return hostTensor(dtype, final, flat);
}

function formatValues(t: HostTensor): string {
  const fmt = (x: number) => (t.dtype === DType.F32 || t.dtype === DType.F16 || t.dtype === DType.BF16 ? String(Number(x.toPrecision(6))) : String(x));
  const nest = (offset: number, axis: number): string => {
    if (axis === t.shape.length) return fmt(t.data[offset]);
    const stride = t.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    return `[${Array.from({ length: t.shape[axis] }, (_, i) => nest(offset + i * stride, axis + 1)).join(', ')}]`;
  };
  return nest(0, 0);
}
