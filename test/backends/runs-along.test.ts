// runsAlong (backends/kernel-ir.ts) lets a GEMM copy its left operand 16 bytes at a time: where it says an index
// reads runs of 4 along k from multiples of 4, every run must really be 4 consecutive, aligned elements. Checked by
// evaluating random reshape-like index expressions (sums of k, k % d, (k / d) % e, (k / d) · c, m · c, S-scaled
// terms) at every run of a range; it must also say yes to the layouts the models have.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { add, evalSize, idiv, imod, int, ivar, KExpr, mul, runsAlong } from '../../backends/kernel-ir.ts';
import { Rng } from './rng.ts';

const [k, m, S] = [ivar('k'), ivar('m'), ivar('S')];

/** Whether e(k0 + j) = e(k0) + j and e(k0) ≡ 0 (mod 4) at every run k0 = 0, 4, … below 1,024, for a few m and S. */
function readsRuns(e: KExpr): boolean {
  for (const s of [5, 8]) for (let r = 0; r < 3; r++) for (let k0 = 0; k0 < 1024; k0 += 4) {
    const at = (kk: number) => evalSize(e, { k: kk, m: r, S: s });
    if (at(k0) % 4 !== 0) return false;
    for (let j = 1; j < 4; j++) if (at(k0 + j) !== at(k0) + j) return false;
  }
  return true;
}

test('heads side by side, and a row: runs of 4', () => {
  // The output projection's read of attention's [heads, S, 64] output as [S, heads · 64].
  const heads = add(add(add(imod(k, int(64)), mul(m, int(64))), mul(imod(idiv(k, int(64)), int(4)), mul(int(64), S))), mul(idiv(k, int(256)), mul(int(256), S)));
  assert.ok(runsAlong(heads, 'k', 4));
  assert.ok(readsRuns(heads));
  assert.ok(runsAlong(add(k, mul(m, int(2048))), 'k', 4));
  assert.not.ok(runsAlong(add(k, mul(m, int(2050))), 'k', 4), 'rows not 16-byte aligned');
  assert.not.ok(runsAlong(add(imod(k, int(2)), mul(idiv(k, int(2)), mul(int(2), S))), 'k', 4), 'heads of 2');
});

test('wherever runsAlong says yes, the index reads aligned runs of 4 (random index expressions)', () => {
  const rng = new Rng(Number(process.env.RUNS_SEED ?? 7));
  const pick = <T>(xs: readonly T[]): T => rng.pick(xs);
  const terms: (() => KExpr)[] = [
    () => k,
    () => imod(k, int(pick([2, 4, 6, 8, 12, 32, 64]))),
    () => mul(idiv(k, int(pick([2, 4, 6, 8, 32, 64]))), int(pick([1, 3, 4, 64]))),
    () => mul(imod(idiv(k, int(pick([4, 6, 32]))), int(pick([2, 4]))), mul(int(pick([2, 32])), S)),
    () => mul(m, int(pick([3, 4, 64, 66]))),
    () => mul(k, int(pick([1, 2]))),
  ];
  let yes = 0;
  for (let t = 0; t < 1000; t++) {
    const n = 1 + Math.floor(rng.next() * 3);
    let e = pick(terms)();
    for (let i = 0; i < n; i++) e = add(e, pick(terms)());
    if (!runsAlong(e, 'k', 4)) continue;
    yes++;
    assert.ok(readsRuns(e), `runsAlong says runs of 4 for ${JSON.stringify(e)}`);
  }
  assert.ok(yes >= 40, `only ${yes} of 1,000 random indices read runs: the generator tests little`);
});

test.run();
