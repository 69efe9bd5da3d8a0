"""Ranks of a `torchrun` launch, shared by both stages: who am I, tell the others, agree on failure.

    ranks = Ranks.from_env()          # RANK / WORLD_SIZE / LOCAL_RANK; world 1 when not launched
    with ranks.group():               # gloo process group (nothing at all for world 1)
        rows = ranks.broadcast(rows if ranks.is_main else None)
        result = ranks.step(work, USER_ERRORS, flag)   # every rank learns whether any rank failed

The ranks exchange only small Python objects (row lists, results, failure messages), never
tensors, so the group is always gloo, also on GPUs: no NCCL setup, and CPU and CUDA ranks
behave alike. A run is distributed when WORLD_SIZE > 1; we build no scheduler of our own.

A rank whose work fails raises a `FailureFlag` file (on the shared filesystem that the outputs
need anyway): the other ranks look at it between work items and stop early, and `step` then
raises `RankFailed` on every rank with one message naming the first failing rank and its cause.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Type
from swrr.errors import SwrrError

# Ranks wait for each other at a few points (rank 0 checking every audio header, the slowest rank
# finishing): far longer than torch's 30-minute default. A rank that dies closes its sockets, so
# the others fail at once and do not wait for this timeout.
WAIT = timedelta(hours=24)
# Joining the group is bounded apart: without a launcher (RANK/WORLD_SIZE set by hand), a rank
# whose peers never start would otherwise wait the whole WAIT. Seconds, from the environment, as
# MASTER_ADDR/MASTER_PORT are (a launch setting, the same for both stages).
RENDEZVOUS_ENV = "SWRR_RENDEZVOUS_TIMEOUT"
RENDEZVOUS_DEFAULT_S = 300


class RankError(SwrrError):
    """A launch environment that is not usable (bad RANK/WORLD_SIZE values)."""


class RankFailed(Exception):
    """Some rank's work failed; raised on every rank with the same one-line message."""

    def __init__(self, rank: int, world: int, cause: str, advice: str = ""):
        self.rank, self.cause = rank, cause
        super().__init__(f"rank {rank} of {world} failed: {cause}" + (f"; {advice}" if advice else ""))


class RankStopped(Exception):
    """This rank stopped early because another rank raised the failure flag."""


class FailureFlag:
    """A file whose existence says 'a rank failed'; holds the failing rank's message."""

    def __init__(self, path):
        self.path = Path(path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def raise_flag(self, rank: int, cause: str) -> None:
        try:
            self.path.write_text(f"rank {rank}: {cause}\n")
        except OSError:  # the collective in `step` still tells every rank
            pass

    def check(self) -> None:
        """Raise RankStopped when another rank has failed."""
        if self.path.exists():
            raise RankStopped(self.path.read_text().strip())


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Ranks":
        """The launcher's RANK, WORLD_SIZE and LOCAL_RANK (torchrun, Slurm via torchrun, ...)."""
        world = _int_env("WORLD_SIZE", "1")
        if world <= 1:
            return cls()
        if "RANK" not in os.environ:
            raise RankError(f"WORLD_SIZE={world} but RANK is not set; launch with torchrun, which sets both "
                            "(or unset WORLD_SIZE to run one process)")
        rank, local = _int_env("RANK", "0"), _int_env("LOCAL_RANK", "0")
        if not 0 <= rank < world:
            raise RankError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
        return cls(rank, world, local)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device):
        """`device` (a torch.device) for this rank: cuda:LOCAL_RANK for CUDA, as is otherwise."""
        import torch

        if device.type != "cuda" or not self.distributed:
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise RankError(f"rank {self.rank} (LOCAL_RANK {self.local_rank}) needs cuda:{self.local_rank} but this "
                            f"node has {torch.cuda.device_count()} GPU(s); launch at most that many processes per "
                            "node (--nproc-per-node)")
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    @contextmanager
    def group(self) -> Iterator["Ranks"]:
        """The gloo process group for the block (env:// rendezvous, set by the launcher)."""
        if not self.distributed:
            yield self
            return
        import torch.distributed as dist

        if dist.is_initialized():  # a caller (or the previous stage in one process) made it
            yield self
            return
        self._join(dist)
        try:
            yield self
        finally:
            dist.destroy_process_group()

    def _join(self, dist) -> None:
        """init_process_group (env:// rendezvous at MASTER_ADDR:MASTER_PORT), the wait for the other
        ranks bounded by SWRR_RENDEZVOUS_TIMEOUT; RankError in one line when it cannot be joined."""
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise RankError(f"RANK={self.rank} and WORLD_SIZE={self.world} are set but {' and '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} not; launch with torchrun, which sets them all "
                            "(or unset WORLD_SIZE to run one process)")
        seconds = rendezvous_seconds()
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        bounded = hasattr(dist.distributed_c10d, "_set_pg_timeout")  # else the join waits as long as collectives
        if "TORCHELASTIC_RUN_ID" not in os.environ:  # no launcher started the peers: say what we wait for
            print(f"rank {self.rank} of {self.world}: waiting up to {seconds if bounded else WAIT.total_seconds():.0f} s "
                  f"for the other ranks at {where} ({RENDEZVOUS_ENV})", file=sys.stderr, flush=True)
        try:
            dist.init_process_group("gloo", rank=self.rank, world_size=self.world,
                                    timeout=timedelta(seconds=seconds) if bounded else WAIT)
        except (RuntimeError, ValueError, OSError) as exc:  # DistStoreError is a RuntimeError
            raise RankError(f"rank {self.rank} of {self.world} could not join the other ranks at {where} within "
                            f"{seconds:.0f} s ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                            f"start every rank (torchrun does), or raise {RENDEZVOUS_ENV}") from None
        if bounded:
            dist.distributed_c10d._set_pg_timeout(WAIT)  # collectives then wait as long as the work needs

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (picklable objects)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's `obj`, by rank, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: List[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def step(self, work: Callable[[], Any], user_errors: Tuple[Type[BaseException], ...],
             flag: Optional[FailureFlag] = None, advice: str = "") -> Any:
        """Run `work` on this rank, then agree with all ranks: -> its result when every rank
        succeeded, else RankFailed (naming the first failing rank) on every rank. A bug (an
        exception outside `user_errors`) is re-raised as is on its own rank, with its traceback.
        Not distributed: just `work()`, its errors as they are."""
        if not self.distributed:
            return work()
        failure, bug = None, None
        try:
            result = work()
        except RankStopped:
            result = None  # the failing rank reports its own cause
        except user_errors as exc:
            failure = str(exc)
        except Exception as exc:  # noqa: BLE001 - the other ranks must hear of it before we re-raise
            failure, bug = f"{type(exc).__name__}: {exc}", exc
        if failure is not None and flag is not None:
            flag.raise_flag(self.rank, failure)
        failures = self.gather(failure)
        failed = [(rank, cause) for rank, cause in enumerate(failures) if cause is not None]
        if bug is not None:
            raise bug
        if failed:
            raise RankFailed(failed[0][0], self.world, failed[0][1], advice)
        return result

    def decide(self, work: Callable[[], Any], user_errors: Tuple[Type[BaseException], ...] = (),
               flag: Optional[FailureFlag] = None, advice: str = "") -> Any:
        """`work` runs on rank 0 only; its result on every rank (its failure: RankFailed on every rank)."""
        return self.broadcast(self.step(lambda: work() if self.is_main else None, user_errors, flag, advice))


def _int_env(name: str, default: str) -> int:
    value = os.environ.get(name, default) or default
    try:
        return int(value)
    except ValueError:
        raise RankError(f"{name}={value!r} is not an integer; it is set by the launcher (torchrun)") from None


def rendezvous_seconds() -> float:
    """SWRR_RENDEZVOUS_TIMEOUT (seconds > 0), default RENDEZVOUS_DEFAULT_S; RankError when malformed."""
    value = os.environ.get(RENDEZVOUS_ENV, "")
    if not value:
        return float(RENDEZVOUS_DEFAULT_S)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise RankError(f"{RENDEZVOUS_ENV}={value!r} must be a number of seconds > 0")
    return seconds


def deal(costs: Sequence[float], world: int) -> Tuple[List[List[int]], List[float]]:
    """Work items -> (item indices of each rank, each rank's total cost).

    Greedy longest-processing-time: items by decreasing cost, each to the rank with the least so
    far (the lowest rank on ties), so the ranks end within about one item of each other; each
    rank's list is in the items' order. Deterministic: every rank computes the same deal."""
    loads = [0.0] * world
    shares: List[List[int]] = [[] for _ in range(world)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = loads.index(min(loads))
        shares[rank].append(i)
        loads[rank] += costs[i]
    return [sorted(share) for share in shares], loads
