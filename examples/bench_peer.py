"""What the CUDA benchmark's two peers share (examples/bench-hf.py, examples/bench-torch.py): timing greedy
generation as examples/bench-cuda.ts reports it, and writing logits for it to read.

Per-token decode time is (T(N new) - T(1 new)) / (N - 1) over the best of several runs each, on the wall clock and
on CUDA events, so the prefill (and what generate does once per call) drops out.
"""

import time


def write_f32(path, tensor):
    """Raw little-endian float32, row-major."""
    t = tensor.detach().float().contiguous().cpu()
    try:
        t.numpy().astype("<f4").tofile(path)
    except (ImportError, RuntimeError):  # torch without numpy
        import struct

        with open(path, "wb") as f:
            f.write(struct.pack(f"<{t.numel()}f", *t.flatten().tolist()))


def timer(torch, device, generate):
    """timed(n): (new token ids, wall ms, CUDA-event ms) of one call generate(n) returning the new ids."""

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def timed(n):
        events = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if device == "cuda" else None
        sync()
        t0 = time.perf_counter()
        if events:
            events[0].record()
        toks = generate(n)
        if events:
            events[1].record()
        sync()
        wall = (time.perf_counter() - t0) * 1e3
        return toks, wall, events[0].elapsed_time(events[1]) if events else wall

    return timed


def measure(timed, warmups, runs, n_new, result, log):
    """Warm-up calls, then `runs` timed generations of n_new and of 1 token; fills result's timing fields."""
    warmup = []
    for i in range(warmups):
        _, wall, _ = timed(n_new)
        warmup.append(wall / 1e3)
        log(f"warm-up {i + 1}/{warmups}: generate({n_new} new) {wall / 1e3:.2f} s")
    result["warmup_s"] = warmup

    runs_n, tokens = [], None
    for _ in range(runs):
        toks, wall, ev = timed(n_new)
        if tokens is not None and toks != tokens:
            log("note: greedy tokens differ between runs")
        tokens = toks
        runs_n.append({"wall_ms": wall, "event_ms": ev})
    timed(1)  # generate(1 new) once untimed: its first call sets things up differently
    runs_1 = []
    for _ in range(runs):
        _, wall, ev = timed(1)
        runs_1.append({"wall_ms": wall, "event_ms": ev})

    def best(rs, k):
        return min(r[k] for r in rs)

    result["generate_n"] = runs_n
    result["generate_1"] = runs_1
    result["tokens"] = tokens
    for k in ("wall_ms", "event_ms"):
        result[f"decode_ms_per_token_{k[:-3]}"] = (best(runs_n, k) - best(runs_1, k)) / (n_new - 1)
        result[f"prefill_{k}"] = best(runs_1, k)
    log(
        f"decode {result['decode_ms_per_token_wall']:.3f} ms/token (wall), {result['decode_ms_per_token_event']:.3f} (events); "
        f"generate(1 new) {result['prefill_wall_ms']:.2f} ms"
    )
