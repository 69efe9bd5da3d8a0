"""Measure the SWRR head: parameters per ablation, step time and peak memory, SliWa vs full attention.

    python benchmarks/model.py --quick                 # CPU, < 1 minute
    python benchmarks/model.py --device cuda           # AMP (fp16 autocast), batch 32
    python benchmarks/model.py --fidelity              # frames fused per text length, late-audio
                                                       # effect on the logits, HRS p_max (CPU, ~1 min)

Prints markdown tables and, last, one JSON line with every figure. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from profiling import sync
from swrr.model import ABLATIONS, SWRR, SWRRConfig, ablation_config, count_parameters
from swrr.train.loop import make_scaler

TIMED = ("swrr", "window-50", "sliwa-full")  # SliWa omega_X = 10, omega_X = 50, full cross-attention


def attention_flops(cfg: SWRRConfig) -> dict:
    """Analytic FLOPs (2 per multiply-add) of one utterance's fusion, at full N and T.

    core: q k^T and the weighted sum of v; projections: w_q, w_k, w_v, w_z (the same in every mode).
    """
    d = cfg.model_dim if cfg.attn_dim is None else cfg.attn_dim
    dim, n, t = cfg.model_dim, cfg.max_frames, cfg.max_tokens
    keys = n if cfg.attention == "full" else cfg.window
    core = 2 * 2 * t * keys * d
    projections = 2 * (t * dim * d + n * dim * 2 * d + t * d * dim)
    return {"core": core, "projections": projections}


def make_batch(cfg: SWRRConfig, batch: int, device: str):
    """Random full-length inputs in the cache's float16, as the trainer feeds them."""
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(batch, cfg.max_frames, cfg.audio_dim, generator=g).half()
    text = torch.randn(batch, cfg.max_tokens, cfg.text_dim, generator=g).half()
    audio_len = torch.full((batch,), cfg.max_frames)
    text_len = torch.full((batch,), cfg.max_tokens)
    labels = torch.randint(0, cfg.num_outputs, (batch,), generator=g)
    return [x.to(device) for x in (audio, audio_len, text, text_len, labels)]


def train_step(model, batch, optimizer=None, scaler=None):
    """Forward, loss, backward, and with `optimizer` (and its `scaler`) the step; AMP on CUDA."""
    audio, audio_len, text, text_len, labels = batch
    device = audio.device.type
    with torch.autocast(device, dtype=torch.float16, enabled=device == "cuda"):
        loss = F.cross_entropy(model(audio, audio_len, text, text_len).float(), labels)
    model.zero_grad(set_to_none=True)
    if optimizer is None:
        loss.backward()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def measure(name: str, batch_size: int, device: str, warmup: int, iters: int):
    """-> (median seconds of forward + backward, peak MiB of a training step with Adam).

    Peak memory: CUDA max_memory_allocated, or the rise of this process's CPU RSS high-water mark
    over its value before the model was built (so on CPU call it in a fresh process: see
    `measure_in_child`).
    """
    idle_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.manual_seed(0)
    cfg = ablation_config(SWRRConfig(), name)
    model = SWRR(cfg).to(device).train()
    batch = make_batch(cfg, batch_size, device)
    for _ in range(warmup):
        train_step(model, batch)
    times = []
    for _ in range(iters):  # the median, as a shared CPU makes single steps stall
        sync(device)
        start = time.perf_counter()
        train_step(model, batch)
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, betas=(0.9, 0.99))
    scaler = make_scaler(device == "cuda")  # disabled on CPU: a plain backward and optimizer step
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        train_step(model, batch, optimizer, scaler)
        return seconds, torch.cuda.max_memory_allocated() / 2**20
    train_step(model, batch, optimizer, scaler)
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - idle_rss) / 1024  # Linux: KiB


def measure_in_child(*args):
    """`measure` in a fresh spawned process, so each variant's RSS peak is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def paired_models(**overrides):
    """{"drop": model, "fuse": model} at paper sizes with the same weights (drop has no no_token)."""
    models = {mode: SWRR(SWRRConfig(padded_windows=mode, **overrides)).eval() for mode in ("drop", "fuse")}
    models["drop"].load_state_dict(models["fuse"].state_dict(), strict=False)
    return models


def fidelity(token_counts=(2, 12, 20, 35, 50), rows: int = 4) -> dict:
    """Paper sizes, random init, eval mode, fp32 on CPU. Prints and returns:
    coverage: valid frames (of 255) with non-zero attention, by text length, per padded_windows;
    effect: mean max |logit change| when unit noise is added to frames 0..54 (inside the 12 tokens'
      windows only) or 100..254 (inside no token's window), 12 tokens, without HRFR (whose argmax
      choice would turn small changes into steps);
    p_max: median and range of the chosen map's softmax weight at each HRS level (full texts)."""
    torch.manual_seed(0)
    figures = {"coverage": {}, "effect": {}, "p_max": {}}
    g = torch.Generator().manual_seed(1)
    cfg = SWRRConfig()
    audio = torch.randn(rows, cfg.max_frames, cfg.audio_dim, generator=g)
    text = torch.randn(rows, cfg.max_tokens, cfg.text_dim, generator=g)
    audio_len = torch.full((rows,), cfg.max_frames)
    models = paired_models()
    print("| tokens | frames fused, padded_windows=drop | frames fused, fuse (default) |\n|---:|---:|---:|")
    with torch.no_grad():
        for tokens in token_counts:
            text_len = torch.full((rows,), tokens)
            counts = {mode: int((model(audio, audio_len, text, text_len, return_attention=True)[1][0]
                                 .sum(dim=0) > 0).sum()) for mode, model in models.items()}
            figures["coverage"][tokens] = counts
            print(f"| {tokens} | {counts['drop']} of 255 | {counts['fuse']} of 255 |")

        def record_p_max(level):
            def hook(hrs, inputs, _):
                p = torch.softmax(hrs.scores(inputs[0])[2], dim=1).amax(dim=1)
                figures["p_max"][level] = [float(p.median()), float(p.min()), float(p.max())]
            return hook

        for level, hrs in enumerate(models["fuse"].hrs, start=1):
            hrs.register_forward_hook(record_p_max(level))
        models["fuse"](audio, audio_len, text, torch.full((rows,), cfg.max_tokens))

        text_len = torch.full((rows,), 12)
        for mode, model in paired_models(hrfr="none").items():
            base = model(audio, audio_len, text, text_len)
            for name, frames in (("frames 0-54", slice(0, 55)), ("frames 100-254", slice(100, 255))):
                noisy = audio.clone()
                noisy[:, frames] += torch.randn(noisy[:, frames].shape, generator=g)
                change = (model(noisy, audio_len, text, text_len) - base).abs().amax(dim=1).mean().item()
                figures["effect"].setdefault(mode, {})[name] = change
    print("\nmean max |logit change|, 12 tokens, no HRFR, unit noise on: "
          + "; ".join(f"{mode}: " + ", ".join(f"{k} {v:.1e}" for k, v in d.items())
                      for mode, d in figures["effect"].items()))
    print("HRS p_max at init (median, min, max) by level: "
          + "; ".join(f"{lvl}: {m:.2f} ({lo:.2f}-{hi:.2f})" for lvl, (m, lo, hi) in figures["p_max"].items()))
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=None, help="default 32 (4 with --quick)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps (default 20, 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5, 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="few, smaller steps: a CPU smoke run")
    parser.add_argument("--fidelity", action="store_true", help="only the fidelity figures (docs/MODEL.md)")
    args = parser.parse_args(argv)
    if args.fidelity:
        print(json.dumps({"benchmark": "model-fidelity", **fidelity()}))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    batch = args.batch or (4 if args.quick else 32)
    iters = args.iters or (3 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.machine()
    paper = SWRRConfig()

    print(f"## SWRR head, paper sizes (N={paper.max_frames}, T={paper.max_tokens}, D={paper.model_dim})\n")
    print("| variant | parameters | classifier head |\n|---|---:|---:|")
    params = {}
    for name in ("swrr", *ABLATIONS):
        model = SWRR(ablation_config(paper, name))
        params[name] = {"total": count_parameters(model), "head": count_parameters(model.classifier)}
        print(f"| {name} | {params[name]['total']:,} | {params[name]['head']:,} |")

    precision = "AMP fp16" if args.device == "cuda" else "fp32"
    print(f"\n## Training step, batch {batch}, {args.device} ({device_name}, {torch.get_num_threads()} threads), "
          f"{precision}, {warmup} warm-up + {iters} timed\n")
    print("| variant | attention core MFLOP/utt | + projections MFLOP/utt | fwd+bwd ms/batch (median) | peak MiB |")
    print("|---|---:|---:|---:|---:|")
    timing = {}
    for name in TIMED:
        flops = attention_flops(ablation_config(paper, name))
        run = measure if args.device == "cuda" else measure_in_child
        seconds, memory = run(name, batch, args.device, warmup, iters)
        timing[name] = {"ms": 1000 * seconds, "peak_mib": memory, "flops": flops}
        print(f"| {name} | {flops['core'] / 1e6:.2f} | {(flops['core'] + flops['projections']) / 1e6:.1f} | "
              f"{1000 * seconds:.0f} | {memory:.0f} |")
    ratio = timing["sliwa-full"]["ms"] / timing["swrr"]["ms"]
    core_ratio = timing["sliwa-full"]["flops"]["core"] / timing["swrr"]["flops"]["core"]
    print(f"\nfull / SliWa: step time x{ratio:.2f}, attention core FLOPs x{core_ratio:.1f}")
    memory_kind = "cuda max_memory_allocated" if args.device == "cuda" else "cpu ru_maxrss rise over the idle process (fresh process)"
    print(json.dumps({"benchmark": "model", "device": args.device, "device_name": device_name,
                      "threads": torch.get_num_threads(), "precision": precision, "batch": batch,
                      "iters": iters, "warmup": warmup, "quick": args.quick, "torch": torch.__version__,
                      "memory": memory_kind, "parameters": params, "step": timing,
                      "full_over_sliwa_time": ratio, "full_over_sliwa_core_flops": core_ratio}))


if __name__ == "__main__":
    main()
