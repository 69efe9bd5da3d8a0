"""The SWRR head (and the recipe's encoders) as ONNX: export, validated against PyTorch with
onnxruntime, and onnxruntime runners with the torch modules' call signatures.

    details = export_head(bundle, folder)          # folder/head.onnx, refused when it disagrees
    details = export_encoders(bundle, folder)      # folder/audio_encoder.onnx, text_encoder.onnx
    head = OnnxHead(bundle, torch.device("cpu"))
    logits = head(audio, audio_len, text, text_len)
    use_onnx_encoders(bundle, audio_encoder, text_encoder)   # their .model now runs on onnxruntime

Export uses the dynamo exporter (`torch.onnx.export(..., dynamo=True)`): the TorchScript one fails
on the head's adaptive average pooling. The model's check of length values is data-dependent
control flow that torch.export cannot trace; SWRR.check_inputs skips it while exporting, and
OnnxHead runs the same check before every call instead.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from swrr.bundle import BundleError, Bundle, add_onnx
from swrr.extras import require

HEAD_FILE = "head.onnx"
ENCODER_FILES = {"audio_encoder": "audio_encoder.onnx", "text_encoder": "text_encoder.onnx"}
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
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
        shapes = [((layers,) if layers > 1 else ()) + (top, dim) for layers, top, dim in
                  ((cfg.audio_layers, cfg.max_frames, cfg.audio_dim), (cfg.text_layers, cfg.max_tokens, cfg.text_dim))]
        batches.append((torch.randn(size, *shapes[0], generator=generator), lengths[0],
                        torch.randn(size, *shapes[1], generator=generator), lengths[1]))
    return batches


def _export(module: torch.nn.Module, example: tuple, names, dynamic: Dict[str, Dict[int, Any]], path: Path):
    """torch.onnx.export(dynamo=True) of `module` to `path`; -> the ONNX program."""
    with warnings.catch_warnings():  # the exporter's FutureWarnings and notes say nothing to a user
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, example, dynamo=True, input_names=list(names), output_names=["out"],
                                    dynamic_shapes=dynamic, verbose=False)
    program.save(str(path))
    return program


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
        program = _export(model, rows[1], INPUTS, {name: {0: batch} for name in INPUTS}, partial)
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
        cfg = bundle.model_config
        self.layers = {"audio": cfg.audio_layers, "text": cfg.text_layers}

    def __call__(self, audio, audio_len, text, text_len) -> torch.Tensor:
        self.check_inputs(audio, audio_len, text, text_len)
        # a one-layer head was exported on (B, frames, dim): the featurizer's layer axis of 1 goes
        audio = audio[:, 0] if self.layers["audio"] == 1 and audio.dim() == 4 else audio
        text = text[:, 0] if self.layers["text"] == 1 and text.dim() == 4 else text
        return torch.from_numpy(self.session.run(None, _feed((audio, audio_len, text, text_len)))[0])


# ------------------------------------------------------------------------------ encoders
class AudioGraph(torch.nn.Module):
    """(input_values (B, S), lengths (B,)) -> the encoder's chosen hidden states (B, L, F, D), with
    extract's exact-batching steps (masked GroupNorm statistics, positional-conv masks) in the graph.
    Waveform families only (Whisper's log-mel window is refused by export_encoders)."""

    def __init__(self, encoder):
        super().__init__()
        self.model, self.layers = encoder.model, list(encoder.layers)
        self.front_end, self.steps = encoder.front_end, encoder._steps

    def forward(self, input_values, lengths):
        frame_lengths = self.front_end.frames(lengths)
        with contextlib.ExitStack() as exact:
            for step in self.steps:
                exact.enter_context(step.active(lengths, frame_lengths))
            out = self.model(**self.front_end.model_inputs(input_values, lengths), output_hidden_states=True)
        return torch.stack([out.hidden_states[k] for k in self.layers], dim=1)


class TextGraph(torch.nn.Module):
    """(input_ids, attention_mask, token_type_ids) (B, T) -> the encoder's chosen hidden states (B, L, T, D)."""

    def __init__(self, encoder):
        super().__init__()
        self.model, self.layers, self.inputs = encoder.model, list(encoder.layers), encoder.family.inputs

    def forward(self, input_ids, attention_mask, token_type_ids):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out = self.model(**{k: v for k, v in given.items() if k in self.inputs}, output_hidden_states=True)
        return torch.stack([out.hidden_states[k] for k in self.layers], dim=1)


class OnnxEncoderModel:
    """Stands in for an encoder's transformers model (`encoder.model`): called with the model's
    keyword inputs, runs the exported graph on onnxruntime and answers like the model (an object
    with hidden_states[k] for each chosen hidden state k), so AudioEncoder/TextEncoder's own code
    (lengths, masking past them, the cache dtype rounding after) runs unchanged around it."""

    def __init__(self, session, config, layers: List[int], role: str):
        self.session, self.config, self.layers, self.role = session, config, list(layers), role

    def to(self, *_args, **_kwargs):
        return self  # onnxruntime places it; the inputs are moved to the host per call

    def eval(self):
        return self

    def __call__(self, output_hidden_states: bool = False, **inputs):
        from types import SimpleNamespace

        device = inputs["attention_mask"].device
        if self.role == "audio":
            feed = {"input_values": inputs["input_values"].float().cpu().numpy(),
                    "lengths": inputs["attention_mask"].sum(dim=1).cpu().numpy().astype(np.int64)}
        else:
            ids = inputs["input_ids"]
            feed = {name: inputs.get(name, torch.zeros_like(ids)).long().cpu().numpy() for name in TEXT_INPUTS}
        hidden = torch.from_numpy(self.session.run(None, feed)[0]).to(device)  # (B, L, F, D)
        return SimpleNamespace(hidden_states={k: hidden[:, i] for i, k in enumerate(self.layers)})


def _validation_audio(audio, max_samples: int, seed: int = 0):
    """Random waveform batches (sizes 1 and 3; lengths from one frame's samples to the maximum)."""
    generator = torch.Generator().manual_seed(seed)
    shortest = audio.samples_for(1)
    batches = []
    for lengths in ([max_samples], [max_samples, shortest, (shortest + max_samples) // 3]):
        lengths = torch.tensor(lengths, dtype=torch.long)
        values = 0.1 * torch.randn(len(lengths), int(lengths.max()), generator=generator)
        values[torch.arange(values.shape[1])[None, :] >= lengths[:, None]] = 0.0  # zero padding, as collate pads
        batches.append((values, lengths))
    return batches


VALIDATION_TEXTS = (["I can't believe it!"], ["yes", "Get out of my way!", "what a lovely day it is today, really"])


def export_encoders(bundle: Bundle, folder, audio, text, tolerance: Optional[float] = None) -> Dict[str, Any]:
    """Write `audio` and `text` (the recipe's encoders, swrr.predict.engine.load_recipe_encoders)
    as ONNX into bundle `folder` (dynamic batch and length) and list them in its config.json,
    after checking them against PyTorch: features of random waveforms and sample sentences, and
    the head's logits on those features (max |logit difference| < tolerance, else BundleError
    and nothing written); -> the details recorded. The encoders are left running on onnxruntime."""
    tolerance = TOLERANCE if tolerance is None else tolerance
    require("onnx", "onnxscript")
    ort = require("onnx", "onnxruntime")
    folder = Path(folder)
    if audio.family.input_kind != "waveform":
        raise BundleError(f"{audio.name}: the {audio.family.label} encoder takes log-mel features over a fixed "
                          "window; --onnx-encoders exports waveform encoders only (the head exports with --onnx)")
    recipe, model = bundle.recipe, bundle.model.to("cpu").eval()
    max_samples = audio.samples_for(recipe.max_frames)
    waves = _validation_audio(audio, max_samples)
    tokens = [text.tokenize(t) for t in VALIDATION_TEXTS]
    for batch in tokens:
        batch.setdefault("token_type_ids", torch.zeros_like(batch["input_ids"]))
    batch_dim = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    samples = torch.export.Dim("samples", min=audio.samples_for(1), max=max_samples)
    token_dim = torch.export.Dim("tokens", min=2, max=recipe.max_tokens)
    partials = {part: folder / (name + ".partial") for part, name in ENCODER_FILES.items()}
    try:
        with torch.no_grad():
            program = _export(AudioGraph(audio), waves[1], ("input_values", "lengths"),
                              {"input_values": {0: batch_dim, 1: samples}, "lengths": {0: batch_dim}},
                              partials["audio_encoder"])
            _export(TextGraph(text), tuple(tokens[1][k] for k in TEXT_INPUTS), TEXT_INPUTS,
                    {k: {0: batch_dim, 1: token_dim} for k in TEXT_INPUTS}, partials["text_encoder"])
            torch_features = [(audio(*w), text(t)) for w, t in zip(waves, tokens)]
            sessions = {part: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                        for part, path in partials.items()}
            audio.model = OnnxEncoderModel(sessions["audio_encoder"], audio.model.config, audio.layers, "audio")
            text.model = OnnxEncoderModel(sessions["text_encoder"], text.model.config, text.layers, "text")
            onnx_features = [(audio(*w), text(t)) for w, t in zip(waves, tokens)]
            feature_diff = logit_diff = 0.0
            for (ta, tt), (oa, ot) in zip(torch_features, onnx_features):
                feature_diff = max(feature_diff, float((ta[0] - oa[0]).abs().max()), float((tt[0] - ot[0]).abs().max()))
                logit_diff = max(logit_diff, float((_head_logits(model, recipe, ta, tt)
                                                    - _head_logits(model, recipe, oa, ot)).abs().max()))
        if not logit_diff < tolerance:
            raise BundleError(f"{folder}: the ONNX encoders disagree with PyTorch (max |logit difference| of the head "
                              f"on their features {logit_diff:.3g}, the limit is {tolerance:g}; max |feature difference| "
                              f"{feature_diff:.3g}); not written")
        for part, path in partials.items():
            os.replace(path, folder / ENCODER_FILES[part])
    finally:
        for path in partials.values():
            path.unlink(missing_ok=True)
    details = {"opset": int(program.model.opset_imports.get("", 0)),
               "encoders_max_abs_logit_diff": logit_diff, "encoders_max_abs_feature_diff": feature_diff,
               "encoders_validated_on": "4 random waveforms (one frame to the full span) and 4 sentences",
               "encoders_source": {"audio": f"{audio.name}@{audio.revision or '?'}",
                                   "text": f"{text.name}@{text.revision or '?'}"}}
    for part, name in ENCODER_FILES.items():
        add_onnx(folder, part, name, details)
    return details


def _head_logits(model, recipe, audio_out, text_out) -> torch.Tensor:
    """The head's logits on encoder outputs ((features, lengths) each), zero padded to the recipe's
    max frames / tokens as the cache holds them."""
    import torch.nn.functional as F

    (audio, frames), (text, n_tokens) = audio_out, text_out
    audio = F.pad(audio.float(), (0, 0, 0, recipe.max_frames - audio.shape[-2]))  # (B, L, F, D)
    text = F.pad(text.float(), (0, 0, 0, recipe.max_tokens - text.shape[-2]))
    return model(audio, torch.as_tensor(frames), text, torch.as_tensor(n_tokens))


def use_onnx_encoders(bundle: Bundle, audio, text) -> bool:
    """Run `audio` and `text` (the recipe's encoders) on the bundle's ONNX encoders, when it has
    them; -> whether it had them."""
    paths = {part: bundle.onnx_file(part) for part in ENCODER_FILES}
    if any(path is None for path in paths.values()):
        return False
    ort = require("onnx", "onnxruntime")
    for encoder, part, role in ((audio, "audio_encoder", "audio"), (text, "text_encoder", "text")):
        session = ort.InferenceSession(str(paths[part]), providers=["CPUExecutionProvider"])
        encoder.model = OnnxEncoderModel(session, encoder.model.config, encoder.layers, role)
    return True
