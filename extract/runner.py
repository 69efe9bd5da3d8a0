"""`run_extraction(ExtractConfig) -> Summary`: the extraction stage's entry, what `swrr-extract`
(and Python callers) run.

    summary = run_extraction(ExtractConfig(dataset="demo", encoders="tiny"))

Decision: whether ranks take over is decided here, above both the one-process pipeline
(extract/pipeline.py) and the ranks layer over it (extract/distributed.py): they do under a
distributed launch (WORLD_SIZE > 1), or when shards of an earlier distributed run of the same
output are on disk (a single process then finishes them instead of starting over). The pipeline
never imports the ranks layer, so the two stay one layer over the other, without a circle.
"""
from __future__ import annotations

from typing import Optional, Tuple

from swrr.extract import distributed, pipeline
from swrr.extract.encoders import AudioEncoder, TextEncoder
from swrr.extract.pipeline import ExtractConfig, Summary


def run_extraction(config: ExtractConfig,
                   encoders: Optional[Tuple[AudioEncoder, TextEncoder]] = None) -> Optional[Summary]:
    """Extract (or finish extracting) the cache described by `config`, in this process or on the
    ranks of a distributed launch. -> the Summary (None on ranks other than 0).

    `encoders` (audio, text) replaces loading them from the config (benchmarks build their own).
    Raises a SwrrError for problems the user can fix (RankFailed on every rank
    when one rank fails). On any interruption the rows already written are kept for the next run.
    """
    if distributed.takes_over(config):
        return distributed.run_on_ranks(config, encoders)
    return pipeline.run_one_process(config, encoders)
