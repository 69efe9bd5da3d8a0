"""`--parallel-folds N`: N worker processes on one device, each training whole folds.

A batch-32 step of the SWRR head is latency-bound on a big GPU (SPEC §7), so several folds in
flight use the device far better than one. A fold's numbers depend only on its seed and data
(`loop.fold_seed`), never on N or on which worker runs it. Workers are spawned (CUDA cannot be
forked), each loads the cache once onto the device and keeps it for all folds it trains.
Progress bars are off in workers; the parent prints one line per finished fold.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Dict, Iterator, List

import torch
import torch.multiprocessing as mp

from swrr_core.cache import FeatureCache
from train.config import TrainConfig, TrainError
from train.data import make_source
from train.loop import EpochBudget, FoldJob, train_fold

_worker_source: Dict[str, object] = {}


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _train_one(job: FoldJob, device: str) -> Dict:
    cfg = job.config
    key = f"{cfg.cache}|{device}|{cfg.stream}"
    if key not in _worker_source:  # one resident copy per worker, reused for its next folds
        _worker_source.clear()
        _worker_source[key] = make_source(FeatureCache(cfg.cache), torch.device(device), cfg.stream, cfg.workers)
    return train_fold(job, _worker_source[key], torch.device(device), EpochBudget(cfg.stop_after_epochs))


def run_parallel(jobs: List[FoldJob], config: TrainConfig, device: torch.device) -> Iterator[Dict]:
    """Train `jobs` with min(N, len(jobs)) processes; yields fold results as they finish."""
    workers = min(config.parallel_folds, len(jobs))
    # CPU kernels' results depend on the thread count, so CPU workers keep the sequential run's
    # count (identical numbers, oversubscribed cores); on CUDA the CPU only launches kernels.
    threads = config.threads or (torch.get_num_threads() if device.type == "cpu"
                                 else max(1, torch.get_num_threads() // workers))
    jobs = [replace(job, config=replace(job.config, progress=False)) for job in jobs]
    # non-daemonic workers (unlike multiprocessing.Pool), so --stream can still start its loaders
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(_train_one, job, str(device)) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()  # re-raises a worker's TrainError here
        except BrokenProcessPool as exc:
            raise TrainError(f"a fold process died ({exc}); if it ran out of memory, use fewer "
                             "--parallel-folds") from None
