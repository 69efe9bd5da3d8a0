"""Training on many GPUs or nodes: `torchrun --nproc-per-node G --no-python swrr-train ...`.

The work units are whole fold trainings (the jobs of `runner.prepare`: fold x ablation x seed,
whatever `plan.jobs` holds). The head is small and a fold fits any GPU, so units are dealt to
ranks rather than split with DDP: no gradient all-reduce, and each unit computes exactly what it
computes alone, because its seed, data order and initial weights depend on the unit, never on
the rank (`loop.fold_seed`).

- Rank 0 makes the run folder and writes config.json; the others wait for its path.
- Rank 0 decides which units are finished (metrics.json) and broadcasts that; the pending units
  are dealt by their training rows (`ranks.deal`, largest first to the least loaded rank).
- Each rank trains its units with everything a single process has (CUDA graphs, and
  `--parallel-folds` lanes or processes inside the rank) on cuda:LOCAL_RANK or the CPU, and
  writes only its units' folders.
- Rank 0 gathers every unit's result and writes the run's reports (summary.csv, plots), as a
  single-process run would.
- A failing rank raises a flag file in the run folder; the other ranks stop before their next
  unit (a unit in training runs to its end or to the next kill), and every rank reports the first
  failure in one line. `--resume` continues every unfinished unit on any world size: units are
  folders on the shared filesystem, not tied to a rank.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, Tuple, TypeVar

import torch

from swrr.cache import CacheError
from swrr.device import DeviceError
from swrr.ranks import FailureFlag, RankError, Ranks, deal
from swrr.train.config import TrainError

T = TypeVar("T")
USER_ERRORS = (TrainError, CacheError, DeviceError, RankError, torch.cuda.OutOfMemoryError, MemoryError)
FLAG = "RANK-FAILED"


def in_rank_group(function: Callable[..., T]) -> Callable[..., T]:
    """Run `function` inside the launch's gloo process group (nothing for a single process).
    Nested calls (the ablation grid calls run/resume per variant) reuse the group."""
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        with Ranks.from_env().group():
            return function(*args, **kwargs)
    return wrapped


def on_rank0(work: Callable[[], T]) -> T:
    """`work()` on rank 0 only (e.g. make the run folder), its result on every rank."""
    return Ranks.from_env().decide(work, USER_ERRORS)


def on_every_rank(work: Callable[[], T]) -> T:
    """`work()` on every rank; a failure on any rank is one RankFailed on all of them."""
    return Ranks.from_env().step(work, USER_ERRORS)


def execute_on_ranks(plan, run_dir: Path) -> Path:
    """`runner.execute` under torchrun: deal the pending units, train this rank's, gather, report."""
    from swrr.train import report
    from swrr.train.runner import finished_folds, finish, stopped_message, torch_threads, train_folds, unit_key

    ranks = Ranks.from_env()
    device = ranks.step(lambda: ranks.device(plan.device), USER_ERRORS)
    flag = FailureFlag(run_dir / FLAG)
    advice = f"finished units are kept; fix the cause and continue with: swrr-train --resume {run_dir}"

    def survey():
        flag.clear()  # a flag of an earlier launch; the other ranks look at it only after this
        report.banner(plan, run_dir, device)
        print(f"{ranks.world} ranks: units dealt by training rows; rank 0 writes the reports", flush=True)
        results, pending = finished_folds(plan)
        return results, [job.unit_key() for job in pending]

    results, pending_units = ranks.decide(survey, USER_ERRORS)
    pending = [job for job in plan.jobs if job.unit_key() in pending_units]
    shares, _ = deal([float(len(job.fold.train)) for job in pending], ranks.world)
    mine = [pending[i] for i in shares[ranks.rank]]
    print(f"rank {ranks.rank} of {ranks.world}: units " + (", ".join(job.unit_name() for job in mine) or "none"),
          flush=True)
    if not ranks.is_main:  # one set of progress bars: rank 0's
        mine = [replace(job, config=replace(job.config, progress=False)) for job in mine]

    def train_mine() -> Dict[Tuple[int, int], Dict]:
        done: Dict[Tuple[int, int], Dict] = {}
        with torch_threads(plan.config.threads):
            for result in train_folds(plan, mine, device):
                done[unit_key(result)] = result
                flag.check()  # another rank failed: do not start the next unit
        return done

    try:
        trained = ranks.step(train_mine, USER_ERRORS, flag, advice)
    except BaseException:
        if ranks.is_main:
            print(stopped_message(run_dir))
        raise
    for part in ranks.gather(trained):
        results.update(part)
    if not ranks.is_main:
        return run_dir
    return finish(plan, run_dir, results)

