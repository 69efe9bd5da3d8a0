"""The SWRR head as ONNX: export (validated against PyTorch with onnxruntime) and an onnxruntime
runner with the torch head's call signature.

    details = export_head(bundle, folder)          # folder/head.onnx, refused when it disagrees
    head = OnnxHead(bundle, torch.device("cpu"))
    logits = head(audio, audio_len, text, text_len)

Export uses the dynamo exporter (`torch.onnx.export(..., dynamo=True)`): the TorchScript one fails
on the head's adaptive average pooling. The model's check of length values is data-dependent
control flow that torch.export cannot trace; SWRR.check_inputs skips it while exporting, and
OnnxHead runs the same check before every call instead.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from swrr.bundle import BundleError, Bundle, add_onnx
from swrr.extras import require

HEAD_FILE = "head.onnx"
INPUTS = ("audio", "audio_len", "text", "text_len")
TOLERANCE = 1e-4  # max |logit difference| onnxruntime vs PyTorch, float32
MAX_BATCH = 4096  # the dynamic batch dimension's upper bound in the exported graph


def validation_rows(bundle: Bundle, seed: int = 0) -> List[Tuple[torch.Tensor, ...]]:
    """Random feature batches of sizes 1, 3 and 8 with lengths from 1 to the maximum (both ends
    included), for comparing the ONNX head with the PyTorch head."""
    cfg = bundle.model_config
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for size in (1, 3, 8):
        lengths = [torch.randint(1, top + 1, (size,), generator=generator) for top in (cfg.max_frames, cfg.max_tokens)]
        for top, length in zip((cfg.max_frames, cfg.max_tokens), lengths):
            length[0] = top  # the full length and the shortest one are both checked
            if size > 1:
                length[-1] = 1
        batches.append((torch.randn(size, cfg.max_frames, cfg.audio_dim, generator=generator), lengths[0],
                        torch.randn(size, cfg.max_tokens, cfg.text_dim, generator=generator), lengths[1]))
    return batches


def export_head(bundle: Bundle, folder, tolerance: Optional[float] = None) -> Dict[str, Any]:
    """Write bundle's head as `folder`/head.onnx (dynamic batch) and list it in folder's config.json,
    after checking onnxruntime's logits against PyTorch's on validation_rows; -> the details
    recorded. BundleError (nothing written) when they differ by `tolerance` or more."""
    tolerance = TOLERANCE if tolerance is None else tolerance
    require("onnx", "onnxscript")  # the dynamo exporter's ONNX builder
    ort = require("onnx", "onnxruntime")
    folder = Path(folder)
    model = bundle.model.to("cpu").eval()
    rows = validation_rows(bundle)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    partial = folder / (HEAD_FILE + ".partial")
    try:
        with warnings.catch_warnings():  # the exporter's FutureWarnings and notes say nothing to a user
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, rows[1], dynamo=True, input_names=list(INPUTS), output_names=["logits"],
                                        dynamic_shapes={name: {0: batch} for name in INPUTS}, verbose=False)
        program.save(str(partial))
        session = ort.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
        diff = 0.0
        with torch.no_grad():
            for inputs in rows:
                expected = model(*inputs).numpy()
                got = session.run(None, _feed(inputs))[0]
                diff = max(diff, float(np.max(np.abs(got - expected))) if np.isfinite(got).all() else float("inf"))
        if not diff < tolerance:
            raise BundleError(f"{folder / HEAD_FILE}: the ONNX head disagrees with PyTorch (max |logit difference| "
                              f"{diff:.3g}, the limit is {tolerance:g}); not written")
        os.replace(partial, folder / HEAD_FILE)
    finally:
        partial.unlink(missing_ok=True)
    details = {"opset": int(program.model.opset_imports.get("", 0)), "max_abs_logit_diff": diff,
               "validated_on": f"{sum(len(r[0]) for r in rows)} random rows, batch sizes "
                               f"{', '.join(str(len(r[0])) for r in rows)}, lengths 1..max",
               "torch_version": torch.__version__, "onnxruntime_version": ort.__version__}
    add_onnx(folder, "head", HEAD_FILE, details)
    return details


def _feed(inputs) -> Dict[str, np.ndarray]:
    audio, audio_len, text, text_len = inputs
    return {"audio": audio.float().cpu().numpy(), "audio_len": audio_len.long().cpu().numpy(),
            "text": text.float().cpu().numpy(), "text_len": text_len.long().cpu().numpy()}


class OnnxHead:
    """The bundle's head.onnx on onnxruntime, called like the torch head (-> logits tensor on the CPU)."""

    def __init__(self, bundle: Bundle, device: torch.device):
        ort = require("onnx", "onnxruntime")
        path = bundle.onnx_file("head")
        if path is None:
            raise BundleError(f"{bundle.path}: the bundle has no ONNX head; export one with "
                              f"swrr-export {bundle.path} --onnx --out NEW_FOLDER")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.check_inputs = bundle.model.check_inputs  # the length check the exported graph leaves out

    def __call__(self, audio, audio_len, text, text_len) -> torch.Tensor:
        self.check_inputs(audio, audio_len, text, text_len)
        return torch.from_numpy(self.session.run(None, _feed((audio, audio_len, text, text_len)))[0])
