"""What storing every hidden state costs: cache size, row reads, and training 1 vs 13 layers.

On two synthetic caches of the same rows (benchmarks/train.py's IEMOCAP-like maker), one with
one hidden state per modality and one with 13 (a base encoder's `--layers all`):

- the file sizes, and the estimate for IEMOCAP (5,531 rows, 768-d, float16) the summary prints;
- row reads as --stream does them (FeatureCache.read_rows, one chunk per row and layer): 1 of 13
  layers, all 13, and the one-layer cache; reading 1 of 13 should cost what the one-layer cache
  costs, since only that layer's chunks are read;
- the real `swrr-train` (one fold, one epoch, each run in its own process) on each cache, streamed
  (--stream --workers 0: reading happens in the measured process) and resident (the default):
  peak RSS and training steps/s from the run's metrics.json; the 13-layer cache with the
  learned mix and with --layer-mix 12 (one layer of the 13: the same work as the one-layer cache).

    python benchmarks/layers.py --quick        # a CPU smoke test (64-d, 512 rows, small head)
    python benchmarks/layers.py --device cuda  # IEMOCAP size

Prints readable lines, then one JSON line of the numbers and their ratios.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from train import IEMOCAP_ROWS, make_cache
from swrr.cache import FeatureCache, estimated_bytes


def read_seconds(cache: FeatureCache, rows: np.ndarray, batch: int) -> float:
    """Seconds per row of read_rows over `rows` in batches (as a streaming epoch reads them)."""
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        cache.read_rows(rows[i:i + batch])
    return (time.perf_counter() - started) / len(rows)


def train_once(cache: Path, runs: Path, name: str, args, *extra: str) -> dict:
    """One fold, one epoch of the real swrr-train in a fresh process: its metrics.json numbers."""
    command = [sys.executable, "-m", "swrr.train", "--cache", str(cache), "--runs-dir", str(runs), "--name", name,
               "--protocol", "loso-speaker", "--folds", "1", "--epochs", "1", "--batch-size", str(args.batch_size),
               "--lstm-hidden", str(args.lstm_hidden), "--device", args.device, "--no-progress", *extra]
    if args.quick:
        command += ["--model-set", "cnn_channels=[8,16,16]"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((runs / name / "fold01" / "metrics.json").read_text())
    return {"peak_rss_gb": metrics["peak_rss_gb"], "steps_per_s": metrics["train_steps_per_s"],
            "peak_gpu_gb": metrics["peak_gpu_mem_gb"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: 512 rows, 64-d, small head")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, help=f"rows (default {IEMOCAP_ROWS}, quick 512)")
    parser.add_argument("--dim", type=int, help="feature size (default 768, quick 64)")
    parser.add_argument("--layers", type=int, default=13, help="hidden states of the many-layer cache")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lstm-hidden", type=int, help="head size (default 384, quick 16)")
    args = parser.parse_args()
    args.rows = args.rows or (512 if args.quick else IEMOCAP_ROWS)
    args.dim = args.dim or (64 if args.quick else 768)
    args.lstm_hidden = args.lstm_hidden or (16 if args.quick else 384)
    out = {"rows": args.rows, "dim": args.dim, "layers": args.layers, "device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = make_cache(tmp / "one.h5", args.rows, args.dim)
        many = make_cache(tmp / "many.h5", args.rows, args.dim, layers=args.layers)
        out["file_gb"] = {"1": one.stat().st_size / 1e9, str(args.layers): many.stat().st_size / 1e9}
        iemocap = estimated_bytes(replace(FeatureCache(many).meta, audio_dim=768, text_dim=768), IEMOCAP_ROWS) / 1e9
        out["iemocap_estimate_gb"] = iemocap
        print(f"cache files: 1 layer {out['file_gb']['1']:.3f} GB, {args.layers} layers "
              f"{out['file_gb'][str(args.layers)]:.3f} GB ({args.rows} rows x {args.dim}-d, float16); "
              f"IEMOCAP at {args.layers} layers, 768-d: {iemocap:.1f} GB")

        rows = np.random.default_rng(0).permutation(args.rows)
        reads = {"one-layer cache": read_seconds(FeatureCache(one), rows, args.batch_size),
                 f"1 of {args.layers}": read_seconds(FeatureCache(many).select_layers([args.layers - 1],
                                                                                       [args.layers - 1]), rows,
                                                     args.batch_size),
                 f"{args.layers} of {args.layers}": read_seconds(FeatureCache(many), rows, args.batch_size)}
        out["read_ms_per_row"] = {k: 1e3 * v for k, v in reads.items()}
        base = reads["one-layer cache"]
        print("row reads (read_rows, random order): " + ", ".join(
            f"{k} {1e3 * v:.2f} ms/row ({v / base:.2f}x)" for k, v in reads.items()))

        runs = tmp / "runs"
        trainings = {}
        for label, cache, extra in (("1 layer, stream", one, ["--stream", "--workers", "0"]),
                                    (f"{args.layers} layers learned, stream", many, ["--stream", "--workers", "0"]),
                                    (f"{args.layers} layers --layer-mix {args.layers - 1}, stream", many,
                                     ["--stream", "--workers", "0", "--layer-mix", str(args.layers - 1)]),
                                    ("1 layer, resident", one, []),
                                    (f"{args.layers} layers learned, resident", many, [])):
            trainings[label] = train_once(cache, runs, f"run{len(trainings)}", args, *extra)
            t = trainings[label]
            print(f"swrr-train {label}: peak RSS {t['peak_rss_gb']:.3f} GB, {t['steps_per_s']:.2f} steps/s"
                  + (f", peak GPU {t['peak_gpu_gb']:.2f} GB" if t["peak_gpu_gb"] else ""))
        out["train"] = trainings
        first, many_stream = trainings["1 layer, stream"], trainings[f"{args.layers} layers learned, stream"]
        out["ratios"] = {"stream_rss_many_over_one": many_stream["peak_rss_gb"] / first["peak_rss_gb"],
                         "stream_steps_many_over_one": many_stream["steps_per_s"] / first["steps_per_s"],
                         "read_1_of_many_over_one_layer": reads[f"1 of {args.layers}"] / base}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
