"""`--plot`: one PNG timeline per segmented file, class probabilities (or the score) over time."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

from swrr.predict.engine import value_columns
from swrr.predict.inputs import PredictError
from swrr.predict.output import PARTIAL_SUFFIX, remove_quietly, unique_plot_name


def plot_timelines(table, out: Path, predictor) -> List[Path]:
    """Write `<out stem>.<file id>.png` for each input cut into segments (names unique per input,
    each written to `.partial` and renamed); -> the PNG paths. PredictError when one cannot be
    written (the table at `out` is complete by then, and the message says so)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = value_columns(table.columns)
    segments = table[(table["kind"] == "segment") & (table["error"] == "")]
    written, taken = [], set()
    for source, group in segments.groupby("source_id", sort=False):
        centre = (group["start"] + group["end"]) / 2
        fig, ax = plt.subplots(figsize=(9, 3.2))
        for column in columns:
            ax.plot(centre, group[column], marker="o", label=column.removeprefix("prob_").removeprefix("score_"))
        for start, end in zip(group["start"], group["end"]):
            ax.axvspan(start, end, color="0.9", zorder=0)
        ax.set_xlabel("time (s): points at window centres, grey = scored audio")
        ax.set_ylabel("probability" if columns[0].startswith("prob_") else "score")
        ax.set_title(f"{source}{' (random encoders)' if predictor.recipe.random_encoders else ''}", fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        path = unique_plot_name(out, source, taken)
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        try:
            fig.savefig(partial, dpi=100, format="png")
            os.replace(partial, path)
        except OSError as exc:
            remove_quietly(partial)
            raise PredictError(f"the predictions are complete in {out}, but the timeline {path} could not be "
                               f"written ({exc.strerror or exc})") from None
        finally:
            plt.close(fig)
        written.append(path)
    return written
