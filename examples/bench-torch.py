#!/usr/bin/env python3
"""The lean PyTorch side of `npm run bench -- --backend cuda --compare torch` (examples/bench-cuda.ts runs it).

A Llama written out in a few dozen lines of PyTorch, as gpt-fast writes one: embedding, RMSNorm, rotary embeddings
(default, linear and llama3 frequencies), grouped-query attention over a static KV cache, SwiGLU, the LM head (tied
or not). It loads a checkpoint folder (config.json, model.safetensors) in bfloat16 on the GPU, computes the prompt's
logits (one forward pass), then times greedy decoding: the prefill runs eagerly, every decode step is one call of a
function compiled by torch.compile(mode="reduce-overhead"), i.e. replayed as a CUDA graph. Per-token decode time is
(T(N new) - T(1 new)) / (N - 1), on CUDA events and the wall clock. Unless --no-f32, the same weights in float32
give float32 logits and greedy tokens. The numerics follow transformers' LlamaForCausalLM (RMSNorm and rotary
angles in float32, the rest in the weights' dtype); --self-check compares the two on tiny random models, on the CPU.

Writes --out (JSON, the fields examples/bench-hf.py writes) and, beside it, the logits as raw little-endian float32
[prompt length, vocab] files. Exit status: 0 done, 2 a usage or environment problem (one line on stderr), 1 anything
else (with a traceback).
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback

from bench_peer import measure, timer, write_f32

try:
    import torch
    import torch.nn.functional as F
except Exception as e:  # noqa: BLE001 -- ImportError, or a broken install's OSError: reported in main()
    torch = F = None
    TORCH_ERROR = e

Module = torch.nn.Module if torch else object


class BenchError(Exception):
    """A problem to report in one line, without a traceback."""


def log(msg):
    print(f"torch: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# The checkpoint: config.json read as runtime/config.ts reads it, weights from model.safetensors.


def read_config(model_dir):
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        raise BenchError(f"{model_dir}: no config.json")
    with open(path) as f:
        c = json.load(f)
    if c.get("model_type") != "llama":
        raise BenchError(f"{path}: model_type {c.get('model_type')!r} is not 'llama'")
    for key in ("attention_bias", "mlp_bias"):
        if c.get(key):
            raise BenchError(f"{path}: {key} is set; the lean model has no biases")
    if c.get("hidden_act", "silu") != "silu":
        raise BenchError(f"{path}: hidden_act {c['hidden_act']!r}; the lean model has SwiGLU (silu) only")
    heads = c["num_attention_heads"]
    return {
        "vocab": c["vocab_size"],
        "hidden": c["hidden_size"],
        "intermediate": c["intermediate_size"],
        "layers": c["num_hidden_layers"],
        "heads": heads,
        "kv_heads": c.get("num_key_value_heads") or heads,
        "head_dim": c.get("head_dim") or c["hidden_size"] // heads,
        "eps": c["rms_norm_eps"],
        "tied": bool(c.get("tie_word_embeddings", False)),
        "rope": read_rope(c, path),
    }


def read_rope(c, path):
    """rope_theta beside rope_scaling (null when unscaled), or Transformers 5's rope_parameters holding both."""
    params = c.get("rope_parameters")
    if params:
        theta, scaling = params["rope_theta"], params
    else:
        theta, scaling = c.get("rope_theta", 10000.0), c.get("rope_scaling")
    if not scaling:
        return {"type": "default", "theta": theta}
    kind = scaling.get("rope_type") if scaling.get("rope_type") is not None or scaling.get("type") is None else scaling["type"]
    kind = kind or "default"
    if kind == "default":
        return {"type": "default", "theta": theta}
    if kind == "linear":
        return {"type": "linear", "theta": theta, "factor": scaling["factor"]}
    if kind == "llama3":
        return {
            "type": "llama3",
            "theta": theta,
            "factor": scaling["factor"],
            "low_freq_factor": scaling["low_freq_factor"],
            "high_freq_factor": scaling["high_freq_factor"],
            "original_max_position_embeddings": scaling["original_max_position_embeddings"],
        }
    raise BenchError(f"{path}: rope type {kind!r}; the lean model implements default, linear and llama3")


def read_weights(model_dir):
    path = os.path.join(model_dir, "model.safetensors")
    if not os.path.exists(path):
        raise BenchError(f"{model_dir}: no model.safetensors (the lean model reads one unsharded file)")
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise BenchError(f"cannot import safetensors ({e}); pip install safetensors")
    return load_file(path)


# ---------------------------------------------------------------------------------------------------------------
# The model.


def inverse_frequencies(rope, head_dim):
    """Rotary frequencies per pair of channels, float32, as transformers' rope init functions compute them."""
    inv = 1.0 / (rope["theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope["type"] == "linear":
        return inv / rope["factor"]
    if rope["type"] == "llama3":
        # Long wavelengths divided by the factor, short ones kept, a smooth blend between the two band edges.
        factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        context = rope["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > context / low, inv / factor, inv)
        smooth = (context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < context / high) & ~(wavelen > context / low)
        return torch.where(medium, smoothed, scaled)
    return inv


def rms_norm(x, weight, eps):
    """transformers' LlamaRMSNorm: normalised in float32, rounded back to x's dtype, then scaled."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rotate(x, cos, sin):
    """x * cos + rotate_half(x) * sin over the last axis (the first half of the channels pairs with the second)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class LeanLlama(Module):
    """Weights and a static KV cache ([1, kv heads, max_len, head dim] per layer) as buffers, for torch.compile."""

    def __init__(self, cfg, weights, max_len, dtype, device):
        super().__init__()
        self.cfg, self.max_len = cfg, max_len

        def w(*names):
            for n in names:
                if n not in weights:
                    raise BenchError(f"the checkpoint has no tensor {n}")
            return torch.cat([weights[n] for n in names]).to(device=device, dtype=dtype)

        self.register_buffer("embed", w("model.embed_tokens.weight"), persistent=False)
        self.register_buffer("norm", w("model.norm.weight"), persistent=False)
        # A tied head is the embedding itself, as tsfuse and transformers use it.
        self.register_buffer("head", self.embed if cfg["tied"] else w("lm_head.weight"), persistent=False)
        kv_shape = (1, cfg["kv_heads"], max_len, cfg["head_dim"])
        for i in range(cfg["layers"]):
            p = f"model.layers.{i}."
            # q, k and v as one projection, gate and up as another: one matrix read each, as gpt-fast does.
            self.register_buffer(f"wqkv{i}", w(*(p + f"self_attn.{n}_proj.weight" for n in "qkv")), persistent=False)
            self.register_buffer(f"wo{i}", w(p + "self_attn.o_proj.weight"), persistent=False)
            self.register_buffer(f"w13_{i}", w(p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"), persistent=False)
            self.register_buffer(f"w2_{i}", w(p + "mlp.down_proj.weight"), persistent=False)
            self.register_buffer(f"attn_norm{i}", w(p + "input_layernorm.weight"), persistent=False)
            self.register_buffer(f"mlp_norm{i}", w(p + "post_attention_layernorm.weight"), persistent=False)
            self.register_buffer(f"k_cache{i}", torch.zeros(kv_shape, dtype=dtype, device=device), persistent=False)
            self.register_buffer(f"v_cache{i}", torch.zeros(kv_shape, dtype=dtype, device=device), persistent=False)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inverse_frequencies(cfg["rope"], cfg["head_dim"]))
        angles = torch.cat([angles, angles], dim=-1).to(device)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.register_buffer("slots", torch.arange(max_len, device=device), persistent=False)

    def forward(self, tokens, pos, last_only=False):
        """Logits [S, vocab] (or [1, vocab], the last position's) of tokens [S] at positions pos [S]; fills the cache."""
        c = self.cfg
        S, H, KV, D = tokens.shape[0], c["heads"], c["kv_heads"], c["head_dim"]
        x = F.embedding(tokens, self.embed)
        cos, sin = self.cos[pos].to(x.dtype), self.sin[pos].to(x.dtype)
        visible = self.slots[None, :] <= pos[:, None]  # [S, max_len]: the cache slots each query may read
        for i in range(c["layers"]):
            h = rms_norm(x, getattr(self, f"attn_norm{i}"), c["eps"])
            q, k, v = F.linear(h, getattr(self, f"wqkv{i}")).split([H * D, KV * D, KV * D], dim=-1)
            q = rotate(q.view(S, H, D).transpose(0, 1), cos, sin)[None]  # [1, H, S, D]
            k = rotate(k.view(S, KV, D).transpose(0, 1), cos, sin)[None]
            v = v.view(S, KV, D).transpose(0, 1)[None]
            k_cache, v_cache = getattr(self, f"k_cache{i}"), getattr(self, f"v_cache{i}")
            k_cache[:, :, pos] = k
            v_cache[:, :, pos] = v
            # Query head j reads kv head j // (H / KV), as transformers' repeat_kv has it.
            keys, values = k_cache.repeat_interleave(H // KV, dim=1), v_cache.repeat_interleave(H // KV, dim=1)
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible[None, None])
            x = x + F.linear(o[0].transpose(0, 1).reshape(S, H * D), getattr(self, f"wo{i}"))
            h = rms_norm(x, getattr(self, f"mlp_norm{i}"), c["eps"])
            gate, up = F.linear(h, getattr(self, f"w13_{i}")).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, getattr(self, f"w2_{i}"))
        if last_only:
            x = x[-1:]
        return F.linear(rms_norm(x, self.norm, c["eps"]), self.head)

    def fill_cache(self, value):
        for i in range(self.cfg["layers"]):
            getattr(self, f"k_cache{i}").fill_(value)
            getattr(self, f"v_cache{i}").fill_(value)


def decode_step(model, token, pos):
    """One decode step: the next token [1] after token [1] at position pos [1]."""
    return model(token, pos, last_only=True).argmax(-1)


def generate(model, step, prompt, n):
    """Greedy: the prompt as one eager prefill, then n - 1 calls of step. Returns the n new token ids."""
    P = prompt.shape[0]
    token = model(prompt, model.slots[:P], last_only=True).argmax(-1)
    tokens = [token]
    pos = model.slots[P : P + 1].clone()
    for _ in range(n - 1):
        if step is not decode_step:
            torch.compiler.cudagraph_mark_step_begin()
        # The compiled step's output lives in the CUDA graph's memory, which its next replay overwrites: copied.
        token = step(model, token, pos).clone()
        tokens.append(token)
        pos += 1
    return torch.cat(tokens).tolist()


# ---------------------------------------------------------------------------------------------------------------
# The benchmark.


def need_torch():
    if torch is None:
        raise BenchError(f"cannot import torch ({TORCH_ERROR}); the comparison needs PyTorch with CUDA")


def versions(device):
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else device,
    }


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def run(args):
    need_torch()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"torch {torch.__version__} finds no CUDA device (built for CUDA {torch.version.cuda})")
    info = versions(device)
    if args.check:
        print(json.dumps(info))
        return
    if not args.model or not args.out or not args.prompt_ids:
        raise BenchError("--model, --prompt-ids and --out are needed (or --check, or --self-check)")
    try:
        ids = [int(x) for x in args.prompt_ids.split(",")]
    except ValueError:
        raise BenchError(f"--prompt-ids must be comma-separated integers, got {args.prompt_ids!r}")
    n_new = args.new_tokens
    if n_new < 2:
        raise BenchError("--new-tokens must be at least 2 (decode time is (T(N) - T(1)) / (N - 1))")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    result = {"versions": info, "prompt_ids": ids, "new_tokens": n_new}

    t = time.perf_counter()
    cfg, weights = read_config(args.model), read_weights(args.model)
    # The cache holds the prompt and the new tokens, as tsfuse's and transformers' static caches do.
    max_len = len(ids) + n_new
    model = LeanLlama(cfg, weights, max_len, torch.bfloat16, device)
    sync(device)
    result["load_s"] = time.perf_counter() - t
    log(f"loaded {args.model} in {result['load_s']:.1f} s ({info['gpu']}, torch {info['torch']})")
    if any(i < 0 or i >= cfg["vocab"] for i in ids):
        raise BenchError(f"a prompt id is outside the vocabulary (0..{cfg['vocab'] - 1})")
    prompt = torch.tensor(ids, dtype=torch.long, device=device)

    with torch.no_grad():
        # The prompt's logits at every position: one forward pass, bf16 compute, kept as float32.
        logits = model(prompt, model.slots[: len(ids)])
        write_f32(os.path.join(out_dir, "logits-bf16.f32"), logits)
        result["logits_bf16"] = {"file": "logits-bf16.f32", "shape": [len(ids), cfg["vocab"]]}

        step = torch.compile(decode_step, mode="reduce-overhead", fullgraph=True)

        timed = timer(torch, device, lambda n: generate(model, step, prompt, n))
        # Warm-up: the first call compiles the step; the next ones record and start replaying its CUDA graph.
        measure(timed, args.warmup, args.runs, n_new, result, log)

    # The same weights in float32, eagerly: logits and greedy tokens without bf16 rounding of activations.
    if not args.no_f32:
        model32 = LeanLlama(cfg, weights, max_len, torch.float32, device)
        with torch.no_grad():
            logits32 = model32(prompt, model32.slots[: len(ids)])
            result["tokens_f32"] = generate(model32, decode_step, prompt, n_new)
        write_f32(os.path.join(out_dir, "logits-f32.f32"), logits32)
        result["logits_f32"] = {"file": "logits-f32.f32", "shape": [len(ids), cfg["vocab"]]}
        log("float32 reference done")

    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


# ---------------------------------------------------------------------------------------------------------------
# --self-check: the lean model against transformers' LlamaForCausalLM, float32 on the CPU.

TINY = dict(
    vocab_size=256, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5, max_position_embeddings=256,
)
# head_dim 16 and theta 500000 give wavelengths from 6 to ~600,000 positions: with an original context of 64 and
# band edges at 16 and 64, llama3's three bands (kept, blended, divided) all occur.
VARIANTS = [
    ("llama3 rope, tied head, 2 kv heads", "llama3", dict(rope_theta=500000.0, tie_word_embeddings=True, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64))),
    ("default rope, separate head, 4 kv heads", "default", dict(rope_theta=10000.0, tie_word_embeddings=False, num_key_value_heads=4)),
    ("linear rope, separate head, 1 kv head", "linear", dict(rope_theta=10000.0, tie_word_embeddings=False, num_key_value_heads=1,
        rope_scaling=dict(rope_type="linear", factor=2.0))),
]


def hf_config(LlamaConfig, fields):
    """A LlamaConfig from classic fields; Transformers 5 takes the rope as rope_parameters."""
    import inspect

    fields = dict(fields)
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:
        scaling = fields.pop("rope_scaling", None) or {"rope_type": "default"}
        fields["rope_parameters"] = {**scaling, "rope_theta": fields.pop("rope_theta")}
    return LlamaConfig(**fields)


def self_check():
    need_torch()
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        raise BenchError(f"cannot import transformers' LlamaForCausalLM ({e}); the self-check compares against it")
    torch.manual_seed(0)
    failed = []
    for name, rope_type, extra in VARIANTS:
        hf = LlamaForCausalLM(hf_config(LlamaConfig, {**TINY, **extra})).eval()
        hf.generation_config.eos_token_id = None
        hf.generation_config.pad_token_id = None
        with torch.no_grad():
            for n, p in hf.named_parameters():
                if n.endswith("norm.weight"):
                    p.add_(0.2 * torch.randn_like(p))  # not all ones, so that the norms' weights count
        # Through the files the benchmark reads: config.json and model.safetensors as transformers writes them.
        with tempfile.TemporaryDirectory() as d:
            hf.save_pretrained(d)  # safetensors, the default since transformers 4.35
            cfg = read_config(d)
            if cfg["rope"]["type"] != rope_type:
                raise BenchError(f"{name}: transformers saved rope type {cfg['rope']['type']!r}, expected {rope_type!r}")
            model = LeanLlama(cfg, read_weights(d), 16, torch.float32, "cpu")
        S = 9
        ids = torch.randint(0, TINY["vocab_size"], (S,))
        with torch.no_grad():
            want = hf(input_ids=ids[None]).logits[0]
            got = model(ids, model.slots[:S])
            # Through the cache: 5 tokens as a prompt, then one at a time, over a cache holding garbage beyond them.
            model.fill_cache(1e3)
            steps = [model(ids[:5], model.slots[:5])[-1:]]
            steps += [model(ids[i : i + 1], model.slots[i : i + 1]) for i in range(5, S)]
            stepped = torch.cat(steps)
            hf_tokens = hf.generate(ids[None], attention_mask=torch.ones(1, S, dtype=torch.long), max_new_tokens=6, do_sample=False)[0, S:].tolist()
            lean_tokens = generate(model, decode_step, ids, 6)
        scale = want.abs().max().item()
        err = (got - want).abs().max().item() / scale
        err_steps = (stepped - want[4:]).abs().max().item() / scale
        ok = err < 1e-4 and err_steps < 1e-4 and hf_tokens == lean_tokens
        print(
            f"self-check {'ok    ' if ok else 'FAILED'} {name}: logits max error {err:.1e} (one pass), {err_steps:.1e} "
            f"(through the cache), of max |logit| {scale:.2f}; greedy {hf_tokens} vs {lean_tokens}",
            flush=True,
        )
        if not ok:
            failed.append(name)
    if failed:
        print(f"bench-torch: self-check failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint folder (config.json, model.safetensors)")
    ap.add_argument("--prompt-ids", help="comma-separated token ids")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each generation; the best counts")
    ap.add_argument("--warmup", type=int, default=3, help="untimed generations first (torch.compile, CUDA graph recording)")
    ap.add_argument("--out", help="result JSON; the logits files go beside it")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only to test this script")
    ap.add_argument("--no-f32", action="store_true", help="skip the float32 reference pass")
    ap.add_argument("--check", action="store_true", help="only check that torch and a GPU are there")
    ap.add_argument("--self-check", action="store_true", help="compare the lean model with transformers' on tiny random models (CPU)")
    args = ap.parse_args()
    try:
        self_check() if args.self_check else run(args)
    except BenchError as e:
        print(f"bench-torch: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        print(f"bench-torch: failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
