"""Batch plans: utterances sorted by length, batches sized by padded audio seconds.

The plan is computed once from the lengths of all rows, before anything is encoded, and
depends on nothing else; a resumed run recomputes the same plan and redoes whole planned
batches, so every row sees exactly the batch it would have seen in an uninterrupted run.

Sorting longest first keeps padding small (neighbours have nearly the same length; clips cut
at the 5.1 s cap have none at all) and puts the largest batch first, so a batch budget too
big for the GPU fails at once rather than near the end.

The budget (`--batch-seconds`, padded audio seconds per batch) defaults to "auto":
`auto_batch_seconds` picks it from the card's total memory and the dtype.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np

AUTO = "auto"
CPU_BATCH_SECONDS = 160.0  # on the CPU batching buys nothing; the memory is all that matters
# Peak GPU memory of the fp16 forward (WavLM-base+ and BERT-base, H200): 100 s -> 2.48 GB,
# 160 s -> 3.50 GB, 200 s -> 4.18 GB, 400 s -> 7.51 GB, i.e. ~17 MB per second of audio over
# ~0.8 GB; float32 about twice that. Base-size encoders: large ones need an explicit budget.
PEAK_BYTES_PER_SECOND = 17e6
PEAK_BYTES_FIXED = 0.8e9
AUTO_LADDER = (40.0, 80.0, 120.0, 160.0, 200.0, 300.0, 400.0)  # 400 s: beyond it the forward gains nothing
AUTO_MEMORY_SHARE = 0.45  # headroom for the CUDA context, fragmentation and other processes


def estimated_peak_bytes(batch_seconds: float, dtype: str = "float16") -> float:
    """Peak GPU memory of one batch of base-size encoders (fp16 autocast, or float32 at twice it)."""
    fp16 = PEAK_BYTES_FIXED + PEAK_BYTES_PER_SECOND * batch_seconds
    return fp16 if dtype == "float16" else 2 * fp16


def auto_batch_seconds(total_bytes: Optional[int], dtype: str = "float16") -> float:
    """The `--batch-seconds auto` budget: the largest of AUTO_LADDER whose estimated peak stays
    under 45% of the card's total memory (the smallest rung when none does); CPU_BATCH_SECONDS
    without a GPU (total_bytes None). Depends on the card, not on its free memory, so a resume on
    the same card plans the same batches."""
    if total_bytes is None:
        return CPU_BATCH_SECONDS
    fitting = [s for s in AUTO_LADDER if estimated_peak_bytes(s, dtype) <= AUTO_MEMORY_SHARE * total_bytes]
    return fitting[-1] if fitting else AUTO_LADDER[0]


def parse_batch_seconds(value: Union[str, float]) -> Union[str, float]:
    """"auto" or a number of seconds >= 0 (from a CLI string or a config value); ValueError otherwise."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"batch seconds must be 'auto' or a number >= 0, got {value!r}") from None
    if not seconds >= 0:  # also refuses nan
        raise ValueError(f"batch seconds must be 'auto' or a number >= 0, got {value!r}")
    return seconds


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


def plan_batches(lengths: Sequence[int], sample_rate: int, batch_seconds: float) -> BatchPlan:
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
