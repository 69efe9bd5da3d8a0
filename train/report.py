"""What a run tells its user: console lines, summary.csv next to the paper's numbers,
results.json, and the confusion-matrix, learning-curve and attention PNGs.

Accuracies and F1 are written in percent (as the paper reports them); MAE and Pearson r as is.
A cache made with random encoders is flagged in every output: its numbers only show that the
pipeline runs, they are not emotion-recognition results.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from swrr.metrics import classification_metrics, headline, metric_options
from swrr.rundir import ATTENTION_PLOT, CONFUSION_PLOT, LEARNING_CURVE_PLOT, RunFolder, UnitFolder
from swrr.targets import scale_text
from swrr.train.config import FULL_MODEL

logger = logging.getLogger("swrr.train")

# The paper's numbers (percent): IEMOCAP 4-class leave-one-speaker-out (Table 1 and the
# Table 3 ablations) and CMU-MOSEI (Table 2). The paper does not say which ACC2/F1 its 84.8 / 83.8
# are (its text describes the non-zero split; its Table 2 baselines quote has-zero figures), so
# both variants stand beside them, with PAPER_NOTES saying so.
PAPER: Dict[str, Dict[str, Dict[str, float]]] = {
    "iemocap": {
        FULL_MODEL: {"wa": 77.4, "ua": 78.5},
        "text-only": {"wa": 71.7, "ua": 72.3},  # "w/o audio"
        "audio-only": {"wa": 70.9, "ua": 71.6},  # "w/o text"
        "sliwa-full": {"wa": 75.3, "ua": 76.7},
        "window-50": {"wa": 76.2, "ua": 76.9},
        "no-hrfr": {"wa": 75.6, "ua": 76.2},
        "hrfr-global": {"wa": 76.4, "ua": 77.0},
        "hrfr-local": {"wa": 75.9, "ua": 76.8},
        "linear": {"wa": 76.5, "ua": 77.4},
    },
    "mosei": {FULL_MODEL: {"acc7": 52.4, "acc2_non0": 84.8, "f1_non0": 83.8, "acc2_has0": 84.8, "f1_has0": 83.8}},
}
ACC2_CONVENTION = ("the paper does not state its ACC2/F1 convention: its text describes non-zero (neg < 0 vs "
                   "pos > 0), its Table 2 baselines quote has-zero figures; compare with both")
PAPER_NOTES = {metric: ACC2_CONVENTION for metric in ("acc2_non0", "f1_non0", "acc2_has0", "f1_has0")}
PAPER_PROTOCOL = {"iemocap": "loso-speaker", "mosei": "split"}
PERCENT = {"wa", "ua", "f1", "acc7", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc2", "acc3", "acc5"}
RANDOM_NOTE = "features from RANDOM encoders: pipeline check only, not emotion-recognition results"


class _MetricNames(dict):
    """Display names by metric key; a dimensional key `<metric>_<dimension>` (ccc_valence) is named
    after its metric: "CCC valence"."""

    def __missing__(self, key: str) -> str:
        metric, _, dimension = key.partition("_")
        if dimension and metric in ("ccc", "pearson", "mae"):
            return f"{self[metric]} {dimension}"
        raise KeyError(key)


NAMES = _MetricNames({"wa": "WA", "ua": "UA", "f1": "F1w", "acc7": "ACC7", "acc2_non0": "ACC2", "f1_non0": "F1",
                      "acc2_has0": "ACC2(has0)", "f1_has0": "F1(has0)", "mae": "MAE", "corr": "r",
                      "acc2": "Acc2", "acc3": "Acc3", "acc5": "Acc5", "ccc": "CCC", "pearson": "r"})


def paper_numbers(dataset: str, protocol: str, variant: Optional[str]) -> Dict[str, float]:
    """The paper's numbers for this setting, empty when the paper did not report it."""
    if PAPER_PROTOCOL.get(dataset) != protocol:
        return {}
    return PAPER.get(dataset, {}).get(variant or FULL_MODEL, {})


def shown(metric: str, value: Optional[float]) -> Optional[float]:
    """A metric value as reported: percent for accuracies/F1."""
    if value is None:
        return None
    return 100.0 * value if metric in PERCENT else value


def banner(plan, run_dir: Path, device) -> None:
    cfg, meta = plan.config, plan.cache.meta
    folds = ",".join(str(f.number) for f in plan.folds)
    logger.info(f"swrr-train: {plan.cache.path} ({meta.dataset}, {len(plan.cache)} rows, {meta.task}); "
          f"protocol {cfg.protocol}, folds {folds} of {plan.num_folds}; model {cfg.ablation or FULL_MODEL}; "
          f"{cfg.epochs} epochs, lr {cfg.lr:g}, batch {cfg.batch_size}x{cfg.grad_accum}; device {device}"
          f"{' (AMP)' if cfg.amp and device.type == 'cuda' else ''}; run folder {run_dir}")
    if meta.random_encoders:
        logger.warning(f"WARNING: {plan.cache.path}: {RANDOM_NOTE}")
    for warning in plan.warnings:
        logger.warning(f"WARNING: {warning}")


def fold_line(result: Dict, task: str, num_folds: int, random_encoders: bool = False, seeded: bool = False,
              options: Optional[Dict] = None) -> str:
    """One unit's console line; `seeded` (a run with --seeds) names the unit's seed; `options`
    (loop.metric_options) name a dimensional run's dimensions and a regression label's scale."""
    m, options = result["metrics"], options or {}
    shown_keys = {"classification": 3, "dimensional": 1 + len(options.get("dimensions", []))}.get(task, 5)
    scores = " ".join(f"{NAMES[k]} {shown(k, m[k]):.1f}" if k in PERCENT else f"{NAMES[k]} {m[k]:.3f}"
                      for k in headline(task, **options)[:shown_keys])
    seed = f" seed {result['seed']}" if seeded else ""
    line = (f"fold {result['fold']}/{num_folds}{seed} {result['name']}: {scores} "
            f"({result['selection']}: epoch {result['selected_epoch']}) {result['seconds']:.0f} s")
    if result.get("train_steps_per_s"):
        line += f", {result['train_steps_per_s']:.1f} steps/s"
    if result.get("peak_gpu_mem_gb") is not None:
        line += f", peak GPU {result['peak_gpu_mem_gb']:.2f} GB"
    return line + (" [random encoders]" if random_encoders else "")


def summarize(results: List[Dict], task: str, paper: Dict[str, float], random_encoders: bool,
              options: Optional[Dict] = None, scale: str = "") -> List[Dict]:
    """Rows of summary.csv: one per metric over all units (fold x seed), the paper's value beside.

    mean, std: over all units (sample std, ddof=1); seed_std: std of the per-seed means (the
    run-to-run spread; nan with one seed); fold_std: the std over folds within a seed, averaged
    over seeds (what a one-seed run reports as its std; nan with one fold). per_fold: every
    unit's value in unit order (seed by seed, folds in order within a seed)."""
    rows = []
    note = RANDOM_NOTE if random_encoders else ""
    seeds = np.array([r["seed"] for r in results])
    counts = {"folds": len({r["fold"] for r in results}), "seeds": len(set(seeds.tolist())), "units": len(results)}
    for metric in headline(task, **(options or {})):
        values = np.array([shown(metric, r["metrics"][metric]) for r in results], dtype=np.float64)
        by_seed = [values[seeds == seed] for seed in dict.fromkeys(seeds.tolist())]
        fold_stds = [sample_std(v) for v in by_seed if len(v) > 1]
        rows.append({"metric": NAMES[metric], "key": metric, "mean": float(np.mean(values)), "std": sample_std(values),
                     "seed_std": sample_std(np.array([v.mean() for v in by_seed])),
                     "fold_std": float(np.mean(fold_stds)) if fold_stds else float("nan"), **counts,
                     "per_fold": " ".join(f"{v:.2f}" for v in values), "paper": paper.get(metric),
                     "note": "; ".join(filter(None, [note, PAPER_NOTES.get(metric) if metric in paper else ""])),
                     "scale": scale})
    if task == "classification":  # also over all test utterances pooled (some papers report this)
        pooled = pooled_confusion(results)
        n = pooled.shape[0]
        y_true = np.repeat(np.arange(n), pooled.sum(axis=1))
        y_pred = np.concatenate([np.repeat(np.arange(n), row) for row in pooled])
        pooled_metrics = classification_metrics(y_true, y_pred, n)
        for metric in ("wa", "ua"):
            rows.append({"metric": f"{NAMES[metric]} pooled", "key": f"{metric}_pooled",
                         "mean": shown(metric, pooled_metrics[metric]), "std": float("nan"), "seed_std": float("nan"),
                         "fold_std": float("nan"), **counts, "per_fold": "", "paper": None, "note": note,
                         "scale": scale})
    return rows


def sample_std(values: np.ndarray) -> float:
    """The sample standard deviation (ddof=1); nan for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


# results.json states how its numbers were made, so that a reader never has to guess.
PROTOCOL_WORDS = {
    "loso-speaker": "leave one speaker out: fold k tests on the k-th speaker (names sorted) and trains on every "
                    "other speaker's rows (minus the validation speaker with --early-stop-speaker)",
    "loso-session": "leave one session out: fold k tests on the k-th session (names sorted) and trains on every "
                    "other session's rows (minus the validation speaker with --early-stop-speaker)",
    "split": "one fold from the cache's split column: trains on 'train' rows, validates on 'valid' rows, tests on "
             "'test' rows; rows with an empty split are not used",
}
METRIC_WORDS = {
    "wa": "WA (weighted accuracy): correctly classified test utterances / all test utterances of the unit",
    "ua": "UA (unweighted accuracy) = balanced accuracy: the mean over the classes present in the unit's test rows "
          "of each class's recall",
    "f1": "F1w: per-class F1 averaged with weights = each class's number of true test utterances (support)",
    "acc7": "ACC7: true and predicted scores clipped to [-3, 3] and rounded to integers (numpy round, halves to even), "
            "then the accuracy over these 7 classes",
    "acc2_non0": "ACC2 (the paper's, non-zero): segments with true score 0 left out; negative (< 0) vs positive (> 0)",
    "f1_non0": "F1 (the paper's, non-zero): support-weighted F1 of the non-zero negative vs positive split",
    "acc2_has0": "ACC2 has-zero: all segments; negative (< 0) vs non-negative (>= 0)",
    "f1_has0": "F1 has-zero: support-weighted F1 of the has-zero negative vs non-negative split",
    "mae": "MAE: mean absolute difference of predicted and true scores",
    "corr": "r: Pearson correlation of predicted and true scores",
    "acc2": "Acc2 (CH-SIMS, MMSA): scores clipped to [-1, 1]; classes [-1, 0] and (0, 1]",
    "acc3": "Acc3 (CH-SIMS, MMSA): classes [-1, -0.1], (-0.1, 0.1], (0.1, 1]",
    "acc5": "Acc5 (CH-SIMS, MMSA): classes [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1]",
    "ccc": "CCC: the concordance correlation coefficient 2 cov / (var true + var predicted + (mean difference)^2) "
           "of each dimension (population moments), averaged over the dimensions; ccc_<dimension> per dimension",
    "pearson": "r: Pearson correlation of each dimension, averaged over the dimensions",
}
AVERAGING_WORDS = ("each unit (fold x seed) is scored on its own test rows; summary.csv gives the mean and the "
                   "sample std (ddof=1) over units, the std of the per-seed means (seed_std) and the mean over "
                   "seeds of the std over folds (fold_std); rows named 'pooled' score all units' test utterances "
                   "together. Accuracies and F1 are percent in summary.csv, fractions in the JSON files.")


def protocol_statement(plan, results: List[Dict]) -> Dict:
    """What results.json says about how its numbers were made: the protocol, every fold's test and
    validation speakers/sessions and class counts, the seeds, the model selection actually
    applied, and the metric definitions in words."""
    cfg, cache, task = plan.config, plan.cache, plan.cache.meta.task
    options = metric_options(task, cache.meta.label_names, cache.meta.label_scale)
    folds = []
    for fold in plan.folds:
        part = {"train": fold.train, "valid": fold.valid, "test": fold.test}
        folds.append({"number": fold.number, "name": fold.name,
                      **{f"{name}_{column}s": sorted(set(values[part[name]].tolist()) - {""})
                         for name in ("test", "valid") for column, values in
                         (("speaker", cache.speaker), ("session", cache.session))},
                      "class_counts": {name: _class_counts(cache.label[rows], task, cache.meta.label_names)
                                       for name, rows in part.items()}})
    return {"protocol": cfg.protocol, "description": PROTOCOL_WORDS.get(cfg.protocol, ""),
            "folds_run": [f.number for f in plan.folds], "folds_in_protocol": plan.num_folds, "folds": folds,
            "seeds": sorted({r["seed"] for r in results}),
            "model_selection": {"select": cfg.select, "early_stop_speaker": cfg.early_stop_speaker,
                                "applied": sorted({r["selection"] for r in results}),
                                "selected_epochs": {f"fold {r['fold']} seed {r['seed']}": r["selected_epoch"]
                                                    for r in results},
                                "note": "test rows never select anything; 'last epoch' = the final epoch's model"},
            "metrics": {key: METRIC_WORDS.get(key, METRIC_WORDS.get(key.partition("_")[0], "see swrr_core/metrics.py"))
                        for key in headline(task, **options)},
            "averaging": AVERAGING_WORDS}


def _class_counts(labels: np.ndarray, task: str, label_names: List[str]) -> Dict[str, int]:
    """Rows per class; for regression per sentiment sign (ACC2's classes); for dimensions the rows."""
    if task == "classification":
        return {name: int(np.sum(labels == i)) for i, name in enumerate(label_names)}
    if task == "dimensional":
        return {"rows": int(len(labels))}
    return {"negative": int(np.sum(labels < 0)), "zero": int(np.sum(labels == 0)), "positive": int(np.sum(labels > 0))}


def pooled_confusion(results: List[Dict]) -> np.ndarray:
    return np.sum([np.asarray(r["metrics"]["confusion"]) for r in results], axis=0)


def write_reports(run_dir: Path, results: List[Dict], plan) -> List[Dict]:
    """summary.csv, results.json and the PNGs of a finished run; prints the summary."""
    import pandas as pd

    cfg, meta = plan.config, plan.cache.meta
    paper = paper_numbers(meta.dataset, cfg.protocol, cfg.ablation)
    scale = scale_text(meta.task, meta.label_names, meta.label_kinds, meta.label_scale)
    rows = summarize(results, meta.task, paper, meta.random_encoders,
                     metric_options(meta.task, meta.label_names, meta.label_scale), scale)
    for row in rows:  # the plan's warnings (e.g. a fold with one class) travel with every number
        row["note"] = "; ".join(filter(None, [row["note"], *plan.warnings]))
    suffix = " (random encoders)" if meta.random_encoders else ""
    folder = RunFolder(run_dir)
    if meta.task == "classification":
        plot_confusion(folder.plot(CONFUSION_PLOT), pooled_confusion(results), meta.label_names, suffix)
    units = [UnitFolder(job.fold_dir) for job in plan.jobs]  # in the order of `results`
    plot_learning_curves(folder.plot(LEARNING_CURVE_PLOT), units, meta.task, suffix)
    plot_attention(folder.plot(ATTENTION_PLOT), units, [r["sizes"]["test"] for r in results],
                   plan.jobs[0].model_config, suffix)
    # last: a kill while plotting must not leave results beside the INCOMPLETE marker
    folder.results.write_text(json.dumps(
        {"protocol": protocol_statement(plan, results), "folds": results, "summary": rows,
         "target": {"name": cfg.target or "", "task": meta.task, "labels": list(meta.label_names), "scale": scale},
         "random_encoders": meta.random_encoders, "note": RANDOM_NOTE if meta.random_encoders else ""}, indent=2))
    pd.DataFrame(rows).to_csv(folder.summary, index=False)
    units = f"{len(results)} units ({rows[0]['folds']} fold(s) x {rows[0]['seeds']} seed(s))" if cfg.seeds else \
        f"{len(results)} fold(s)"
    logger.info(f"summary over {units}, {cfg.ablation or FULL_MODEL}{suffix}:")
    for row in rows:
        paper_text = f"   paper {row['paper']:.1f}" if row["paper"] is not None else ""
        std = f" ± {row['std']:.2f}" if np.isfinite(row["std"]) else ""
        logger.info(f"  {row['metric']:<12} {row['mean']:.2f}{std}{paper_text}")
    if any(row["key"] in PAPER_NOTES and row["paper"] is not None for row in rows):
        logger.info(f"note: {ACC2_CONVENTION}")
    if meta.random_encoders:
        logger.warning(f"WARNING: {RANDOM_NOTE}")
    for warning in plan.warnings:
        logger.warning(f"WARNING: {warning}")
    logger.info(f"reports in {run_dir}")
    return rows


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(path: Path, confusion: np.ndarray, label_names: List[str], suffix: str):
    """Counts summed over folds; colour and the percentage are row-normalised (recall).
    Returns the (closed) figure, for tests to measure."""
    plt = _pyplot()
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    # at least 5 inches wide, else the title of a matrix with one or two classes is cut off
    fig, ax = plt.subplots(figsize=(max(1.2 * len(label_names) + 2, 5.0), 1.1 * len(label_names) + 1.5))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(label_names)):
        for j in range(len(label_names)):
            ax.text(j, i, f"{100 * rates[i, j]:.1f}%\n({confusion[i, j]})", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(label_names)), label_names)
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix, all test folds\n{suffix.strip()}".strip(), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def plot_learning_curves(path: Path, units: List[UnitFolder], task: str, suffix: str):
    """Loss and the selection metric per epoch: each fold thin, the mean over folds thick.
    Training accuracy is plain accuracy (WA: the epoch's running count); valid/test show UA.
    Returns the (closed) figure, None without logs."""
    import pandas as pd
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    logs = [pd.read_json(u.log_jsonl, lines=True) for u in units if u.log_jsonl.exists()]
    if not logs:
        return None
    metric = {"classification": "ua", "dimensional": "ccc"}.get(task, "mae")
    panels = [("loss", ["train_loss", "valid_loss", "test_loss"]),
              ("accuracy: WA (train), UA (valid, test)", ["train_acc", f"valid_{metric}", f"test_{metric}"])
              if task == "classification" else (NAMES[metric], [f"valid_{metric}", f"test_{metric}"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (title, columns) in zip(axes, panels):
        for column, colour in zip(columns, ("C0", "C1", "C2")):
            if column not in logs[0]:
                continue
            for log in logs:
                ax.plot(log["epoch"], log[column], color=colour, alpha=0.25, linewidth=0.8)
            mean = pd.concat([log.set_index("epoch")[column] for log in logs], axis=1).mean(axis=1)
            ax.plot(mean.index, mean.values, color=colour, linewidth=2,
                    label=f"{column}, mean of folds" if len(logs) > 1 else column)
        if len(logs) > 1:
            ax.plot([], [], color="grey", alpha=0.5, linewidth=0.8, label="one fold each (thin)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"Learning curves ({len(logs)} fold(s); test curves are for monitoring only){suffix}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def plot_attention(path: Path, units: List[UnitFolder], test_sizes: List[int], model_config, suffix: str) -> None:
    """The mean token x frame attention on the test data of all folds (as the paper's Fig. 3)."""
    maps = [(np.load(u.attention), n) for u, n in zip(units, test_sizes) if u.attention.exists()]
    if not maps:
        return  # single-modality ablations have no attention
    plt = _pyplot()
    mean = sum(m * n for m, n in maps) / max(sum(n for _, n in maps), 1)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    image = ax.imshow(mean, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax)
    what = ("full cross-attention" if model_config.attention == "full"
            else f"SliWa, window {model_config.window}, hop {model_config.hop}")
    ax.set_title(f"Mean attention coefficients on test data ({what}){suffix}", fontsize=10)
    ax.set_xlabel("audio frame")
    ax.set_ylabel("text token")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_ablation_table(top: Path, runs: Dict[str, Path]) -> None:
    """ablations.csv: one row per variant: per headline metric the mean, the std over all units and
    the std of the per-seed means (summary.csv's std and seed_std), the paper's value; the unit count."""
    import pandas as pd

    rows = []
    for variant, run_dir in runs.items():
        folder = RunFolder(run_dir)
        config = folder.read_config()
        summary = pd.read_csv(folder.summary)
        paper = paper_numbers(config["cache"]["dataset"], config["train"]["protocol"], variant)
        row = {"variant": variant}
        seed_std = summary["seed_std"] if "seed_std" in summary else [float("nan")] * len(summary)  # runs before seeds
        for key, mean, std, spread in zip(summary["key"], summary["mean"], summary["std"], seed_std):
            if key.endswith("_pooled"):
                continue
            row[f"{NAMES[key]} mean"], row[f"{NAMES[key]} std"] = mean, std
            row[f"{NAMES[key]} seed std"] = spread
            if key in paper:
                row[f"{NAMES[key]} paper"] = paper[key]
        row["units"] = int(summary["units"].iloc[0]) if "units" in summary else int(summary["folds"].iloc[0])
        row["note"] = RANDOM_NOTE if config["cache"]["random_encoders"] else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(RunFolder(top).ablation_table, index=False)
    logger.info("ablations (Table 3):")
    logger.info(table.drop(columns="note").to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if rows and rows[0]["note"]:
        logger.warning(f"WARNING: {RANDOM_NOTE}")
