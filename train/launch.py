"""Where a training run starts: one process, or every rank of a torchrun launch.

    run(TrainConfig(cache="cache/iemocap.h5"))     # what `swrr-train` calls (and the Python API)
    resume("runs/iemocap-loso-speaker")            # what `swrr-train --resume` calls

Decision: whether ranks take over is decided here, above both train/runner.py (the one-process
run) and train/distributed.py (the ranks layer over runner's public functions), from the
launcher's environment: WORLD_SIZE 1 (no torchrun) runs runner's steps with ONE_PROCESS, exactly
what `runner.run` does; WORLD_SIZE > 1 opens the gloo group and runs the same steps with
distributed.RankGroup. Neither module decides it (runner only refuses to run alone inside a rank).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from swrr.ranks import Ranks
from swrr.train import runner
from swrr.train.config import TrainConfig
from swrr.train.distributed import RankGroup


@contextmanager
def coordination() -> Iterator[Any]:
    """The coordination of this process's launch, inside its process group when it has ranks."""
    ranks = Ranks.from_env()
    if not ranks.distributed:
        yield runner.ONE_PROCESS
        return
    with ranks.group():
        yield RankGroup(ranks)


def run(config: TrainConfig, rerun: Optional[Dict[str, Any]] = None) -> Path:
    """runner.run on this launch's processes; returns the run folder."""
    with coordination() as how:
        return runner.run(config, rerun, coordination=how)


def resume(run_dir, **runtime: Any) -> Path:
    """runner.resume on this launch's processes; returns the run folder."""
    with coordination() as how:
        return runner.resume(run_dir, coordination=how, **runtime)
