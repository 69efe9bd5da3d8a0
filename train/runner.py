"""A training run end to end: check everything, make the run folder, train the folds
(one after another or `parallel_folds` at a time), write the reports.

    run(TrainConfig(cache="cache/iemocap.h5"))     # what `swrr-train` calls
    resume("runs/iemocap-loso-speaker")            # what `swrr-train --resume` calls

Everything that can be wrong with the request (cache, protocol, folds, ablation, model options)
is checked before the run folder is created. A folder whose run has not finished holds an
`INCOMPLETE` file and no summary.csv.
"""
from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from swrr_core import __version__
from swrr_core.cache import FeatureCache
from swrr_core.device import resolve_device
from swrr_core.model import ABLATIONS
from train import report
from train.config import (FULL_MODEL, RESUMABLE_FIELDS, RUNTIME_FIELDS, TrainConfig, TrainError, check,
                          fingerprint, model_config, resolve, unit_seeds)
from train.data import make_source
from train.loop import EpochBudget, FoldJob, RunInterrupted, selects_on_valid, train_fold, write_json
from train.protocols import Fold, default_protocol, make_folds, pick_folds
from train.tensorboard_log import require_tensorboard

INCOMPLETE = "INCOMPLETE"


@dataclass
class Plan:
    """A checked, resolved run: what `execute` needs."""

    config: TrainConfig
    cache: FeatureCache
    folds: List[Fold]
    num_folds: int
    jobs: List[FoldJob]
    cache_fingerprint: str
    device: torch.device


def run(config: TrainConfig, rerun: Optional[Dict[str, Any]] = None) -> Path:
    """Start a new run; returns its folder. Raises TrainError / CacheError on bad input.

    `rerun` (from `swrr-train --config FILE`): {"config_file": FILE, "overrides": {option: value}},
    recorded in the run's config.json."""
    check(config)
    if config.ablation == "all":
        return _run_grid(config, resume_dir=None, rerun=rerun)
    plan = prepare(config)
    run_dir = _new_run_dir(plan.config, plan.cache.meta.dataset)
    try:
        _write_config(run_dir, plan, rerun)
    except OSError as exc:
        raise TrainError(f"cannot write the run folder {run_dir} ({exc})") from exc
    return execute(plan, run_dir)


def resume(run_dir, **runtime: Any) -> Path:
    """Continue the run in `run_dir` with its saved config; `runtime` may change only how it runs
    (device, workers, stream, parallel_folds, progress, stop_after_epochs) and the cache path."""
    run_dir = Path(run_dir)
    saved = _read_config(run_dir)
    bad = sorted(set(runtime) - set(RESUMABLE_FIELDS))
    if bad:
        raise TrainError(f"--resume continues {run_dir} with its saved config; these options cannot change: "
                         f"{', '.join(bad)} (start a new run instead)")
    config = replace(TrainConfig.from_dict(saved["train"]), stop_after_epochs=None, progress=True)
    config = replace(config, **runtime, runs_dir=str(run_dir.parent), name=run_dir.name)
    if config.ablation == "all":
        return _run_grid(config, resume_dir=run_dir)
    plan = prepare(config)
    if plan.cache_fingerprint != saved["cache"]["fingerprint"]:
        raise TrainError(f"{plan.cache.path} is not the cache {run_dir} was trained on "
                         f"(its rows or extraction config differ); pass the original with --cache")
    return execute(plan, run_dir)


def prepare(config: TrainConfig) -> Plan:
    """Open the cache, resolve the config, build folds, jobs and the model config; writes nothing."""
    device = resolve_device(config.device)  # a bad --device is refused before any folder exists
    if config.tensorboard:
        require_tensorboard()
    cache = FeatureCache(config.cache)
    meta = cache.meta
    _check_lengths(cache)
    config = resolve(config, meta, default_protocol(meta.task, cache.speaker, cache.split))
    all_folds = make_folds(config.protocol, meta.task, cache.speaker, cache.session, cache.split,
                           config.early_stop_speaker, cache_name=str(cache.path))
    folds = pick_folds(all_folds, config.folds)
    model_cfg = model_config(config, meta)
    cache_fp = _cache_fingerprint(cache)
    # a unit (fold x seed) is identified by its own seed, not by the run's list of seeds
    identity_config = {k: v for k, v in config.result_fields().items() if k not in ("cache", "folds", "seeds")}
    jobs = []
    for seed in unit_seeds(config):
        unit_config = replace(config, seed=seed)
        for fold in folds:
            identity = json.loads(json.dumps({"config": {**identity_config, "seed": seed}, "model": asdict(model_cfg),
                                              "cache": cache_fp, "fold": fold.number}))
            jobs.append(FoldJob(fold, len(all_folds), unit_config, model_cfg, meta.task, list(meta.label_names),
                                "", identity))
            selects_on_valid(jobs[-1])  # --select valid on a fold without validation rows: refuse now
    return Plan(config, cache, folds, len(all_folds), jobs, cache_fp, device)


def _check_lengths(cache: FeatureCache) -> None:
    """Every row needs 1..max frames and tokens (swrr-extract stores at least [CLS] [SEP]);
    other lengths mean a damaged cache or one written by another tool. Checked before any work."""
    for name, lengths, size in (("audio_len", cache.audio_len, cache.meta.max_frames),
                                ("text_len", cache.text_len, cache.meta.max_tokens)):
        bad = np.flatnonzero((lengths < 1) | (lengths > size))
        if len(bad):
            raise TrainError(f"{cache.path}: {len(bad)} rows have {name} outside [1, {size}] (e.g. "
                             f"{', '.join(f'{cache.utt_id[i]}: {lengths[i]}' for i in bad[:3])}); the SWRR head "
                             "needs at least one frame and one token per row: re-extract the cache with swrr-extract")


@contextmanager
def torch_threads(count: Optional[int]):
    """Run the block with `count` CPU threads (None: as they are), then restore the previous count,
    so that train.runner.run called from Python leaves torch's global thread setting as it was."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def execute(plan: Plan, run_dir: Path) -> Path:
    """Train the folds not finished yet in `run_dir`, then write the reports."""
    config, meta, device = plan.config, plan.cache.meta, plan.device
    seeded = config.seeds is not None  # unit lines and folders name the seed
    for job in plan.jobs:
        job.fold_dir = str(run_dir / job.unit_name())
    report.banner(plan, run_dir, device)
    results: Dict[Tuple[int, int], Dict] = {}
    pending = []
    for job in plan.jobs:
        done = Path(job.fold_dir) / "metrics.json"
        if done.exists():
            result = {"seed": job.config.seed, **json.loads(done.read_text())}  # runs before seeds lack "seed"
            results[job.unit_key()] = result
            print(report.fold_line(result, meta.task, plan.num_folds, meta.random_encoders, seeded)
                  + "  (done before)")
        else:
            pending.append(job)
    with torch_threads(config.threads):  # the caller's thread count comes back afterwards
        try:
            if config.parallel_folds > 1 and len(pending) > 1:
                from train.parallel import run_lanes, run_parallel

                results_of = (run_lanes(pending, config, device, plan.cache) if device.type == "cuda"
                              else run_parallel(pending, config, device))
                for result in results_of:
                    results[result["fold"], result["seed"]] = result
                    tqdm.write(report.fold_line(result, meta.task, plan.num_folds, meta.random_encoders,
                                                seeded))  # above the bar
            elif pending:
                source = make_source(plan.cache, device, config.stream, config.workers)
                budget = EpochBudget(config.stop_after_epochs)
                try:
                    for job in pending:
                        result = train_fold(job, source, device, budget)
                        results[job.unit_key()] = result
                        print(report.fold_line(result, meta.task, plan.num_folds, meta.random_encoders, seeded),
                              flush=True)
                finally:
                    source.close()
        except (RunInterrupted, KeyboardInterrupt, TrainError):
            print(f"run stopped; {run_dir} is incomplete. Continue it with: swrr-train --resume {run_dir}")
            raise
    ordered = [results[job.unit_key()] for job in plan.jobs]
    report.write_reports(run_dir, ordered, plan)
    (run_dir / INCOMPLETE).unlink(missing_ok=True)
    return run_dir


def _cache_fingerprint(cache: FeatureCache) -> str:
    ids = hashlib.sha256("\n".join(cache.utt_id.tolist()).encode()).hexdigest()
    return fingerprint({"meta": cache.meta.to_attrs(), "rows": len(cache), "utt_ids": ids})


def _new_run_dir(config: TrainConfig, dataset: str) -> Path:
    runs = Path(config.runs_dir)
    if config.name:
        run_dir = runs / config.name
        if run_dir.exists():
            raise TrainError(f"{run_dir} already exists; continue it with --resume {run_dir}, "
                             "or choose another --name")
    else:
        base = f"{dataset}-{config.protocol}" + (f"-{config.ablation}" if config.ablation else "")
        run_dir, n = runs / base, 1
        while run_dir.exists():
            n += 1
            run_dir = runs / f"{base}-{n}"
    try:
        run_dir.mkdir(parents=True)
        (run_dir / INCOMPLETE).write_text("This run has not finished. Continue it with: "
                                          f"swrr-train --resume {run_dir}\n")
    except OSError as exc:
        raise TrainError(f"cannot create the run folder {run_dir} ({exc})") from exc
    return run_dir


def _write_config(run_dir: Path, plan: Plan, rerun: Optional[Dict[str, Any]] = None) -> None:
    meta = plan.cache.meta
    write_json(run_dir / "config.json", {
        **({"rerun": rerun} if rerun else {}),
        "train": plan.config.to_dict(),
        "model": asdict(plan.jobs[0].model_config),
        "cache": {"path": str(plan.cache.path), "fingerprint": plan.cache_fingerprint, "rows": len(plan.cache),
                  "dataset": meta.dataset, "task": meta.task, "label_names": meta.label_names,
                  "audio_encoder": meta.audio_encoder, "text_encoder": meta.text_encoder,
                  "random_encoders": meta.random_encoders},
        "folds": [{"number": f.number, "name": f.name, "valid": f.valid_name,
                   "train": len(f.train), "valid_rows": len(f.valid), "test": len(f.test)} for f in plan.folds],
        "swrr_version": __version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    })


def _read_config(run_dir: Path) -> Dict[str, Any]:
    path = run_dir / "config.json"
    if not path.exists():
        raise TrainError(f"{run_dir} is not a run folder (no config.json); nothing to resume")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise TrainError(f"{path} is not valid JSON ({exc}); the run folder is damaged") from exc


def _run_grid(config: TrainConfig, resume_dir: Optional[Path], rerun: Optional[Dict[str, Any]] = None) -> Path:
    """--ablation all: the full model and every Table 3 row, each a run folder inside one folder."""
    variants = [FULL_MODEL, *ABLATIONS]
    if resume_dir is None:
        # check the request once, with the full model, before anything is written
        plan = prepare(replace(config, ablation=None))
        top = _new_run_dir(replace(plan.config, ablation="ablations"), plan.cache.meta.dataset)
        write_json(top / "config.json", {**({"rerun": rerun} if rerun else {}), "train": config.to_dict(),
                                         "grid": variants, "swrr_version": __version__})
    else:
        top = resume_dir
    runs = {}
    try:
        for variant in variants:
            sub = top / variant
            if (sub / "config.json").exists():
                runs[variant] = resume(sub, **{k: getattr(config, k) for k in RUNTIME_FIELDS
                                              if k not in ("runs_dir", "name")})
            else:
                runs[variant] = run(replace(config, ablation=variant, runs_dir=str(top), name=variant))
    except (RunInterrupted, KeyboardInterrupt, TrainError):
        print(f"the ablation grid {top} is incomplete. Continue it with: swrr-train --resume {top}")
        raise
    report.write_ablation_table(top, runs)
    (top / INCOMPLETE).unlink(missing_ok=True)
    return top
