// The hand-written kernel that ends every decode step on the device: choose the next token (the graph's argmax,
// or a temperature / top-p sample of the logits row), append it to the history, feed it back as the next step's
// input and advance the position. The host never has to look at a token for the loop to go on.

import { WORKGROUP_SIZE } from './render-wgsl.ts';

export const nextTokenWgsl = /* wgsl */ `
// Chooses the next token on the device and feeds it back (tsfuse runtime kernel, not generated).
struct Params { row: i32, vocab: i32, advance: i32, temperature: f32, top_p: f32, seed: u32, pad0: i32, pad1: i32 }
@group(0) @binding(0) var<storage, read> argmax: array<i32>;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> tokens: array<i32>;
@group(0) @binding(3) var<storage, read_write> pos: array<i32>;
@group(0) @binding(4) var<storage, read_write> history: array<i32>;  // [0] = count, then the tokens
@group(0) @binding(5) var<uniform> params: Params;

const WG: i32 = ${WORKGROUP_SIZE};
var<workgroup> red: array<f32, ${WORKGROUP_SIZE}>;
var<workgroup> chosen: i32;
var<workgroup> result: i32;
var<workgroup> target_mass: f32;
var<workgroup> before_mass: f32;

fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}

fn sum_all(x: f32, lid: i32) -> f32 {
  red[lid] = x;
  workgroupBarrier();
  for (var w: i32 = WG / 2; w > 0; w = w / 2) {
    if (lid < w) { red[lid] = red[lid] + red[lid + w]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

fn max_all(x: f32, lid: i32) -> f32 {
  red[lid] = x;
  workgroupBarrier();
  for (var w: i32 = WG / 2; w > 0; w = w / 2) {
    if (lid < w) { red[lid] = max(red[lid], red[lid + w]); }
    workgroupBarrier();
  }
  let m = red[0];
  workgroupBarrier();
  return m;
}

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(local_invocation_index) lidx: u32) {
  let lid = i32(lidx);
  let base = params.row * params.vocab;
  if (params.temperature <= 0.0) {
    if (lid == 0) { chosen = argmax[params.row]; }
  } else {
    // Probabilities relative to the largest: p = exp((l - max) / T), in (0, 1].
    var m: f32 = -3.402823e+38;
    for (var i: i32 = lid; i < params.vocab; i += WG) { m = max(m, logits[base + i]); }
    m = max_all(m, lid);
    var z: f32 = 0.0;
    for (var i: i32 = lid; i < params.vocab; i += WG) { z += exp((logits[base + i] - m) / params.temperature); }
    z = sum_all(z, lid);
    // Top-p: the largest threshold whose tokens still hold top_p of the mass, by bisection.
    var lo: f32 = 0.0;
    var hi: f32 = 1.0;
    for (var it: i32 = 0; it < 24; it++) {
      let mid = 0.5 * (lo + hi);
      var s: f32 = 0.0;
      for (var i: i32 = lid; i < params.vocab; i += WG) {
        let p = exp((logits[base + i] - m) / params.temperature);
        if (p >= mid) { s += p; }
      }
      s = sum_all(s, lid);
      if (s >= params.top_p * z) { lo = mid; } else { hi = mid; }
    }
    // Inverse CDF over the kept tokens: each thread owns a contiguous chunk of the vocabulary.
    let chunk = (params.vocab + WG - 1) / WG;
    let start = lid * chunk;
    let end = min(start + chunk, params.vocab);
    var mine: f32 = 0.0;
    for (var i: i32 = start; i < end; i++) {
      let p = exp((logits[base + i] - m) / params.temperature);
      if (p >= lo) { mine += p; }
    }
    red[lid] = mine;
    workgroupBarrier();
    if (lid == 0) {
      var total: f32 = 0.0;
      for (var t: i32 = 0; t < WG; t++) { total += red[t]; }
      let u = f32(pcg(params.seed ^ pcg(u32(pos[0]))) >> 8u) / 16777216.0 * total;
      var before: f32 = 0.0;
      var owner: i32 = WG - 1;
      for (var t: i32 = 0; t < WG; t++) {
        if (red[t] > 0.0) { owner = t; }
        if (before + red[t] > u) { owner = t; break; }
        before += red[t];
      }
      target_mass = u;
      before_mass = before;
      chosen = owner;
    }
    workgroupBarrier();
    // The owning thread walks its chunk to the token where the running mass passes u.
    if (lid == chosen) {
      var acc: f32 = before_mass;
      var pick: i32 = -1;
      for (var i: i32 = start; i < end; i++) {
        let p = exp((logits[base + i] - m) / params.temperature);
        if (p >= lo) {
          pick = i;
          acc += p;
          if (acc > target_mass) { break; }
        }
      }
      result = pick;
    }
    workgroupBarrier();
    if (lid == 0) { chosen = result; }
  }
  workgroupBarrier();
  if (lid == 0) {
    let next = chosen;
    let n = history[0];
    history[n + 1] = next;
    history[0] = n + 1;
    tokens[0] = next;
    pos[0] = pos[0] + params.advance;
  }
}
`;
