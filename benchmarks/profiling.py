"""What the benchmarks share: a device sync, a torch.profiler summary of repeated calls, and a
swrr command launched under torchrun with a number of ranks."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]


def int_list(text: str) -> List[int]:
    """"1,2,4" -> [1, 2, 4] (argparse type of --ranks and --scale)."""
    return [int(part) for part in text.split(",") if part.strip()]


def launch_ranks(entry: str, args: List[str], ranks: int, what: str,
                 env: Optional[Dict[str, str]] = None) -> Tuple[subprocess.CompletedProcess, float]:
    """Python code `entry` (a CLI's main) with `args` under torchrun with `ranks` processes (1: a
    plain process), run from the repository so its packages come first on sys.path;
    -> (the finished process, wall seconds). SystemExit with the end of stderr when it fails."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                 "--no-python", sys.executable] if ranks > 1 else [sys.executable])
    env = {k: v for k, v in (env or os.environ).items() if k != "WORLD_SIZE"}  # never inherit a launch
    started = time.perf_counter()
    done = subprocess.run(launcher + ["-c", entry, *args], cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{what} with {ranks} ranks failed:\n{done.stderr[-3000:]}")
    return done, wall


def sync(device) -> None:
    """Wait for the device (a torch.device or its name); nothing to wait for on a CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


SYNC_MARKS = ("Synchronize", "Memcpy", "nonzero", "local_scalar_dense")  # names differ across torch versions


def _device_us(event) -> float:
    """An averaged profiler event's self GPU time in microseconds (renamed in torch 2.4)."""
    value = getattr(event, "self_device_time_total", None)
    return float(value if value is not None else event.self_cuda_time_total)


def profile_calls(run, items, device: torch.device, top: int = 12) -> dict:
    """torch.profiler over run(item) for each item: wall and GPU time per item, host syncs and the
    sync points behind them, top kernels (top CPU ops on a CPU). Per item: `batches` counts them."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for item in items:
            run(item)
        sync(device)  # counted below as one cudaDeviceSynchronize
        wall = time.perf_counter() - start
    events = prof.key_averages()
    n = len(items)
    marks = {e.key: e.count for e in events if any(m in e.key for m in SYNC_MARKS)}
    result = {"batches": n, "wall_ms_per_batch": 1e3 * wall / n, "sync_points": marks,
              "host_syncs_per_batch": (sum(c for k, c in marks.items() if "Synchronize" in k) - cuda) / n}
    if cuda:
        on_gpu = [e for e in events if e.device_type == DeviceType.CUDA] or events  # else: time on the ops
        kernels = sorted(((e.key, _device_us(e)) for e in on_gpu), key=lambda kv: -kv[1])
        gpu_us = sum(us for _, us in kernels)
        result.update(gpu_ms_per_batch=gpu_us / 1e3 / n, gpu_busy=gpu_us / 1e6 / wall,
                      top=[(name, us / 1e3 / n) for name, us in kernels[:top]])
    else:
        ops = sorted(((e.key, e.self_cpu_time_total) for e in events), key=lambda kv: -kv[1])
        result["top"] = [(name, us / 1e3 / n) for name, us in ops[:top]]
    return result
