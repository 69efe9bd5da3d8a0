"""What `swrr-train` and `swrr.train_model` accept: the option rules, then `runner.run` / `resume`.

    run_dir = start_training("cache/demo.h5", seeds="3", folds="1,3", epochs=5)
    run_dir = start_training(config="runs/x/config.json", name="again")   # rerun, overriding name
    run_dir = start_training(resume="runs/x", device="cpu")               # continue a killed run

The option names are swrr-train's flags with "_": every TrainConfig field that is a flag, and
`config` (a config file), `resume` (a run folder), `seeds` (a list, "1,2,3", "3," or a count),
`folds` ("1,3" or a list), `lstm_hidden` and `model_set` (SWRRConfig fields: a mapping or
"KEY=VALUE" strings). Only the options a caller gives count: with a config file they override
its values, with `resume` only RESUMABLE_FIELDS may be given.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

from swrr.errors import option, refuse_unknown
from swrr.train.config import RESUMABLE_FIELDS, TrainConfig, TrainError, load_config_file, seed_problems

# TrainConfig fields with a flag of the same name (`model` is set through lstm_hidden / model_set)
FIELD_OPTIONS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("cache", "model"))
TRAIN_OPTIONS = (*FIELD_OPTIONS, "config", "resume", "lstm_hidden", "model_set")
PATH_FIELDS = ("cache", "runs_dir")  # kept as strings in config.json


def parse_seeds(value: Union[None, int, str, Iterable[int]]) -> Optional[List[int]]:
    """Seeds: a list "1,2,3" (a single seed: "3,") or [1, 2, 3], or a count 5 / "5" meaning seeds 0..4."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        try:
            if "," not in value:
                count = int(value) if value.strip() else 0
                if count < 1:
                    raise TrainError(f"{option('seeds')}: a count of seeds must be >= 1, got {value!r} (seeds are "
                                     f"listed like {option('seeds', '0,1,2')}; a single seed like "
                                     f"{option('seeds', '3,')})")
                return list(range(count))
            seeds = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise TrainError(f"{option('seeds')}: expected seeds like 1,2,3 or a count like 5, got {value!r}") from None
    else:
        seeds = list(value)
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise TrainError(f"{option('seeds')}: expected whole numbers, got {seeds!r}")
    problems = seed_problems(seeds)
    if problems:
        raise TrainError("; ".join(problems))
    return seeds


def parse_folds(value: Union[None, int, str, Iterable[int]]) -> Optional[List[int]]:
    """Fold numbers (1-based): "1,3", [1, 3] or 3; None or "" = all."""
    if value is None or value == "":
        return None
    parts = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else list(value)
    try:
        return sorted({int(part) for part in parts if str(part).strip()})
    except ValueError:
        raise TrainError(f"{option('folds')}: expected fold numbers like 1,3, got {value!r}") from None


def parse_model_set(items: Union[None, Mapping[str, Any], Iterable[str]]) -> Dict[str, Any]:
    """SWRRConfig overrides: a mapping, or "KEY=VALUE" strings (VALUE read as JSON when it is JSON)."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out = {}
    for item in [items] if isinstance(items, str) else items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise TrainError(f"{option('model_set')}: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def start_training(cache=None, **options) -> Path:
    """Start (or, with resume=RUN_FOLDER, continue) a run; -> its folder. TrainError / CacheError /
    DeviceError (all SwrrError) for requests that cannot be carried out."""
    from swrr.train.runner import resume, run  # the runner imports torch and the training loop

    refuse_unknown(options, TRAIN_OPTIONS, "train_model")
    if {"seed", "seeds"} <= set(options):
        raise TrainError(f"{option('seed')} and {option('seeds')} exclude each other "
                         f"({option('seeds', '3,')} runs seed 3 alone)")
    config_file, resume_dir = options.pop("config", None), options.pop("resume", None)
    values = {k: str(v) if k in PATH_FIELDS and isinstance(v, Path) else v for k, v in options.items()
              if k not in ("lstm_hidden", "model_set")}
    if cache is not None:
        values["cache"] = str(cache)
    for name, parse in (("seeds", parse_seeds), ("folds", parse_folds)):
        if name in values:
            values[name] = parse(values[name])
    if "lstm_hidden" in options or "model_set" in options:
        values["model"] = parse_model_set(options.get("model_set"))
        if options.get("lstm_hidden") is not None:
            values["model"]["lstm_hidden"] = options["lstm_hidden"]
    if resume_dir is not None:
        fixed = sorted({*values, *(["config"] if config_file is not None else [])} - set(RESUMABLE_FIELDS))
        if fixed:
            raise TrainError(f"{option('resume')} uses the run's saved config; these options cannot be given with "
                             f"it: {', '.join(option(f) for f in fixed)}")
        return resume(resume_dir, **values)
    if config_file is not None:
        data = load_config_file(config_file)
        if "model" in values:
            values["model"] = {**data.get("model", {}), **values["model"]}
        if "cache" not in {**data, **values}:
            raise TrainError(f"{config_file} names no cache; add cache: PATH to it or give {option('cache')}")
        return run(TrainConfig.from_dict({**data, **values}), {"config_file": str(config_file), "overrides": values})
    if "cache" not in values:
        raise TrainError(f"give {option('cache')} (a cache made by swrr-extract), {option('config')} or "
                         f"{option('resume')}")
    return run(TrainConfig.from_dict(values))
