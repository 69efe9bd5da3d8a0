"""Batch plans: utterances sorted by length, batches sized by padded audio seconds.

The plan is computed once from the lengths of all rows, before anything is encoded, and
depends on nothing else; a resumed run recomputes the same plan and redoes whole planned
batches, so every row sees exactly the batch it would have seen in an uninterrupted run.

Sorting longest first keeps padding small (neighbours have nearly the same length; clips cut
at the 5.1 s cap have none at all) and puts the largest batch first, so a batch budget too
big for the GPU fails at once rather than near the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

# SPEC §7: peak GPU memory for WavLM-base fp16 was 5.0 GB at 200 s of audio per batch;
# 160 s leaves room for BERT, the CUDA context and fragmentation on an 11 GB RTX 2080 Ti.
DEFAULT_BATCH_SECONDS = 160.0


@dataclass(frozen=True)
class BatchPlan:
    """batches: row indices of each batch (longest first); lengths: samples of every row."""

    batches: List[np.ndarray]
    lengths: np.ndarray
    sample_rate: int

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def padded_samples(self) -> int:
        """Samples the encoder runs on: each batch is as long as its longest row."""
        return int(sum(len(b) * self.lengths[b].max() for b in self.batches))

    @property
    def padding_waste(self) -> float:
        """Fraction of the encoded audio that is padding (0 = none)."""
        padded = self.padded_samples
        return 1.0 - float(self.lengths.sum()) / padded if padded else 0.0

    def pending(self, done: np.ndarray) -> List[np.ndarray]:
        """The batches with any row not yet done (a batch is written whole, so normally all or none)."""
        return [b for b in self.batches if not done[b].all()]


def plan_batches(lengths: Sequence[int], sample_rate: int, batch_seconds: float = DEFAULT_BATCH_SECONDS) -> BatchPlan:
    """Length-sorted batches whose padded size (rows x longest row) stays within batch_seconds.

    lengths: samples of each row as the encoder will see them (after the max_frames cap).
    A row longer than the budget gets a batch of its own; batch_seconds=0 gives batch size 1.
    Ties are broken by row index, so the plan is a pure function of its inputs.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths <= 0).any():
        raise ValueError("lengths must be a 1-d sequence of positive sample counts")
    if batch_seconds < 0:
        raise ValueError(f"batch_seconds must be >= 0, got {batch_seconds}")
    budget = batch_seconds * sample_rate
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = lengths[order[start]]
        size = max(1, int(budget // longest))
        batches.append(order[start: start + size])
        start += size
    return BatchPlan(batches, lengths, sample_rate)
