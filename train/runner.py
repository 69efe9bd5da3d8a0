"""A training run end to end in one process: check everything, make the run folder, train its
units (one per fold and seed: one after another or `parallel_folds` at a time), write the reports.

    run(TrainConfig(cache="cache/iemocap.h5"))     # one process
    resume("runs/iemocap-loso-speaker")

`swrr-train` calls train.launch.run / resume, which pass the coordination: ONE_PROCESS here, or
train.distributed.RankGroup under torchrun, a layer over this module's public functions (this
module never imports it). The run's steps are written once: `run`, `resume` and the ablation grid
ask the coordination which rank does what (`on_rank0`, `on_every_rank`) and to `execute` a plan;
`collect_units` is the one train-and-collect loop of a process and of every rank, `finish` the
one place the run's summary is made. The run folder's layout: swrr_core/rundir.py.

Everything that can be wrong with the request (cache, protocol, folds, ablation, model options)
is checked before the run folder is created. A folder whose run has not finished holds an
`INCOMPLETE` file and no summary.csv.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from swrr._version import __version__
from swrr.cache import FeatureCache
from swrr.device import resolve_device
from swrr.errors import option
from swrr.guards import LockHeld
from swrr.metrics import metric_options
from swrr.model import ABLATIONS
from swrr.ranks import Ranks
from swrr.rundir import RunFolder, RunFolderError, UnitFolder, numbered_run_folder
from swrr.train import report
from swrr.train.config import (FULL_MODEL, RESUMABLE_FIELDS, TrainConfig, TrainError, check, fingerprint,
                               model_config, resolve, unit_seeds)
from swrr.train.data import make_source, target_view, training_cache
from swrr.train.loop import EpochBudget, FoldJob, RunInterrupted, selects_on_valid, train_fold
from swrr.train.protocols import Fold, default_protocol, make_folds, pick_folds, rated_folds
from swrr.train.tensorboard_log import require_tensorboard


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
    warnings: List[str] = field(default_factory=list)  # shown in the console and summary.csv


T = TypeVar("T")
logger = logging.getLogger("swrr.train")  # the commands show its INFO lines on stdout (swrr.cli)


class OneProcess:
    """The coordination of a run that is the only process: every step here, at once.

    Decision: a run's steps take their coordination as a parameter instead of asking the
    environment, so that runner needs nothing of the ranks layer: train.launch decides (world
    size 1: this; under torchrun: train.distributed.RankGroup, with the same four members)."""

    is_main = True  # this process writes the run folder

    def on_rank0(self, work: Callable[[], T]) -> T:
        return work()

    def on_every_rank(self, work: Callable[[], T]) -> T:
        return work()

    def execute(self, plan: "Plan", run_dir: Path) -> Path:
        return execute(plan, run_dir)


ONE_PROCESS = OneProcess()


def run(config: TrainConfig, rerun: Optional[Dict[str, Any]] = None, coordination=ONE_PROCESS) -> Path:
    """Start a new run; returns its folder. Raises TrainError / CacheError on bad input.

    `rerun` (from `swrr-train --config FILE`): {"config_file": FILE, "overrides": {option: value}},
    recorded in the run's config.json. `coordination`: ONE_PROCESS, or what train.launch passes."""
    _refuse_ranks_without_coordination(coordination)
    check(config)
    if config.ablation == "all" or config.layer_sweep:
        return _run_grid(config, None, coordination, rerun)
    plan = coordination.on_every_rank(lambda: prepare(config, check_finite=coordination.is_main))
    run_dir = coordination.on_rank0(lambda: _start_run_dir(plan, rerun))
    with run_lock(run_dir, coordination):
        return _execute(plan, run_dir, coordination)


def _refuse_ranks_without_coordination(coordination) -> None:
    """Under torchrun every rank calling the one-process run would train the whole run into the
    same folder: refused, naming the entry that deals the units."""
    if coordination is ONE_PROCESS and Ranks.from_env().distributed:
        raise TrainError("this process is one rank of a torchrun launch: start runs with swrr.train.launch.run / "
                         "resume (what swrr-train calls), which deal the units to the ranks")


def _start_run_dir(plan: Plan, rerun: Optional[Dict[str, Any]]) -> Path:
    run_dir = _new_run_dir(plan.config, plan.cache.meta.dataset)
    try:
        _write_config(run_dir, plan, rerun)
    except OSError as exc:
        raise TrainError(f"cannot write the run folder {run_dir} ({exc})") from exc
    return run_dir


def resume(run_dir, *, coordination=ONE_PROCESS, **runtime: Any) -> Path:
    """Continue the run in `run_dir` with its saved config; `runtime` may change only how it runs
    (device, workers, stream, parallel_folds, progress, stop_after_epochs) and the cache path."""
    _refuse_ranks_without_coordination(coordination)
    run_dir = Path(run_dir)
    saved = _read_config(run_dir)
    bad = sorted(set(runtime) - set(RESUMABLE_FIELDS))
    if bad:
        raise TrainError(f"--resume continues {run_dir} with its saved config; these options cannot change: "
                         f"{', '.join(bad)} (start a new run instead)")
    config = replace(TrainConfig.from_dict(saved["train"]), stop_after_epochs=None, progress=True)
    config = replace(config, **runtime, runs_dir=str(run_dir.parent), name=run_dir.resolve().name)
    with run_lock(run_dir, coordination):  # held from here: a second --resume of this run is refused, not mixed in
        if config.ablation == "all" or config.layer_sweep:
            return _run_grid(config, run_dir, coordination)
        plan = coordination.on_every_rank(lambda: prepare(config, check_finite=coordination.is_main))
        if plan.cache_fingerprint != saved["cache"]["fingerprint"]:
            raise TrainError(f"{plan.cache.path} is not the cache {run_dir} was trained on "
                             f"(its rows or extraction config differ); pass the original with --cache")
        check_same_data(saved["cache"], plan.cache, run_dir)
        return _execute(plan, run_dir, coordination)


def check_same_data(saved: Dict[str, Any], cache: FeatureCache, run_dir: Path) -> None:
    """--resume continues on the very data the run began with: TrainError unless the cache's task
    digest (ids, labels, splits, speakers, sessions) and feature digest (lengths, features) equal
    those in the run's config.json. Decision: a run made before the digests existed records
    neither; it is checked by its fingerprint alone (ids and extraction config), as it always was."""
    for key, what, now in (("task_digest", "labels, splits, speakers or sessions", cache.task_digest),
                           ("feature_digest", "features", cache.feature_digest)):
        if key in saved and saved[key] != now():
            raise TrainError(f"{cache.path} is not the cache {run_dir} was trained on: its {what} differ "
                             f"({key} {now()} vs {saved[key]}); resume with the original cache (--cache), "
                             "or start a new run on this one")


@contextmanager
def run_lock(run_dir: Path, coordination=ONE_PROCESS):
    """One process per run folder (an OS lock on `<run_dir>.lock`, dropped when the process ends
    however it ends): a second run or --resume of the same folder is refused with one line.
    Under torchrun only rank 0 holds it: the other ranks work inside rank 0's run."""
    lock = RunFolder(run_dir).lock("swrr-train")

    def acquire():
        try:
            lock.acquire()
        except LockHeld as exc:
            raise TrainError(str(exc)) from None
        except OSError as exc:
            raise TrainError(f"cannot lock the run folder {run_dir} ({exc})") from exc

    coordination.on_rank0(acquire)  # a refusal on rank 0 stops every rank with one line
    try:
        yield
    finally:
        lock.release()


def prepare(config: TrainConfig, check_finite: bool = True) -> Plan:
    """Open the cache, resolve the config, build folds, jobs and the model config; writes nothing.
    `check_finite`: read every embedding for NaN/inf (under torchrun rank 0 does, the others not)."""
    device = resolve_device(config.device)  # a bad --device is refused before any folder exists
    if config.tensorboard:
        require_tensorboard()
    cache, target = target_view(config)  # the cache as this run's --target reads it
    meta = cache.meta
    _check_lengths(cache)
    config = resolve(config, meta, default_protocol(meta.task, cache.speaker, cache.split))
    training_cache(config, cache)  # reads only the hidden states the head uses
    all_folds = rated_folds(make_folds(config.protocol, meta.task, cache.speaker, cache.session, cache.split,
                                       config.early_stop_speaker, cache_name=str(cache.path)), target.rated)
    folds = pick_folds(all_folds, config.folds)
    model_cfg = model_config(config, meta)
    cache_fp = _cache_fingerprint(cache)
    # a unit (fold x seed) is identified by its own seed, not by the run's list of seeds
    # (target options left at None stay out, so runs started before they existed resume)
    identity_config = {k: v for k, v in config.result_fields().items() if k not in ("cache", "folds", "seeds")
                       and not (k in ("target", "target_loss") and v is None)}
    # the recipe names the hidden states the head reads (a subset of the cache's with --layers)
    model_dict = asdict(model_cfg)
    recipe = {**asdict(meta), "audio_layers": cache.layers["audio"], "text_layers": cache.layers["text"]}
    jobs = []
    for seed in unit_seeds(config):
        unit_config = replace(config, seed=seed)
        for fold in folds:
            identity = json.loads(json.dumps({"config": {**identity_config, "seed": seed}, "model": model_dict,
                                              "cache": cache_fp, "fold": fold.number}))
            jobs.append(FoldJob(fold, len(all_folds), unit_config, model_cfg, meta.task, list(meta.label_names),
                                "", identity, recipe=recipe))
            selects_on_valid(jobs[-1])  # --select valid on a fold without validation rows: refuse now
    if check_finite:  # last: the only check that reads every embedding
        _check_finite_features(cache)
    unrated = [] if target.rated.all() else [f"{int((~target.rated).sum())} of {len(cache)} rows have no "
                                             f"{target.name} value: left out of every fold"]
    return Plan(config, cache, folds, len(all_folds), jobs, cache_fp, device,
                unrated + _one_class_warnings(cache, folds))


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


_FINITE_CACHES = set()  # (path, size, mtime) of caches checked finite by this process


def _check_finite_features(cache: FeatureCache) -> None:
    """Refuse a cache holding NaN/inf features, naming the rows, before any work: else training
    stops later with a misleading "diverged, try a lower --lr". One chunked pass over the file per
    process (an --ablation all grid checks once), not remembered across runs: the fingerprint
    covers ids and config, not the data, so a memo could miss a re-extracted or damaged file."""
    stat = cache.path.stat()
    identity = (str(cache.path.resolve()), stat.st_size, stat.st_mtime_ns)
    if identity in _FINITE_CACHES:
        return
    bad = cache.nonfinite_rows()
    if len(bad):
        shown = ", ".join(cache.utt_id[bad[:5]]) + (", ..." if len(bad) > 5 else "")
        raise TrainError(f"{cache.path}: {len(bad)} of {len(cache)} rows hold non-finite (NaN/inf) features "
                         f"({shown}); re-extract the cache with swrr-extract --overwrite")
    _FINITE_CACHES.add(identity)


def _one_class_warnings(cache: FeatureCache, folds: List[Fold]) -> List[str]:
    """Folds whose training rows hold a single class: their WA/UA are meaningless (all 100 % when
    the test rows share that class). Warned about, not refused: nothing is lost by running."""
    if cache.meta.task != "classification":
        return []
    warnings = []
    for fold in folds:
        present = np.unique(cache.label[fold.train])
        if len(present) < 2:
            names = [cache.meta.label_names[int(i)] for i in present] or ["none"]
            warnings.append(f"ONE CLASS: fold {fold.number} ({fold.name}) trains on class {', '.join(names)} "
                            f"only; its accuracies are meaningless")
    return warnings


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


def _execute(plan: Plan, run_dir: Path, coordination) -> Path:
    for job in plan.jobs:
        job.fold_dir = str(run_dir / job.unit_name())
    return coordination.execute(plan, run_dir)


def execute(plan: Plan, run_dir: Path) -> Path:
    """Train the units not finished yet in `run_dir` in this process, then write the reports."""
    report.banner(plan, run_dir, plan.device)
    results, pending = finished_units(plan)
    try:
        results.update(collect_units(plan, pending, plan.device))
    except (RunInterrupted, KeyboardInterrupt, TrainError):
        logger.info(stopped_message(run_dir))
        raise
    return finish(plan, run_dir, results)


def stopped_message(run_dir: Path) -> str:
    return f"run stopped; {run_dir} is incomplete. Continue it with: swrr-train --resume {run_dir}"


def unit_key(result: Dict) -> Tuple[int, int]:
    """(fold, seed) of a unit's result: FoldJob.unit_key of the job that made it."""
    return result["fold"], result["seed"]


def finished_units(plan: Plan):
    """-> (results of the units finished before, by (fold, seed); the jobs still to train)."""
    results: Dict[Tuple[int, int], Dict] = {}
    pending = []
    for job in plan.jobs:
        result = _finished_unit(UnitFolder(job.fold_dir))
        if result is not None:
            result = {"seed": job.config.seed, **result}  # runs before seeds lack "seed"
            results[job.unit_key()] = result
            logger.info(_unit_line(plan, result) + "  (done before)")
        else:
            pending.append(job)
    return results, pending


def collect_units(plan: Plan, jobs: List[FoldJob], device: torch.device,
                  after_each: Optional[Callable[[], None]] = None) -> Dict[Tuple[int, int], Dict]:
    """The train-and-collect loop of a process (and of each rank: its share of the units): train
    `jobs` with the run's CPU thread count (the caller's comes back afterwards); -> their results
    by (fold, seed). `after_each` runs when a unit has finished, before the next one starts."""
    done: Dict[Tuple[int, int], Dict] = {}
    with torch_threads(plan.config.threads):
        for result in train_units(plan, jobs, device):
            done[unit_key(result)] = result
            if after_each is not None:
                after_each()
    return done


def train_units(plan: Plan, jobs: List[FoldJob], device: torch.device) -> Iterator[Dict]:
    """Train `jobs` one after another or `parallel_folds` at a time; yields each unit's result
    (and prints its line) as it finishes. The next unit starts only when the caller asks for it."""
    config = plan.config
    if config.parallel_folds > 1 and len(jobs) > 1:
        from swrr.train.parallel import run_lanes, run_parallel

        results_of = (run_lanes(jobs, config, device, plan.cache) if device.type == "cuda"
                      else run_parallel(jobs, config, device))
        for result in results_of:
            tqdm.write(_unit_line(plan, result))  # above the bar
            yield result
    elif jobs:
        source = make_source(plan.cache, device, config.stream, config.workers)
        budget = EpochBudget(config.stop_after_epochs)
        try:
            for job in jobs:
                result = train_fold(job, source, device, budget)
                logger.info(_unit_line(plan, result))
                yield result
        finally:
            source.close()


def _unit_line(plan: Plan, result: Dict) -> str:
    """A finished unit's console line; in a run with --seeds it names the unit's seed."""
    meta = plan.cache.meta
    return report.fold_line(result, meta.task, plan.num_folds, meta.random_encoders, plan.config.seeds is not None,
                            metric_options(meta.task, meta.label_names, meta.label_scale))


def finish(plan: Plan, run_dir: Path, results: Dict[Tuple[int, int], Dict]) -> Path:
    """Write the run's reports from every unit's result and mark the run complete."""
    ordered = [results[job.unit_key()] for job in plan.jobs]
    report.write_reports(run_dir, ordered, plan)
    RunFolder(run_dir).mark_complete()
    return run_dir


def _finished_unit(unit: UnitFolder) -> Optional[Dict]:
    """The result of a unit finished before (on --resume), or None to (re)do it. A damaged
    metrics.json or attention.npy is set aside and the unit evaluated again from its checkpoints
    (train_fold trains only the epochs last.pt lacks: none, for a finished unit)."""
    if not unit.finished():
        return None
    try:
        result = unit.read_result()
        if not isinstance(result, dict) or not {"fold", "metrics"} <= set(result):
            raise ValueError("not a fold result")
        if unit.attention.exists():
            np.load(unit.attention)  # never pickles: allow_pickle is off
        return result
    except (ValueError, KeyError, TypeError, OSError, EOFError) as exc:
        logger.warning(f"{unit.path}: a result file is damaged ({type(exc).__name__}: {exc}); "
                       "evaluating the fold again")
        for path in unit.results_files:
            path.unlink(missing_ok=True)
        return None


def _cache_fingerprint(cache: FeatureCache) -> str:
    ids = hashlib.sha256("\n".join(cache.utt_id.tolist()).encode()).hexdigest()
    return fingerprint({"meta": cache.meta.identity_attrs(), "rows": len(cache), "utt_ids": ids})


def _new_run_dir(config: TrainConfig, dataset: str) -> Path:
    if config.name:
        folder = RunFolder(Path(config.runs_dir) / config.name)
        if folder.path.exists():
            raise TrainError(f"{folder.path} already exists; continue it with --resume {folder.path}, "
                             "or choose another --name")
    else:
        base = f"{dataset}-{config.protocol}" + (f"-{config.ablation}" if config.ablation else "")
        folder = numbered_run_folder(config.runs_dir, base)
    try:
        folder.create(f"Continue it with: swrr-train --resume {folder.path}")
    except OSError as exc:
        raise TrainError(f"cannot create the run folder {folder.path} ({exc})") from exc
    return folder.path


def _write_config(run_dir: Path, plan: Plan, rerun: Optional[Dict[str, Any]] = None) -> None:
    meta = plan.cache.meta
    RunFolder(run_dir).write_config({
        **({"rerun": rerun} if rerun else {}),
        "train": plan.config.to_dict(),
        "model": asdict(plan.jobs[0].model_config),
        "cache": {"path": str(plan.cache.path), "fingerprint": plan.cache_fingerprint, "rows": len(plan.cache),
                  "task_digest": plan.cache.task_digest(), "feature_digest": plan.cache.feature_digest(),
                  "transcripts": meta.transcripts,
                  "dataset": meta.dataset, "task": meta.task, "label_names": meta.label_names,
                  "audio_encoder": meta.audio_encoder, "text_encoder": meta.text_encoder,
                  "random_encoders": meta.random_encoders},
        "folds": [{"number": f.number, "name": f.name, "valid": f.valid_name,
                   "train": len(f.train), "valid_rows": len(f.valid), "test": len(f.test)} for f in plan.folds],
        "swrr_version": __version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    })


def _read_config(run_dir: Path) -> Dict[str, Any]:
    try:
        return RunFolder(run_dir).read_config()
    except RunFolderError as exc:
        raise TrainError(f"{exc}; nothing to resume") from None


def _start_grid_dir(plan: Plan, config: TrainConfig, variants: List[str], rerun: Optional[Dict[str, Any]]) -> Path:
    top = _new_run_dir(replace(plan.config, ablation="layers" if config.layer_sweep else "ablations"),
                       plan.cache.meta.dataset)
    RunFolder(top).write_config({**({"rerun": rerun} if rerun else {}), "train": config.to_dict(),
                                 "grid": variants, "swrr_version": __version__})
    return top


def _run_grid(config: TrainConfig, resume_dir: Optional[Path], coordination,
              rerun: Optional[Dict[str, Any]] = None) -> Path:
    """--ablation all: the full model and every Table 3 row; --layer-sweep: one run per cached
    hidden state (--layer-mix K); each a run folder inside one folder."""
    # check the request once, with the full model, before anything is written
    plan = coordination.on_every_rank(lambda: prepare(replace(config, ablation=None, layer_sweep=False),
                                                      check_finite=coordination.is_main))
    variants = _grid_variants(config, plan)
    if resume_dir is None:
        top = coordination.on_rank0(lambda: _start_grid_dir(plan, config, list(variants), rerun))
        with run_lock(top, coordination):
            return _train_grid(config, top, variants, coordination)
    return _train_grid(config, resume_dir, variants, coordination)  # resume() holds the lock of resume_dir


def _grid_variants(config: TrainConfig, plan: Plan) -> Dict[str, TrainConfig]:
    """The grid's runs by folder name: Table 3's rows, or "layer-K" for each hidden state K the
    head reads (those of the modalities with several; with one, a modality keeps it)."""
    if not config.layer_sweep:
        return {variant: replace(config, ablation=variant) for variant in [FULL_MODEL, *ABLATIONS]}
    several = [layers for layers in plan.cache.layers.values() if len(layers) > 1]
    if not several:
        raise TrainError(f"{option('layer_sweep')}: {plan.cache.path} holds one hidden state per modality "
                         f"({plan.cache.layers}); extract with swrr-extract --layers all to sweep layers")
    common = sorted(set(several[0]).intersection(*several[1:]))
    return {f"layer-{k}": replace(config, layer_sweep=False, layer_mix=str(k)) for k in common}


def _train_grid(config: TrainConfig, top: Path, variants: Dict[str, TrainConfig], coordination) -> Path:
    runs = {}
    try:
        for variant, variant_config in variants.items():
            sub = RunFolder(top).variant(variant)
            if coordination.on_rank0(sub.has_config):  # all ranks take the same branch
                runs[variant] = resume(sub.path, coordination=coordination,
                                       **{k: getattr(config, k) for k in RESUMABLE_FIELDS})
            else:
                runs[variant] = run(replace(variant_config, runs_dir=str(top), name=variant),
                                    coordination=coordination)
    except (RunInterrupted, KeyboardInterrupt, TrainError):
        logger.warning(f"the {'layer sweep' if config.layer_sweep else 'ablation grid'} {top} is incomplete. "
                       f"Continue it with: swrr-train --resume {top}")
        raise
    if coordination.is_main:
        report.write_ablation_table(top, runs, config.layer_sweep)
        RunFolder(top).mark_complete()
    return top
