// examples/bench-torch.py, the lean PyTorch peer of the CUDA benchmark: without torch it says so in one line (exit
// code 2); where the Python has torch and safetensors, its model, loaded from the fixtures' checkpoint folders,
// computes the logits and greedy tokens Hugging Face computed for them (float32, CPU), through its KV cache too.
//
//   TSFUSE_PYTHON=/path/to/python npm test -- bench-torch      another Python (default python3)

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fixturesDir } from '../fixtures-dir.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const script = fileURLToPath(new URL('../../examples/bench-torch.py', import.meta.url));
const fixtures = fixturesDir + '/';
const python = process.env.TSFUSE_PYTHON ?? 'python3';

function py(...args: string[]) {
  const r = spawnSync(python, args, { cwd: root, encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', missing: (r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT' };
}

const hasPython = !py('--version').missing;

test('--help runs without torch and lists the modes', () => {
  if (!hasPython) return console.log(`  bench-torch: skipped (no ${python})`);
  const r = py(script, '--help');
  assert.is(r.code, 0, r.stderr);
  for (const flag of ['--model', '--prompt-ids', '--new-tokens', '--runs', '--warmup', '--out', '--no-f32', '--check', '--self-check']) {
    assert.ok(r.stdout.includes(flag), `--help should list ${flag}`);
  }
});

test('--check: the versions as JSON, or one line saying what is missing (exit code 2)', () => {
  if (!hasPython) return;
  const r = py(script, '--check');
  if (r.code === 0) {
    assert.ok(typeof JSON.parse(r.stdout).torch === 'string', r.stdout);
  } else {
    assert.is(r.code, 2, r.stderr);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^bench-torch: (cannot import torch|torch .* finds no CUDA device)/);
  }
});

// Run inside the Python: the module loaded from its file, each fixture's logits at every prompt position (one pass,
// and token by token over a cache filled with garbage) and its 32 greedy tokens, against the golden ones.
const goldenCheck = `
import importlib.util, json, sys
try:
    import torch, safetensors.torch
    if not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        raise ImportError("torch " + torch.__version__ + " has no scaled_dot_product_attention")
except ImportError as e:
    print(json.dumps({"skip": str(e)})); sys.exit(0)
spec = importlib.util.spec_from_file_location("bench_torch", sys.argv[1])
bt = importlib.util.module_from_spec(spec); spec.loader.exec_module(bt)
out = {}
for name in ("tiny-llama", "tiny-llama3", "tiny-llama3-bf16"):
    d = sys.argv[2] + name
    golden = json.load(open(d + "/golden.json"))
    want = safetensors.torch.load_file(d + "/golden.safetensors")["logits"]
    ids = torch.tensor(golden["input_ids"])
    S = len(ids)
    model = bt.LeanLlama(bt.read_config(d), bt.read_weights(d), S + 32, torch.float32, "cpu")
    with torch.no_grad():
        one_pass = model(ids, model.slots[:S])
        model.fill_cache(1e3)
        stepped = torch.cat([model(ids[i : i + 1], model.slots[i : i + 1]) for i in range(S)])
        tokens = bt.generate(model, bt.decode_step, ids, 32)
    rel = lambda x: ((x - want).norm() / want.norm()).item()
    out[name] = {"one_pass": rel(one_pass), "stepped": rel(stepped), "argmax": one_pass.argmax(-1).tolist() == want.argmax(-1).tolist(),
                 "tokens": tokens == golden["greedy_new_tokens"]}
print(json.dumps(out))
`;

test("the lean model computes Hugging Face's logits and greedy tokens for each fixture (float32, CPU)", () => {
  if (!hasPython) return;
  const r = py('-c', goldenCheck, script, fixtures);
  assert.is(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout.trim().split('\n').pop()!);
  if (result.skip) return console.log(`  bench-torch against the fixtures: skipped (${result.skip})`);
  assert.equal(Object.keys(result), ['tiny-llama', 'tiny-llama3', 'tiny-llama3-bf16']);
  for (const [name, v] of Object.entries(result as Record<string, { one_pass: number; stepped: number; argmax: boolean; tokens: boolean }>)) {
    assert.ok(v.one_pass < 1e-4 && v.stepped < 1e-4, `${name}: relative error ${v.one_pass} (one pass), ${v.stepped} (token by token)`);
    assert.ok(v.argmax && v.tokens, `${name}: argmax ${v.argmax}, greedy tokens ${v.tokens}`);
  }
});

test.run();
