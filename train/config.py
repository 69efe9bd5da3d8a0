"""What a training run is: the `TrainConfig` dataclass, the per-dataset presets that fill it,
and the error type for user mistakes.

A config is *resolved* against its cache before anything runs: every `None` is replaced by a
preset value, so the `config.json` of a run folder holds the numbers that were actually used.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union, get_args, get_origin, get_type_hints

from swrr.cache import CacheMeta
from swrr import layers as hidden_layers
from swrr import objectives
from swrr.model import ABLATIONS, LAYER_MIXES, READINGS, SWRRConfig, ablation_config
from swrr.errors import SwrrError, option
from swrr.threads import training_threads

PROTOCOLS = ("loso-speaker", "loso-session", "split", "all")  # all: one model on every row, to deploy
SELECT_RULES = ("auto", "last", "valid")
FULL_MODEL = "swrr"  # the name of the un-ablated model in tables and folder names
ABLATION_CHOICES = (FULL_MODEL, *ABLATIONS, *READINGS, "all")  # "all": the paper's grid (ABLATIONS)


class TrainError(SwrrError):
    """A training request that cannot be carried out as asked; the message says what to do."""


# The paper's schedule (section 3.2) by task: IEMOCAP classification, CMU-MOSEI regression.
# The batch size is not in the paper; 32 is the common choice and fits 11 GB with a wide margin.
TASK_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "classification": {"lr": 5e-4, "epochs": 50, "batch_size": 32},
    "regression": {"lr": 1e-3, "epochs": 20, "batch_size": 32},
    # Decision: the paper has no dimensional run; valence/arousal/dominance train on the schedule
    # of its IEMOCAP runs (the corpus they usually come from), overridable as every schedule option.
    "dimensional": {"lr": 5e-4, "epochs": 50, "batch_size": 32},
}

# Per-dataset presets, applied over TASK_DEFAULTS (keys are CacheMeta.dataset).
# protocol None = chosen from what the cache holds (see protocols.default_protocol).
DATASET_PRESETS: Dict[str, Dict[str, Any]] = {
    "iemocap": {"protocol": "loso-speaker"},
    "mosei": {"protocol": "split"},
    # The bundled demo: 96 clips (48 train) from tiny random encoders (64-d). A smaller head and
    # batch so it trains in a few minutes on 2 CPU cores (not paper settings). Measured on the
    # demo: batch 8, lr 1e-3, 60 epochs -> test WA 87.5-95.8 with every window fused (the default
    # since padded_windows="fuse"; 87.5 at the selected epoch since issue 22's one thread and step),
    # 95.8-100 with the old "drop" reading (the figure moves by a clip with the CPU thread count of
    # extraction and training, see docs/TRAINING.md); batch 4,
    # lr 2e-3, 40 epochs -> 66.7 (batch 4 leaves BatchNorm's statistics too noisy to fit the training set).
    "demo": {"protocol": "split", "epochs": 60, "batch_size": 8, "lr": 1e-3, "model": {"lstm_hidden": 64}},
}

# Fields that change how a run executes but not what it computes; they may differ on --resume.
RUNTIME_FIELDS = ("runs_dir", "name", "device", "stream", "workers", "parallel_folds", "threads",
                  "progress", "stop_after_epochs", "cuda_graphs",  # graphs replay what eager steps compute
                  "tensorboard")
# What --resume may change: how the run executes, and where its (fingerprint-checked) cache lies.
# Not the folder: --resume names it, so --runs-dir and --name cannot be given with it.
RESUMABLE_FIELDS = (*(f for f in RUNTIME_FIELDS if f not in ("runs_dir", "name")), "cache")
MAX_NAME_BYTES = 255 - len(".lock")  # a run folder's name, with room for its lock file beside it


@dataclass
class TrainConfig:
    """Everything that defines a training run. None = take the preset of the cache's dataset."""

    cache: str
    # what to run
    protocol: Optional[str] = None  # loso-speaker | loso-session | split
    folds: Optional[List[int]] = None  # 1-based fold numbers; None = all
    early_stop_speaker: bool = False  # hold out one training speaker per LOSO fold as validation
    select: str = "auto"  # auto: best valid epoch when a fold has validation data, else the last epoch
    ablation: Optional[str] = None  # a Table 3 row, "swrr" (= None) or "all"
    # schedule (paper defaults by task)
    epochs: Optional[int] = None
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.0
    lr_decay_at: float = 0.5  # fraction of the epochs after which the lr is divided
    lr_decay_factor: float = 0.1
    grad_accum: int = 1  # optimizer step every grad_accum batches (effective batch = batch_size * this)
    seed: int = 0
    mosei_objective: Optional[str] = None  # regression caches: l1 | ce7 (swrr_core.objectives); None = l1
    target: Optional[str] = None  # the label to learn (swrr_core/targets.py): None = the cache's own
    target_loss: Optional[str] = None  # dimensional targets: ccc | mse | l1; None = ccc
    seeds: Optional[List[int]] = None  # run every fold once per seed (units fold03-seed2 ...); None = `seed` only
    model: Dict[str, Any] = field(default_factory=dict)  # SWRRConfig overrides (non-paper sizes)
    # hidden states of a multi-layer cache (a one-layer cache trains as it always did)
    layers: str = "all"  # which cached hidden states the head reads (swrr.layers spelling)
    layer_mix: str = "learned"  # learned (softmax weights, SUPERB) | mean | LAYER (one hidden state, e.g. "8")
    layer_norm: bool = False  # LayerNorm each hidden state before mixing (s3prl's option)
    layer_sweep: bool = False  # one run per cached hidden state (--layer-mix K each), layers.csv
    # execution
    runs_dir: str = "runs"
    name: Optional[str] = None
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    amp: bool = True  # mixed precision, on CUDA only
    cuda_graphs: bool = True  # on CUDA: replay each batch size's forward + backward from a CUDA graph
    stream: bool = False  # read rows from HDF5 per batch instead of loading the cache
    workers: int = 2  # DataLoader workers with --stream
    parallel_folds: int = 1  # folds trained at once, one process each
    threads: Optional[int] = None  # CPU threads per process; None = swrr.threads.training_threads
    progress: bool = True  # tqdm bar per epoch
    stop_after_epochs: Optional[int] = None  # debug/tests: stop as if killed after this many epochs
    tensorboard: bool = False  # also write per-epoch scalars to <run>/tb/<unit>/ (the CSV logs stay the record)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
        check_types(data)
        return cls(**data)

    def result_fields(self) -> Dict[str, Any]:
        """The fields that decide the numbers a run produces (compared on resume)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}


# Each field's default, written once (in TrainConfig); swrr-train's options show and use these.
DEFAULTS: Dict[str, Any] = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


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
        seeds = list(value) if isinstance(value, (list, tuple, range)) else [value]
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
    try:
        parts = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else list(value)
        return sorted({int(part) for part in parts if str(part).strip()})
    except (TypeError, ValueError):
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


def resolve(config: TrainConfig, meta: CacheMeta, default_protocol: str) -> TrainConfig:
    """Fill every None from the presets and check the values; raises TrainError."""
    preset = {**TASK_DEFAULTS[meta.task], **DATASET_PRESETS.get(meta.dataset, {})}
    if preset.get("protocol") is None:
        preset["protocol"] = default_protocol
    filled = {name: preset[name] for name in ("protocol", "epochs", "lr", "batch_size")
              if getattr(config, name) is None}
    model = {**preset.get("model", {}), **config.model}
    ablation = None if config.ablation == FULL_MODEL else config.ablation
    if meta.task == "regression":
        filled["mosei_objective"] = config.mosei_objective or "l1"
    elif config.mosei_objective is not None:
        raise TrainError(f"--mosei-objective applies to regression caches (sentiment scores); "
                         f"{meta.dataset} is a {meta.task} target, which trains with "
                         f"{'--target-loss' if meta.task == 'dimensional' else 'cross-entropy'}")
    if meta.task == "dimensional":
        filled["target_loss"] = config.target_loss or "ccc"
    elif config.target_loss is not None:
        raise TrainError(f"{option('target_loss')} applies to dimensional targets "
                         f"({option('target', 'valence,arousal,dominance')}); "
                         f"this run's target is a {meta.task} one")
    config = replace(config, model=model, ablation=ablation, **filled)
    hidden = model.get("lstm_hidden", SWRRConfig.lstm_hidden)  # a bad value is refused by model_config
    if config.threads is None and isinstance(hidden, int):  # in config.json: --resume, --config keep it
        config = replace(config, threads=training_threads(config.batch_size, hidden))
    check(config)
    return config


def check(config: TrainConfig) -> None:
    """Value checks that need no cache; raises TrainError naming the option."""
    problems = []
    if config.protocol is not None and config.protocol not in PROTOCOLS:
        problems.append(f"{option('protocol')} must be one of {', '.join(PROTOCOLS)}, got {config.protocol!r}")
    if config.ablation is not None and config.ablation not in ABLATION_CHOICES:
        problems.append(f"unknown {option('ablation')} {config.ablation!r}; choose one of "
                        f"{', '.join(ABLATION_CHOICES)}")
    if config.select not in SELECT_RULES:
        problems.append(f"{option('select')} must be one of {', '.join(SELECT_RULES)}, got {config.select!r}")
    if config.target_loss not in (None, *objectives.TARGET_LOSSES):
        problems.append(f"{option('target_loss')} must be one of {', '.join(objectives.TARGET_LOSSES)}, "
                        f"got {config.target_loss!r}")
    if config.mosei_objective not in (None, *objectives.REGRESSION_OBJECTIVES):
        problems.append(f"{option('mosei_objective')} must be one of {', '.join(objectives.REGRESSION_OBJECTIVES)}, "
                        f"got {config.mosei_objective!r}")
    for name in ("epochs", "batch_size", "grad_accum", "parallel_folds", "threads"):
        value = getattr(config, name)
        if value is not None and value < 1:
            problems.append(f"{option(name)} must be >= 1, got {value}")
    if config.lr is not None and not 0 < config.lr < math.inf:
        problems.append(f"{option('lr')} must be a number > 0, got {config.lr}")
    for name in ("beta1", "beta2"):  # Adam's moving averages: 1 never forgets, < 0 oscillates
        if not 0.0 <= getattr(config, name) < 1.0:
            problems.append(f"{option(name)} must be in [0, 1), got {getattr(config, name)}")
    if not 0.0 <= config.weight_decay < math.inf:
        problems.append(f"{option('weight_decay')} must be a number >= 0, got {config.weight_decay}")
    if not 0.0 < config.lr_decay_factor <= 1.0:  # <= 0 stops or reverses training; 1 = no decay
        problems.append(f"{option('lr_decay_factor')} must be in (0, 1], got {config.lr_decay_factor}")
    if config.workers < 0:
        problems.append(f"{option('workers')} must be >= 0, got {config.workers}")
    if not 0.0 <= config.lr_decay_at <= 1.0:
        problems.append(f"{option('lr_decay_at')} must be in [0, 1], got {config.lr_decay_at}")
    if config.name is not None and not _plain_name(config.name):
        problems.append(f"{option('name')} must be a plain folder name, without path separators or '..', got "
                        f"{config.name!r}; {option('runs_dir')} chooses where run folders go")
    elif config.name is not None and len(config.name.encode()) > MAX_NAME_BYTES:
        problems.append(f"{option('name')} is {len(config.name.encode())} bytes long; at most {MAX_NAME_BYTES} (the "
                        f"run folder's lock file <name>.lock must fit a file name of 255 bytes)")
    if config.folds is not None and (not config.folds or min(config.folds) < 1):
        problems.append(f"{option('folds')} takes 1-based fold numbers, got {config.folds}")
    if config.seeds is not None:
        problems += seed_problems(config.seeds)
    try:
        hidden_layers.canonical(config.layers)
    except hidden_layers.LayerError as exc:
        problems.append(str(exc))
    if config.layer_mix not in LAYER_MIXES and not config.layer_mix.lstrip("-").isdigit():
        problems.append(f"{option('layer_mix')} must be one of {', '.join(LAYER_MIXES)} or a hidden-state number, "
                        f"got {config.layer_mix!r}")
    if config.layer_sweep and config.ablation == "all":
        problems.append(f"{option('layer_sweep')} and {option('ablation', 'all')} are two grids; run them one at "
                        "a time")
    if problems:
        raise TrainError("; ".join(problems))


def _plain_name(name: str) -> bool:
    """A run folder name that stays inside --runs-dir."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def training_layers(config: TrainConfig, meta: CacheMeta) -> Dict[str, List[int]]:
    """Positions along each modality's stored layers that the head reads: `--layers` picks among
    the cached hidden states, `--layer-mix LAYER` then keeps hidden state LAYER of every modality
    that still has several (a modality with one keeps it). TrainError when a layer is not cached."""
    picked = {}
    for modality in ("audio", "text"):
        stored = meta.stored_layers(modality)
        try:
            positions = hidden_layers.select(config.layers, stored, f"the cache's {modality}")
            if config.layer_mix not in LAYER_MIXES and len(positions) > 1:
                chosen = [stored[p] for p in positions]
                positions = [positions[p] for p in hidden_layers.select(config.layer_mix, chosen,
                                                                        f"{option('layers', config.layers)} of "
                                                                        f"{modality}")]
        except hidden_layers.LayerError as exc:
            raise TrainError(f"{config.cache}: {exc}") from None
        picked[modality] = positions
    return picked


def model_config(config: TrainConfig, meta: CacheMeta) -> SWRRConfig:
    """The SWRR config for a resolved run: sizes from the cache, overrides, then the ablation."""
    layers = training_layers(config, meta)
    base = SWRRConfig(audio_dim=meta.audio_dim, text_dim=meta.text_dim, max_frames=meta.max_frames,
                      max_tokens=meta.max_tokens,
                      num_outputs=objectives.num_outputs(objective(config, meta.task), len(meta.label_names)),
                      audio_layers=len(layers["audio"]), text_layers=len(layers["text"]),
                      layer_mix=config.layer_mix if config.layer_mix in LAYER_MIXES else "learned",
                      layer_norm=config.layer_norm)
    known = {f.name for f in fields(SWRRConfig)} - {"audio_dim", "text_dim", "max_frames", "max_tokens",
                                                    "num_outputs", "audio_layers", "text_layers"}
    unknown = sorted(set(config.model) - known)
    if unknown:
        raise TrainError(f"unknown model option(s) {unknown}; valid: {', '.join(sorted(known))}")
    try:
        cfg = replace(base, **config.model)
        return ablation_config(cfg, config.ablation) if config.ablation else cfg
    except (ValueError, TypeError) as exc:
        raise TrainError(f"invalid model options {config.model}: {exc}") from exc


def objective(config: TrainConfig, task: str) -> str:
    """The training objective of a run on a `task` cache (swrr_core.objectives)."""
    return objectives.objective_for(task, config.target_loss if task == "dimensional" else config.mosei_objective)


def fingerprint(data: Dict[str, Any]) -> str:
    """A short stable hash of plain data (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def unit_seeds(config: TrainConfig) -> List[int]:
    """The seeds a run trains every fold with: `seeds`, or just `seed`."""
    return list(config.seeds) if config.seeds is not None else [config.seed]


def seed_problems(seeds: List[int]) -> List[str]:
    """What is wrong with a --seeds list (empty, negative, repeated), as messages."""
    if not seeds:
        return [f"{option('seeds')} needs at least one seed"]
    problems = []
    if min(seeds) < 0:
        problems.append(f"{option('seeds')} must be >= 0, got {', '.join(str(s) for s in seeds if s < 0)}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        problems.append(f"{option('seeds')} lists {', '.join(map(str, repeated))} more than once")
    return problems


def check_types(data: Dict[str, Any]) -> None:
    """Each value of a TrainConfig mapping (a config file) has its field's type; raises TrainError
    naming the keys that do not. An int is accepted where a float is expected, a bool never counts as a number."""
    hints = get_type_hints(TrainConfig)
    wrong = [f"{key}: expected {_type_name(hints[key])}, got {value!r}" for key, value in data.items()
             if key in hints and not _has_type(value, hints[key])]
    if wrong:
        raise TrainError(f"wrong type in config: {'; '.join(wrong)}")


def _has_type(value: Any, hint: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        return any(_has_type(value, arg) for arg in args)
    if origin in (list, List):
        return isinstance(value, list) and all(_has_type(v, args[0]) for v in value)
    if origin in (dict, Dict):
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        return " or ".join(_type_name(arg) for arg in args)
    if origin in (list, List):
        return f"a list of {_type_name(args[0])}"
    if origin in (dict, Dict):
        return "a mapping"
    return "null" if hint is type(None) else hint.__name__


def _yaml_numbers(data: Dict[str, Any]) -> Dict[str, Any]:
    """Float fields given as numeric strings, as floats. YAML 1.1 (PyYAML) reads `1e-3` as the
    string '1e-3' (its floats need a dot: 1.0e-3); the user meant the number."""
    hints = get_type_hints(TrainConfig)
    out = dict(data)
    for key, value in data.items():
        if key in hints and isinstance(value, str) and float in get_args(hints[key]) + (hints[key],):
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                out[key] = number
    return out


# Keys of a run's config.json that say where that run lived, not what it computed: a rerun from
# the file gets a new folder (the default name, or --name / --runs-dir), and is never stopped early.
_RUN_LOCATION_KEYS = ("name", "runs_dir", "stop_after_epochs")


def load_config_file(path) -> Dict[str, Any]:
    """TrainConfig values from a file: a run's config.json (its "train" part) or a hand-written
    JSON/YAML mapping (keys as TrainConfig fields; dashes as in the options are accepted).

    Raises TrainError naming the file for unreadable files, unknown keys and wrong types."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TrainError(f"cannot read the config file {path} ({exc.strerror or exc})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TrainError(f"{path} is not valid YAML ({' '.join(str(exc).split())})") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TrainError(f"{path} is not valid JSON ({exc}); YAML files need a .yaml or .yml suffix") from None
    if not isinstance(data, dict):
        raise TrainError(f"{path} must hold a mapping of training options, not {type(data).__name__}")
    if isinstance(data.get("train"), dict):  # a run folder's config.json: it records both seed and seeds
        data = {k: v for k, v in data["train"].items() if k not in _RUN_LOCATION_KEYS}
        data.pop("seed" if data.get("seeds") is not None else "seeds", None)  # keep the one that ran
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    if "seed" in data and data.get("seeds") is not None:
        raise TrainError(f"{path} gives both seed ({data['seed']}) and seeds ({data['seeds']}); they exclude each "
                         "other: keep seeds (every fold once per seed) or seed (one run)")
    if path.suffix.lower() in (".yaml", ".yml"):
        data = _yaml_numbers(data)
    try:
        check(TrainConfig.from_dict({"cache": "", **data}))
    except TrainError as exc:
        raise TrainError(f"{path}: {exc}") from None
    return data
