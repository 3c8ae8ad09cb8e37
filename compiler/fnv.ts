// FNV-1a, 32 bits: a short, stable name for a sequence (constant tables' parameter names, the benchmark's token
// fingerprint). Not for anything an adversary chooses.

/** FNV-1a over `units` (each XORed in whole) from offset basis `basis`, as 8 hex digits. */
export function fnv1a(units: Iterable<number>, basis = 0x811c9dc5): string {
  let h = basis;
  for (const u of units) h = Math.imul(h ^ u, 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

/** A string's UTF-16 code units, as fnv1a takes them. */
export function* codeUnits(s: string): Generator<number> {
  for (let i = 0; i < s.length; i++) yield s.charCodeAt(i);
}
