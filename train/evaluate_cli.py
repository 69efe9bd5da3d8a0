"""`swrr-evaluate`: parse options -> train.evaluate.evaluate. Nothing else here."""
from __future__ import annotations

from pathlib import Path

import click

from swrr.cli import CONTEXT, OneLineErrors
from swrr.train.evaluate import evaluate, summary_lines


@click.command("swrr-evaluate", cls=OneLineErrors, context_settings=CONTEXT)
@click.option("--model", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A model bundle folder (runs/X/fold01/model) or a run folder: each of its units' bundles is "
                   "scored, and summary.csv averages them as the run's folds were.")
@click.option("--cache", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The other corpus' cache, extracted with the model's recipe (encoders, layer, sizes, dtype); "
                   "a different recipe is refused naming the differences.")
@click.option("--label-map", metavar="CACHE=MODEL,...",
              help="Classification: the model class of each cache class, e.g. "
                   "'neutral=neu,joy=hap,anger=ang,sadness=sad'. Classes without a counterpart are counted skips. "
                   "Default: classes of the same name correspond.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (must not exist). Default: runs/eval-<model>-on-<cache name>.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Rows per forward pass.")
def main(model, cache, label_map, out, device, batch_size):
    """Score a trained model on another corpus' cache (cross-corpus evaluation).

    \b
    Example:
      swrr-evaluate --model runs/iemocap-all --cache cache/meld.h5 \\
          --label-map 'neutral=neu,joy=hap,anger=ang,sadness=sad'
    \b
    Writes metrics.json and predictions.csv per unit, summary.csv, results.json and (classification)
    confusion.png, as swrr-train's evaluation does.
    """
    folder = evaluate(model, cache, label_map=label_map, out=out, device=device, batch_size=batch_size)
    for line in summary_lines(folder):
        click.echo(line)


if __name__ == "__main__":
    main()
