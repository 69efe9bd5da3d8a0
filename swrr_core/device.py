"""The torch device from a user's --device value, shared by both stages."""
from __future__ import annotations

import torch
from swrr.errors import SwrrError


class DeviceError(SwrrError, ValueError):
    """A --device value that cannot be used on this machine; the message says what to do."""


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when torch sees a GPU, else cpu; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"--device {name!r} is not a device name (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: this torch has no CUDA device; use --device cpu")
    return device
