// The compile report: kernels per step and per layer, and the bytes each kernel reads and writes, for the fused
// graph next to the same graph run one kernel per op.

import { dtypeBytes } from '../ir/dtype.ts';
import { Graph, kernelIOs, Node, NodeGroup, Value } from '../ir/graph.ts';
import { Attrs, Op } from '../ir/ops.ts';
import { formatType } from '../ir/shape.ts';
import { valueBytes } from './passes/fuse.ts';

type KernelIO = ReturnType<typeof kernelIOs>[number];

/** A fused kernel, or one node alone whose `kind` is its op (the unfused baseline). */
type StepKernel = NodeGroup & { readonly name: string; readonly attrs: Attrs };

export interface KernelTraffic {
  readonly name: string;
  readonly kind: string;
  /** What it is in the model, as the README names Llama's kernels ("QKV projection"); else its kind. */
  readonly role: string;
  /** Which transformer layer it belongs to, or null outside the layers. */
  readonly layer: number | null;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  readonly weightBytesRead: number;
  readonly writes: string[];
}

export interface StepFigures {
  readonly kernels: number;
  readonly kernelsPerLayer: number;
  readonly kernelsOutsideLayers: number;
  /** Bytes of the parameters the step uses. */
  readonly weightBytes: number;
  /** Parameter bytes read per step (rows of a gathered table count as rows). */
  readonly weightBytesRead: number;
  /** Bytes written to memory by one kernel and read back by others (write once + every read). */
  readonly intermediateBytes: number;
  /** Largest bytes of intermediates alive at once (the memory plan's peak). */
  readonly peakIntermediateBytes: number;
  /** Values computed by elementwise ops alone and written to memory (should be 0: they ride in other kernels). */
  readonly elementwiseKernels: number;
}

export interface StepReport extends StepFigures {
  readonly unfused: StepFigures;
  readonly kernelList: KernelTraffic[];
}

const layerPattern = /(?:layers\.|cache\.[kv]\.)(\d+)\./;

/** The state a value is (or was written into), so a kernel reading an updated cache counts as reading the cache. */
function stateRoot(v: Value): Value {
  return v.producer?.op === Op.UpdateSlice ? stateRoot(v.producer.inputs[0]) : v;
}

/**
 * Transformer layer of each kernel: from the names of the parameters and state it touches ("layers.3.",
 * "cache.k.3"); a kernel touching no named value takes the layer its inputs' kernels agree on.
 */
function layersOf(kernels: readonly StepKernel[], ios: readonly KernelIO[]): (number | null)[] {
  const kernelOf = new Map<Value, number>();
  kernels.forEach((k, i) => k.nodes.forEach((n) => kernelOf.set(n.output, i)));
  const layers: (number | null)[] = [];
  ios.forEach((io) => {
    const named = [...io.reads, ...io.writes].map(stateRoot).filter((v) => v.kind === 'param' || v.kind === 'state');
    const found = new Set<number | null>();
    for (const v of named) {
      const m = layerPattern.exec(v.name + '.');
      if (m) found.add(Number(m[1]));
    }
    // Weights of no layer (embedding, final norm, LM head) put a kernel outside the layers.
    if (named.length === 0) {
      // Data flows forward through the layers: the latest layer among the inputs' kernels.
      const inherited = io.reads.map((v) => layers[kernelOf.get(v) ?? -1]).filter((l): l is number => typeof l === 'number');
      if (inherited.length) found.add(Math.max(...inherited));
    }
    layers.push(found.size === 1 ? [...found][0] : null);
  });
  return layers;
}

/** Roles of kernels whose weights name them: the projections by their weight's name (or the concatenation's). */
const projections: readonly [RegExp, string][] = [
  [/\.(q|k|v|q_k_v)_proj\./, 'QKV projection'],
  [/\.o_proj\./, 'output projection'],
  [/\.(gate|up|gate_up)_proj\./, 'gate/up projection'],
  [/\.down_proj\./, 'down projection'],
];

/**
 * What a kernel is in a Llama step, in the README's words: from the weights and state it touches, else (no weights)
 * from the kernels whose results it reads (the steps of split attention after attention, the argmax's steps after
 * the LM head) or what it computes. Anything else is named by its kind.
 */
function kernelRole(k: StepKernel, io: KernelIO, producerRoles: readonly string[]): string {
  const kind = String(k.attrs.kind ?? k.nodes[0].op);
  const touched = [...io.reads, ...io.writes].map(stateRoot);
  if (kind === 'state-write') return touched.some((v) => v.kind === 'state' && v.name!.startsWith('cache.')) ? 'KV-cache write' : 'token write';
  const writesCache = io.writes.some((v) => stateRoot(v).kind === 'state');
  if (kind === 'attention') return writesCache ? 'KV-cache write + attention' : 'attention';
  const weights = io.reads.filter((v) => v.kind === 'param').map((v) => v.name!);
  for (const [pattern, role] of projections) if (weights.some((w) => pattern.test(w))) return writesCache ? `${role} + KV-cache write` : role;
  const finalNorm = weights.some((w) => w.startsWith('model.norm.'));
  // With tied embeddings the LM head is a contraction over embed_tokens (which other kernels only gather from).
  if (weights.some((w) => w.startsWith('lm_head.')) || (kind === 'contraction' && weights.some((w) => w.startsWith('model.embed_tokens.')))) {
    return finalNorm ? 'final RMSNorm + LM head' : 'LM head';
  }
  if (finalNorm) return 'final RMSNorm';
  if (weights.some((w) => w.endsWith('layernorm.weight'))) return 'RMSNorm';
  if (producerRoles.some((r) => r.startsWith('attention'))) return 'attention (combine)';
  const ops = new Set(k.nodes.map((n) => n.op));
  if (ops.has(Op.Argmax) || producerRoles.some((r) => r.endsWith('LM head') || r === 'next-token argmax')) return kind === 'reduce' && ops.has(Op.UpdateSlice) ? 'next-token argmax + token write' : 'next-token argmax';
  if (ops.has(Op.Arange)) return 'positions';
  return kind;
}

/** Bytes of a parameter a kernel reads: whole, or only the gathered rows when every use is a gather's table. */
function paramBytesRead(p: Value, nodes: Node[], dims: ReadonlyMap<string, number>): number {
  const uses = nodes.filter((n) => n.inputs.includes(p));
  if (uses.length > 0 && uses.every((n) => n.op === Op.Gather && n.inputs[0] === p)) {
    const rowBytes = valueBytes(p, dims) / (p.type.shape[0] as number);
    return uses.reduce((s, n) => s + rowBytes * valueBytes(n.inputs[1], dims) / dtypeBytes[n.inputs[1].type.dtype], 0);
  }
  return valueBytes(p, dims);
}

/** Figures for a list of kernels (the fused graph's, or one per node for the unfused one). */
function figures(g: Graph, kernels: StepKernel[], dims: ReadonlyMap<string, number>, peak: number): { fig: StepFigures; list: KernelTraffic[] } {
  const external = new Set<Value>([...g.outputs, ...g.stateUpdates.map((u) => u.value)]);
  const readers = new Map<Value, number>();
  const ios = kernelIOs(g, kernels);
  const layers = layersOf(kernels, ios);
  /** The role of the kernel that wrote each value so far. */
  const writtenBy = new Map<Value, string>();
  const list: KernelTraffic[] = kernels.map((k, ki) => {
    const io = ios[ki];
    const role = kernelRole(k, io, io.reads.flatMap((v) => writtenBy.get(v) ?? []));
    for (const v of io.writes) writtenBy.set(v, role);
    for (const v of io.reads) readers.set(v, (readers.get(v) ?? 0) + 1);
    const params = io.reads.filter((v) => v.kind === 'param');
    const weightBytesRead = params.reduce((s, p) => s + paramBytesRead(p, k.nodes, dims), 0);
    // A state read only as the target of an in-place write costs nothing: the kernel writes a slice of it. (An
    // update the kernel only reads, recomputed where it is read, reads its target: compiler/passes/fuse.ts.)
    const inPlace = (n: Node) => n.op === Op.UpdateSlice && io.writes.includes(n.output);
    const readsValue = (v: Value) => k.nodes.some((n) => n.inputs.some((x, i) => x === v && !(inPlace(n) && i === 0)));
    const otherReads = io.reads.filter((v) => v.kind !== 'param' && readsValue(v)).reduce((s, v) => s + valueBytes(v, dims), 0);
    const written = io.writes.reduce((s, v) => s + (v.producer?.op === Op.UpdateSlice ? valueBytes(v.producer.inputs[1], dims) : valueBytes(v, dims)), 0);
    return {
      name: k.name,
      kind: String(k.attrs.kind ?? k.nodes[0].op),
      role,
      layer: layers[ki],
      bytesRead: weightBytesRead + otherReads,
      bytesWritten: written,
      weightBytesRead,
      writes: io.writes.map((v) => `${v.producer!.op} ${formatType(v.type)}`),
    };
  });
  let intermediateBytes = 0;
  let elementwiseKernels = 0;
  kernels.forEach((k, ki) => {
    for (const v of ios[ki].writes) {
      if (external.has(v) || v.producer?.op === Op.UpdateSlice) continue;
      intermediateBytes += valueBytes(v, dims) * (1 + (readers.get(v) ?? 0));
    }
    if (k.attrs.kind === 'elementwise' || (k.nodes.length === 1 && !['matmul', 'sum', 'mean', 'max', 'argmax', 'update_slice', 'gather'].includes(k.nodes[0].op))) elementwiseKernels++;
  });
  // Per layer as in a typical layer (the median), so a node or two at a layer's edge does not skew it.
  const perLayer = new Map<number, number>();
  for (const k of list) if (k.layer !== null) perLayer.set(k.layer, (perLayer.get(k.layer) ?? 0) + 1);
  const counts = [...perLayer.values()].sort((a, b) => a - b);
  const kernelsPerLayer = counts.length ? counts[Math.floor(counts.length / 2)] : 0;
  const usedParams = new Set(ios.flatMap((io) => io.reads.filter((v) => v.kind === 'param')));
  return {
    list,
    fig: {
      kernels: kernels.length,
      kernelsPerLayer,
      kernelsOutsideLayers: kernels.length - kernelsPerLayer * perLayer.size,
      weightBytes: [...usedParams].reduce((s, p) => s + valueBytes(p, dims), 0),
      weightBytesRead: list.reduce((s, k) => s + k.weightBytesRead, 0),
      intermediateBytes,
      peakIntermediateBytes: peak,
      elementwiseKernels,
    },
  };
}

/** One kernel per node (scalar constants excepted: every backend inlines them as literals). */
function unfusedKernels(g: Graph): StepKernel[] {
  return g.nodes.filter((n) => n.op !== Op.Const).map((n, i) => ({ name: `op${i}`, nodes: [n], attrs: { kind: n.op } }));
}

/** Peak bytes of intermediates alive at once, when every node's result is its own buffer. */
function unfusedPeak(g: Graph, dims: ReadonlyMap<string, number>): number {
  const last = new Map<Value, number>();
  g.nodes.forEach((n, i) => n.inputs.forEach((v) => last.set(v, i)));
  let live = 0;
  let peak = 0;
  g.nodes.forEach((n, i) => {
    if (n.op !== Op.Const && n.op !== Op.UpdateSlice) live += valueBytes(n.output, dims);
    peak = Math.max(peak, live);
    for (const v of n.inputs) if (last.get(v) === i && v.producer && v.producer.op !== Op.Const && v.producer.op !== Op.UpdateSlice) live -= valueBytes(v, dims);
  });
  return peak;
}

export function stepReport(fused: Graph, unfused: Graph, peak: number, dims: ReadonlyMap<string, number>): StepReport {
  const f = figures(fused, fused.kernels, dims, peak);
  const u = figures(unfused, unfusedKernels(unfused), dims, unfusedPeak(unfused, dims));
  return { ...f.fig, unfused: u.fig, kernelList: f.list };
}

/** Bytes in decimal units (B, kB, MB, GB), the same everywhere in the report. */
export function formatBytes(n: number): string {
  if (n < 1e3) return `${n} B`;
  const [value, unit] = n < 1e6 ? [n / 1e3, 'kB'] : n < 1e9 ? [n / 1e6, 'MB'] : [n / 1e9, 'GB'];
  return `${value.toFixed(2)} ${unit}`;
}

export function formatReportTable(name: string, r: StepReport): string {
  const row = (label: string, a: string | number, b: string | number) => `  ${label.padEnd(34)}${String(a).padStart(14)}${String(b).padStart(14)}`;
  const roleWidth = Math.max(4, ...r.kernelList.map((k) => k.role.length)) + 2;
  const kernelRow = (kernel: string, role: string, layer: string, read: string, written: string, results: string) =>
    `  ${kernel.padEnd(8)}${role.padEnd(roleWidth)}${layer.padStart(5)}${read.padStart(12)}${written.padStart(12)}  ${results}`;
  const lines = [
    `${name}`,
    row('', 'fused', 'one per op'),
    row('kernels per step', r.kernels, r.unfused.kernels),
    row('kernels per transformer layer', r.kernelsPerLayer, r.unfused.kernelsPerLayer),
    row('kernels outside the layers', r.kernelsOutsideLayers, r.unfused.kernelsOutsideLayers),
    row('weight bytes', formatBytes(r.weightBytes), formatBytes(r.unfused.weightBytes)),
    row('weight bytes read per step', formatBytes(r.weightBytesRead), formatBytes(r.unfused.weightBytesRead)),
    row('intermediate bytes (write + reads)', formatBytes(r.intermediateBytes), formatBytes(r.unfused.intermediateBytes)),
    row('peak intermediate bytes', formatBytes(r.peakIntermediateBytes), formatBytes(r.unfused.peakIntermediateBytes)),
    row('elementwise-only kernels', r.elementwiseKernels, r.unfused.elementwiseKernels),
    '',
    kernelRow('kernel', 'role', 'layer', 'reads', 'writes', 'results (the values it stores)'),
  ];
  for (const k of r.kernelList) {
    lines.push(kernelRow(k.name, k.role, String(k.layer ?? '-'), formatBytes(k.bytesRead), formatBytes(k.bytesWritten), k.writes.join(', ')));
  }
  return lines.join('\n');
}
