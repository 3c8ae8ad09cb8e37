// Element types of the IR, their sizes, and the predicates passes and renderers ask about.

export enum DType {
  F32 = 'f32',
  F16 = 'f16',
  BF16 = 'bf16',
  I32 = 'i32',
  U32 = 'u32',
  Bool = 'bool',
}

export const dtypeBytes: Record<DType, number> = {
  [DType.F32]: 4,
  [DType.F16]: 2,
  [DType.BF16]: 2,
  [DType.I32]: 4,
  [DType.U32]: 4,
  [DType.Bool]: 1,
};

const allDTypes = new Set<string>(Object.values(DType));

export function isDType(s: string): s is DType {
  return allDTypes.has(s);
}

export function isFloat(d: DType): boolean {
  return d === DType.F32 || d === DType.F16 || d === DType.BF16;
}

export function isInteger(d: DType): boolean {
  return d === DType.I32 || d === DType.U32;
}
