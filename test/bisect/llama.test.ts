// bisect on the tiny Llama fixtures, on cpu and on webgpu (lavapipe; skipped without an adapter): clean models agree
// at the stated tolerances (prefill and a decode step some tokens in, f32 and bf16 weights); a bug planted in a
// renderer's rule, in one kernel's lowering or in a pass is named by its kernel and IR node.

import fs from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { jsDialect } from '../../backends/cpu/render-js.ts';
import { wgslDialect } from '../../backends/wgsl/dialect.ts';
import { BisectReport } from '../../compiler/bisect.ts';
import { GPU_TOLERANCE, HOST_TOLERANCE } from '../../compiler/bisect-compare.ts';
import { defaultPasses, Pass } from '../../compiler/passes/pipeline.ts';
import { keepNode, rewriteGraph } from '../../compiler/passes/rewrite.ts';
import { Graph } from '../../ir/graph.ts';
import { Op } from '../../ir/ops.ts';
import { numel } from '../../ir/shape.ts';
import { Device, DeviceKind } from '../../runtime/device.ts';
import { openDevice } from '../../runtime/devices/open.ts';
import { bisectOn, find, Fixture, llamaFixture, offset, plantInStores, sourceDir, withRule } from './plant.ts';

const cache = new Map<string, Fixture>();
const fixture = (name: string, ids: number[], decodeAt = 0) => {
  const key = `${name}:${ids}:${decodeAt}`;
  if (!cache.has(key)) cache.set(key, llamaFixture(name, ids, decodeAt));
  return cache.get(key)!;
};
const prompt = [5, 9, 13, 200, 7];

/** silu(x) printed as -silu(x). */
const flippedSilu = {
  cpu: (a: string) => `(-${a} / (1 + Math.exp(-${a})))`,
  webgpu: (a: string) => `(-${a} / (1.0 + exp(-${a})))`,
};

function agreesEverywhere(r: BisectReport, tolerance: number): void {
  assert.ok(r.agrees, `agrees (culprit: ${r.culprit?.kernel})`);
  assert.is(r.culprit, undefined);
  assert.is(r.tolerance, tolerance);
  assert.is(r.kernelsChecked, r.kernels);
  assert.ok(r.valuesChecked >= r.kernels, `${r.valuesChecked} values compared over ${r.kernels} kernels`);
  assert.ok(r.closest && r.closest.relErr < tolerance, `largest agreeing error ${r.closest?.relErr}`);
  assert.ok(r.passes?.agrees, 'the compiled graph agrees with the traced graph');
  assert.ok(r.passes!.checks.some((c) => c.name === 'logits'));
}

for (const kind of ['cpu', 'webgpu'] as const satisfies readonly DeviceKind[]) {
  const s = suite(`bisect on ${kind}: tiny Llama fixtures`);
  const tolerance = kind === 'cpu' ? HOST_TOLERANCE : GPU_TOLERANCE;
  const dialect = kind === 'cpu' ? jsDialect : wgslDialect;
  let device: Device | undefined;
  let skip = false;
  s.before(async () => {
    try {
      device = await openDevice(kind);
    } catch (e) {
      if (!/Unavailable/.test((e as Error).name)) throw e;
      skip = true;
      console.log(`  bisect on ${kind}: skipped (${(e as Error).message})`);
    }
  });
  s.after(() => device?.destroy());

  s(`tiny-llama (f32): prefill agrees at ${tolerance}`, async () => {
    if (skip) return;
    const f = fixture('tiny-llama', prompt);
    const r = await bisectOn(device!, f);
    agreesEverywhere(r, tolerance);
    assert.is(r.graph, 'prefill');
    assert.equal(r.sizes, { S: prompt.length });
  });

  s(`tiny-llama3-bf16: prefill agrees at ${tolerance} (bf16 weights, f32 compute)`, async () => {
    if (skip) return;
    agreesEverywhere(await bisectOn(device!, fixture('tiny-llama3-bf16', prompt)), tolerance);
  });

  s('tiny-llama: a decode step 3 tokens in agrees, on the state the steps before it left', async () => {
    if (skip) return;
    const f = fixture('tiny-llama', prompt, 3);
    assert.is(f.subject.inputs.pos.data[0], prompt.length + 2);
    const r = await bisectOn(device!, f);
    agreesEverywhere(r, tolerance);
    assert.is(r.graph, 'decode');
    assert.match(r.step ?? '', /decode step 3 after a prompt of 5 tokens, at position 7/);
  });

  s('a flipped sign in the renderer\'s silu: the gate/up kernel, and inside it the silu node', async () => {
    if (skip) return;
    const f = fixture('tiny-llama', prompt);
    const want = find(f.graph, (n) => n.op === Op.Silu);
    const dir = fs.mkdtempSync(`${sourceDir}/silu-`);
    const r = await withRule(dialect.unary, 'silu', flippedSilu[kind], () => bisectOn(device!, f, { inside: true, sourceDir: dir }));
    assert.not.ok(r.agrees);
    const c = r.culprit!;
    assert.is(c.kernel, want.kernel.name);
    assert.is(c.index, want.index);
    assert.is(c.kind, 'contraction');
    assert.ok(c.inputsAgree, 'its inputs agree: the kernel itself is wrong');
    assert.ok(c.inputs.length > 0);
    assert.is(r.kernelsChecked, want.index + 1);
    assert.ok(c.outputs.some((o) => !o.agrees && o.relErr > 1), 'the gate·up product changed sign');
    assert.ok(c.inside?.reproduced, 'compiled with extra outputs, it still differs');
    assert.is(c.suspect.found, 'inside');
    assert.is(c.suspect.value, want.name);
    assert.is(c.suspect.op, 'silu');
    assert.is(c.suspect.loc, want.node.loc);
    assert.match(c.suspect.loc ?? '', /^examples\/llama\.ts:\d+$/);
    // Every node before the silu agrees inside the kernel (the matmuls feeding it).
    const inside = c.inside!.checks;
    const at = inside.findIndex((v) => v.value === want.name);
    assert.ok(at > 0 && inside.slice(0, at).every((v) => v.agrees), 'the values before the silu agree');
    assert.ok(c.nodes.some((n) => n.value === want.name && n.text.includes('silu')));
    assert.is(c.sources.length, 1);
    assert.is(c.sources[0].backend, kind);
    assert.ok(c.sources[0].file.startsWith(dir));
    assert.match(fs.readFileSync(c.sources[0].file, 'utf8'), kind === 'cpu' ? /-\w+ \/ \(1 \+ Math\.exp/ : /-\w+ \/ \(1\.0 \+ exp/);
  });

  s('a dropped epilogue (the residual add of the output projection), a decode step 2 tokens in', async () => {
    if (skip) return;
    const f = fixture('tiny-llama', prompt, 2);
    const want = find(f.graph, (n, k) => n.op === Op.Add && k.attrs.kind === 'contraction' &&
      n.inputs.some((v) => v.producer?.op === Op.Matmul && k.nodes.includes(v.producer)));
    let dropped = 0;
    const compiled = plantInStores(f.compiled, 'decode', want.index, (st) => {
      const v = st.value;
      if (v.k !== 'binary' || v.op !== 'add') return st;
      dropped++;
      return { ...st, value: v.a.k === 'load' ? v.b : v.a };
    });
    assert.ok(dropped > 0, 'the kernel stores a residual sum');
    const r = await bisectOn(device!, f, { compiled, inside: true });
    const c = r.culprit!;
    assert.is(c.kernel, want.kernel.name);
    assert.ok(c.inputsAgree);
    assert.is(c.suspect.found, 'written');
    assert.is(c.suspect.value, want.name);
    assert.is(c.suspect.op, 'add');
    assert.is(c.suspect.loc, want.node.loc);
    // Compiled again (correctly) with extra outputs, the kernel agrees: the report says so rather than guess.
    assert.is(c.inside?.reproduced, false);
  });

  s('a wrong index in the KV-cache write: one row too far', async () => {
    if (skip) return;
    const f = fixture('tiny-llama', prompt);
    const want = find(f.graph, (n) => n.op === Op.UpdateSlice && n.inputs[0].name === 'cache.k.0');
    const row = numel(want.node.output.type.shape.slice(1) as number[]);
    const compiled = plantInStores(f.compiled, 'prefill', want.index, (st, b) =>
      (b.binding.kind === 'state' && b.binding.name === 'cache.k.0' ? { ...st, index: offset(st.index, row) } : st));
    const r = await bisectOn(device!, f, { compiled });
    const c = r.culprit!;
    assert.is(c.kernel, want.kernel.name);
    assert.is(c.kind, 'state-write');
    const bad = c.outputs.filter((o) => !o.agrees);
    assert.equal(bad.map((o) => o.value), [want.name]);
    assert.is(bad[0].buffer, 'state:cache.k.0');
    assert.ok(bad[0].worst!.index[0] <= prompt.length, `worst element in the rows written: ${bad[0].worst!.index}`);
    assert.is(c.suspect.loc, want.node.loc);
    assert.ok(c.inputsAgree);
  });

  if (kind === 'cpu') {
    s('a wrong rewrite in a pass: the kernels agree with the compiled graph; the pass and its node are named', async () => {
      // simplify followed by silu(x) → -silu(x): every kernel computes the compiled graph faithfully.
      const negate = (g: Graph) => rewriteGraph(g, (n, ins, out) => (n.op === Op.Silu
        ? out.emit(Op.Neg, [out.emit(Op.Silu, ins, n.attrs, n.loc)], {}, n.loc) : keepNode(n, ins, out)));
      const passes: Pass[] = defaultPasses.map((p) => (p.name === 'simplify' ? { name: p.name, run: (g, ctx) => negate(p.run(g, ctx)) } : p));
      const f = llamaFixture('tiny-llama', prompt, 0, passes);
      const traced = f.subject.module.graphs.find((g) => g.name === 'prefill')!;
      const r = await bisectOn(device!, f, { passes });
      assert.not.ok(r.agrees);
      assert.is(r.culprit, undefined, 'no kernel differs from the compiled graph');
      const p = r.passes!;
      assert.not.ok(p.agrees);
      assert.ok(p.checks.some((c) => c.name === 'logits' && !c.agrees));
      assert.is(p.pass, 'simplify');
      assert.is(p.suspect?.op, Op.Neg);
      assert.is(p.suspect?.loc, traced.nodes.find((n) => n.op === Op.Silu)!.loc);
    });
  }

  if (kind === 'webgpu') {
    s('--against cpu: a flipped WGSL rule is found where webgpu and cpu part ways', async () => {
      if (skip) return;
      const f = fixture('tiny-llama', prompt);
      const want = find(f.graph, (n) => n.op === Op.Silu);
      const cpu = await openDevice('cpu');
      const against = cpu.load(f.compiled, f.subject.params, { maxSizes: f.subject.maxSizes }) as Awaited<ReturnType<Device['load']>>;
      const r = await withRule(wgslDialect.unary, 'silu', flippedSilu.webgpu, () => bisectOn(device!, f, { against, inside: true }));
      assert.is(r.against, 'cpu');
      assert.is(r.tolerance, GPU_TOLERANCE);
      assert.is(r.culprit?.kernel, want.kernel.name);
      assert.is(r.culprit?.suspect.value, want.name);
      assert.is(r.culprit?.sources.map((x) => x.backend).join(','), 'webgpu,cpu');
    });
  }

  s.run();
}
