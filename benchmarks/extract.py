"""Extraction throughput on IEMOCAP-like clips, in one run on the same clips and models.

    python benchmarks/extract.py                    # WavLM-base+ / BERT-base architectures, 5,531 clips
    python benchmarks/extract.py --profile          # + torch.profiler over a few steady-state batches
    python benchmarks/extract.py --quick            # tiny encoders, 48 clips, CPU, < 1 minute
    python benchmarks/extract.py --device cpu --n 200
    python benchmarks/extract.py --scale 1,4,16 --ranks 2   # peak RSS per rank at 1x, 4x, 16x clips
    python benchmarks/extract.py --ranks 1,2 --n 400        # wall time, balance and assembly cost

Measures:
  forward      pure encoder forward (WavLM + BERT) on pre-loaded, pre-padded tensors already on the
               device: the ceiling. Batched (the pipeline's plan at --batch-seconds, default auto, and
               at 160 s; a first pass over all batch shapes, then the steady-state pass reported) and
               batch 1 (--per-utt-n clips).
  end-to-end   the real pipeline (run_extraction): synthetic 16 kHz wavs in a temp folder -> header
               checks -> decode in worker processes -> encode (one batch in flight) -> HDF5 writer
               thread -> finished cache. Batched at --batch-seconds (with the writer thread's busy
               seconds), and batch 1 (--batch-seconds 0) on the --per-utt-n subset.
  profile      (--profile) torch.profiler over --profile-batches steady-state batches of the pure
               forward, for WavLM+BERT, WavLM alone and BERT alone: wall ms per batch, GPU time per
               batch (kernels and copies; busy = GPU time / wall), host<->device sync points, the top
               12 CUDA kernels (top CPU ops on the CPU).
  ratios       batched / batch 1 (forward and end-to-end), end-to-end / forward (overlap).
  padding      fraction of the encoded audio that is padding, for the length-sorted plan.
  memory       peak GPU memory of the forward at each --budgets value (CUDA only).
  ranks        (--ranks and/or --scale) the real `swrr-extract` CLI under torchrun with 1, 2, ... ranks
               (gloo on the CPU, cuda:LOCAL_RANK on GPUs) on --n short synthetic clips (x each --scale
               factor): wall time, speed-up over 1 rank, padded audio and encoding wall per rank,
               assembly as a fraction of the run, and every rank's peak RSS (host memory).

Models are the real architectures with random weights (WavLMConfig() and BertConfig() defaults are
wavlm-base-plus / bert-base-uncased sized), so it runs offline; the tokenizer is the tiny offline
WordPiece vocabulary. Clip durations: log-normal (median ~3.6 s, 28% over the 5.1 s cap), like
IEMOCAP's 5,531 4-class utterances (5.46 h after the cap, SPEC §7). Prints readable lines and
one JSON line. The end-to-end part needs soundfile; without it only the forward part runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


from profiling import int_list, launch_ranks, profile_calls, sync
from swrr.extract.batching import AUTO, CPU_BATCH_SECONDS, parse_batch_seconds, plan_batches
from swrr.extract.encoders import (TINY_VOCAB, AudioEncoder, TextEncoder, build_tiny_text,
                              tiny_encoders)
from swrr.device import resolve_device

SAMPLE_RATE = 16000
IEMOCAP_CLIPS = 5531
LOG_MU, LOG_SIGMA = 1.28, 0.6  # seconds, log-normal; capped mean 3.55 s = 5.46 h / 5,531 clips
WORDS = [w for w in TINY_VOCAB.read_text().split() if len(w) > 1 and w.isalpha()]


def base_encoders() -> tuple:
    """WavLM-base+ and BERT-base architectures, random init (the tiny tokenizer: ids fit BERT's vocab)."""
    from transformers import BertConfig, BertModel, Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    torch.manual_seed(0)
    audio = AudioEncoder(WavLMModel(WavLMConfig()), Wav2Vec2FeatureExtractor(do_normalize=False),
                         "random-wavlm-base-plus-architecture", "random", random_init=True)
    _, tokenizer = build_tiny_text()
    text = TextEncoder(BertModel(BertConfig()), tokenizer, "random-bert-base-architecture", "random",
                       random_init=True)
    return audio, text


def synthetic_clips(n: int, seed: int = 0):
    """-> (waveforms capped at 5.1 s, full durations in s, transcripts) with IEMOCAP-like lengths."""
    rng = np.random.default_rng(seed)
    durations = np.clip(np.exp(LOG_MU + LOG_SIGMA * rng.standard_normal(n)), 0.6, 34.0)
    cap = 81680
    waves = [(0.1 * rng.standard_normal(min(int(d * SAMPLE_RATE), cap))).astype(np.float32) for d in durations]
    texts = [" ".join(rng.choice(WORDS, size=1 + rng.poisson(11))) for _ in range(n)]
    return waves, durations, texts


def device_batches(audio, text, waves, texts, batch_seconds: float, device: torch.device, limit=None):
    """The plan's batches (the first `limit`) prepared and on the device: -> ([(values, lengths, tokens)], plan)."""
    plan = plan_batches([len(w) for w in waves], SAMPLE_RATE, batch_seconds)
    batches = []
    for rows in plan.batches[:limit]:
        values, lengths = audio.collate([audio.prepare(waves[r]) for r in rows])
        tokens = {k: v.to(device) for k, v in text.tokenize([texts[r] for r in rows]).items()}
        batches.append((values.to(device), lengths, tokens))
    sync(device)
    return batches, plan


def encode_both(audio, text, batch) -> None:
    values, lengths, tokens = batch
    audio(values, lengths)
    text(tokens)


def pure_forward(audio, text, waves, texts, batch_seconds: float, device: torch.device, limit=None):
    """Seconds to encode all clips with inputs prepared and on the device beforehand; (seconds, clips, plan)."""
    batches, plan = device_batches(audio, text, waves, texts, batch_seconds, device, limit)
    start = time.perf_counter()
    for batch in batches:
        encode_both(audio, text, batch)
    sync(device)
    return time.perf_counter() - start, sum(len(b[1]) for b in batches), plan


def forward_rates(audio, text, waves, texts, batch_seconds: float, device: torch.device) -> dict:
    """Batched forward at one budget: a first pass meeting every batch shape (cuDNN/cuBLAS choose
    kernels, the allocator grows), then the steady state that the end-to-end run also sees."""
    cold, n, _ = pure_forward(audio, text, waves, texts, batch_seconds, device)
    seconds, n, plan = pure_forward(audio, text, waves, texts, batch_seconds, device)
    return {"utt_s": n / seconds, "s": seconds, "first_pass_utt_s": n / cold, "batches": len(plan),
            "padding_waste": plan.padding_waste}


def profile_forward(audio, text, batches, device: torch.device) -> dict:
    """The profile of WavLM+BERT, WavLM alone and BERT alone over the same (already seen) batches."""
    parts = {"wavlm+bert": lambda b: encode_both(audio, text, b),
             "wavlm": lambda b: audio(b[0], b[1]),
             "bert": lambda b: text(b[2])}
    return {name: profile_calls(run, batches, device) for name, run in parts.items()}


def peak_memory_gb(audio, text, waves, texts, budget: float, device: torch.device) -> float:
    """Peak GPU memory of the forward over the plan's first (largest) batches at this budget."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    pure_forward(audio, text, waves, texts, budget, device, limit=3)
    return torch.cuda.max_memory_allocated() / 1e9


def write_dataset(folder: Path, waves, durations, texts) -> Path:
    """16 kHz wavs (cut at 6 s: the pipeline reads only the first 5.1 s) and a manifest CSV."""
    import soundfile as sf

    rng = np.random.default_rng(1)
    lines = ["path,text,label"]
    for i, (wave, duration, words) in enumerate(zip(waves, durations, texts)):
        n = int(min(duration, 6.0) * SAMPLE_RATE)
        tail = (0.1 * rng.standard_normal(n - len(wave))).astype(np.float32)
        sf.write(folder / f"{i:05d}.wav", np.concatenate([wave, tail]), SAMPLE_RATE, subtype="PCM_16")
        lines.append(f"{i:05d}.wav,{words},c{i % 4}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


def end_to_end(manifest: Path, out: Path, encoders, device: torch.device, batch_seconds, workers: int,
               dtype: str):
    """The real pipeline with these encoders, to a finished cache; -> its Summary."""
    from swrr.extract.pipeline import ExtractConfig
    from swrr.extract.runner import run_extraction

    config = ExtractConfig(dataset="manifest", root=manifest, out=out, encoders="benchmark", device=device.type,
                           dtype=dtype, batch_seconds=batch_seconds, num_workers=workers, progress=False)
    return run_extraction(config, encoders=encoders)


# A rank: the real CLI from this checkout, printing its own peak RSS when it exits (atexit runs on
# the CLI's sys.exit too). RUSAGE_SELF: the rank's own process, DataLoader workers not included.
RANK_ENTRY = ("import atexit, os, resource, sys; sys.argv[0] = 'swrr-extract'; "
              "atexit.register(lambda: print('peak RSS rank', os.environ.get('RANK', '0'), "
              "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)); "
              "from swrr.extract.cli import main; main()")


def short_clips(n: int, seed: int = 0):
    """n clips of 0.4-1.2 s (the memory question is about rows, not seconds) -> (waves, durations, texts)."""
    rng = np.random.default_rng(seed)
    durations = rng.uniform(0.4, 1.2, n)
    waves = [(0.1 * rng.standard_normal(int(d * SAMPLE_RATE))).astype(np.float32) for d in durations]
    texts = [" ".join(rng.choice(WORDS, size=1 + rng.poisson(11))) for _ in range(n)]
    return waves, durations, texts


def extract_with_ranks(manifest: Path, out: Path, ranks: int, args) -> dict:
    """`swrr-extract` under torchrun with `ranks` processes (1: a plain process); -> figures."""
    cli = ["--dataset", "manifest", "--root", str(manifest), "--out", str(out), "--encoders", args.encoders_cli,
           "--device", args.device, "--dtype", args.dtype, "--batch-seconds", str(args.batch_seconds),
           "--workers", str(args.workers or 0)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done, wall = launch_ranks(RANK_ENTRY, cli, ranks, "swrr-extract", env)
    rss = {int(r): float(mb) for r, mb in re.findall(r"peak RSS rank (\d+) ([\d.]+)", done.stdout)}
    figures = {"ranks": ranks, "wall_s": wall, "peak_rss_mb": [round(rss[r], 1) for r in sorted(rss)]}
    seconds = re.search(r" in ([\d.]+) s \(", done.stdout)
    figures["extract_s"] = float(seconds.group(1))
    balance = re.search(r"padded audio per rank ([\d., ]+) s \(max/mean ([\d.]+)\); encoding wall per rank "
                        r"([\d., ]+) s \(max/mean ([\d.]+)\)", done.stdout)
    if balance:
        figures.update(padded_s_per_rank=balance.group(1), padded_max_over_mean=float(balance.group(2)),
                       encode_wall_s_per_rank=balance.group(3), encode_wall_max_over_mean=float(balance.group(4)))
    assembly = re.search(r"assembly \(rank 0 copies the shards into one file\): ([\d.]+) s, ([\d.]+)%", done.stdout)
    if assembly:
        figures.update(assembly_s=float(assembly.group(1)), assembly_share=float(assembly.group(2)) / 100)
    return figures


def rank_runs(args) -> dict:
    """--ranks / --scale: the CLI under torchrun; wall, balance, assembly and peak RSS per rank."""
    result = {"clips_1x": args.n, "encoders": args.encoders_cli, "device": args.device, "dtype": args.dtype,
              "batch_seconds": args.batch_seconds, "torch": torch.__version__, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for factor in args.scale:
            folder = Path(tmp) / f"x{factor}"
            folder.mkdir()
            waves, durations, texts = short_clips(args.n * factor)
            manifest = write_dataset(folder, waves, durations, texts)
            for ranks in args.ranks:
                out = folder / f"ranks{ranks}.h5"
                figures = {"scale": factor, "clips": len(waves), **extract_with_ranks(manifest, out, ranks, args)}
                out.unlink()
                result["runs"].append(figures)
                print(f"x{factor:<3d} {len(waves):6d} clips, {ranks} rank(s): wall {figures['wall_s']:.1f} s "
                      f"(extraction {figures['extract_s']:.1f} s), peak RSS per rank "
                      f"{', '.join(f'{mb:.0f}' for mb in figures['peak_rss_mb'])} MB"
                      + (f", padded audio per rank {figures['padded_s_per_rank']} s (max/mean "
                         f"{figures['padded_max_over_mean']:.3f}), encoding wall max/mean "
                         f"{figures['encode_wall_max_over_mean']:.3f}, assembly {100 * figures['assembly_share']:.1f}%"
                         if "padded_s_per_rank" in figures else ""), flush=True)
    report_ranks(result)
    print(json.dumps(result))
    return result


def report_ranks(result: dict) -> None:
    runs = result["runs"]
    for factor in sorted({r["scale"] for r in runs}):
        one = [r for r in runs if r["scale"] == factor and r["ranks"] == 1]
        for r in runs:
            if r["scale"] == factor and r["ranks"] > 1 and one:
                print(f"speed-up    x{factor}: {r['ranks']} ranks / 1 rank = {one[0]['wall_s'] / r['wall_s']:.2f} "
                      f"(whole command), {one[0]['extract_s'] / r['extract_s']:.2f} (extraction as the summary "
                      "times it)")
    factors = sorted({r["scale"] for r in runs})
    if len(factors) > 1:
        for ranks in sorted({r["ranks"] for r in runs}):
            peak = {r["scale"]: max(r["peak_rss_mb"]) for r in runs if r["ranks"] == ranks}
            top, low = factors[-1], factors[-2]
            print(f"memory      {ranks} rank(s): highest peak RSS of a rank "
                  + ", ".join(f"x{f} {peak[f]:.0f} MB" for f in factors)
                  + f"; x{top} / x{low} = {peak[top] / peak[low]:.3f}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--n", type=int, default=IEMOCAP_CLIPS, help="clips (default: IEMOCAP's 5,531)")
    parser.add_argument("--per-utt-n", type=int, default=300, help="clips for the batch-1 runs")
    parser.add_argument("--encoders", default="base", choices=["base", "tiny"])
    parser.add_argument("--batch-seconds", type=parse_batch_seconds, default=AUTO,
                        help="auto (default: from the GPU's memory, as swrr-extract) or seconds")
    parser.add_argument("--budgets", default="100,160,200,400", help="batch seconds for the memory table")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: pipeline's)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--profile", action="store_true", help="torch.profiler over steady-state forward batches")
    parser.add_argument("--profile-batches", type=int, default=6, help="batches spread over the plan to profile")
    parser.add_argument("--quick", action="store_true", help="tiny encoders, 48 clips, CPU: < 1 minute")
    parser.add_argument("--ranks", type=int_list, default=None,
                        help="e.g. 1,2: run the real CLI under torchrun with these numbers of ranks on --n "
                             "short clips (instead of the throughput measurements above)")
    parser.add_argument("--scale", type=int_list, default=None,
                        help="e.g. 1,4,16: --ranks runs at these multiples of --n clips (peak RSS per rank)")
    args = parser.parse_args(argv)
    if args.ranks or args.scale:
        args.ranks, args.scale = args.ranks or [2], args.scale or [1]
        args.n = args.n if args.n != IEMOCAP_CLIPS else 200
        args.device = resolve_device("auto").type if args.device == "auto" else args.device
        args.encoders_cli = "tiny"  # the CLI's offline encoders (base architectures exist only in this script)
        if args.batch_seconds == AUTO:
            args.batch_seconds = AUTO if args.device == "cuda" else 20.0
        return rank_runs(args)
    if args.quick:
        args.device, args.encoders, args.n, args.per_utt_n = "cpu", "tiny", 48, 8
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    from swrr.extract.featurizer import default_workers, resolve_batch_seconds

    workers = default_workers() if args.workers is None else args.workers
    fp16 = args.dtype == "float16" and device.type == "cuda"
    budget, budget_text = resolve_batch_seconds(args.batch_seconds, device, args.dtype)

    audio, text = base_encoders() if args.encoders == "base" else tiny_encoders()
    audio.to(device, fp16)
    text.to(device, fp16)
    waves, durations, texts = synthetic_clips(args.n)
    few = slice(0, min(args.per_utt_n, args.n))
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"device": card, "encoders": f"{audio.name} + {text.name}", "clips": args.n,
              "audio_hours_capped": round(sum(len(w) for w in waves) / SAMPLE_RATE / 3600, 3),
              "batch_seconds": budget, "batch_budget": budget_text, "dtype": args.dtype, "fp16_autocast": fp16,
              "workers": workers, "torch": torch.__version__}

    rates = forward_rates(audio, text, waves, texts, budget, device)
    result.update(forward_batched_utt_s=rates["utt_s"], forward_batched_s=rates["s"],
                  forward_first_pass_utt_s=rates["first_pass_utt_s"], batches=rates["batches"],
                  padding_waste=rates["padding_waste"])
    if budget != CPU_BATCH_SECONDS:  # the former default, for comparison
        rates = forward_rates(audio, text, waves, texts, CPU_BATCH_SECONDS, device)
    result.update(forward_160s_utt_s=rates["utt_s"], forward_160s_first_pass_utt_s=rates["first_pass_utt_s"])
    if args.profile:
        batches, _ = device_batches(audio, text, waves, texts, budget, device)
        picked = sorted(set(np.linspace(0, len(batches) - 1, min(args.profile_batches, len(batches))).astype(int)))
        result["profile"] = profile_forward(audio, text, [batches[i] for i in picked], device)
        del batches
    seconds, n, _ = pure_forward(audio, text, waves[few], texts[few], 0, device)
    result["forward_batch1_utt_s"] = n / seconds
    if device.type == "cuda":
        result["peak_gpu_gb_by_batch_seconds"] = {
            b: round(peak_memory_gb(audio, text, waves, texts, float(b), device), 2) for b in args.budgets.split(",")}

    try:
        import soundfile  # noqa: F401
    except ImportError:
        result["end_to_end"] = "skipped: soundfile is not installed"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "all").mkdir()
            (tmp / "few").mkdir()
            manifest = write_dataset(tmp / "all", waves, durations, texts)
            small = write_dataset(tmp / "few", waves[few], durations[few], texts[few])
            summary = end_to_end(manifest, tmp / "all.h5", (audio, text), device, args.batch_seconds, workers,
                                 args.dtype)
            result.update(e2e_batched_utt_s=summary.rows / summary.seconds, e2e_batched_s=summary.seconds,
                          cache_gb=summary.file_bytes / 1e9, e2e_write_s=summary.write_seconds,
                          e2e_batch_budget=summary.batch_budget)
            summary = end_to_end(small, tmp / "few.h5", (audio, text), device, 0, workers, args.dtype)
            result["e2e_batch1_utt_s"] = summary.rows / summary.seconds
        result["e2e_over_forward"] = result["e2e_batched_utt_s"] / result["forward_batched_utt_s"]
        result["e2e_batched_over_batch1"] = result["e2e_batched_utt_s"] / result["e2e_batch1_utt_s"]
    result["forward_batched_over_batch1"] = result["forward_batched_utt_s"] / result["forward_batch1_utt_s"]
    report(result)
    return result


def report(r: dict) -> None:
    print(f"device {r['device']} | {r['encoders']} | {r['clips']} clips, {r['audio_hours_capped']} h after the "
          f"5.1 s cap | batch budget {r['batch_budget']}, {r['dtype']}, fp16 autocast {r['fp16_autocast']}")
    print(f"forward     batched {r['forward_batched_utt_s']:8.1f} utt/s ({r['forward_batched_s']:.2f} s, "
          f"{r['batches']} batches; first pass {r['forward_first_pass_utt_s']:.1f} utt/s) | "
          f"batch 1 {r['forward_batch1_utt_s']:7.1f} utt/s | ratio {r['forward_batched_over_batch1']:.1f}x")
    print(f"            at 160 s batches {r['forward_160s_utt_s']:8.1f} utt/s "
          f"(first pass {r['forward_160s_first_pass_utt_s']:.1f} utt/s)")
    if "e2e_batched_utt_s" in r:
        print(f"end-to-end  batched {r['e2e_batched_utt_s']:8.1f} utt/s ({r['e2e_batched_s']:.2f} s to the finished "
              f"{r['cache_gb']:.2f} GB cache, {r['workers']} workers) | batch 1 {r['e2e_batch1_utt_s']:7.1f} utt/s | "
              f"ratio {r['e2e_batched_over_batch1']:.1f}x")
        print(f"            HDF5 writes {r['e2e_write_s']:.2f} s in the writer thread "
              f"({100 * r['e2e_write_s'] / r['e2e_batched_s']:.0f}% of the run, overlapped)")
        print(f"overlap     end-to-end / forward = {r['e2e_over_forward']:.2f}")
    else:
        print(f"end-to-end  {r['end_to_end']}")
    print(f"padding     {100 * r['padding_waste']:.2f}% of the encoded audio")
    if "peak_gpu_gb_by_batch_seconds" in r:
        print("memory      " + ", ".join(f"{b} s -> {gb:.2f} GB" for b, gb in r["peak_gpu_gb_by_batch_seconds"].items()))
    for part, p in r.get("profile", {}).items():
        report_profile(part, p)
    print(json.dumps(r))


def report_profile(part: str, p: dict) -> None:
    busy = (f", GPU {p['gpu_ms_per_batch']:.1f} ms/batch (busy {100 * p['gpu_busy']:.0f}%)"
            if "gpu_busy" in p else "")
    print(f"profile     {part}: {p['batches']} batches, wall {p['wall_ms_per_batch']:.1f} ms/batch{busy}, "
          f"host syncs {p['host_syncs_per_batch']:.1f}/batch")
    print("            sync points: " + (", ".join(f"{k} {c}" for k, c in p["sync_points"].items()) or "none"))
    if part == "wavlm+bert" or "gpu_busy" not in p:
        print(f"            top {'CUDA kernels' if 'gpu_busy' in p else 'CPU ops'} (ms/batch):")
        for name, ms in p["top"]:
            print(f"            {ms:9.2f}  {name[:110]}")


if __name__ == "__main__":
    main()
