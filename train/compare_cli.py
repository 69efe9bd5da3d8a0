"""`swrr-compare`: parse options -> train.compare.run_compare. Nothing else here."""
from __future__ import annotations

import click

from swrr.cli import CONTEXT, OneLineErrors
from swrr.train.compare import BOOTSTRAP_SEED, MIN_RESAMPLES, RESAMPLES, run_compare


@click.command("swrr-compare", cls=OneLineErrors, context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, type=click.Path(), metavar="RUN_A RUN_B [RUN ...]")
@click.option("--metric", "metrics", multiple=True,
              help="Compare on this metric (as shown: WA, UA, F1w, ACC7, ACC2, F1, MAE, r, ... or its key); "
                   "repeatable. Default: every metric the runs report.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for compare.csv, compare.md, compare.png and compare.json (the runs compared), "
                   "written all at once. Default: <folder>/compare for an ablation folder, else "
                   "compare-<A>-vs-<B>... beside the first run. An earlier comparison of the same runs there is "
                   "replaced; one of other runs is refused.")
@click.option("--resamples", type=click.IntRange(min=MIN_RESAMPLES), default=RESAMPLES, show_default=True,
              help=f"Paired-bootstrap resamples for the confidence intervals (at least {MIN_RESAMPLES}).")
@click.option("--bootstrap-seed", type=int, default=BOOTSTRAP_SEED, show_default=True,
              help="Seed of the bootstrap (the same seed gives the same intervals).")
def main(runs, metrics, out, resamples, bootstrap_seed):
    """Compare finished swrr-train runs unit by unit (fold x seed) with paired tests.

    \b
    RUN_A is the reference; every other run is compared with it:
      swrr-compare runs/base runs/variant --metric UA
      swrr-compare runs/base runs/variant-1 runs/variant-2      # p-values Holm-corrected
      swrr-compare runs/iemocap-loso-speaker-ablations          # each ablation vs the full model
    \b
    Per metric: each run's mean ± std, the paired difference with a 95% bootstrap CI, paired
    t-test and Wilcoxon p-values, the number of paired units and a verdict in words. Runs must
    share the task (the rows, labels and splits of their caches: the task digest; encoders,
    layers and transcripts may differ), the protocol and their folds' definitions.
    """
    rows, folder = run_compare(runs, metrics, out, resamples, bootstrap_seed)
    for row in rows:
        click.echo(row["verdict"])
    click.echo(f"compare.csv, compare.md and compare.png in {folder}")


if __name__ == "__main__":
    main()
