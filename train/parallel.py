"""`--parallel-folds N`: N folds in training at once on one device.

A batch-32 step of the SWRR head is latency-bound on a big GPU (SPEC §7): its LSTM recurrence
is hundreds of small sequential kernels that leave most of the chip idle, so several folds in
flight use the device far better than one. Two ways, by device:

- CUDA, `run_lanes`: N threads of this process, each training whole folds on its own CUDA
  stream, all reading one resident copy of the cache. Kernels of different streams run at the
  same time on the GPU (processes without MPS would only take turns), and with CUDA graphs a
  step costs the host one launch, so one process drives all lanes.
- CPU, `run_parallel`: N spawned worker processes, each with its own copy of the cache.

A fold's data order and initial weights depend only on its seed (`loop.fold_seed`), never on N
or on which worker runs it; on CPU its numbers are bit-identical to a sequential run (tested).
Lanes share the device's RNG (dropout), which a fold cannot own alone: on CUDA, folds agree with
a sequential run up to run-to-run GPU noise. Per-fold progress bars are off in workers and
lanes (lanes share one bar over all folds' epochs); the parent prints one line per finished fold.
"""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Dict, Iterator, List

import torch
import torch.multiprocessing as mp
from swrr.cache import FeatureCache
from swrr.guards import die_with_parent
from swrr.progress import progress_bar
from swrr.rundir import UnitFolder
from swrr.train.config import TrainConfig, TrainError
from swrr.train.data import make_source
from swrr.train.loop import EpochBudget, FoldJob, train_fold

_worker_source: Dict[str, object] = {}


def _init_worker(threads: int) -> None:
    die_with_parent()  # a SIGKILLed swrr-train must not leave its fold processes training on
    torch.set_num_threads(threads)


def _train_one(job: FoldJob, device: str) -> Dict:
    cfg = job.config
    key = f"{cfg.cache}|{device}|{cfg.stream}"
    if key not in _worker_source:  # one resident copy per worker, reused for its next folds
        _worker_source.clear()
        _worker_source[key] = make_source(FeatureCache(cfg.cache), torch.device(device), cfg.stream, cfg.workers)
    return train_fold(job, _worker_source[key], torch.device(device), EpochBudget(cfg.stop_after_epochs))


def run_lanes(jobs: List[FoldJob], config: TrainConfig, device: torch.device, cache: FeatureCache) -> Iterator[Dict]:
    """Train `jobs` in min(N, len(jobs)) threads on their own CUDA streams; yields fold results as
    they finish. A failing fold (or Ctrl-C) stops the others at their next step; each keeps its
    last finished epoch for --resume."""
    lanes = min(config.parallel_folds, len(jobs))
    # one bar over the epochs of all folds (a lane's own per-epoch bars would overwrite each other)
    bar = progress_bar(total=len(jobs) * config.epochs, initial=sum(map(finished_epochs, jobs)), unit="epoch",
                       desc=f"{len(jobs)} folds in {lanes} lanes", disable=not config.progress, dynamic_ncols=True)
    jobs = [replace(job, config=replace(job.config, progress=False)) for job in jobs]
    shared = None if config.stream else make_source(cache, device, False, 0)  # one resident copy for all
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)  # the resident tensors are complete before other streams read them
    cancel = threading.Event()

    def train_in_lane(job: FoldJob) -> Dict:
        # --stream: a DataLoader serves one consumer, so each fold gets its own
        source = shared or make_source(cache, device, True, config.workers)
        try:  # (lanes also run on a CPU, where the tests check them against a sequential run)
            with torch.cuda.stream(torch.cuda.Stream(device)) if cuda else contextlib.nullcontext():
                return train_fold(job, source, device, EpochBudget(config.stop_after_epochs, bar), cancel)
        finally:
            if source is not shared:
                source.close()

    pool = ThreadPoolExecutor(lanes, thread_name_prefix="swrr-fold-lane")
    try:
        for future in as_completed([pool.submit(train_in_lane, job) for job in jobs]):
            yield future.result()  # re-raises a lane's TrainError here
    except BaseException:
        cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        if shared is not None:
            shared.close()


def finished_epochs(job: FoldJob) -> int:
    """Epochs a fold already has in its folder (its log is rewritten from its last checkpoint)."""
    return UnitFolder(job.fold_dir).epochs_logged()


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
