"""`swrr-compare`: is a difference between runs real? Paired statistics over units.

A unit is one (fold, seed) of a run (`swrr-train --seeds`). Runs trained on the same cache with
the same protocol test each unit on the same utterances, so they are compared unit by unit:

    runs = load_runs(["runs/base", "runs/variant"])         # or one --ablation all folder
    table = compare_runs(runs, metrics=["ua"])              # one row per metric x run vs the first
    write_outputs(table, runs, Path("runs/compare"))        # compare.csv, compare.md, compare.png

Each row gives both runs' mean ± std over the paired units, the mean paired difference with a
95% paired-bootstrap confidence interval (units resampled with replacement, seeded), a paired
t-test and a Wilcoxon signed-rank p-value, the number of units and a verdict in words. Every run
is compared with the first one (the reference; in an ablation folder the full model); with more
than one comparison the p-values of each metric are Holm-corrected over its comparisons.

Only run folders are read (config.json and each unit's metrics.json), never the cache.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from swrr.rundir import INCOMPLETE, UNIT_GLOB, UNIT_RESULT, RunFolder, RunFolderError
from swrr.train.report import NAMES, PERCENT, RANDOM_NOTE, sample_std, shown
from swrr.errors import SwrrError

RESAMPLES = 10_000
# Decision: fewer resamples than this cannot place the 2.5 % tails of a 95 % interval (with 1 or 2
# the "interval" may not even hold the mean, and the plot's error bars are negative).
MIN_RESAMPLES = 100
RECORD = "compare.json"  # in an output folder: which runs it compares
PARTIAL_SUFFIX = ".partial"
BOOTSTRAP_SEED = 0
LEVEL = 0.95  # confidence level of the intervals
ALPHA = 0.05  # significance level of the verdicts

Unit = Tuple[int, int]  # (fold number, seed)


class CompareError(SwrrError):
    """Runs that cannot be compared as asked; the message says why."""


@dataclass
class RunResults:
    """One finished run as swrr-compare sees it."""

    name: str  # the label in tables: the folder name, or the variant in an ablation folder
    path: Path
    task: str
    protocol: str
    cache_fingerprint: str
    task_digest: str  # the rows and labels tested on ("" for runs made before it existed)
    folds: Dict[int, Tuple[str, int]]  # fold number -> (held-out group, test rows)
    units: Dict[Unit, Dict[str, float]]  # (fold, seed) -> metrics as reported (percent for accuracies)
    random_encoders: bool


# ------------------------------------------------------------------ statistics (pure functions)
def bootstrap_mean_ci(values, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
                      level: float = LEVEL) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (n,): `resamples` means of n values
    drawn with replacement. Applied to paired differences this is the paired bootstrap over units."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_t_test(differences) -> Tuple[float, float]:
    """-> (t, two-sided p) of the paired t-test on differences (n,), df = n - 1.

    All differences zero: (0, 1). Equal non-zero differences: (±inf, 0). Fewer than 2: (nan, nan)."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return float("nan"), float("nan")
    mean, sd = d.mean(), d.std(ddof=1)
    if sd == 0:
        return (0.0, 1.0) if mean == 0 else (float(np.copysign(np.inf, mean)), 0.0)
    t = mean / (sd / np.sqrt(len(d)))
    return float(t), float(2 * stats.t.sf(abs(t), len(d) - 1))


def wilcoxon_p(differences) -> float:
    """Two-sided Wilcoxon signed-rank p-value (scipy: zero differences dropped, exact for small n
    without ties). All differences zero: 1. Fewer than 2 units: nan."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return float("nan")
    if not np.any(d):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def holm(p_values: Sequence[float]) -> List[float]:
    """Holm's step-down adjustment of a family of p-values (nan entries are left out and stay nan):
    the i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j))."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(len(p), np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def format_p(p: float) -> str:
    if np.isnan(p):
        return "n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def verdict(reference: str, run: str, metric: str, difference: float, ci: Tuple[float, float], p: float,
            units: int, corrected: bool = False, alpha: float = ALPHA) -> str:
    """The comparison in plain words, e.g.
    "B > A on UA by 1.2 pt, 95% CI [0.4, 2.0], p = 0.01, 50 paired units"."""
    unit = " pt" if metric in PERCENT else ""
    digits = 2 if metric in PERCENT else 3
    name = NAMES.get(metric, metric)
    interval = f"{LEVEL:.0%} CI [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    tested = f"{format_p(p)}{' (Holm)' if corrected else ''}, {units} paired units"
    if units < 2:
        return (f"{run} - {reference} on {name} = {difference:+.{digits}f}{unit} on {units} paired unit: "
                "too few units for a test")
    if p < alpha and difference != 0:
        side = ">" if difference > 0 else "<"
        lower = " (lower is better)" if metric == "mae" else ""
        return f"{run} {side} {reference} on {name} by {abs(difference):.{digits}f}{unit}{lower}, {interval}, {tested}"
    return (f"no significant difference between {run} and {reference} on {name}: "
            f"{run} - {reference} = {difference:+.{digits}f}{unit}, {interval}, {tested}")


# ------------------------------------------------------------------ run folders
def load_runs(paths: Sequence) -> List[RunResults]:
    """The runs to compare, the reference first: two or more run folders, or one `--ablation all`
    folder (its full model, then each variant). Raises CompareError when they cannot be paired."""
    paths = [Path(p) for p in paths]
    configs = [_read_config(p) for p in paths]
    if len(paths) == 1:
        if "grid" not in configs[0]:
            raise CompareError(f"{paths[0]} is a single run: give two or more runs (the first is the reference), "
                               "or one --ablation all folder")
        top = RunFolder(paths[0])
        runs = [load_run(top.variant(variant).path, variant) for variant in configs[0]["grid"]]
    else:
        grids = [str(p) for p, c in zip(paths, configs) if "grid" in c]
        if grids:
            raise CompareError(f"{', '.join(grids)} is an --ablation all folder: compare it alone "
                               "(its variants against the full model) or give its variant folders")
        runs = [load_run(p, config=c) for p, c in zip(paths, configs)]
    check_pairable(runs)
    return runs


def load_run(path: Path, name: Optional[str] = None, config: Optional[Dict] = None) -> RunResults:
    """One finished run's units; `config` is its config.json when the caller has read it already."""
    config = config if config is not None else _read_config(path)
    if "grid" in config:
        raise CompareError(f"{path} is an --ablation all folder; give it alone to compare its variants")
    units = {}
    for unit in RunFolder(path).units():
        if not unit.finished():
            continue
        try:
            result = unit.read_result()
            key = (int(result["fold"]), int(result.get("seed", config["train"]["seed"])))  # runs before seeds
            units[key] = {k: shown(k, v) for k, v in result["metrics"].items() if isinstance(v, (int, float))}
        except (ValueError, KeyError, TypeError) as exc:
            raise CompareError(f"{unit.metrics} is damaged ({exc!r}); rerun that run") from None
    if not units:
        raise CompareError(f"{path} holds no unit results ({UNIT_GLOB}/{UNIT_RESULT})")
    return RunResults(name or path.name, path, config["cache"]["task"], config["train"]["protocol"],
                      config["cache"]["fingerprint"], config["cache"].get("task_digest", ""),
                      {f["number"]: (f["name"], f["test"]) for f in config.get("folds", [])},
                      units, bool(config["cache"].get("random_encoders")))


def _read_config(path: Path) -> Dict:
    if not path.is_dir():
        raise CompareError(f"no such run folder: {path}")
    folder = RunFolder(path)
    if folder.is_incomplete():
        raise CompareError(f"{path} has not finished (it holds an {INCOMPLETE} marker); finish it with "
                           f"swrr-train --resume {path}")
    try:
        return folder.read_config()
    except RunFolderError as exc:
        raise CompareError(str(exc)) from None


def check_pairable(runs: Sequence[RunResults]) -> None:
    """The same rows and labels (the task digest; for runs without one the same cache), the same
    protocol, and every fold number that two runs share holds out the same group. Caches of the
    same rows with other features (gold vs ASR transcripts, another encoder) pair."""
    reference = runs[0]
    for run in runs[1:]:
        if run.task_digest and reference.task_digest:
            if run.task_digest != reference.task_digest:
                raise CompareError(f"{run.path} and {reference.path} were tested on different rows or labels (task "
                                   f"digests {run.task_digest} vs {reference.task_digest}): their units cannot be "
                                   "paired")
        elif run.cache_fingerprint != reference.cache_fingerprint:
            raise CompareError(f"{run.path} and {reference.path} were trained on different caches (fingerprints "
                               f"{run.cache_fingerprint} vs {reference.cache_fingerprint}): their units test "
                               "different data and cannot be paired")
        if run.protocol != reference.protocol:
            raise CompareError(f"{run.path} uses protocol {run.protocol} and {reference.path} {reference.protocol}: "
                               "their folds differ and cannot be paired")
        for number in sorted(set(run.folds) & set(reference.folds)):
            if run.folds[number] != reference.folds[number]:
                raise CompareError(f"fold {number} differs between {run.path} {run.folds[number]} and "
                                   f"{reference.path} {reference.folds[number]} (held-out group, test rows): "
                                   "the runs cannot be paired")


def common_units(runs: Sequence[RunResults]) -> List[Unit]:
    """The (fold, seed) units every run has, sorted; CompareError when there are none."""
    shared = sorted(set.intersection(*(set(run.units) for run in runs)))
    if not shared:
        raise CompareError("the runs have no (fold, seed) unit in common: "
                           + "; ".join(f"{run.name}: {_unit_list(run.units)}" for run in runs))
    return shared


def _unit_list(units) -> str:
    return ", ".join(f"fold {f} seed {s}" for f, s in sorted(units))


def resolve_metrics(requested: Sequence[str], runs: Sequence[RunResults], units: Sequence[Unit]) -> List[str]:
    """Metric keys from names as shown (UA, F1w, ACC2, MAE, ...) or keys (ua, acc2_non0, ...), any case;
    none requested = every scalar metric all runs report."""
    available = [k for k in NAMES if all(k in run.units[u] for run in runs for u in units)]
    if not requested:
        return available
    lookup = {**{k.lower(): k for k in available}, **{NAMES[k].lower(): k for k in available}}
    unknown = [m for m in requested if m.lower() not in lookup]
    if unknown:
        raise CompareError(f"unknown metric {', '.join(unknown)}; these runs report "
                           f"{', '.join(NAMES[k] for k in available)}")
    return list(dict.fromkeys(lookup[m.lower()] for m in requested))


# ------------------------------------------------------------------ the comparison table
def compare_runs(runs: Sequence[RunResults], metrics: Sequence[str] = (), resamples: int = RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> List[Dict]:
    """One row per metric and run (every run against runs[0]) over the units all runs share."""
    units = common_units(runs)
    rows = []
    corrected = len(runs) > 2
    for metric in resolve_metrics(metrics, runs, units):
        reference = np.array([runs[0].units[u][metric] for u in units])
        family = []
        for run in runs[1:]:
            values = np.array([run.units[u][metric] for u in units])
            diff = values - reference
            t, p_t = paired_t_test(diff)
            ci_low, ci_high = bootstrap_mean_ci(diff, resamples, seed)
            family.append({
                "metric": NAMES[metric], "key": metric, "reference": runs[0].name, "run": run.name,
                "units": len(units), "reference_mean": reference.mean(), "reference_std": sample_std(reference),
                "run_mean": values.mean(), "run_std": sample_std(values), "difference": diff.mean(),
                "ci_low": ci_low, "ci_high": ci_high, "bootstrap_resamples": resamples, "bootstrap_seed": seed,
                "t": t, "p_t": p_t, "p_wilcoxon": wilcoxon_p(diff), "holm": corrected,
                "per_unit_difference": " ".join(f"{d:.4g}" for d in diff)})
        for name in ("p_t", "p_wilcoxon"):
            adjusted = holm([row[name] for row in family]) if corrected else [np.nan] * len(family)
            for row, p in zip(family, adjusted):
                row[f"{name}_holm"] = p
        for row in family:
            p = row["p_t_holm"] if corrected else row["p_t"]
            row["verdict"] = verdict(row["reference"], row["run"], metric, row["difference"],
                                     (row["ci_low"], row["ci_high"]), p, row["units"], corrected)
        rows += family
    return [{k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()} for row in rows]


# ------------------------------------------------------------------ compare.csv, compare.md, compare.png
def write_outputs(rows: List[Dict], runs: Sequence[RunResults], out: Path) -> None:
    """compare.csv, compare.md, compare.png and compare.json (which runs) into `out`, all or nothing:
    written into `<out>.partial/`, then renamed into place (an earlier comparison of the same runs
    there is replaced; one of other runs, or a folder that is no comparison, is refused)."""
    import pandas as pd

    check_compare_out(out, runs)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    try:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        pd.DataFrame(rows).to_csv(partial / "compare.csv", index=False)
        (partial / "compare.md").write_text(markdown(rows, runs))
        plot(rows, runs, partial / "compare.png")
        (partial / RECORD).write_text(json.dumps({"runs": _run_paths(runs)}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise CompareError(f"cannot write the comparison into {out} ({exc.strerror or exc}); nothing was "
                           "written") from None


def _run_paths(runs: Sequence[RunResults]) -> List[str]:
    return [str(run.path.resolve()) for run in runs]


def check_compare_out(out: Path, runs: Sequence[RunResults]) -> None:
    """CompareError when `out` exists and is not an earlier comparison of these very runs: two
    comparisons whose runs share folder names must not replace each other's outputs."""
    if not out.exists():
        return
    try:
        recorded = json.loads((out / RECORD).read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CompareError(f"--out {out} exists and is not a comparison folder (no readable {RECORD}); "
                           "choose another --out") from None
    if recorded != _run_paths(runs):
        raise CompareError(f"{out} holds the comparison of other runs ({', '.join(recorded)}); give --out "
                           "a new folder for this one")


def markdown(rows: List[Dict], runs: Sequence[RunResults]) -> str:
    """Per metric a table ready for a paper (mean ± std, difference with CI, p-values), then the verdicts."""
    units = common_units(runs)
    corrected = len(runs) > 2
    first = rows[0]
    lines = [f"# {' vs '.join(run.name for run in runs)}", "",
             f"Reference: **{runs[0].name}** ({runs[0].path}); protocol {runs[0].protocol}, task digest "
             f"{runs[0].task_digest or runs[0].cache_fingerprint}; {len(units)} paired units (fold x seed). Differences are run − "
             f"reference; {LEVEL:.0%} CI from a paired bootstrap over units ({first['bootstrap_resamples']} "
             f"resamples, seed {first['bootstrap_seed']}); p from a paired t-test and a Wilcoxon signed-rank test."]
    if corrected:
        lines.append(f"p-values are **Holm-corrected** over the {len(runs) - 1} comparisons of each metric.")
    left_out = {run.name: sorted(set(run.units) - set(units)) for run in runs}
    for name, extra in left_out.items():
        if extra:
            lines.append(f"Not paired, left out: {name} {_unit_list(extra)}.")
    if any(run.random_encoders for run in runs):
        lines.append(f"**Note:** {RANDOM_NOTE}.")
    holm_tag = " (Holm)" if corrected else ""
    for metric in dict.fromkeys(row["metric"] for row in rows):
        family = [row for row in rows if row["metric"] == metric]
        ref = family[0]
        lines += ["", f"## {metric}", "", f"| run | mean ± std | Δ vs {ref['reference']} [{LEVEL:.0%} CI] | "
                  f"p (t){holm_tag} | p (Wilcoxon){holm_tag} | units |", "|---|---|---|---|---|---|",
                  f"| {ref['reference']} | {_pm(ref['reference_mean'], ref['reference_std'])} | – | – | – | "
                  f"{ref['units']} |"]
        for row in family:
            p_t, p_w = (row["p_t_holm"], row["p_wilcoxon_holm"]) if corrected else (row["p_t"], row["p_wilcoxon"])
            lines.append(f"| {row['run']} | {_pm(row['run_mean'], row['run_std'])} | {row['difference']:+.2f} "
                         f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] | {_p_cell(p_t)} | {_p_cell(p_w)} | "
                         f"{row['units']} |")
        lines += [""] + [f"- {row['verdict']}" for row in family]
    return "\n".join(lines) + "\n"


def _pm(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}" if np.isfinite(std) else f"{mean:.2f}"


def _p_cell(p: float) -> str:
    return format_p(p).replace("p = ", "").replace("p ", "")


def plot(rows: List[Dict], runs: Sequence[RunResults], path: Path) -> None:
    """Per metric: each run's mean with its bootstrap CI (left), each unit's paired difference
    to the reference with the mean difference and its CI (right)."""
    from swrr.train.report import _pyplot

    plt = _pyplot()
    units = common_units(runs)
    metrics = list(dict.fromkeys(row["key"] for row in rows))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 2.8 * len(metrics) + 0.6), squeeze=False)
    for (left, right), metric in zip(axes, metrics):
        family = [row for row in rows if row["key"] == metric]
        for x, run in enumerate(runs):
            values = np.array([run.units[u][metric] for u in units])
            low, high = bootstrap_mean_ci(values, family[0]["bootstrap_resamples"], family[0]["bootstrap_seed"])
            left.errorbar(x, values.mean(), yerr=[[values.mean() - low], [high - values.mean()]], fmt="o",
                          capsize=4, color="C0" if x else "C3")
        left.set_xticks(range(len(runs)), [run.name for run in runs], rotation=20, fontsize=8)
        left.set_ylabel(NAMES[metric])
        left.set_title(f"{NAMES[metric]}: mean and {LEVEL:.0%} bootstrap CI over {len(units)} units", fontsize=9)
        rng = np.random.default_rng(0)  # horizontal jitter of the unit dots only
        reference = np.array([runs[0].units[u][metric] for u in units])
        for x, (row, run) in enumerate(zip(family, runs[1:])):
            diffs = np.array([run.units[u][metric] for u in units]) - reference
            right.scatter(x + rng.uniform(-0.15, 0.15, len(diffs)), diffs, s=10, alpha=0.5, color="C0")
            right.errorbar(x, row["difference"], yerr=[[row["difference"] - row["ci_low"]],
                                                       [row["ci_high"] - row["difference"]]],
                           fmt="s", capsize=5, color="black")
        right.axhline(0, color="grey", linewidth=0.8)
        right.set_xticks(range(len(family)), [row["run"] for row in family], rotation=20, fontsize=8)
        right.set_title(f"{NAMES[metric]}: per-unit difference to {runs[0].name}, mean and CI", fontsize=9)
    note = " (random encoders: pipeline check only)" if any(run.random_encoders for run in runs) else ""
    fig.suptitle(f"{' vs '.join(run.name for run in runs)}{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_out(paths: Sequence) -> Path:
    """An ablation folder: <folder>/compare; runs: compare-<A>-vs-<B>... beside the first run."""
    first = Path(paths[0])
    if len(paths) == 1:
        return RunFolder(first).comparison
    return first.parent / ("compare-" + "-vs-".join(Path(p).name for p in paths))


def run_compare(paths: Sequence, metrics: Sequence[str] = (), out: Optional[Path] = None,
                resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Tuple[List[Dict], Path]:
    """Everything `swrr-compare` does: load, pair, test, write; returns (rows, output folder)."""
    if resamples < MIN_RESAMPLES:
        raise CompareError(f"--resamples must be >= {MIN_RESAMPLES} for a {LEVEL:.0%} interval, got {resamples}")
    runs = load_runs(paths)
    rows = compare_runs(runs, metrics, resamples, seed)
    out = Path(out) if out else default_out(paths)
    write_outputs(rows, runs, out)
    return rows, out

