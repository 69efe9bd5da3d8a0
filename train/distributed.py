"""Training on many GPUs or nodes: `torchrun --nproc-per-node G --no-python swrr-train ...`.

The ranks layer over train/runner.py's public one-process functions: `RankGroup` is the
coordination that train.launch hands to runner.run / resume under torchrun (runner never
imports this module). Each rank trains its share with runner.collect_units, the loop a single
process runs, and rank 0 writes the reports with runner.finish, as a single process does.

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

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, TypeVar

import torch

from swrr.errors import SwrrError
from swrr.ranks import FailureFlag, Ranks, deal
from swrr.rundir import RunFolder
from swrr.train import report
from swrr.train.runner import Plan, collect_units, finish, finished_units, stopped_message

T = TypeVar("T")
logger = logging.getLogger("swrr.train")  # the commands show its INFO lines on stdout (swrr.cli)
USER_ERRORS = (SwrrError, torch.cuda.OutOfMemoryError, MemoryError)  # SwrrError: whatever the user can fix


class RankGroup:
    """The coordination of a run under torchrun (the members of runner.OneProcess): steps on rank 0
    or on every rank with one verdict, and the execution of a plan by all ranks. Used inside the
    launch's process group (train.launch)."""

    def __init__(self, ranks: Ranks):
        self.ranks = ranks

    @property
    def is_main(self) -> bool:
        return self.ranks.is_main

    def on_rank0(self, work: Callable[[], T]) -> T:
        """`work()` on rank 0 only (e.g. make the run folder), its result on every rank."""
        return self.ranks.decide(work, USER_ERRORS)

    def on_every_rank(self, work: Callable[[], T]) -> T:
        """`work()` on every rank; a failure on any rank is one RankFailed on all of them."""
        return self.ranks.step(work, USER_ERRORS)

    def execute(self, plan: Plan, run_dir: Path) -> Path:
        return execute_on_ranks(self.ranks, plan, run_dir)


def execute_on_ranks(ranks: Ranks, plan: Plan, run_dir: Path) -> Path:
    """runner.execute on every rank: deal the pending units, train this rank's, gather, report."""
    device = ranks.step(lambda: ranks.device(plan.device), USER_ERRORS)
    flag = FailureFlag(RunFolder(run_dir).rank_failed_flag)
    advice = f"finished units are kept; fix the cause and continue with: swrr-train --resume {run_dir}"

    def survey():
        flag.clear()  # a flag of an earlier launch; the other ranks look at it only after this
        report.banner(plan, run_dir, device)
        logger.info(f"{ranks.world} ranks: units dealt by training rows; rank 0 writes the reports")
        results, pending = finished_units(plan)
        return results, [job.unit_key() for job in pending]

    results, pending_units = ranks.decide(survey, USER_ERRORS)
    pending = [job for job in plan.jobs if job.unit_key() in pending_units]
    shares, _ = deal([float(len(job.fold.train)) for job in pending], ranks.world)
    mine = [pending[i] for i in shares[ranks.rank]]
    logger.info(f"rank {ranks.rank} of {ranks.world}: units " + (", ".join(job.unit_name() for job in mine) or "none"))
    if not ranks.is_main:  # one set of progress bars: rank 0's
        mine = [replace(job, config=replace(job.config, progress=False)) for job in mine]
    try:  # another rank failed: do not start the next unit
        trained = ranks.step(lambda: collect_units(plan, mine, device, after_each=flag.check), USER_ERRORS,
                             flag, advice)
    except BaseException:
        if ranks.is_main:
            logger.info(stopped_message(run_dir))
        raise
    for part in ranks.gather(trained):
        results.update(part)
    if not ranks.is_main:
        return run_dir
    return finish(plan, run_dir, results)
