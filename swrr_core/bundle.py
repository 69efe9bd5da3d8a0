"""Model bundles: a trained SWRR head as a self-contained folder, the train -> predict contract.

`swrr-train` writes one per fold (`runs/<name>/fold*/model/`), `swrr-predict` and `swrr-export`
read them. This module is the only code that knows the layout (FORMAT_VERSION 1):

    model.safetensors   the head's state dict (safetensors: no pickle anywhere in a bundle)
    config.json         {"format": "swrr-model-bundle", "format_version": 1,
                         "task", "label_names" (class order; [] for regression), "objective",
                         "model": SWRRConfig fields,
                         "recipe": the cache's CacheMeta, copied (encoders + revisions, layer,
                                   max frames/tokens, sample rate, dtype, random encoders, ...),
                                   with audio_layers / text_layers = the hidden states the head
                                   reads (the cache's, or the subset swrr-train --layers chose);
                                   the mixing rule is in "model" (audio_layers, layer_mix,
                                   layer_norm), the learned weights in model.safetensors
                                   (layer_mix.<modality>.logits, softmax-normalised when used),
                         "provenance": dataset, protocol, fold, test group, selected epoch,
                                   selection rule, metrics, swrr version, cache fingerprint,
                         optional (older bundles lack them and load as if absent):
                         "calibration": {"temperature": T, "fitted_on": "N validation rows"}
                                   (absent: T = 1, the raw softmax),
                         "onnx": {"head": "head.onnx", "opset": 20, "max_abs_logit_diff": ...,
                                   "audio_encoder": "audio_encoder.onnx", "text_encoder": ...}
                                   (written by swrr-export --onnx / --onnx-encoders)}
    README.md           a short model card
    head.onnx           optional: the head as ONNX (dynamic batch), listed under "onnx"
    audio_encoder.onnx, text_encoder.onnx   optional: the recipe's encoders as ONNX, listed there too

A bundle is written to `<dir>.partial` and renamed into place, so a folder named like a bundle
is never half written. `load_bundle` validates everything before building the model.

    bundle = load_bundle("runs/demo-split/fold01/model")   # or a hub id, with internet
    logits = bundle.model(audio, audio_len, text, text_len)
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from swrr._version import __version__
from swrr import objectives
from swrr.cache import CacheError, CacheMeta
from swrr.model import SWRR, SWRRConfig
from swrr.errors import SwrrError
from swrr.rundir import UNIT_BUNDLE, UNIT_GLOB, RunFolder, UnitFolder

FORMAT_TAG = "swrr-model-bundle"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
ONNX_PARTS = ("head", "audio_encoder", "text_encoder")  # parts of a model that can be exported to ONNX


class BundleError(SwrrError):
    """A bundle (or run folder) that cannot be used; the message names the path and what to do."""


@dataclass
class Bundle:
    """A loaded bundle: `model` is an SWRR in eval mode on the CPU with the trained weights."""

    path: Path
    model: SWRR
    task: str  # "classification" | "regression"
    label_names: List[str]
    objective: str  # "ce" for classification, "l1" | "ce7" for regression
    recipe: CacheMeta  # how the training features were made
    provenance: Dict[str, Any]
    temperature: float = 1.0  # divides the logits before the softmax (1.0: uncalibrated)
    onnx: Dict[str, Any] = field(default_factory=dict)  # "head": file name, "opset", ... ({}: none exported)

    def onnx_file(self, part: str) -> Optional[Path]:
        """The ONNX file of `part` (one of ONNX_PARTS) in this bundle, None when it has none."""
        name = self.onnx.get(part)
        return self.path / name if name else None

    @property
    def model_config(self) -> SWRRConfig:
        return self.model.config

    @property
    def needs_text(self) -> bool:
        """False for a model trained with --ablation audio-only: it never reads the text."""
        return self.model_config.modalities != "audio"


# ---------------------------------------------------------------------------------- writing
def write_bundle(folder, state_dict: Dict[str, torch.Tensor], model_config: SWRRConfig, task: str,
                 label_names: List[str], recipe: Union[CacheMeta, Dict[str, Any]], provenance: Dict[str, Any],
                 objective: Optional[str] = None, temperature: Optional[float] = None,
                 calibration_source: Optional[str] = None) -> Path:
    """Write a bundle to `folder` (replacing one there) through `<folder>.partial`; -> folder.
    `temperature`: fitted on validation data (None: none was, the bundle's softmax is raw)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    recipe = recipe if isinstance(recipe, CacheMeta) else CacheMeta(**recipe)
    objective = objective or objectives.objective_for(task)
    config = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "task": task,
              "label_names": list(label_names) if task != "regression" else [],  # classes, or the dimensions
              "objective": objective,
              "model": asdict(model_config), "recipe": asdict(recipe),
              "provenance": {"swrr_version": __version__, **provenance}}
    if temperature is not None:
        config["calibration"] = {"temperature": float(temperature), "fitted_on": calibration_source or "",
                                 "method": "temperature scaling (LBFGS on validation NLL)"}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    save_file(tensors, str(partial / WEIGHTS), metadata={"format": FORMAT_TAG})
    (partial / CONFIG).write_text(json.dumps(config, indent=2, default=_plain))
    (partial / CARD).write_text(model_card(config))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    return folder


def _plain(value):
    """numpy scalars and arrays in metrics -> JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def model_card(config: Dict[str, Any]) -> str:
    """The bundle's README.md: what it was trained on, what it scores, how to call it."""
    recipe, prov = config["recipe"], config["provenance"]
    scores = (f"classes {', '.join(config['label_names'])} (probabilities, in this order)"
              if config["task"] == "classification" else f"a regression score (objective {config['objective']})")
    metrics = prov.get("metrics") or {}
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
    random = ("\n**The encoders were randomly initialised (`--encoders tiny`): this model is for tests and "
              "demos only.**\n" if recipe.get("random_encoders") else "")
    needs = "audio only" if config["model"].get("modalities") == "audio" else "audio and its transcript"
    return f"""# SWRR emotion model ({recipe['dataset']}, {prov.get('protocol', '?')} fold {prov.get('fold', '?')})
{random}
- Scores: {scores}.
- Input: {needs}. Audio is cut to its first {recipe['max_frames']} frames, text to {recipe['max_tokens']} tokens.
- Features: {recipe['audio_encoder']} (revision {recipe['audio_encoder_revision'] or '?'}) and
  {recipe['text_encoder']} (revision {recipe['text_encoder_revision'] or '?'}), {_layers_text(CacheMeta(**recipe), config['model'])},
  {recipe['sample_rate']} Hz, rounded to {recipe['dtype']}.
- Trained on: {recipe['dataset']}, protocol {prov.get('protocol', '?')}, held out: {prov.get('test_group') or 'nothing'};
  reported epoch {prov.get('selected_epoch', '?')} ({prov.get('selection', '?')}).
- Test metrics of this fold: {shown or 'none (no test rows)'}.
- Probabilities: {_calibration_words(config)}.
- swrr {prov.get('swrr_version', '?')}, cache fingerprint {prov.get('cache_fingerprint', '?')}.

Use it:

    swrr-predict --model THIS_FOLDER clip.wav --text "what was said" --out predictions.csv

    from swrr.bundle import load_bundle
    bundle = load_bundle("THIS_FOLDER")
"""


def _layers_text(recipe: CacheMeta, model: Dict[str, Any]) -> str:
    """Which hidden states the head reads and how it mixes them, for the model card."""
    layers = {m: recipe.stored_layers(m) for m in ("audio", "text")}
    if all(len(v) == 1 for v in layers.values()):
        return "layer " + (str(layers["audio"][0]) if layers["audio"] == layers["text"]
                           else f"{layers['audio'][0]} (audio) / {layers['text'][0]} (text)")
    mix = model.get("layer_mix", "learned") + (" after a LayerNorm per layer" if model.get("layer_norm") else "")
    return f"hidden states {layers['audio']} (audio) and {layers['text']} (text) mixed by {mix} weights"


def _calibration_words(config: Dict[str, Any]) -> str:
    calibration = config.get("calibration")
    if config["task"] != "classification":
        return "none (a regression model)"
    if not calibration:
        return ("uncalibrated softmax (no validation rows to fit a temperature on; train with a validation "
                "speaker, --early-stop-speaker, to calibrate)")
    return (f"temperature-scaled, T = {calibration['temperature']:.3f} fitted on {calibration.get('fitted_on') or 'validation rows'} "
            "(swrr-predict applies it; --no-calibration for the raw softmax)")


def add_onnx(folder, part: str, file_name: str, details: Dict[str, Any]) -> None:
    """Record an ONNX file already written into bundle `folder` in its config.json (atomically)."""
    folder = Path(folder)
    config = read_config(folder)
    config.setdefault("onnx", {}).update({part: file_name, **details})
    partial = folder / (CONFIG + ".partial")
    partial.write_text(json.dumps(config, indent=2, default=_plain))
    os.replace(partial, folder / CONFIG)


# ---------------------------------------------------------------------------------- reading
def load_bundle(path_or_hub_id, device: Union[str, torch.device] = "cpu", fold: Optional[int] = None) -> Bundle:
    """A validated bundle from a bundle folder, a run folder (`fold` when it has several), or
    the Hugging Face hub when no such folder exists.

    Raises BundleError for a missing or incomplete folder, a newer format version, a config the
    model cannot be built from, or weights whose names or shapes disagree with config.json."""
    folder = _local_folder(find_bundle(path_or_hub_id, fold))
    config = read_config(folder)
    model = SWRR(_model_config(folder, config["model"]))
    model.load_state_dict(_read_weights(folder, model), strict=True)
    model.to(device).eval()
    try:
        recipe = CacheMeta(**{f.name: config["recipe"][f.name] for f in fields(CacheMeta) if f.name in config["recipe"]})
    except (CacheError, TypeError) as exc:
        raise BundleError(f"{folder / CONFIG}: the extraction recipe is invalid ({exc})") from exc
    check_recipe_fits(folder, recipe, model.config)
    return Bundle(folder, model, config["task"], list(config["label_names"]), config["objective"], recipe,
                  dict(config.get("provenance", {})), _temperature(folder, config), _onnx_files(folder, config))


def _temperature(folder: Path, config: Dict[str, Any]) -> float:
    """The stored temperature; 1.0 for bundles without one (written before calibration existed)."""
    value = (config.get("calibration") or {}).get("temperature", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (np.isfinite(value) and value > 0):
        raise BundleError(f"{folder / CONFIG}: calibration temperature {value!r} is not a positive number; "
                          "the bundle is damaged")
    return float(value)


def _onnx_files(folder: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    """The "onnx" entry, its files checked to be plain names of files inside the bundle."""
    onnx = dict(config.get("onnx") or {})
    for part in ONNX_PARTS:
        name = onnx.get(part)
        if name is None:
            continue
        if not isinstance(name, str) or Path(name).name != name or not (folder / name).is_file():
            raise BundleError(f"{folder / CONFIG}: its onnx {part} file {name!r} is not a file of the bundle; "
                              "the bundle is damaged (export it again with swrr-export --onnx)")
    return onnx


def check_recipe_fits(folder: Path, recipe: CacheMeta, model_config: SWRRConfig) -> None:
    """BundleError when the recipe (how features are made) and the model disagree on the feature
    sizes: such a bundle would load, then fail once the encoders are built."""
    differ = [f"{key} {getattr(recipe, key)} vs {getattr(model_config, key)}"
              for key in ("max_frames", "max_tokens", "audio_dim", "text_dim")
              if getattr(recipe, key) != getattr(model_config, key)]
    if differ:
        raise BundleError(f"{folder / CONFIG}: the recipe and the model disagree ({', '.join(differ)}: recipe vs "
                          "model); the bundle is damaged or mixed from two models")


def _local_folder(path_or_hub_id) -> Path:
    folder = Path(path_or_hub_id).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise BundleError(f"{folder} is a file; a model bundle is a folder holding {WEIGHTS} and {CONFIG}")
        return folder
    text = str(path_or_hub_id)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise BundleError(f"{folder}: no such model bundle folder (and not a hub id like owner/name)")
    if folder.parent.is_dir():  # runs/nope: a mistyped local folder, not a hub id to download
        near = sorted(p.name for p in folder.parent.iterdir() if p.is_dir())[:5]
        raise BundleError(f"{folder}: no such model bundle folder in {folder.parent}"
                          + (f" (it holds {', '.join(near)})" if near else "")
                          + f"; a hub id owner/name is downloaded only when no local folder {folder.parent} exists")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text))
    except Exception as exc:  # offline, unknown repo, no permission: all mean "cannot get it"
        raise BundleError(f"{text}: no such folder here, and downloading it from the Hugging Face hub failed "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc


def read_config(folder: Path) -> Dict[str, Any]:
    """config.json of a bundle folder, checked for completeness and format version."""
    missing = [name for name in (WEIGHTS, CONFIG) if not (folder / name).is_file()]
    if missing:
        raise BundleError(f"{folder}: not a complete model bundle (missing {', '.join(missing)}); "
                          "bundles are written by swrr-train into runs/<name>/fold*/model/")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{folder / CONFIG}: not valid JSON ({exc}); the bundle is damaged") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT_TAG:
        raise BundleError(f"{folder / CONFIG}: not an swrr model bundle (no format {FORMAT_TAG!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{folder / CONFIG}: format_version is {version!r}, not an integer; the bundle is damaged")
    if version > FORMAT_VERSION:
        raise BundleError(f"{folder}: bundle format version {version!r} is newer than this swrr reads "
                          f"({FORMAT_VERSION}); upgrade swrr (pip install -U swrr)")
    lacking = [k for k in ("task", "label_names", "objective", "model", "recipe") if k not in config]
    if lacking:
        raise BundleError(f"{folder / CONFIG}: lacks the keys {lacking}; the bundle is damaged")
    names = config["label_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise BundleError(f"{folder / CONFIG}: label_names must be a list of distinct class names, got {names!r}; "
                          "the bundle is damaged")
    if config["task"] == "classification" and len(config["label_names"]) != config["model"].get("num_outputs"):
        raise BundleError(f"{folder / CONFIG}: {len(config['label_names'])} label names for a model with "
                          f"{config['model'].get('num_outputs')} outputs")
    try:
        expected = objectives.objective_for(config["task"], config["objective"] if config["task"] != "classification"
                                            else None)
    except ValueError as exc:
        raise BundleError(f"{folder / CONFIG}: {exc}") from exc
    width = objectives.num_outputs(expected, len(config["label_names"]))
    if config["objective"] != expected or config["model"].get("num_outputs") != width:
        raise BundleError(f"{folder / CONFIG}: objective {config['objective']!r} does not fit a {config['task']} "
                          f"model with {config['model'].get('num_outputs')} outputs; the bundle is damaged")
    return config


def _model_config(folder: Path, data: Dict[str, Any]) -> SWRRConfig:
    known = {f.name for f in fields(SWRRConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BundleError(f"{folder / CONFIG}: unknown model keys {unknown}; it was written by a newer swrr")
    try:
        return SWRRConfig(**data)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{folder / CONFIG}: invalid model config ({exc})") from exc


def _read_weights(folder: Path, model: SWRR) -> Dict[str, torch.Tensor]:
    """The safetensors weights, checked name by name and shape by shape against `model`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{folder / WEIGHTS}: not readable safetensors ({exc}); the bundle is damaged") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in weights and weights[k].shape != v.shape]
    wrong += [f"{k} is {weights[k].dtype} vs {v.dtype}" for k, v in expected.items()  # integer weights would load
              if k in weights and weights[k].is_floating_point() != v.is_floating_point()]  # as silent zeros
    if missing or unexpected or wrong:
        parts = ([f"missing {missing[:3]}"] if missing else []) + ([f"unexpected {unexpected[:3]}"] if unexpected else []) \
            + ([f"shapes differ: {', '.join(wrong[:3])}"] if wrong else [])
        raise BundleError(f"{folder / WEIGHTS}: the weights do not match {CONFIG} ({'; '.join(parts)}); "
                          "the bundle is damaged or mixed from two models")
    check_finite_weights(folder, weights)
    return weights


def check_finite_weights(folder: Path, weights: Dict[str, torch.Tensor]) -> None:
    """BundleError naming the tensors that hold NaN or inf: such a model predicts nothing."""
    bad = [name for name, tensor in weights.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise BundleError(f"{folder / WEIGHTS}: {len(bad)} tensors hold NaN or inf values ({', '.join(bad[:3])}); "
                          "the bundle is damaged: export it again from its run")


# ---------------------------------------------------------------------------------- runs
def unit_bundles(run_dir: Path) -> List[UnitFolder]:
    """The units of a run folder that hold a bundle (swrr_core/rundir.py), in unit order."""
    return [unit for unit in RunFolder(run_dir).units() if (unit.bundle / CONFIG).is_file()]


def find_bundle(path, fold: Optional[int] = None):
    """A bundle folder from a bundle folder or a run folder (+ `fold`, 1-based, when it has several).

    A run folder with several fold bundles and no `fold` is refused, listing the folds and their
    test metrics, so the user chooses."""
    if not Path(path).expanduser().exists():
        if fold is not None:
            raise BundleError(f"{path}: no such run folder")
        return path  # maybe a hub id: load_bundle decides
    path = Path(path).expanduser()
    if any((path / name).is_file() for name in (CONFIG, WEIGHTS)) and not RunFolder(path).units():
        # (a run folder has a config.json too, and unit folders)
        if fold is not None:
            raise BundleError(f"{path} is a model bundle, not a run folder; --fold applies to run folders")
        return path
    units = unit_bundles(path) if path.is_dir() else []
    if not units:
        raise BundleError(f"{path}: neither a model bundle nor a run folder with {UNIT_GLOB}/{UNIT_BUNDLE}/ bundles "
                          "(runs made before bundles existed have none: retrain, or pass a bundle folder)")
    by_fold: Dict[int, List[UnitFolder]] = {}
    for unit in units:  # several per fold in a run with --seeds (fold03-seed0, fold03-seed1, ...)
        by_fold.setdefault(unit.fold, []).append(unit)
    if fold is not None:
        if fold not in by_fold:
            raise BundleError(f"{path}: no fold {fold}; its folds with bundles are {sorted(by_fold)}")
        units = by_fold[fold]
    if len(units) == 1:
        return units[0].bundle
    listing = "; ".join(f"{u.path.name}: {_fold_summary(u.bundle)}" for u in units)
    choose = ("give one unit's bundle folder instead, e.g. " + str(units[0].bundle)) if fold is not None or \
        len(by_fold) == 1 else "choose one with --fold K"
    raise BundleError(f"{path} holds {len(units)} models; {choose} ({listing}). "
                      "To deploy, train on every row with --protocol all and quote the cross-validation numbers")


def _fold_summary(bundle: Path) -> str:
    try:
        prov = json.loads((bundle / CONFIG).read_text()).get("provenance", {})
    except ValueError:
        return "unreadable config.json"
    metrics = prov.get("metrics") or {}
    shown = " ".join(f"{k} {metrics[k]:.3g}" for k in ("wa", "ua", "acc7", "mae") if isinstance(metrics.get(k), (int, float)))
    return f"{prov.get('test_group', '?')} {shown or 'no test metrics'}".strip()
