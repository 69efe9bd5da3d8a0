"""swrr-compare: the statistics against hand-computed values and scipy, pairing and refusals on
run folders written by hand (config.json + unit metrics.json, as swrr-train writes them), and the
CLI's outputs. A real seeded run compared end to end is in tests/test_seeds.py."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from swrr.train.compare import (bootstrap_mean_ci, compare_runs, holm, load_runs, paired_t_test,
                           run_compare, verdict, wilcoxon_p)
from swrr.train.compare_cli import main


# ------------------------------------------------------------------ statistics
def test_paired_t_test_matches_the_hand_computed_value_and_scipy():
    d = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, sd sqrt(5/3): t = 2.5 / (sqrt(5/3) / 2) = sqrt(15)
    t, p = paired_t_test(d)
    assert t == pytest.approx(math.sqrt(15))
    assert p == pytest.approx(2 * stats.t.sf(math.sqrt(15), 3))
    rng = np.random.default_rng(3)
    a, b = rng.normal(70, 3, 30), rng.normal(71, 3, 30)
    reference = stats.ttest_rel(b, a)
    assert paired_t_test(b - a) == pytest.approx((reference.statistic, reference.pvalue))


def test_wilcoxon_matches_exact_hand_counts_and_scipy():
    # n = 5, no ties: 2^5 = 32 equally likely sign patterns under H0
    assert wilcoxon_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)  # only the all-positive pattern has W- = 0
    assert wilcoxon_p([1, -2, 3, 4, 5]) == pytest.approx(2 * 3 / 32)  # W- <= 2: {}, {1}, {2}
    d = np.random.default_rng(4).normal(0.5, 1, 40)
    assert wilcoxon_p(d) == pytest.approx(stats.wilcoxon(d).pvalue)


def test_holm_adjustment_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3*0.01; max(2*0.03, 1*0.04)
    assert holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])
    assert holm([0.04, 0.03]) == pytest.approx([0.06, 0.06])  # 1*0.04 < 2*0.03: never below an earlier step
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1
    adjusted = holm([0.2, float("nan"), 0.01])
    assert adjusted[0] == pytest.approx(0.2) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_bootstrap_interval_by_hand_and_seeded():
    # differences [0, 1]: resampled means are 0, 0.5, 1 with chances 1/4, 1/2, 1/4 -> 2.5 % and 97.5 % at 0 and 1
    assert bootstrap_mean_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_mean_ci([2.0] * 7) == (2.0, 2.0)
    d = np.random.default_rng(5).normal(1, 2, 50)
    ci = bootstrap_mean_ci(d, resamples=4000, seed=7)
    assert ci == bootstrap_mean_ci(d, resamples=4000, seed=7) != bootstrap_mean_ci(d, resamples=4000, seed=8)
    t_half = stats.t.ppf(0.975, 49) * d.std(ddof=1) / np.sqrt(50)  # close to the t interval at n = 50
    assert ci[0] == pytest.approx(d.mean() - t_half, abs=0.15) and ci[1] == pytest.approx(d.mean() + t_half, abs=0.15)


def test_identical_runs_give_no_difference():
    a = np.random.default_rng(6).normal(70, 2, 20)
    assert paired_t_test(a - a) == (0.0, 1.0) and wilcoxon_p(a - a) == 1.0
    assert bootstrap_mean_ci(a - a) == (0.0, 0.0)


def test_verdict_words():
    text = verdict("A", "B", "ua", 1.2, (0.4, 2.0), 0.01, 50)
    assert text == "B > A on UA by 1.20 pt, 95% CI [0.40, 2.00], p = 0.01, 50 paired units"
    assert verdict("A", "B", "mae", -0.05, (-0.08, -0.02), 0.0004, 10, corrected=True) == \
        "B < A on MAE by 0.050 (lower is better), 95% CI [-0.080, -0.020], p < 0.001 (Holm), 10 paired units"
    assert verdict("A", "B", "wa", 0.3, (-0.5, 1.1), 0.41, 50).startswith(
        "no significant difference between B and A on WA: B - A = +0.30 pt")
    assert "too few units" in verdict("A", "B", "wa", 0.3, (0.3, 0.3), float("nan"), 1)


# ------------------------------------------------------------------ run folders written by hand
def write_run(path: Path, values, metric="ua", fingerprint="abc", protocol="loso-speaker", folds=(1, 2, 3, 4, 5),
              seeds=(0, 1), incomplete=False, grid=None, random_encoders=False):
    """A finished run folder with `values[i]` (percent) for unit i = (fold, seed), seed by seed."""
    path.mkdir(parents=True)
    fold_defs = [{"number": f, "name": f"S{f}", "valid": "", "train": 40, "valid_rows": 0, "test": 10} for f in folds]
    (path / "config.json").write_text(json.dumps({
        "train": {"protocol": protocol, "seed": 0, "seeds": list(seeds)},
        "cache": {"fingerprint": fingerprint, "task": "classification", "random_encoders": random_encoders},
        "folds": fold_defs}))
    units = [(f, s) for s in seeds for f in folds]
    for (fold, seed), value in zip(units, values):
        unit = path / f"fold{fold:02d}-seed{seed}"
        unit.mkdir()
        metrics = {"wa": value / 100 - 0.01, metric: value / 100, "f1": 0.5, "confusion": [[1, 0], [0, 1]]}
        (unit / "metrics.json").write_text(json.dumps({"fold": fold, "seed": seed, "metrics": metrics}))
    if incomplete:
        (path / "INCOMPLETE").write_text("not finished\n")
    return path


def planted(tmp_path, shift=2.0, n_folds=10, n_seeds=5, noise=1.0):
    rng = np.random.default_rng(0)
    base = rng.normal(70, 3, n_folds * n_seeds)  # fold/seed effects shared by both runs
    folds, seeds = range(1, n_folds + 1), range(n_seeds)
    a = write_run(tmp_path / "A", base, folds=folds, seeds=seeds)
    b = write_run(tmp_path / "B", base + shift + rng.normal(0, noise, len(base)), folds=folds, seeds=seeds)
    return a, b


def test_a_planted_two_point_shift_over_50_units_is_detected(tmp_path):
    a, b = planted(tmp_path)
    rows = compare_runs(load_runs([a, b]), ["UA"])
    (row,) = rows
    assert row["units"] == 50 and row["difference"] == pytest.approx(2.0, abs=0.4)
    assert row["ci_low"] > 0 and row["ci_low"] < 2.0 < row["ci_high"]
    assert row["p_t"] < 1e-6 and row["p_wilcoxon"] < 1e-6 and row["bootstrap_resamples"] == 10_000
    assert row["verdict"].startswith("B > A on UA by ") and "50 paired units" in row["verdict"]


def test_an_identical_pair_shows_no_difference(tmp_path):
    values = np.random.default_rng(1).normal(70, 3, 10)
    a, b = write_run(tmp_path / "A", values), write_run(tmp_path / "B", values)
    rows = {row["key"]: row for row in compare_runs(load_runs([a, b]))}
    assert set(rows) == {"wa", "ua", "f1"}
    for row in rows.values():
        assert row["difference"] == 0 and (row["ci_low"], row["ci_high"]) == (0, 0)
        assert row["p_t"] == 1 and row["p_wilcoxon"] == 1 and row["verdict"].startswith("no significant difference")


def test_three_runs_are_holm_corrected_against_the_first(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.normal(70, 3, 10)
    a = write_run(tmp_path / "A", base)
    b = write_run(tmp_path / "B", base + rng.normal(1.0, 1.0, 10))
    c = write_run(tmp_path / "C", base + rng.normal(0.2, 1.0, 10))
    rows = compare_runs(load_runs([a, b, c]), ["ua"])
    assert [(r["reference"], r["run"]) for r in rows] == [("A", "B"), ("A", "C")]
    assert [r["p_t_holm"] for r in rows] == pytest.approx(holm([r["p_t"] for r in rows]))
    assert [r["p_wilcoxon_holm"] for r in rows] == pytest.approx(holm([r["p_wilcoxon"] for r in rows]))
    assert all(r["holm"] and "(Holm)" in r["verdict"] for r in rows)
    # the p in the verdict is the corrected one
    assert all(r["p_t_holm"] >= r["p_t"] for r in rows)


def test_units_are_paired_by_fold_and_seed_and_unshared_ones_left_out(tmp_path):
    a = write_run(tmp_path / "A", [70, 71, 72, 73], folds=(1, 2), seeds=(0, 1))
    b = write_run(tmp_path / "B", [75, 76, 77, 78, 79, 80], folds=(1, 2), seeds=(1, 2, 3))
    (row,) = compare_runs(load_runs([a, b]), ["ua"])
    # common units: (1, 1) and (2, 1): A has 72, 73 there, B 75, 76
    assert row["units"] == 2 and row["difference"] == pytest.approx(3.0)
    assert row["reference_mean"] == pytest.approx(72.5) and row["run_mean"] == pytest.approx(75.5)


def swrr_compare(args, capsys):
    """-> (exit code, stdout, stderr) of the console script."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_writes_csv_markdown_and_png(tmp_path, capsys):
    a, b = planted(tmp_path, n_folds=5, n_seeds=2)
    code, out, err = swrr_compare([a, b, "--metric", "UA", "--metric", "wa", "--out", tmp_path / "cmp",
                                   "--resamples", "2000"], capsys)
    assert code == 0, err
    assert "B > A on UA" in out
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert table["metric"].tolist() == ["UA", "WA"] and (table["bootstrap_resamples"] == 2000).all()
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "## UA" in md and "| B |" in md and "2000 resamples" in md and "Holm" not in md
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000


def test_an_ablation_folder_compares_each_variant_with_the_full_model(tmp_path):
    top = tmp_path / "grid"
    top.mkdir()
    (top / "config.json").write_text(json.dumps({"train": {"ablation": "all"}, "grid": ["swrr", "no-hrfr", "linear"]}))
    base = np.random.default_rng(3).normal(70, 2, 10)
    for variant, shift in (("swrr", 0), ("no-hrfr", -2), ("linear", -0.5)):
        write_run(top / variant, base + shift, random_encoders=True)
    rows, out = run_compare([top], ["UA"], resamples=1000)
    assert out == top / "compare" and [r["run"] for r in rows] == ["no-hrfr", "linear"]
    assert all(r["reference"] == "swrr" and r["holm"] for r in rows)
    assert rows[0]["difference"] == pytest.approx(-2.0) and rows[0]["verdict"].startswith("no-hrfr < swrr on UA by 2.00")
    md = (out / "compare.md").read_text()
    assert "Holm-corrected" in md and "RANDOM encoders" in md


@pytest.mark.parametrize("case,message", [
    ("one run", "is a single run: give two or more runs"),
    ("missing", "no such run folder"),
    ("incomplete", "has not finished.*INCOMPLETE.*--resume"),
    ("unknown metric", "unknown metric ACC9; these runs report WA, UA, F1w"),
    ("no common units", "no \\(fold, seed\\) unit in common"),
    ("other cache", "different caches"),
    ("other protocol", "protocol loso-session"),
    ("other folds", "fold 1 differs"),
    ("not a run", "not a run folder"),
    ("bad option", "No such option '--metrics'"),
])
def test_refusals_are_one_line_with_exit_code_2(tmp_path, capsys, case, message):
    values = [70.0] * 10
    a = write_run(tmp_path / "A", values)
    b = tmp_path / "B"
    make_other = {
        "one run": lambda: [],
        "missing": lambda: [tmp_path / "nowhere"],
        "incomplete": lambda: [write_run(b, values, incomplete=True)],
        "unknown metric": lambda: [write_run(b, values)],
        "no common units": lambda: [write_run(b, values, seeds=(5, 6))],
        "other cache": lambda: [write_run(b, values, fingerprint="def")],
        "other protocol": lambda: [write_run(b, values, protocol="loso-session")],
        "other folds": lambda: [write_run(b, values, folds=(1, 2, 3, 4, 5))],
        "not a run": lambda: [tmp_path],
        "bad option": lambda: [write_run(b, values), "--metrics", "UA"],
    }
    others = make_other[case]()
    if case == "other folds":  # fold 1 of B holds out another speaker
        config = json.loads((b / "config.json").read_text())
        config["folds"][0]["name"] = "S9"
        (b / "config.json").write_text(json.dumps(config))
    args = [str(a), *map(str, others)] + (["--metric", "ACC9"] if case == "unknown metric" else [])
    code, out, err = swrr_compare(args, capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swrr-compare: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert not any(p.name.startswith("compare") for p in tmp_path.iterdir())  # nothing written
