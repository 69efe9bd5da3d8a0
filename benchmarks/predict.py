"""swrr-predict speed: throughput against swrr-extract on the same clips, and one-clip latency.

    python benchmarks/predict.py                 # WavLM-base+ / BERT-base architectures, 500 clips
    python benchmarks/predict.py --quick         # tiny encoders, 48 clips, CPU
    python benchmarks/predict.py --device cuda --n 2000

Measures, on the same synthetic IEMOCAP-like clips (benchmarks/extract.py's) and the same device:
  extract        run_extraction over the clips' manifest: utterances/s to a finished cache.
  predict        swrr-predict's run_predict over the same manifest, to a finished CSV: rows/s
                 (end to end, model and encoders loaded inside), and rows/s of the scoring alone
                 with a loaded Predictor (warm).
  ratio          predict warm / extract (the goal is >= 0.9: the head is tiny next to the encoders).
  latency        one 5 s clip: cold = `python -m swrr.predict` process start to CSV written;
                 warm = Predictor.predict from Python with everything loaded (median of 5), and
                 its ratio to the encoders' + head's own forward on the same clip (inputs
                 prepared beforehand; target <= 1.3).
The encoders are random-weight models of the real architectures saved into a temp folder, which
the bundle's recipe names, so predict loads them exactly as it would load real ones; the head is
a paper-size SWRR with random weights. Prints readable lines and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


from extract import SAMPLE_RATE, base_encoders, end_to_end, synthetic_clips, write_dataset
from swrr.extract.batching import AUTO, parse_batch_seconds
from swrr.extract.encoders import tiny_encoders
from swrr.extract.featurizer import default_workers
from swrr.predict.engine import Predictor
from swrr.predict.inputs import Item
from swrr.predict.runner import PredictConfig, run_predict
from swrr.bundle import load_bundle, write_bundle
from swrr.cache import CacheMeta
from swrr.device import resolve_device
from swrr.model import SWRR, SWRRConfig
REPO = Path(__file__).resolve().parents[1]


def save_encoders(audio, text, folder: Path):
    """The encoders as hub-style folders (what a user's local copy looks like) -> (audio dir, text dir)."""
    paths = folder / "audio", folder / "text"
    audio.model.save_pretrained(paths[0])
    audio.feature_extractor.save_pretrained(paths[0])
    text.model.save_pretrained(paths[1])
    text.tokenizer.save_pretrained(paths[1])
    return paths


def make_bundle(folder: Path, audio_dir: Path, text_dir: Path, dim: int, dtype: str) -> Path:
    config = SWRRConfig(audio_dim=dim, text_dim=dim, num_outputs=4)
    torch.manual_seed(0)
    recipe = CacheMeta(dataset="benchmark", task="classification", label_names=["c0", "c1", "c2", "c3"],
                       audio_encoder=str(audio_dir), text_encoder=str(text_dir), audio_dim=dim, text_dim=dim,
                       dtype=dtype, random_encoders=True, config={"encoders": "pretrained"})
    return write_bundle(folder, SWRR(config).state_dict(), config, "classification", recipe.label_names, recipe,
                        {"protocol": "benchmark", "fold": 1})


def cold_latency(bundle: Path, clip: Path, out: Path, device: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "swrr.predict", "--model", str(bundle), str(clip), "--text",
                    "one two three", "--out", str(out), "--device", device, "--no-progress", "--segment", "none"],
                   cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def forward_seconds(predictor: Predictor, wave: np.ndarray, text: str) -> float:
    """The encoders' and the head's own forward on one clip, its inputs prepared beforehand
    (decoded, cut to the model's span, tokenized): the floor of a warm prediction."""
    input_values, lengths = predictor.audio.collate([predictor.audio.prepare(wave[:predictor.max_samples])])
    tokens = predictor.text.tokenize([text])
    recipe, device = predictor.recipe, predictor.device
    start = time.perf_counter()
    audio, frames = predictor.audio(input_values, lengths)
    words, token_count = predictor.text(tokens)
    with torch.no_grad():
        predictor.model(F.pad(audio, (0, 0, 0, recipe.max_frames - audio.shape[1])), torch.as_tensor(frames),
                        F.pad(words, (0, 0, 0, recipe.max_tokens - words.shape[1])), torch.as_tensor(token_count))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--n", type=int, default=500, help="clips")
    parser.add_argument("--encoders", default="base", choices=["base", "tiny"])
    parser.add_argument("--batch-seconds", type=parse_batch_seconds, default=AUTO)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: extract's)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--quick", action="store_true", help="tiny encoders, 48 clips, CPU")
    args = parser.parse_args(argv)
    if args.quick:
        args.device, args.encoders, args.n = "cpu", "tiny", 48
    device = resolve_device("auto").type if args.device == "auto" else args.device
    workers = default_workers() if args.workers is None else args.workers
    audio, text = base_encoders() if args.encoders == "base" else tiny_encoders()
    waves, durations, texts = synthetic_clips(args.n)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "clips": args.n,
              "encoders": args.encoders, "dtype": args.dtype, "workers": workers, "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "clips").mkdir()
        manifest = write_dataset(tmp / "clips", waves, durations, texts)
        audio_dir, text_dir = save_encoders(audio, text, tmp / "encoders")
        bundle = make_bundle(tmp / "bundle", audio_dir, text_dir, audio.dim, args.dtype)
        fp16 = args.dtype == "float16" and device == "cuda"
        audio.to(device, fp16)
        text.to(device, fp16)
        summary = end_to_end(manifest, tmp / "cache.h5", (audio, text), torch.device(device), args.batch_seconds,
                             workers, args.dtype)
        result["extract_utt_s"] = summary.rows / summary.seconds
        del audio, text

        config = PredictConfig(model=str(bundle), inputs=[str(manifest)], out=tmp / "p.csv", device=device,
                               batch_seconds=args.batch_seconds, segment="none", workers=workers, progress=False)
        predicted = run_predict(config)
        result["predict_e2e_rows_s"] = predicted.predicted / predicted.seconds

        from swrr.predict.inputs import collect_inputs

        predictor = Predictor(load_bundle(bundle), device, batch_seconds=args.batch_seconds, workers=workers)
        items = collect_inputs([str(manifest)])
        predictor.predict(items)  # meets every batch shape once, as extraction's single pass did not
        items = collect_inputs([str(manifest)])
        start = time.perf_counter()
        predictor.predict(items)
        result["predict_warm_rows_s"] = len(items) / (time.perf_counter() - start)
        result["predict_e2e_over_extract"] = result["predict_e2e_rows_s"] / result["extract_utt_s"]
        result["predict_warm_over_extract"] = result["predict_warm_rows_s"] / result["extract_utt_s"]

        import soundfile as sf

        clip = tmp / "five.wav"
        sf.write(clip, (0.1 * np.random.default_rng(2).standard_normal(5 * SAMPLE_RATE)).astype(np.float32),
                 SAMPLE_RATE)
        warm, forward = [], []
        wave = sf.read(clip, dtype="float32")[0]
        for _ in range(6):  # alternating, so that load on the machine hits both alike
            start = time.perf_counter()
            predictor.predict([Item("five", clip, "one two three", "given")])
            warm.append(time.perf_counter() - start)
            forward.append(forward_seconds(predictor, wave, "one two three"))
        result["latency_warm_ms"] = 1000 * statistics.median(warm[1:])
        result["forward_ms"] = 1000 * statistics.median(forward[1:])
        result["warm_over_forward"] = result["latency_warm_ms"] / result["forward_ms"]
        result["latency_cold_s"] = cold_latency(bundle, clip, tmp / "one.csv", device)
    report(result)
    return result


def report(r: dict) -> None:
    print(f"device {r['device']}, {r['encoders']} encoders, {r['clips']} clips, {r['dtype']}, "
          f"{r['workers']} decoding workers, {r['threads']} torch threads")
    print(f"  swrr-extract end to end       {r['extract_utt_s']:8.1f} utt/s")
    print(f"  swrr-predict end to end       {r['predict_e2e_rows_s']:8.1f} rows/s  "
          f"({r['predict_e2e_over_extract']:.2f} x extract; loading included)")
    print(f"  swrr-predict warm             {r['predict_warm_rows_s']:8.1f} rows/s  "
          f"({r['predict_warm_over_extract']:.2f} x extract)")
    print(f"  one 5 s clip: cold {r['latency_cold_s']:.1f} s (process start to CSV), "
          f"warm {r['latency_warm_ms']:.0f} ms (Python, loaded)")
    print(f"  warm clip / the encoders' + head's own forward ({r['forward_ms']:.0f} ms): "
          f"{r['warm_over_forward']:.2f} (target <= 1.3)")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
