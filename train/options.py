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

from dataclasses import fields
from pathlib import Path

from swrr.errors import option, refuse_unknown
from swrr.train.config import (RESUMABLE_FIELDS, TrainConfig, TrainError, load_config_file, parse_folds,
                               parse_model_set, parse_seeds)

# TrainConfig fields with a flag of the same name (`model` is set through lstm_hidden / model_set)
FIELD_OPTIONS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("cache", "model"))
TRAIN_OPTIONS = (*FIELD_OPTIONS, "config", "resume", "lstm_hidden", "model_set")
PATH_FIELDS = ("cache", "runs_dir")  # kept as strings in config.json


def start_training(cache=None, **options) -> Path:
    """Start (or, with resume=RUN_FOLDER, continue) a run; -> its folder. TrainError / CacheError /
    DeviceError (all SwrrError) for requests that cannot be carried out."""
    from swrr.train.launch import resume, run  # one process or torchrun ranks; imports torch and the loop

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
        if "seed" in values and data.get("seeds") is not None:
            raise TrainError(f"{option('seed', values['seed'])} contradicts seeds {data['seeds']} of {config_file}; "
                             f"give {option('seeds', str(values['seed']) + ',')} to train that seed alone, or the "
                             "seeds you want")
        if "seeds" in values:
            data.pop("seed", None)  # --seeds replaces the file's single seed
        if "model" in values:
            values["model"] = {**data.get("model", {}), **values["model"]}
        if "cache" not in {**data, **values}:
            raise TrainError(f"{config_file} names no cache; add cache: PATH to it or give {option('cache')}")
        return run(TrainConfig.from_dict({**data, **values}), {"config_file": str(config_file), "overrides": values})
    if "cache" not in values:
        raise TrainError(f"give {option('cache')} (a cache made by swrr-extract), {option('config')} or "
                         f"{option('resume')}")
    return run(TrainConfig.from_dict(values))
