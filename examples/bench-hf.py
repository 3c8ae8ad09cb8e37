#!/usr/bin/env python3
"""The Hugging Face side of `npm run bench -- --backend cuda --compare hf` (examples/bench-cuda.ts runs it).

Loads a Llama checkpoint folder with transformers' LlamaForCausalLM in bfloat16 on the GPU, computes the prompt's
logits (one forward pass), then times greedy `generate(..., cache_implementation="static")`, the path on which
transformers compiles the decode step with torch.compile. Per-token decode time is (T(N new) - T(1 new)) / (N - 1),
so the prefill (which generate runs uncompiled) drops out. Afterwards, unless --no-f32, the same weights upcast to
float32 give float32 logits and greedy tokens: the reference a float32-accumulating implementation should match.

Writes --out (JSON) and, beside it, the logits as raw little-endian float32 [prompt length, vocab] files.
Exit status: 0 done, 2 a usage or environment problem (one line on stderr), 1 anything else (with a traceback).
"""

import argparse
import json
import os
import re
import sys
import time
import traceback

from bench_peer import measure, timer, write_f32


class BenchError(Exception):
    """A problem to report in one line, without a traceback."""


def log(msg):
    print(f"hf: {msg}", file=sys.stderr, flush=True)


def version_tuple(v):
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def import_stack():
    try:
        import torch
    except ImportError as e:
        raise BenchError(f"cannot import torch ({e}); the comparison needs PyTorch with CUDA")
    try:
        import transformers
        from transformers import LlamaForCausalLM  # noqa: F401
    except ImportError as e:
        raise BenchError(f"cannot import transformers' LlamaForCausalLM ({e}); the comparison needs transformers")
    return torch, transformers


def check_device(torch, device):
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"torch {torch.__version__} finds no CUDA device (built for CUDA {torch.version.cuda})")


def versions(torch, transformers, device):
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else device,
    }


def load_model(torch, transformers, model_dir, device):
    from transformers import LlamaForCausalLM

    for f in ("config.json", "model.safetensors"):
        if not os.path.exists(os.path.join(model_dir, f)):
            raise BenchError(f"{model_dir}: no {f}")
    # transformers 4.56 renamed from_pretrained's `torch_dtype` to `dtype`; older versions pass an unknown `dtype`
    # on to the config and load float32, so choose by version, and check the result either way.
    new_api = version_tuple(transformers.__version__) >= (4, 56)
    first, second = ("dtype", "torch_dtype") if new_api else ("torch_dtype", "dtype")
    try:
        model = LlamaForCausalLM.from_pretrained(model_dir, **{first: torch.bfloat16})
    except TypeError:
        model = LlamaForCausalLM.from_pretrained(model_dir, **{second: torch.bfloat16})
    if model.dtype != torch.bfloat16:
        model = model.to(torch.bfloat16)
    model = model.to(device).eval()
    # Always exactly N new tokens, as tsfuse generates: no end-of-sequence stop.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = None
    return model


def run(args):
    torch, transformers = import_stack()
    check_device(torch, args.device)
    info = versions(torch, transformers, args.device)
    if args.check:
        print(json.dumps(info))
        return
    if not args.model or not args.out or not args.prompt_ids:
        raise BenchError("--model, --prompt-ids and --out are needed (or --check)")
    try:
        ids = [int(x) for x in args.prompt_ids.split(",")]
    except ValueError:
        raise BenchError(f"--prompt-ids must be comma-separated integers, got {args.prompt_ids!r}")
    n_new = args.new_tokens
    if n_new < 2:
        raise BenchError("--new-tokens must be at least 2 (decode time is (T(N) - T(1)) / (N - 1))")
    device = args.device
    out_dir = os.path.dirname(os.path.abspath(args.out))
    result = {"versions": info, "prompt_ids": ids, "new_tokens": n_new}

    t = time.perf_counter()
    model = load_model(torch, transformers, args.model, device)
    result["load_s"] = time.perf_counter() - t
    log(f"loaded {args.model} in {result['load_s']:.1f} s ({info['gpu']}, torch {info['torch']}, transformers {info['transformers']})")
    vocab = model.config.vocab_size
    if any(i < 0 or i >= vocab for i in ids):
        raise BenchError(f"a prompt id is outside the vocabulary (0..{vocab - 1})")
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)

    # The prompt's logits at every position: one forward pass with no cache, bf16 compute, kept as float32.
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[0]
    write_f32(os.path.join(out_dir, "logits-bf16.f32"), logits)
    result["logits_bf16"] = {"file": "logits-bf16.f32", "shape": [len(ids), vocab]}

    def generate(n):
        return model.generate(
            input_ids, attention_mask=attention_mask, max_new_tokens=n, do_sample=False, cache_implementation="static"
        )

    def new_tokens(n):
        toks = generate(n)[0, len(ids):].tolist()
        if len(toks) != n:
            raise BenchError(f"generate returned {len(toks)} new tokens, not {n}")
        return toks

    # Warm-up: the first calls compile the decode step (torch.compile); a later one may recompile once more.
    measure(timer(torch, device, new_tokens), args.warmup, args.runs, n_new, result, log)

    # The same weights in float32: logits and greedy tokens computed without bf16 rounding of activations.
    if not args.no_f32:
        model = model.float()
        with torch.inference_mode():
            logits32 = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[0]
            out32 = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=n_new, do_sample=False)
        write_f32(os.path.join(out_dir, "logits-f32.f32"), logits32)
        result["logits_f32"] = {"file": "logits-f32.f32", "shape": [len(ids), vocab]}
        result["tokens_f32"] = out32[0, len(ids):].tolist()
        log("float32 reference done")

    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint folder (config.json, model.safetensors)")
    ap.add_argument("--prompt-ids", help="comma-separated token ids")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each generate; the best counts")
    ap.add_argument("--warmup", type=int, default=3, help="untimed generate calls first (torch.compile)")
    ap.add_argument("--out", help="result JSON; the logits files go beside it")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only to test this script")
    ap.add_argument("--no-f32", action="store_true", help="skip the float32 reference pass")
    ap.add_argument("--check", action="store_true", help="only check that torch, transformers and a GPU are there")
    args = ap.parse_args()
    try:
        run(args)
    except BenchError as e:
        print(f"bench-hf: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        print(f"bench-hf: failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
