// The `random` op's helper function in each GPU target, printed from the one recipe in ir/random.ts (so the
// kernels compute the reference's bits): every intermediate value of the recipe becomes one local, and the
// branches become selects. JavaScript kernels call ir/random.ts itself.

import { IntArith, randomBits, RANDOM_SCALE } from '../ir/random.ts';

type Target = 'wgsl' | 'cuda';

function printer(target: Target, lines: string[]): IntArith<string> {
  let n = 0;
  const bind = (value: string) => {
    const name = `r${n++}`;
    lines.push(target === 'wgsl' ? `  let ${name}: i32 = ${value};` : `  const int ${name} = ${value};`);
    return name;
  };
  const lit = (v: number) => (v < 0 ? `(${v})` : String(v));
  const select = (cond: string, a: string, b: string) => (target === 'wgsl' ? `select(${b}, ${a}, ${cond})` : `(${cond} ? ${a} : ${b})`);
  return {
    int: lit,
    // CUDA adds in unsigned arithmetic: a select's branch not taken may wrap, which signed C++ leaves undefined.
    add: (a, b) => bind(target === 'wgsl' ? `${a} + ${b}` : `(int)((unsigned)${a} + (unsigned)${b})`),
    sub: (a, b) => bind(target === 'wgsl' ? `${a} - ${b}` : `(int)((unsigned)${a} - (unsigned)${b})`),
    mul: (a, b) => bind(`${a} * ${b}`),
    div: (a, b) => bind(`${a} / ${b}`),
    mod: (a, b) => bind(`${a} % ${b}`),
    ifNegative: (a, b, c) => bind(select(`${a} < 0`, b, c)),
    ifNotPositive: (a, b, c) => bind(select(`${a} <= 0`, b, c)),
  };
}

/** `tf_random(key, counter)`: a uniform f32 in [0, 1), the same bits as ir/random.ts's randomUniform. */
export function randomFunction(target: Target): string {
  const lines: string[] = [];
  const bits = randomBits(printer(target, lines), 'key', 'counter');
  const scale = RANDOM_SCALE.toExponential();
  if (target === 'wgsl') {
    return ['fn tf_random(key: i32, counter: i32) -> f32 {', ...lines, `  return f32(${bits}) * ${scale};`, '}', ''].join('\n');
  }
  return ['__device__ __forceinline__ float tf_random(int key, int counter) {', ...lines, `  return (float)${bits} * ${scale}f;`, '}', ''].join('\n');
}
