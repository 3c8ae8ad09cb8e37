// A bisect report as text: the verdict first, then the culprit kernel with what it read, what it wrote, its worst
// element, the node to look at first, the nodes it fused with their model lines, and where its source went.

import type { BisectReport, FusedNode, KernelReport, ValueCheck } from './bisect.ts';
import type { PassReport, ResultCheck } from './bisect-reference.ts';

const err = (x: number) => (x === 0 ? '0' : Number.isFinite(x) ? x.toExponential(2).replace(/\.?0+e/, 'e') : String(x));
const num = (x: number) => (Number.isInteger(x) ? String(x) : Number.isFinite(x) ? x.toPrecision(6) : String(x));
function ordinal(n: number): string {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  return `${n}${teen ? 'th' : ['th', 'st', 'nd', 'rd'][n % 10] ?? 'th'}`;
}

export function formatBisectReport(r: BisectReport): string {
  const against = r.against === 'reference' ? 'the reference interpreter' : r.against;
  const sizes = Object.entries(r.sizes).map(([k, v]) => `${k}=${v}`).join(', ');
  const what = [r.step, sizes].filter(Boolean).join(', ');
  const device = r.device.startsWith(r.backend) ? r.device : `${r.backend} (${r.device})`;
  const lines = [`bisect @${r.graph}${what ? ` (${what})` : ''} on ${device} against ${against}, tolerance ${err(r.tolerance)}`];
  const closest = r.closest ? `; largest relative error ${err(r.closest.relErr)}, ${r.closest.value} ${r.closest.type}` : '';
  if (!r.culprit) {
    lines.push(`every kernel agrees: ${r.kernels} kernel${r.kernels === 1 ? '' : 's'}, ${r.valuesChecked} values compared${closest}`);
    if (r.passes) lines.push(...formatPasses(r.passes));
    return lines.join('\n') + '\n';
  }
  const c = r.culprit;
  lines.push(c.index === 0 ? 'the first kernel to run differs'
    : `the ${c.index} kernel${c.index > 1 ? 's' : ''} before it agree (${r.valuesChecked - c.inputs.length - c.outputs.length} values compared${closest})`);
  lines.push(...formatKernel(c, r));
  return lines.join('\n') + '\n';
}

function formatKernel(c: KernelReport, r: BisectReport): string[] {
  const out = [`kernel ${c.kernel} (${c.kind}), the ${ordinal(c.index + 1)} of ${r.kernels} to run, differs:`];
  const other = r.against === 'reference' ? 'reference' : r.against;
  const row = (label: string, checks: readonly ValueCheck[]) => checks.forEach((v, i) => {
    const where = v.buffer ? ` (${v.buffer})` : '';
    const verdict = v.agrees ? '' : `  > ${err(v.tolerance)}, ${v.mismatched} of ${v.elements} elements off`;
    out.push(`  ${(i === 0 ? label : '').padEnd(9)}${v.value} ${v.type}${where}: relative error ${err(v.relErr)}${verdict}`);
  });
  if (c.inputs.length === 0) out.push('  reads    weights only');
  row('reads', c.inputs);
  out.push(c.inputsAgree
    ? '           every value it reads agrees: the difference starts in this kernel'
    : '           a value it reads differs although the kernel that wrote it agreed: its buffer changed in between');
  row('writes', c.outputs);
  const bad = c.outputs.find((v) => !v.agrees)!;
  if (bad.worst) {
    out.push(`  worst    ${bad.value}[${bad.worst.index.join(',')}] (element ${bad.worst.flat}): ${num(bad.worst.got)} on ${r.backend}, ${num(bad.worst.want)} on ${other}`);
  }
  const s = c.suspect;
  const why = s.found === 'inside' ? 'the first value inside the kernel that differs' : 'the first value it writes that differs';
  out.push(`  suspect  ${s.text}${s.loc ? `   # ${s.loc}` : ''}`);
  out.push(`           ${why}: relative error ${err(s.check.relErr)}`);
  if (c.inside && !c.inside.reproduced) {
    const some = c.inside.checks.length > 0 ? 'some values inside could not be compared' : 'no value inside could be compared';
    const why = c.inside.error ?? 'compiled with them as extra outputs, the kernel agrees (extra stores change how it runs)';
    out.push(`           (--inside: ${some}: ${why})`);
  }
  const insideBy = new Map((c.inside?.checks ?? []).map((v) => [v.value, v]));
  const writeBy = new Map(c.outputs.map((v) => [v.value, v]));
  const all = (c.inside?.checks.length ?? 0) > 0;
  out.push(`  fuses (${c.nodes.length} nodes${all ? '; relative error of each compared' : ''}; > differs):`);
  out.push(...c.nodes.map((n) => nodeLine(n, insideBy.get(n.value) ?? writeBy.get(n.value), all)));
  for (const src of c.sources) out.push(`  source   ${src.file}${c.sources.length > 1 ? ` (${src.backend})` : ''}`);
  return out;
}

function nodeLine(n: FusedNode, check: ValueCheck | undefined, showAll: boolean): string {
  const mark = check && !check.agrees ? '  > ' : '    ';
  const text = `${mark}${n.text}`;
  const error = check && (showAll || !check.agrees) ? `  [${err(check.relErr)}]` : '';
  const loc = n.loc ? `# ${n.loc}` : '';
  return loc || error ? `${text.padEnd(Math.max(76, text.length + 2))}${loc}${error}` : text;
}

function formatPasses(p: PassReport): string[] {
  const results = (checks: readonly ResultCheck[]) => checks.map((c) => `${c.name} ${err(c.relErr)}`).join(', ');
  if (p.agrees) return [`the compiled graph agrees with the traced graph (${results(p.checks)})`];
  const out = ['the compiled graph differs from the traced graph, on the interpreter:'];
  for (const c of p.checks.filter((c) => !c.agrees)) out.push(`  ${c.name} ${c.type}: relative error ${err(c.relErr)} > ${err(c.tolerance)}`);
  if (!p.pass) {
    out.push('  running the passes again gives a graph that agrees: the compiled graph did not come from these passes');
    return out;
  }
  out.push(`  the first pass after which it differs: ${p.pass} (${p.result!.name}: relative error ${err(p.result!.relErr)})`);
  if (p.suspect) out.push(`  suspect  ${p.suspect.text}${p.suspect.loc ? `   # ${p.suspect.loc}` : ''}`);
  out.push(`  (tsfuse compile --dump-ir=after:${p.pass} shows the graph that pass made)`);
  return out;
}
