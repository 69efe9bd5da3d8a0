"""Checkpoints: state dicts plus plain-type metadata, written atomically, loaded safely.

Every checkpoint carries the `identity` of what produced it (the run's result-deciding config,
the model config, the cache fingerprint, the fold). Loading compares it with what the caller
is about to run and refuses a checkpoint made differently, naming the keys that differ.
Files are always read with `torch.load(weights_only=True)`: no pickled code runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import torch

from swrr.cache import differing_config_keys
from swrr.train.config import TrainError

FORMAT_TAG = "swrr-train-checkpoint"
VERSION = 1


def save(path: Path, payload: Dict[str, Any], identity: Dict[str, Any]) -> None:
    """Write `payload` (+ format tag and identity) to `path` via a temp file and a rename,
    so a kill mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"format": FORMAT_TAG, "version": VERSION, "identity": identity, **payload}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # a full disk: torch's zip writer raises RuntimeError
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        cause = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise TrainError(f"cannot write the checkpoint {path} ({cause}); the previous checkpoint is kept: free "
                         "some space and continue with --resume") from None


def load(path: Path, identity: Dict[str, Any]) -> Dict[str, Any]:
    """Read a checkpoint made by `save` with the same identity; raises TrainError otherwise."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated zip, ...: all mean "not ours / damaged"
        raise TrainError(f"{path} cannot be loaded safely as a checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it to start that fold over") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_TAG:
        raise TrainError(f"{path} is not an swrr-train checkpoint")
    if data.get("version") != VERSION:
        raise TrainError(f"{path} has checkpoint version {data.get('version')}, this swrr writes {VERSION}")
    theirs = data.get("identity", {})
    if theirs != identity:
        differ = differing_config_keys(_flatten(theirs), _flatten(identity))
        raise TrainError(f"{path} was made by a different run (differs in: {', '.join(differ)}); "
                         "refusing to continue from it: use a new --name, or delete the fold folder")
    return data


def _flatten(data: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
