"""Extraction on many GPUs or nodes: `torchrun --nproc-per-node G --no-python swrr-extract ...`.

`swrr.extract.runner.run_extraction` hands over to `run_on_ranks` here when WORLD_SIZE > 1, or
when shards of an earlier distributed run of the same output are on disk (then even a single
process finishes them instead of starting over). This module is a layer over the public
functions of the one-process pipeline (extract/pipeline.py), which never imports it. The steps:

1. Setup. Every rank loads its encoders onto cuda:LOCAL_RANK (or the CPU). Rank 0 alone reads the
   dataset and checks the audio headers, computes the length-sorted batch plan, reads which rows
   are already done (in any shard on disk, of any world size, and in `<out>.partial`), and deals
   the remaining batches to the ranks by padded audio samples (`ranks.deal`: longest first, each
   to the least loaded rank), then broadcasts all that. Ranks never plan for themselves, so they cannot
   disagree (e.g. on GPUs of different memory under `--batch-seconds auto`).
2. Encoding. Rank R writes its batches through a normal `CacheWriter` into its own shard
   `<out>.rank-R-of-W.partial`: the cache layout with the whole row list, this rank's rows
   written and marked done. No two processes ever write one HDF5 file; each shard has its own lock.
3. Agreement. Every rank reports success or its failure; a failing rank also raises a flag file
   (`<out>.failed`) that the other ranks check before each batch write, so they stop within a
   batch. Every rank then raises `RankFailed` naming the first failing rank and its cause; the
   written batches stay in the shards.
4. Assembly. Rank 0 copies every row from the shard that has it into `<out>.partial` in the
   cache's row order (stored chunk bytes, no decoding), finalizes it (complete marker, rename),
   and deletes the shards. A physical copy, not a virtual dataset: the cache stays one
   self-contained file that can be moved or copied, the shards need not live beside it for good,
   and readers see exactly the single-process layout.

Relaunching with another world size is handled: rows done in the old shards are kept, only the
remaining batches are dealt to the new ranks, and the assembly takes each row from whichever
shard has it. A batch is encoded whole, always with the same rows, so every row's features equal
those of an uninterrupted single-process run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from swrr.extract.batching import BatchPlan
from swrr.extract.featurizer import Featurizer
from swrr.extract.transcripts import progress_path
from swrr.extract.pipeline import (Extraction, ExtractConfig, Rows, Summary, encode_pending,
                                   plan_extraction, read_rows, ready_featurizer)
from swrr.cache import (CacheMeta, CacheWriter, check_replaceable, discard_shard, partial_done, partial_path,
                        refuse_finished, shard_partials, shard_path)
from swrr.device import resolve_device
from swrr.errors import SwrrError
from swrr.ranks import FailureFlag, Ranks, deal

COPY_BLOCK = 1024  # rows per assembly step: memory stays flat however large the cache


def takes_over(config: ExtractConfig) -> bool:
    """True under a distributed launch, or when shards of `config.out_path` are on disk."""
    return Ranks.from_env().distributed or bool(shard_partials(config.out_path))


def deal_batches(batches: Sequence[np.ndarray], lengths: np.ndarray, world: int) -> Tuple[List[List[int]], List[float]]:
    """Batches -> (batch indices of each rank, padded samples of each rank): dealt by padded size
    (rows x longest row), so the ranks end within about one batch of each other."""
    return deal([float(len(b) * lengths[b].max()) for b in batches], world)


@dataclass
class Job:
    """What rank 0 decides in the setup and broadcasts to every rank."""

    extraction: Extraction  # rows, cache attributes, batch plan: as a single process has them
    pending: List[np.ndarray]  # batches with rows not done anywhere yet
    shares: List[List[int]]  # indices into `pending`, by rank
    loads: List[float]  # padded samples dealt to each rank
    done_before: int  # rows already done when this launch started


@dataclass
class RankWork:
    rank: int
    rows: int
    padded_seconds: float
    seconds: float
    write_seconds: float


RANK_ERRORS = (SwrrError, torch.cuda.OutOfMemoryError, MemoryError)  # told as one line by every rank


def failure_flag(out: Path) -> FailureFlag:
    return FailureFlag(out.with_name(out.name + ".failed"))


def run_on_ranks(config: ExtractConfig, encoders=None) -> Optional[Summary]:
    """Extract `config` on all ranks of the launch (or finish earlier shards in one process).
    -> the Summary on rank 0, None on the other ranks. RankFailed on every rank when one fails."""
    started = time.perf_counter()
    ranks, out = Ranks.from_env(), config.out_path
    flag = failure_flag(out)
    advice = (f"the batches written so far are kept in the shards beside {out}; fix the cause and relaunch "
              "the same command to resume")
    with ranks.group():
        def setup():
            device = ranks.device(resolve_device(config.device))
            featurizer, fp16 = ready_featurizer(config, device, encoders)
            job = _plan(config, ranks, flag, device, featurizer, fp16) if ranks.is_main else None
            return featurizer, job

        featurizer, job = ranks.step(setup, RANK_ERRORS, flag)  # nothing written yet: no advice on shards
        job = ranks.broadcast(job)
        work = ranks.step(lambda: _encode_share(config, ranks, job, featurizer, flag), RANK_ERRORS, flag, advice)
        works = ranks.gather(work)
    if not ranks.is_main:
        return None
    assembly_started = time.perf_counter()
    path = assemble(out, job.extraction.meta, job.extraction.rows)
    assembly = time.perf_counter() - assembly_started
    progress_path(out).unlink(missing_ok=True)  # --transcripts asr: the transcripts are in the cache now
    seconds = time.perf_counter() - started
    return job.extraction.summary(path, job.done_before, seconds, featurizer, sum(w.write_seconds for w in works),
                                  balance_lines(works, assembly, seconds))


def _plan(config: ExtractConfig, ranks: Ranks, flag: FailureFlag, device: torch.device, featurizer: Featurizer,
          fp16: bool) -> Job:
    """Rank 0's setup: rows, plan, what is done already, and the deal of the rest."""
    flag.clear()  # a flag of an earlier launch; the other ranks look at it only after the broadcast
    reader, rows = read_rows(config)
    extraction = plan_extraction(config, reader, rows, featurizer, device, fp16)
    meta, plan, out = extraction.meta, extraction.plan, config.out_path
    if config.overwrite:
        if out.exists():
            check_replaceable(out)
        for old in (out, partial_path(out), *shard_partials(out)):
            old.unlink(missing_ok=True)
    refuse_finished(out, meta)
    done = np.zeros(len(rows.info), dtype=bool)
    for source in (partial_path(out), *shard_partials(out)):
        source_done = partial_done(source, meta, rows.info)
        if source_done is not None:
            done |= source_done
    pending = plan.pending(done)
    shares, loads = deal_batches(pending, plan.lengths, ranks.world)
    extraction.report_before_encoding()  # as a single process says it
    return Job(extraction, pending, shares, loads, int(done.sum()))


class FlaggedWriter:
    """A CacheWriter that stops (RankStopped) before each write once another rank has failed."""

    def __init__(self, writer: CacheWriter, flag: FailureFlag, resumed_rows: int):
        self.writer, self.flag = writer, flag
        self.partial_path = writer.partial_path
        # the progress bar counts to the total row count: rows not this rank's count as there already
        self.resumed_rows = resumed_rows

    def done_mask(self) -> np.ndarray:
        return self.writer.done_mask()

    def write(self, *args) -> None:
        self.flag.check()
        self.writer.write(*args)


def _encode_share(config: ExtractConfig, ranks: Ranks, job: Job, featurizer: Featurizer,
                  flag: FailureFlag) -> RankWork:
    """Encode this rank's batches into its shard."""
    started = time.perf_counter()
    mine = [job.pending[i] for i in job.shares[ranks.rank]]
    padded = float(job.loads[ranks.rank]) / config.sample_rate
    if not mine:
        return RankWork(ranks.rank, 0, padded, 0.0, 0.0)
    rows, plan = job.extraction.rows, job.extraction.plan
    writer = CacheWriter.open(shard_path(config.out_path, ranks.rank, ranks.world), job.extraction.meta, rows.info)
    try:
        quiet = replace(config, progress=config.progress and ranks.is_main)  # one bar: rank 0's share
        flagged = FlaggedWriter(writer, flag, len(rows.info) - sum(map(len, mine)))
        write_seconds = encode_pending(BatchPlan(mine, plan.lengths, plan.sample_rate), flagged, rows, featurizer,
                                       quiet)
    finally:
        writer.close()
    return RankWork(ranks.rank, sum(map(len, mine)), padded, time.perf_counter() - started, write_seconds)


def assemble(out: Path, meta: CacheMeta, rows: Rows) -> Path:
    """Copy every row from a shard that has it into `<out>.partial`, finalize it, delete the shards.

    Resumable like any cache write: rows already in `<out>.partial` are not copied again."""
    writer = CacheWriter.open(out, meta, rows.info)
    shards = shard_partials(out)
    try:
        missing = ~writer.done_mask()
        for shard in shards:
            done = partial_done(shard, meta, rows.info)
            if done is None:
                continue
            take = np.flatnonzero(done & missing)
            for start in range(0, len(take), COPY_BLOCK):
                writer.copy_rows(shard, take[start: start + COPY_BLOCK])
            missing[take] = False
        path = writer.finalize()
    finally:
        writer.close()
    for shard in shards:
        discard_shard(shard)
    return path


def balance_lines(works: Sequence[RankWork], assembly: float, seconds: float) -> List[str]:
    """The summary's lines on how the work was shared and what the assembly cost."""
    padded = np.array([w.padded_seconds for w in works])
    walls = np.array([w.seconds for w in works])
    balance = padded.max() / padded.mean() if padded.mean() > 0 else 1.0
    wall_balance = walls.max() / walls.mean() if walls.mean() > 0 else 1.0
    return [f"ranks: {len(works)}; padded audio per rank " + ", ".join(f"{p:.0f}" for p in padded)
            + f" s (max/mean {balance:.3f}); encoding wall per rank " + ", ".join(f"{w:.1f}" for w in walls)
            + f" s (max/mean {wall_balance:.3f})",
            f"assembly (rank 0 copies the shards into one file): {assembly:.2f} s, "
            f"{100 * assembly / seconds:.1f}% of the run"]
