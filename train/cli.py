"""`swrr-train`: parse options -> train.options.start_training (run or resume). Nothing else here."""
from __future__ import annotations

import sys

import click

from swrr.cli import CONTEXT, OneLineErrors
from swrr.objectives import REGRESSION_OBJECTIVES, TARGET_LOSSES
from swrr.train.config import ABLATION_CHOICES, DEFAULTS, PROTOCOLS, RESUMABLE_FIELDS, SELECT_RULES
from swrr.train.loop import RunInterrupted
from swrr.train.options import start_training

EPILOG = """\b
Defaults come from the cache's dataset (see docs/TRAINING.md):
  iemocap  loso-speaker (10 folds), lr 5e-4, 50 epochs, last-epoch results
  mosei    split (train/valid/test), lr 1e-3, 20 epochs, best-valid-epoch results
  demo     split, small head, batch 8, lr 1e-3, 60 epochs (a few minutes on 2 CPU cores)
  other    split when the cache has train/test rows, else loso-speaker
Every run writes runs/<name>/: config.json, fold*/ (log, metrics, checkpoints),
summary.csv, results.json and PNGs. Continue a killed run with --resume runs/<name>.
"""


# the options of RESUMABLE_FIELDS as typed (stop_after_epochs is a hidden test option)
RESUME_OPTIONS = [{"progress": "--progress/--no-progress", "cuda_graphs": "--cuda-graphs/--no-cuda-graphs"}
                  .get(f, "--" + f.replace("_", "-")) for f in RESUMABLE_FIELDS if f != "stop_after_epochs"]


@click.command("swrr-train", cls=OneLineErrors, epilog=EPILOG, context_settings=CONTEXT)
@click.option("--cache", type=click.Path(dir_okay=False), help="Feature cache made by swrr-extract, e.g. cache/iemocap.h5.")
@click.option("--config", type=click.Path(dir_okay=False),
              help="Rerun from a run's config.json (e.g. runs/X/config.json: what X ran, in a new folder) or a "
                   "hand-written JSON/YAML file of TrainConfig options (see docs/TRAINING.md). Options given here "
                   "override the file; the new run's config.json records which did.")
@click.option("--resume", type=click.Path(file_okay=False),
              help="Continue the run in this folder (e.g. runs/iemocap-loso-speaker) with its saved config. "
                   f"Only these may be given with it: {', '.join(RESUME_OPTIONS)}; --cache may name another "
                   "path to the same cache (its fingerprint is checked). CPU numbers are bit-identical to an "
                   "uninterrupted run with the same --threads. One process per run: a second --resume of a "
                   "run in progress is refused.")
@click.option("--protocol", type=click.Choice(PROTOCOLS),
              help="loso-speaker: one fold per speaker; loso-session: one fold per session; "
                   "split: the cache's train/valid/test rows; all: one model on every row (no test set, last epoch): "
                   "the one to deploy. Default: by dataset (see below).")
@click.option("--folds", help="Run only these folds (1-based), e.g. 1,3. Default: all.")
@click.option("--early-stop-speaker", is_flag=True,
              help="LOSO only: hold out one training speaker per fold (the test speaker's session mate) as "
                   "validation and report the epoch with the best validation UA. Default: off (last epoch).")
@click.option("--select", type=click.Choice(SELECT_RULES), default=DEFAULTS["select"], show_default=True,
              help="Which epoch's model is reported: 'valid' = best validation epoch (UA, or MAE for "
                   "regression), 'last' = final epoch, 'auto' = 'valid' when the fold has validation rows.")
@click.option("--ablation", type=click.Choice(ABLATION_CHOICES),
              help="Train a Table 3 variant instead of the full model (swrr), or one of our readings of what "
                   "the paper leaves open (drop-padded-windows, reuse-score; docs/MODEL.md); 'all' runs the full "
                   "model and every Table 3 variant and writes ablations.csv beside the paper's numbers.")
@click.option("--epochs", type=int, help="Training epochs. Default: 50 (classification) / 20 (regression), paper.")
@click.option("--lr", type=float, help="Adam learning rate. Default: 5e-4 (classification) / 1e-3 (regression), paper.")
@click.option("--batch-size", type=int, help="Utterances per forward pass. Default: 32 (not in the paper).")
@click.option("--grad-accum", type=int, default=DEFAULTS["grad_accum"], show_default=True,
              help="Optimizer step every N batches (effective batch = batch size x N); for small GPUs use "
                   "e.g. --batch-size 16 --grad-accum 2.")
@click.option("--beta1", type=float, default=DEFAULTS["beta1"], show_default=True, help="Adam beta1 (paper).")
@click.option("--beta2", type=float, default=DEFAULTS["beta2"], show_default=True, help="Adam beta2 (paper).")
@click.option("--weight-decay", type=float, default=DEFAULTS["weight_decay"], show_default=True, help="Adam weight decay.")
@click.option("--lr-decay-at", type=float, default=DEFAULTS["lr_decay_at"], show_default=True,
              help="Fraction of the epochs after which the learning rate is multiplied by --lr-decay-factor.")
@click.option("--lr-decay-factor", type=float, default=DEFAULTS["lr_decay_factor"], show_default=True, help="Learning-rate decay factor (paper: /10).")
@click.option("--seed", type=int, default=DEFAULTS["seed"], show_default=True,
              help="Random seed; with the same seed CPU reruns are bit-identical.")
@click.option("--mosei-objective", type=click.Choice(REGRESSION_OBJECTIVES),
              help="Regression caches only (CMU-MOSEI sentiment): l1 = one output, L1 loss (default; not in the "
                   "paper); ce7 = 7-class cross-entropy on the rounded sentiment, scored by the expected value.")
@click.option("--target", metavar="KIND[,KIND...]",
              help="The label to learn: emotion (a classification cache's category) or sentiment (a regression "
                   "cache's score) = the default; a label kind the cache holds: valence, arousal, dominance "
                   "(IEMOCAP 1-5, MSP-Podcast 1-7; any subset, comma-separated: one output each, scored by CCC "
                   "per dimension, Pearson r and MAE), MELD's sentiment (3 classes), SIMS' sentiment_text ... "
                   "Rows without a value for it are left out (counted).")
@click.option("--target-loss", type=click.Choice(TARGET_LOSSES),
              help="Dimensional targets only: ccc = 1 - CCC per dimension, averaged (default; the usual "
                   "objective of dimensional SER, not in the paper), mse, or l1.")
@click.option("--seeds", metavar="LIST|N",
              help="Train every fold once per seed: a list (1,2,3; one seed: 3,) or a count N (seeds 0..N-1). "
                   "Each (fold, seed) is a unit with its own folder (fold03-seed2) and spreads like a fold with "
                   "--parallel-folds; summary.csv adds the std of the per-seed means. Replaces --seed.")
@click.option("--lstm-hidden", type=int, help="Shared LSTM units per direction (paper 384). Non-paper size knob.")
@click.option("--model-set", multiple=True, metavar="KEY=VALUE",
              help="Set any SWRRConfig field, e.g. --model-set cnn_channels=[8,16] --model-set dropout=0.2 "
                   "(non-paper; repeatable).")
@click.option("--runs-dir", default=DEFAULTS["runs_dir"], show_default=True, help="Folder that holds run folders.")
@click.option("--name", help="Run folder name. Default: <dataset>-<protocol>[-<ablation>], numbered if taken.")
@click.option("--device", default=DEFAULTS["device"], show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=DEFAULTS["amp"], show_default=True, help="Mixed precision (float16) on CUDA.")
@click.option("--cuda-graphs/--no-cuda-graphs", default=DEFAULTS["cuda_graphs"], show_default=True,
              help="On CUDA: capture each batch size's forward + backward once and replay it (one launch "
                   "per step instead of hundreds; the same numbers as eager steps). Needs the default "
                   "lstm_padding=align; falls back to eager steps if capture fails. May change on --resume.")
@click.option("--stream", is_flag=True,
              help="Read rows from the HDF5 file per batch instead of loading the cache into (device) memory; "
                   "for caches larger than memory. Same results.")
@click.option("--workers", type=int, default=DEFAULTS["workers"], show_default=True, help="DataLoader worker processes with --stream.")
@click.option("--parallel-folds", type=int, default=DEFAULTS["parallel_folds"], show_default=True,
              help="Train N folds at once on the same device: on CUDA as N streams of this process sharing "
                   "one resident cache (a big GPU runs them concurrently), on CPU as N processes. A fold's seed, "
                   "data order and initial weights do not depend on N.")
@click.option("--threads", type=int, help="CPU threads per process. Default: 1 for a small head (the BiLSTM's "
                   "batch x hidden x 4 hidden below 1M multiply-adds, e.g. the demo's: more threads wait on each "
                   "other, badly so beside other jobs), else torch's choice (one per core). Recorded in config.json. "
                   "CPU numbers depend on it.")
@click.option("--progress/--no-progress", default=DEFAULTS["progress"], show_default=True, help="A progress bar per epoch on a terminal; in a log (stderr not a terminal) one line per epoch.")
@click.option("--tensorboard", is_flag=True,
              help="Also write each unit's per-epoch scalars (loss, lr, valid/test metrics) to runs/<name>/tb/ "
                   "for TensorBoard (needs pip install 'swrr[tb]'); the CSV logs stay the record.")
@click.option("--stop-after-epochs", type=int, hidden=True)  # tests: stop as if killed
@click.pass_context
def main(ctx: click.Context, **options):
    """Train the SWRR head on a feature cache and report the paper's metrics.

    \b
    Example:
      swrr-train --cache cache/iemocap.h5
      swrr-train --cache cache/iemocap.h5 --ablation all --parallel-folds 5
      swrr-train --cache cache/iemocap.h5 --seeds 5 --name five-seeds
      swrr-train --cache cache/iemocap.h5 --target valence,arousal,dominance
      swrr-train --config runs/five-seeds/config.json --name again
      swrr-train --resume runs/iemocap-loso-speaker
    """
    given = {name: value for name, value in options.items()
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    try:
        start_training(**given)  # only what was typed: a config file's or a resumed run's values stay
    except RunInterrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(3)
    except KeyboardInterrupt:
        click.echo("interrupted; continue with --resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
