"""How fast the trainer feeds and trains the SWRR head, and what a full IEMOCAP run costs.

Measures, on a synthetic cache of IEMOCAP shape (5,531 rows x 255 x 768 + 50 x 768, float16):

- training-step time with batches fed from the same data three ways:
    device-tensors  batches sliced from tensors made directly on the device (the ceiling),
    in-memory       the trainer's default: the cache loaded once, kept resident, indexed per batch,
    stream          --stream: rows read from HDF5 per batch by DataLoader workers;
  each with eager steps and (CUDA) with steps replayed from CUDA graphs (the trainer's CUDA
  default), and the ratios to device-tensors (targets: >= 0.95 in-memory, >= 0.8 stream);
- evaluation time of a test fold, peak memory (GPU and host);
- aggregate steps/s with N folds at once (--parallel), as `--parallel-folds N` runs them (CUDA:
  N streams of one process sharing the resident cache; CPU: N processes);
- with --profile: where a step's time goes (GPU kernel time vs wall time, top kernels, host syncs);
- the estimated wall time of a full IEMOCAP 10-fold x 50-epoch run from those rates;
- with --ranks 1,2,...: the real `swrr-train` CLI under torchrun with that many ranks (10 LOSO
  folds = 10 units dealt to the ranks): units (fold trainings) per second and the speed-up.

    python benchmarks/train.py --device cuda            # full size (a GPU)
    python benchmarks/train.py --quick                  # < 1 minute on a CPU: a smoke test, small head
    python benchmarks/train.py --ranks 1,2 --quick      # swrr-train under torchrun: units/s by ranks

Prints readable lines, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import tempfile
import time
from pathlib import Path


import numpy as np
import torch

from profiling import int_list, launch_ranks, profile_calls, sync
from swrr.cache import CacheMeta, CacheWriter, FeatureCache, RowInfo
from swrr.device import resolve_device
from swrr.rundir import RunFolder
from swrr.train.config import TrainConfig
from swrr.train.data import LENGTHS, ResidentSource, StreamSource, as_tensors
from swrr.train.loop import FoldJob, evaluate, train_epoch, training_parts
from swrr.train.step import WARMUP_STEPS
from swrr.train.protocols import Fold
from swrr.model import SWRR, SWRRConfig

IEMOCAP_ROWS, IEMOCAP_FOLDS, IEMOCAP_EPOCHS = 5531, 10, 50
CLASSES = ["neu", "ang", "sad", "hap"]


def make_cache(path: Path, rows: int, dim: int, frames: int = 255, tokens: int = 50, seed: int = 0) -> Path:
    """Random float16 features with IEMOCAP-like lengths, written in chunks of 256 rows."""
    rng = np.random.default_rng(seed)
    meta = CacheMeta(dataset="synthetic-iemocap", task="classification", label_names=CLASSES,
                     audio_encoder="synthetic", text_encoder="synthetic", audio_dim=dim, text_dim=dim,
                     max_frames=frames, max_tokens=tokens, random_encoders=True, config={"rows": rows, "dim": dim})
    infos = [RowInfo(f"u{i:05d}", i % 4, speaker=f"Ses0{i % 5 + 1}{'FM'[i % 2]}") for i in range(rows)]
    writer = CacheWriter.open(path, meta, infos, overwrite=True)
    for start in range(0, rows, 256):
        idx = np.arange(start, min(rows, start + 256))
        # most IEMOCAP utterances fill the 5.1 s cap; the rest are shorter
        a_len = np.where(rng.random(len(idx)) < 0.55, frames, rng.integers(40, frames, len(idx)))
        writer.write(idx, rng.standard_normal((len(idx), frames, dim), dtype=np.float32).astype(np.float16), a_len,
                     rng.standard_normal((len(idx), tokens, dim), dtype=np.float32).astype(np.float16),
                     rng.integers(5, tokens + 1, len(idx)))
    return writer.finalize()


class DeviceTensors:
    """The ceiling: the same rows as tensors made on the device (lengths pinned on the host, as
    the trainer's sources give them), batches as contiguous slices."""

    def __init__(self, cache: FeatureCache, device: torch.device):
        self.tensors = {k: v.pin_memory() if k in LENGTHS and device.type == "cuda" else
                        v if k in LENGTHS else v.to(device) for k, v in as_tensors(cache.load()).items()}

    def batches(self, batch_rows):
        start = 0
        for rows in batch_rows:  # same batch sizes, no gather
            yield {k: v[start:start + len(rows)] for k, v in self.tensors.items()}
            start += len(rows)

    def close(self):
        self.tensors = {}


def make_job(rows: int, args, model_config: SWRRConfig, graphs: bool = False, seed: int = 0) -> FoldJob:
    config = TrainConfig(cache="", epochs=1, lr=5e-4, batch_size=args.batch_size, progress=False,
                         amp=not args.no_amp, cuda_graphs=graphs, seed=seed)
    fold = Fold(1, "bench", np.arange(rows), np.zeros(0, np.int64), np.arange(args.test_rows))
    return FoldJob(fold, 1, config, model_config, "classification", CLASSES, "", {})


def warmed_up(source, device, args, model_config, steps: int, graphs: bool, seed: int = 0):
    """A fresh model, as loop.fit_fold builds it, trained for a warm-up epoch of args.warmup
    steps (CUDA graphs are captured there); -> (job of `steps` steps, parts, shuffle generator)."""
    job = make_job(args.warmup * args.batch_size, args, model_config, graphs, seed)
    parts = training_parts(job, device)
    generator = torch.Generator().manual_seed(seed)
    train_epoch(job, *parts[:3], source, generator, device, 0, parts[3])
    return make_job(steps * args.batch_size, args, model_config, graphs, seed), parts, generator


def timed_epoch(source, device, args, model_config, steps: int, graphs: bool, seed: int = 0, barrier=None):
    """`steps` timed steps through loop.train_epoch after a warm-up epoch (and after `barrier`, when
    given); -> (start, end) perf_counter times."""
    job, (model, optimizer, scaler, step), generator = warmed_up(source, device, args, model_config, steps,
                                                                 graphs, seed)
    sync(device)
    if barrier is not None:
        barrier.wait()
    tick = time.perf_counter()
    train_epoch(job, model, optimizer, scaler, source, generator, device, 0, step)
    sync(device)
    return tick, time.perf_counter()


def measure_steps(source, device, args, model_config, steps: int, graphs: bool) -> float:
    """Seconds per training step (after a warm-up epoch)."""
    tick, tock = timed_epoch(source, device, args, model_config, steps, graphs)
    return (tock - tick) / steps


def profile_steps(source, device, args, model_config, graphs: bool) -> dict:
    """torch.profiler over args.steps training steps (benchmarks/profiling.py): GPU kernel time vs
    wall time, host syncs, top kernels, per step; printed, and returned as numbers."""
    job, (model, optimizer, scaler, step), generator = warmed_up(source, device, args, model_config, args.steps,
                                                                 graphs)
    epoch = profile_calls(lambda _: train_epoch(job, model, optimizer, scaler, source, generator, device, 0, step),
                          [None], device)
    n = args.steps
    per_step = {"wall_ms": epoch["wall_ms_per_batch"] / n, "gpu_kernel_ms": epoch.get("gpu_ms_per_batch", 0.0) / n,
                "gpu_busy": epoch.get("gpu_busy"), "host_syncs": epoch["host_syncs_per_batch"] / n,
                "sync_points_per_step": {k: c / n for k, c in epoch["sync_points"].items()},
                "top_ms_per_step": [(name, ms / n) for name, ms in epoch["top"]]}
    print(f"  profile ({'graphs' if graphs else 'eager'}): {per_step['wall_ms']:.1f} ms/step wall, "
          f"{per_step['gpu_kernel_ms']:.1f} ms of GPU kernels"
          + (f" (GPU busy {100 * per_step['gpu_busy']:.0f}%)" if per_step["gpu_busy"] is not None else "")
          + f"; host syncs per step {per_step['host_syncs']:.2f}: {per_step['sync_points_per_step'] or 'none'}")
    for name, ms in per_step["top_ms_per_step"]:
        print(f"    {ms:8.3f} ms  {name[:110]}")
    return per_step


def measure_eval(source, device, args, model_config) -> float:
    model = SWRR(model_config).to(device)
    job = make_job(args.batch_size, args, model_config)
    evaluate(job, model, source, job.fold.test[: args.batch_size], device)  # warm-up
    sync(device)
    tick = time.perf_counter()
    evaluate(job, model, source, job.fold.test, device)
    sync(device)
    return time.perf_counter() - tick


def _peak_gpu_gb(device):
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def _parallel_worker(rank, cache_path, device_name, args, model_config, steps, barrier, queue):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.parallel_now) if device_name == "cpu" else 1)
    device = torch.device(device_name)
    source = ResidentSource(FeatureCache(cache_path), device)
    tick, tock = timed_epoch(source, device, args, model_config, steps, args.graphs, seed=rank, barrier=barrier)
    queue.put((tick, tock, _peak_gpu_gb(device)))


def measure_parallel(n: int, cache_path, device, args, model_config, steps: int):
    """Aggregate training steps/s of n processes, each training its own model (as --parallel-folds on CPU)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    args.parallel_now = n
    procs = [ctx.Process(target=_parallel_worker, args=(r, str(cache_path), str(device), args, model_config,
                                                        steps, barrier, queue)) for r in range(n)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    start, end = min(r[0] for r in results), max(r[1] for r in results)
    peaks = [r[2] for r in results if r[2] is not None]
    return n * steps / (end - start), (max(peaks) if peaks else None)


def measure_lanes(n: int, source, device, args, model_config, steps: int):
    """Aggregate training steps/s of n threads of this process, each training its own model on its
    own CUDA stream from one shared resident cache (as --parallel-folds on CUDA); -> (steps/s, peak GB)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(n)
    torch.cuda.reset_peak_memory_stats(device)

    def lane(rank):
        with torch.cuda.stream(torch.cuda.Stream(device)):
            return timed_epoch(source, device, args, model_config, steps, args.graphs, seed=rank, barrier=barrier)

    with ThreadPoolExecutor(n) as pool:
        times = list(pool.map(lane, range(n)))
    start, end = min(t[0] for t in times), max(t[1] for t in times)
    return n * steps / (end - start), _peak_gpu_gb(device)


def estimate_full_run(step_s: float, eval_s_per_fold: float, batch_size: int, steps_per_s_total: float = None) -> float:
    """Seconds for IEMOCAP 10 folds x 50 epochs: train steps of ~9/10 of the rows + one test-fold eval per epoch."""
    steps_per_epoch = math.ceil(IEMOCAP_ROWS * (IEMOCAP_FOLDS - 1) / IEMOCAP_FOLDS / batch_size)
    train_steps = IEMOCAP_FOLDS * IEMOCAP_EPOCHS * steps_per_epoch
    total_steps_per_s = steps_per_s_total or 1.0 / step_s
    # evaluation runs in the same processes and speeds up with them like training does
    speedup = total_steps_per_s * step_s
    return train_steps / total_steps_per_s + IEMOCAP_FOLDS * IEMOCAP_EPOCHS * eval_s_per_fold / speedup


def rank_runs(args, cache_path: Path, runs: Path) -> dict:
    """`swrr-train` under torchrun with 1, 2, ... ranks on the same cache: -> units/s by ranks."""
    entry = "import sys; sys.argv[0] = 'swrr-train'; from swrr.train.cli import main; main()"
    out = {}
    for ranks in args.ranks:
        _, wall = launch_ranks(entry, ["--cache", str(cache_path), "--protocol", "loso-speaker", "--epochs",
                                       str(args.epochs), "--batch-size", str(args.batch_size), "--lstm-hidden",
                                       str(args.lstm_hidden), "--device", args.device, "--threads", "1",
                                       "--no-progress", "--runs-dir", str(runs), "--name", f"ranks{ranks}"],
                               ranks, "swrr-train")
        units = sum(unit.finished() for unit in RunFolder(runs / f"ranks{ranks}").units())
        out[ranks] = {"units": units, "wall_s": wall, "units_per_s": units / wall}
        print(f"  {ranks} rank(s): {units} units in {wall:.1f} s = {units / wall:.3f} units/s"
              + (f", {out[ranks]['units_per_s'] / out[args.ranks[0]]['units_per_s']:.2f}x {args.ranks[0]} rank(s)"
                 if ranks != args.ranks[0] else ""), flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: 384 rows, small head, few steps")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--rows", type=int, help=f"cache rows (default {IEMOCAP_ROWS}, quick 384)")
    parser.add_argument("--dim", type=int, help="feature size (default 768, quick 64)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, help="timed steps per mode (default 60, quick 4)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 10, quick 1)")
    parser.add_argument("--workers", type=int, help="DataLoader workers for the stream mode (default 4, quick 2)")
    parser.add_argument("--parallel", default="", help="fold counts to measure as --parallel-folds runs them "
                                                       "(CUDA: lanes, CPU: processes), e.g. 1,4,10 (default: "
                                                       "none; full GPU run: 1,2,4,5,10)")
    parser.add_argument("--processes", default="", help="also measure these counts as separate processes "
                                                        "(the CPU way), e.g. 5, to compare on a GPU")
    parser.add_argument("--lstm-hidden", type=int, help="head size (default paper 384, quick 32)")
    parser.add_argument("--no-amp", action="store_true")
    parser.add_argument("--feeds", default="device-tensors,in-memory,stream",
                        help="which feeds to time (in-memory is needed for the estimates)")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="parallel runs and profile with eager steps")
    parser.add_argument("--profile", action="store_true", help="profile the in-memory steps (eager and graphs)")
    parser.add_argument("--cache", type=Path, help="reuse this synthetic cache (made if missing)")
    parser.add_argument("--ranks", type=int_list, default=None,
                        help="e.g. 1,2: run swrr-train under torchrun with these numbers of ranks (10 LOSO folds) "
                             "and report units/s, instead of the step measurements")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fold for --ranks (default 2)")
    args = parser.parse_args()
    quick = args.quick
    args.rows = args.rows or (384 if quick else IEMOCAP_ROWS)
    args.dim = args.dim or (64 if quick else 768)
    args.steps = args.steps or (4 if quick else 60)
    args.workers = args.workers if args.workers is not None else (2 if quick else 4)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 10)
    args.lstm_hidden = args.lstm_hidden or (32 if quick else 384)
    args.test_rows = min(args.rows, round(IEMOCAP_ROWS / IEMOCAP_FOLDS))
    if not quick and not args.parallel and torch.cuda.is_available():
        args.parallel = "1,2,4,5,10"
    device = resolve_device(args.device)
    args.graphs = device.type == "cuda" and not args.no_cuda_graphs
    if device.type == "cuda":  # the warm-up epoch must reach the capture of the full batch size
        args.warmup = max(args.warmup, WARMUP_STEPS + 2)
    model_config = SWRRConfig(audio_dim=args.dim, text_dim=args.dim, lstm_hidden=args.lstm_hidden,
                              **({"cnn_channels": (8, 16, 16)} if quick else {}))

    with tempfile.TemporaryDirectory() as tmp:
        cache_path = args.cache or Path(tmp) / "synthetic.h5"
        tick = time.perf_counter()
        if not Path(cache_path).exists():
            make_cache(Path(cache_path), args.rows, args.dim)
        make_s = time.perf_counter() - tick
        if args.ranks:
            args.device = device.type
            print(f"swrr-train by ranks: {args.rows} rows, 10 LOSO folds, {args.epochs} epochs, lstm_hidden "
                  f"{args.lstm_hidden}, batch {args.batch_size}, {device}, 1 thread per rank")
            print(json.dumps({"ranks": rank_runs(args, Path(cache_path), Path(tmp) / "runs"), "rows": args.rows,
                              "epochs": args.epochs, "device": str(device)}))
            return
        cache = FeatureCache(cache_path)
        gb = Path(cache_path).stat().st_size / 1e9
        print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
              f"torch {torch.__version__}, {os.cpu_count()} CPUs; cache {args.rows} rows, {gb:.2f} GB "
              f"(made in {make_s:.1f} s); head lstm_hidden {args.lstm_hidden}, batch {args.batch_size}, "
              f"AMP {device.type == 'cuda' and not args.no_amp}" + ("  [--quick: small head, not representative]" if quick else ""))
        results = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                   "torch": torch.__version__, "rows": args.rows, "cache_gb": gb, "batch_size": args.batch_size,
                   "lstm_hidden": args.lstm_hidden, "quick": quick, "modes": {}}
        step_kinds = [False, True] if device.type == "cuda" else [False]  # CUDA graphs: CUDA only
        for feed in args.feeds.split(","):
            for graphs in step_kinds:
                mode = feed + (" + graphs" if graphs else "")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                tick = time.perf_counter()
                source = {"device-tensors": lambda: DeviceTensors(cache, device),
                          "in-memory": lambda: ResidentSource(cache, device),
                          "stream": lambda: StreamSource(cache, device, args.workers)}[feed]()
                load_s = time.perf_counter() - tick
                step_s = measure_steps(source, device, args, model_config, args.steps, graphs)
                eval_s = measure_eval(source, device, args, model_config) if mode == "in-memory" else None
                if args.profile and feed == "in-memory":
                    results.setdefault("profile", {})[mode] = profile_steps(source, device, args, model_config, graphs)
                source.close()
                results["modes"][mode] = {"step_s": step_s, "steps_per_s": 1 / step_s, "load_s": load_s,
                                          "peak_gpu_gb": _peak_gpu_gb(device), "eval_s_per_test_fold": eval_s}
        for mode, r in results["modes"].items():
            base = results["modes"].get("device-tensors" + (" + graphs" if mode.endswith("graphs") else ""), r)
            r["ratio_to_device_tensors"] = base["step_s"] / r["step_s"]
            print(f"  {mode:<24} {1000 * r['step_s']:8.1f} ms/step  {r['steps_per_s']:7.2f} steps/s  "
                  f"ratio {r['ratio_to_device_tensors']:.3f}  load {r['load_s']:.1f} s"
                  + (f"  peak GPU {r['peak_gpu_gb']:.2f} GB" if r["peak_gpu_gb"] is not None else "") + (f"  eval of a test fold ({args.test_rows} rows) "
                                                           f"{r['eval_s_per_test_fold']:.2f} s"
                                                           if r["eval_s_per_test_fold"] else ""))
        eval_s = results["modes"]["in-memory"]["eval_s_per_test_fold"]
        mem = results["modes"]["in-memory" + (" + graphs" if args.graphs else "")]  # the trainer's default
        results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        results["estimate_sequential_s"] = estimate_full_run(mem["step_s"], eval_s, args.batch_size)
        print(f"  peak host RSS {results['peak_rss_gb']:.2f} GB")
        print(f"  estimated IEMOCAP 10 folds x 50 epochs, sequential: {results['estimate_sequential_s'] / 60:.1f} min")
        results["parallel"] = {}
        lanes = device.type == "cuda"  # what --parallel-folds does on this device
        shared = ResidentSource(cache, device) if lanes else None
        counts = [(int(x), lanes) for x in args.parallel.split(",") if x.strip()]
        counts += [(int(x), False) for x in args.processes.split(",") if x.strip()]
        for n, as_lanes in counts:
            total, peak = (measure_lanes(n, shared, device, args, model_config, args.steps) if as_lanes
                           else measure_parallel(n, cache_path, device, args, model_config, args.steps))
            est = estimate_full_run(mem["step_s"], eval_s, args.batch_size, total)
            kind = "lanes" if as_lanes else "processes"
            results["parallel"][f"{n} {kind}"] = {"folds": n, "kind": kind, "steps_per_s_total": total,
                                                  "peak_gpu_gb": peak, "estimate_s": est}
            print(f"  --parallel-folds {n:<2} ({'CUDA streams of one process' if as_lanes else 'processes'}): "
                  f"{total:7.2f} steps/s in total" + (f", peak GPU {peak:.2f} GB" if peak is not None else "")
                  + f", estimated 10x50 run {est / 60:.1f} min")
        if shared is not None:
            shared.close()
        cache.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
