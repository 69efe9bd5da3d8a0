"""Extraction throughput on IEMOCAP-like clips, in one run on the same clips and models.

    python benchmarks/extract.py                    # WavLM-base+ / BERT-base architectures, 5,531 clips
    python benchmarks/extract.py --quick            # tiny encoders, 48 clips, CPU, < 1 minute
    python benchmarks/extract.py --device cpu --n 200

Measures:
  forward      pure encoder forward (WavLM + BERT) on pre-loaded, pre-padded tensors already on the
               device: the ceiling. Batched (the pipeline's plan; a first pass over all batch shapes,
               then the steady-state pass reported) and batch 1 (--per-utt-n clips).
  end-to-end   the real pipeline (run_extraction): synthetic 16 kHz wavs in a temp folder -> header
               checks -> decode in worker processes -> encode -> HDF5 writer thread -> finished cache.
               Batched, and batch 1 (--batch-seconds 0) on the --per-utt-n subset.
  ratios       batched / batch 1 (forward and end-to-end), end-to-end / forward (overlap).
  padding      fraction of the encoded audio that is padding, for the length-sorted plan.
  memory       peak GPU memory of the forward at each --budgets value (CUDA only).

Models are the real architectures with random weights (WavLMConfig() and BertConfig() defaults are
wavlm-base-plus / bert-base-uncased sized), so it runs offline; the tokenizer is the tiny offline
WordPiece vocabulary. Clip durations: log-normal (median ~3.6 s, 28% over the 5.1 s cap), like
IEMOCAP's 5,531 4-class utterances (5.46 h after the cap, SPEC §7). Prints readable lines and
one JSON line. The end-to-end part needs soundfile; without it only the forward part runs.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extract.batching import DEFAULT_BATCH_SECONDS, plan_batches  # noqa: E402
from extract.encoders import (TINY_VOCAB, AudioEncoder, TextEncoder, build_tiny_text,  # noqa: E402
                              tiny_encoders)

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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pure_forward(audio, text, waves, texts, batch_seconds: float, device: torch.device, limit=None):
    """Seconds to encode all clips with inputs prepared and on the device beforehand; (seconds, plan)."""
    plan = plan_batches([len(w) for w in waves], SAMPLE_RATE, batch_seconds)
    batches = []
    for rows in plan.batches[:limit]:
        values, lengths = audio.collate([audio.prepare(waves[r]) for r in rows])
        tokens = {k: v.to(device) for k, v in text.tokenize([texts[r] for r in rows]).items()}
        batches.append((values.to(device), lengths, tokens, len(rows)))
    sync(device)
    start = time.perf_counter()
    for values, lengths, tokens, _ in batches:
        audio(values, lengths)
        text(tokens)
    sync(device)
    return time.perf_counter() - start, sum(b[3] for b in batches), plan


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


def end_to_end(manifest: Path, out: Path, encoders, device: torch.device, batch_seconds: float, workers: int,
               dtype: str):
    """The real pipeline with these encoders, to a finished cache; -> its Summary."""
    from extract.pipeline import ExtractConfig, run_extraction

    config = ExtractConfig(dataset="manifest", root=manifest, out=out, encoders="benchmark", device=device.type,
                           dtype=dtype, batch_seconds=batch_seconds, num_workers=workers, progress=False)
    return run_extraction(config, encoders=encoders)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--n", type=int, default=IEMOCAP_CLIPS, help="clips (default: IEMOCAP's 5,531)")
    parser.add_argument("--per-utt-n", type=int, default=300, help="clips for the batch-1 runs")
    parser.add_argument("--encoders", default="base", choices=["base", "tiny"])
    parser.add_argument("--batch-seconds", type=float, default=DEFAULT_BATCH_SECONDS)
    parser.add_argument("--budgets", default="100,160,200,400", help="batch seconds for the memory table")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: pipeline's)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--quick", action="store_true", help="tiny encoders, 48 clips, CPU: < 1 minute")
    args = parser.parse_args(argv)
    if args.quick:
        args.device, args.encoders, args.n, args.per_utt_n = "cpu", "tiny", 48, 8
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    from extract.pipeline import default_workers

    workers = default_workers() if args.workers is None else args.workers
    fp16 = args.dtype == "float16" and device.type == "cuda"

    audio, text = base_encoders() if args.encoders == "base" else tiny_encoders()
    audio.to(device, fp16)
    text.to(device, fp16)
    waves, durations, texts = synthetic_clips(args.n)
    few = slice(0, min(args.per_utt_n, args.n))
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"device": card, "encoders": f"{audio.name} + {text.name}", "clips": args.n,
              "audio_hours_capped": round(sum(len(w) for w in waves) / SAMPLE_RATE / 3600, 3),
              "batch_seconds": args.batch_seconds, "dtype": args.dtype, "fp16_autocast": fp16, "workers": workers,
              "torch": torch.__version__}

    # The first pass meets every batch shape for the first time (cuDNN/cuBLAS choose kernels, the
    # allocator grows); the second is the steady state that the end-to-end runs below also see.
    cold, n, _ = pure_forward(audio, text, waves, texts, args.batch_seconds, device)
    seconds, n, plan = pure_forward(audio, text, waves, texts, args.batch_seconds, device)
    result.update(forward_batched_utt_s=n / seconds, forward_batched_s=seconds, forward_first_pass_utt_s=n / cold,
                  batches=len(plan), padding_waste=plan.padding_waste)
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
                          cache_gb=summary.file_bytes / 1e9)
            summary = end_to_end(small, tmp / "few.h5", (audio, text), device, 0, workers, args.dtype)
            result["e2e_batch1_utt_s"] = summary.rows / summary.seconds
        result["e2e_over_forward"] = result["e2e_batched_utt_s"] / result["forward_batched_utt_s"]
        result["e2e_batched_over_batch1"] = result["e2e_batched_utt_s"] / result["e2e_batch1_utt_s"]
    result["forward_batched_over_batch1"] = result["forward_batched_utt_s"] / result["forward_batch1_utt_s"]
    report(result)
    return result


def report(r: dict) -> None:
    print(f"device {r['device']} | {r['encoders']} | {r['clips']} clips, {r['audio_hours_capped']} h after the "
          f"5.1 s cap | batches of <= {r['batch_seconds']:g} s, {r['dtype']}, fp16 autocast {r['fp16_autocast']}")
    print(f"forward     batched {r['forward_batched_utt_s']:8.1f} utt/s ({r['forward_batched_s']:.2f} s, "
          f"{r['batches']} batches; first pass {r['forward_first_pass_utt_s']:.1f} utt/s) | "
          f"batch 1 {r['forward_batch1_utt_s']:7.1f} utt/s | ratio {r['forward_batched_over_batch1']:.1f}x")
    if "e2e_batched_utt_s" in r:
        print(f"end-to-end  batched {r['e2e_batched_utt_s']:8.1f} utt/s ({r['e2e_batched_s']:.2f} s to the finished "
              f"{r['cache_gb']:.2f} GB cache, {r['workers']} workers) | batch 1 {r['e2e_batch1_utt_s']:7.1f} utt/s | "
              f"ratio {r['e2e_batched_over_batch1']:.1f}x")
        print(f"overlap     end-to-end / forward = {r['e2e_over_forward']:.2f}")
    else:
        print(f"end-to-end  {r['end_to_end']}")
    print(f"padding     {100 * r['padding_waste']:.2f}% of the encoded audio")
    if "peak_gpu_gb_by_batch_seconds" in r:
        print("memory      " + ", ".join(f"{b} s -> {gb:.2f} GB" for b, gb in r["peak_gpu_gb_by_batch_seconds"].items()))
    print(json.dumps(r))


if __name__ == "__main__":
    main()
