"""`--plot`: one PNG timeline per segmented file, class probabilities (or the score) over time."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

from swrr.predict.engine import value_columns


def plot_timelines(table, out: Path, predictor) -> List[Path]:
    """Write `<out stem>.<file id>.png` for each input cut into segments; -> the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = value_columns(table.columns)
    segments = table[(table["kind"] == "segment") & (table["error"] == "")]
    written = []
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
        path = out.with_name(f"{out.stem}.{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(source))}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
