// Golden pass tests: IR text in → one pass → IR text out. Each case is a pair of files under test/golden/<pass>/:
// <case>.in.ir (parsed with parseGraph) and <case>.out.ir (what the pass must print, without source locations).
// The result is verified, must read back through the parser unchanged, and must compute what the input computes
// (both run by the reference interpreter on the same inputs), so a golden file cannot pin a wrong rewrite.
//
//   UPDATE_GOLDEN=1 npm test -- passes     rewrites every .out.ir from what the passes print now; review the diff

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { interpret } from '../../backends/reference/interpreter.ts';
import { evalRule } from '../../ir/semantics.ts';
import { defaultContext } from '../../compiler/passes/context.ts';
import { defaultPasses } from '../../compiler/passes/pipeline.ts';
import { DType, isFloat } from '../../ir/dtype.ts';
import { Graph, Value } from '../../ir/graph.ts';
import { parseGraph } from '../../ir/parser.ts';
import { printGraph } from '../../ir/printer.ts';
import { resolveShape } from '../../ir/shape.ts';
import { verifyGraph } from '../../ir/verify.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { Rng } from '../backends/rng.ts';

export const goldenRoot = fileURLToPath(new URL('../golden/', import.meta.url));
const update = process.env.UPDATE_GOLDEN === '1';

/** Names of the cases of one pass: the <case> of every <case>.in.ir, sorted. */
export function goldenCases(pass: string): string[] {
  const dir = path.join(goldenRoot, pass);
  return fs.readdirSync(dir).filter((f) => f.endsWith('.in.ir')).map((f) => f.slice(0, -'.in.ir'.length)).sort();
}

/** A line diff (longest common subsequence): '  ' kept, '- ' expected only, '+ ' actual only. */
export function lineDiff(expected: string, actual: string): string {
  const a = expected.split('\n');
  const b = actual.split('\n');
  const lcs = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  }
  const out: string[] = [];
  let [i, j] = [0, 0];
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) { out.push(`  ${a[i++]}`); j++; }
    else if (j < b.length && (i === a.length || lcs[i][j + 1] >= lcs[i + 1][j])) out.push(`+ ${b[j++]}`);
    else out.push(`- ${a[i++]}`);
  }
  return out.join('\n');
}

/** Deterministic inputs and params for a graph: floats in [0.5, 1.5) (safe for log and rsqrt), small ints. */
function environment(g: Graph, dims: ReadonlyMap<string, number>) {
  const r = new Rng(1234);
  const make = (v: Value): HostTensor => {
    const shape = resolveShape(v.type.shape, dims);
    const n = shape.reduce((a, b) => a * b, 1);
    const value = () => (isFloat(v.type.dtype) ? 0.5 + r.next() : v.type.dtype === DType.Bool ? r.int(0, 1) : r.int(0, 1));
    return hostTensor(v.type.dtype, shape, Array.from({ length: n }, value));
  };
  const inputs = Object.fromEntries(g.inputs.map((v) => [v.name!, make(v)]));
  const params = new Map<string, HostTensor>(g.params.filter((p) => !g.derivations.has(p)).map((p) => [p.name!, make(p)]));
  const initial = g.states.map((s) => [s.name!, make(s)] as const);
  const states = () => new Map(initial);
  return { inputs, params, states };
}

/** Parameters by name, computing derived ones (concatenated weights) from the others as a runtime would. */
function paramLookup(g: Graph, stored: ReadonlyMap<string, HostTensor>): (name: string) => HostTensor {
  const lookup = (name: string): HostTensor => {
    const p = g.params.find((v) => v.name === name)!;
    const d = g.derivations.get(p);
    if (!d) return stored.get(name)!;
    return evalRule(d.op)!(d.inputs.map((v) => lookup(v.name!)), d.attrs, { dtype: p.type.dtype, shape: p.type.shape as number[] });
  };
  return lookup;
}

/** Runs both graphs by the reference interpreter on the same inputs and state; outputs and new states must agree. */
function assertSameResults(before: Graph, after: Graph): void {
  const dims = new Map([['S', 3]]);
  const env = environment(before, dims);
  const run = (g: Graph) => {
    const states = env.states();
    const outs = interpret(g, { inputs: env.inputs, param: paramLookup(g, env.params), states });
    return [...outs, ...[...states.values()]];
  };
  const [want, got] = [run(before), run(after)];
  assert.is(got.length, want.length, 'as many outputs and states');
  want.forEach((w, k) => {
    assert.equal(got[k].shape, w.shape, `output ${k} shape`);
    for (let i = 0; i < w.data.length; i++) {
      const [a, b] = [got[k].data[i], w.data[i]];
      const ok = a === b || Math.abs(a - b) <= 1e-6 + 1e-5 * Math.abs(b);
      assert.ok(ok, `output ${k} element ${i}: the pass changed the value from ${b} to ${a}`);
    }
  });
}

/** Runs one pass of the default pipeline by name. */
export function runPass(name: string, g: Graph): Graph {
  const pass = defaultPasses.find((p) => p.name === name);
  if (!pass) throw new Error(`no pass named ${name}`);
  return pass.run(g, defaultContext);
}

/** One test per golden case of `pass`; `extra` adds the pass's own tests to the suite before it runs. */
export function goldenSuite(pass: string, extra?: (test: ReturnType<typeof suite>) => void): void {
  const test = suite(`${pass} (golden)`);
  for (const name of goldenCases(pass)) {
    test(name, () => {
      const inFile = path.join(goldenRoot, pass, `${name}.in.ir`);
      const outFile = path.join(goldenRoot, pass, `${name}.out.ir`);
      const input = fs.readFileSync(inFile, 'utf8');
      const result = runPass(pass, parseGraph(input, inFile));
      verifyGraph(result);
      const actual = printGraph(result, { locations: false });
      if (update) fs.writeFileSync(outFile, actual);
      const expected = fs.existsSync(outFile) ? fs.readFileSync(outFile, 'utf8') : '';
      if (actual !== expected) {
        assert.unreachable(`${pass} on ${path.relative(process.cwd(), inFile)} differs from ${path.basename(outFile)}` +
          ` (- expected, + actual; UPDATE_GOLDEN=1 rewrites it):\n${lineDiff(expected, actual)}`);
      }
      assert.is(printGraph(parseGraph(actual, outFile), { locations: false }), actual, 'the result reads back unchanged');
      assertSameResults(parseGraph(input, inFile), result);
    });
  }
  extra?.(test);
  test.run();
}
