"""Audio and text encoders by family: waveforms -> frame features, transcripts -> token features.

Families are rows of a table (`AUDIO_FAMILIES`, `TEXT_FAMILIES`, keyed by config.model_type): how
to load the model, what it takes as input, and what makes a padded batch exact. Encoders load
with transformers' Auto classes from a hub id or a local folder (never remote code), or are built
small and random by `tiny_encoders()` for offline tests and demos. An architecture outside the
table is refused in one line naming the supported families.

Batching does not change the numbers (tests/test_encoders.py, every family):
- group-norm waveform models (`feat_extract_norm == "group"`: WavLM-base, HuBERT-base,
  wav2vec2-base) normalise each channel of the first conv over time, so zero padding enters the
  statistics of every frame: `MaskedGroupNormConv` takes them over each row's valid samples; the
  later convs see no padding on valid frames (their receptive fields end inside the valid
  region), and the attention mask zeroes padded frames before the positional conv and keeps them
  out of self-attention.
- layer-norm waveform models (`"layer"`: wav2vec2-large-lv60, data2vec-audio) normalise each frame
  alone: the attention mask suffices, except for data2vec-audio's multi-layer positional conv,
  whose padded frames are zeroed before every layer (`PositionalConvMask`).
- Whisper's encoder sees every clip padded to its 30 s window (`LogMelFrontEnd`): exact by
  construction, at 30 s of compute per clip; swrr keeps the clip's first frames.
- text encoders take the attention mask; each family's own special tokens count inside max_tokens.
The encoders return every chosen hidden state, (B, L, frames, D); see `_Encoder` for what layer L is.
"""
from __future__ import annotations

import hashlib

import contextlib
import shutil
import tempfile
import warnings
from importlib import resources
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from swrr.errors import SwrrError

from swrr import layers as hidden_layers
from swrr.layers import LayerSpec

DEFAULT_AUDIO_ENCODER = "microsoft/wavlm-base-plus"
DEFAULT_TEXT_ENCODER = "bert-base-uncased"
PRESETS = ("pretrained", "tiny")
TINY_AUDIO_NAME = "tiny-random-wavlm"
TINY_TEXT_NAME = "tiny-random-bert"
TINY_HIDDEN_SIZE = 64  # the same for both: the SWRR head runs one shared LSTM over both modalities
TINY_SEED = 0
TINY_VOCAB = Path(str(resources.files("swrr.extract") / "tiny_vocab.txt"))


class EncoderError(SwrrError):
    """An encoder that cannot be loaded or used as asked; the message says what to do.
    `advice` (part of the message) is swrr-extract's; another command may give its own instead."""

    def __init__(self, cause: str, advice: str = ""):
        super().__init__(cause + advice)
        self.cause, self.advice = cause, advice


# ---------------------------------------------------------------------------------- exact batching
class MaskedGroupNormConv(nn.Module):
    """Drop-in for the first conv layer of a group-norm feature encoder.

    Same parameters (conv, layer_norm, activation) as the layer it wraps; while `active` is
    entered, GroupNorm statistics come from each row's valid frames only. Without lengths it
    behaves exactly like the original layer.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.conv = layer.conv
        self.layer_norm = layer.layer_norm
        self.activation = layer.activation
        self.sample_lengths: Optional[torch.Tensor] = None

    @contextlib.contextmanager
    def active(self, sample_lengths: torch.Tensor, frame_lengths: Optional[torch.Tensor] = None):
        """sample_lengths: (B,) valid samples of each row of the next forward's input (the
        encoder's frame lengths are not needed here: an exact-batching step's common face)."""
        self.sample_lengths = sample_lengths
        try:
            yield
        finally:
            self.sample_lengths = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, S) waveforms -> (B, C, T) activations."""
        x = self.conv(x)
        if self.sample_lengths is None:
            return self.activation(self.layer_norm(x))
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        frames = torch.div(self.sample_lengths - kernel, stride, rounding_mode="floor") + 1
        return self.activation(masked_group_norm(x, frames, self.layer_norm))


def masked_group_norm(x: torch.Tensor, lengths: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm of x (B, C, T) with statistics over the first lengths[b] steps of each row.

    Computed in float32 (as autocast runs nn.GroupNorm) in one buffer of x's size: the same
    peak memory as the GroupNorm it replaces. Padded steps come out as garbage, never used.
    """
    b, c, t = x.shape
    g = norm.num_groups
    y = x.float().view(b, g, c // g, t)  # x is the conv output, used nowhere else: safe to overwrite
    pad = (torch.arange(t, device=x.device)[None, :] >= lengths[:, None]).view(b, 1, 1, t)
    count = (lengths.clamp(min=1) * (c // g)).to(y.dtype).view(b, 1, 1, 1)
    y.masked_fill_(pad, 0.0)
    mean = y.sum(dim=(2, 3), keepdim=True) / count
    y.sub_(mean).masked_fill_(pad, 0.0)
    var = torch.linalg.vector_norm(y, dim=(2, 3), keepdim=True).square() / count
    y.mul_(torch.rsqrt(var + norm.eps))
    y = y.view(b, c, t)
    if norm.affine:
        y.mul_(norm.weight.float()[None, :, None]).add_(norm.bias.float()[None, :, None])
    return y


def _install_masked_group_norm(model: nn.Module) -> Optional[MaskedGroupNormConv]:
    """Swap the first conv layer of a group-norm feature encoder; None when there is none to swap."""
    if getattr(model.config, "feat_extract_norm", None) != "group":
        return None  # "layer" feature encoders normalise each frame on its own: padding never leaks
    layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
    first = layers[0] if layers is not None and len(layers) else None
    if first is None or not isinstance(getattr(first, "layer_norm", None), nn.GroupNorm):
        raise EncoderError(f"{type(model).__name__}: a group-norm feature encoder without the "
                           "wav2vec2/WavLM layout (feature_extractor.conv_layers[0].layer_norm); "
                           "batched extraction could not be made exact")
    masked = MaskedGroupNormConv(first)
    layers[0] = masked
    return masked


class PositionalConvMask:
    """Zeroes the padded frames of the input of every layer of a multi-layer positional conv.

    data2vec-audio's positional embedding is a stack of convs (5 in the base model); transformers
    zeroes padded frames before the first only, so LayerNorm + GELU make them non-zero again and
    the next convs carry them into the last valid frames (measured: max difference 0.71 against a
    one-utterance run on a tiny model). With every layer's input masked, a padded row's convs see
    the zeros a one-utterance run's conv padding supplies. Forward pre-hooks: no module is swapped,
    so the state dict keeps its names."""

    def __init__(self, layers: Sequence[nn.Module]):
        self.frame_lengths: Optional[torch.Tensor] = None
        for layer in layers:
            layer.register_forward_pre_hook(self._zero_padding)

    def _zero_padding(self, module, args):
        if self.frame_lengths is None:
            return None
        x = args[0]  # (B, C, T)
        valid = torch.arange(x.shape[2], device=x.device)[None, :] < self.frame_lengths[:, None]
        return (x * valid[:, None, :].to(x.dtype), *args[1:])

    @contextlib.contextmanager
    def active(self, sample_lengths: torch.Tensor, frame_lengths: torch.Tensor):
        self.frame_lengths = frame_lengths
        try:
            yield
        finally:
            self.frame_lengths = None


def _positional_conv_step(model: nn.Module) -> PositionalConvMask:
    layers = getattr(getattr(getattr(model, "encoder", None), "pos_conv_embed", None), "layers", None)
    if layers is None:
        raise EncoderError(f"{type(model).__name__}: no encoder.pos_conv_embed.layers (the data2vec-audio layout); "
                           "batched extraction could not be made exact")
    return PositionalConvMask(layers)


# What each family needs so that a padded row equals a one-utterance run (steps named in the table).
EXACT_STEPS = {"masked-group-norm": _install_masked_group_norm, "masked-positional-conv": _positional_conv_step}


# ---------------------------------------------------------------------------------- families
@dataclass(frozen=True)
class AudioFamily:
    """How to load, feed and batch one transformers audio architecture exactly."""

    label: str  # named in messages and docs
    input_kind: str  # "waveform" (input_values + attention mask) | "log-mel" (input_features, fixed window)
    exact_steps: Tuple[str, ...] = ()  # keys of EXACT_STEPS, installed on the loaded model
    encoder_of: bool = False  # an encoder-decoder checkpoint: keep model.get_encoder() only
    rule: str = ""  # the exact-batching rule in words (docs/EXTRACTION.md shows the same)


@dataclass(frozen=True)
class TextFamily:
    """One transformers text architecture: the tensors its forward takes (no token type ids for some)."""

    label: str
    inputs: Tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")


_WAVE_RULE = ("masked GroupNorm statistics when feat_extract_norm='group', attention mask for the transformer")
AUDIO_FAMILIES: Dict[str, AudioFamily] = {  # by config.model_type
    "wavlm": AudioFamily("WavLM", "waveform", ("masked-group-norm",), rule=_WAVE_RULE),
    "hubert": AudioFamily("HuBERT", "waveform", ("masked-group-norm",), rule=_WAVE_RULE),
    "wav2vec2": AudioFamily("wav2vec2", "waveform", ("masked-group-norm",), rule=_WAVE_RULE),
    "data2vec-audio": AudioFamily("data2vec-audio", "waveform", ("masked-positional-conv",),
                                  rule="attention mask, padded frames zeroed before every positional conv layer"),
    "whisper": AudioFamily("Whisper encoder", "log-mel", encoder_of=True,
                           rule="every clip padded to the 30 s window by the feature extractor; first frames kept"),
}
TEXT_FAMILIES: Dict[str, TextFamily] = {
    "bert": TextFamily("BERT"),
    "roberta": TextFamily("RoBERTa", ("input_ids", "attention_mask")),
    "xlm-roberta": TextFamily("XLM-R", ("input_ids", "attention_mask")),
    "deberta-v2": TextFamily("DeBERTa-v2/v3"),
    "distilbert": TextFamily("DistilBERT", ("input_ids", "attention_mask")),
    "electra": TextFamily("ELECTRA"),
    "mpnet": TextFamily("MPNet", ("input_ids", "attention_mask")),
}
FAMILIES = {"audio": AUDIO_FAMILIES, "text": TEXT_FAMILIES}


def family_of(role: str, model_type: str, where: str):
    """The table entry of a model type; EncoderError in one line naming the supported families."""
    table = FAMILIES[role]
    if model_type not in table:
        names = ", ".join(f.label for f in table.values())
        raise EncoderError(f"{where} (a {model_type!r} model) is not usable as the {role} encoder; "
                           f"supported {role} families: {names}")
    return table[model_type]


# ---------------------------------------------------------------------------------- inputs
# Front ends run in DataLoader workers: they hold the feature extractor and frame arithmetic, not the model.
class WaveformFrontEnd:
    """Waveform models (wav2vec2-style conv feature encoder): input_values zero padded, frames from the convs."""

    def __init__(self, feature_extractor, kernels: Sequence[int], strides: Sequence[int]):
        self.feature_extractor = feature_extractor
        self.kernels, self.strides = list(kernels), list(strides)

    def frames(self, n_samples):
        """Output frames for n_samples (int, numpy or torch integers); 0 when shorter than one frame."""
        n = np.asarray(n_samples, dtype=np.int64) if not torch.is_tensor(n_samples) else n_samples
        for kernel, stride in zip(self.kernels, self.strides):
            n = (n - kernel) // stride + 1
            n = n * (n > 0)
        return n

    def samples_for(self, n_frames: int) -> int:
        """The fewest samples that give n_frames (255 frames: 254 * 320 + 400 = 81,680 for WavLM)."""
        receptive, hop = 1, 1
        for kernel, stride in zip(self.kernels, self.strides):
            receptive += (kernel - 1) * hop
            hop *= stride
        return receptive + (n_frames - 1) * hop

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        return prepare_waveform(self.feature_extractor, wave)

    @staticmethod
    def collate(waves: Sequence[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Zero-pad prepared waveforms: -> input_values (B, S_max) float32, lengths (B,) int64."""
        lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
        batch = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
        for i, w in enumerate(waves):
            batch[i, : len(w)] = torch.from_numpy(w)
        return batch, lengths

    @staticmethod
    def model_inputs(inputs: torch.Tensor, lengths: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The forward's keyword inputs for a collated batch on the device: values and attention mask."""
        mask = torch.arange(inputs.shape[1], device=inputs.device)[None, :] < lengths[:, None]
        return {"input_values": inputs, "attention_mask": mask.long()}


class LogMelFrontEnd:
    """Whisper: log-mel features over the fixed window (30 s: 3,000 mel frames -> 1,500 encoder frames).

    Every clip is padded to the whole window by the feature extractor, as Whisper was trained, so a
    batch is exact by construction; the cost is the window: a 5.1 s clip runs the encoder on 30 s
    (1,500 frames, of which swrr keeps the clip's first 255). Decision: a clip of n samples has
    n // hop encoder frames (hop = mel hop x conv stride = 320 samples, 20 ms): the frames whose
    20 ms lie inside the clip."""

    def __init__(self, feature_extractor, hop: int, window_frames: int):
        self.feature_extractor = feature_extractor
        self.hop, self.window_frames = int(hop), int(window_frames)

    def frames(self, n_samples):
        if torch.is_tensor(n_samples):
            return (n_samples // self.hop).clamp(max=self.window_frames)
        return np.minimum(np.asarray(n_samples, dtype=np.int64) // self.hop, self.window_frames)

    def samples_for(self, n_frames: int) -> int:
        return n_frames * self.hop

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        return np.asarray(wave, dtype=np.float32)  # the mel features are made per batch in collate

    def collate(self, waves: Sequence[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> input_features (B, mel bins, window) float32, lengths (B,) samples."""
        fe = self.feature_extractor
        features = fe(list(waves), sampling_rate=fe.sampling_rate, return_tensors="np")["input_features"]
        return torch.from_numpy(np.asarray(features, dtype=np.float32)), \
            torch.tensor([len(w) for w in waves], dtype=torch.long)

    @staticmethod
    def model_inputs(inputs: torch.Tensor, lengths: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"input_features": inputs}  # no mask: Whisper always sees its whole window


def _waveform_front_end(model: nn.Module, feature_extractor) -> WaveformFrontEnd:
    return WaveformFrontEnd(feature_extractor, model.config.conv_kernel, model.config.conv_stride)


def _log_mel_front_end(encoder: nn.Module, feature_extractor) -> LogMelFrontEnd:
    stride = encoder.conv1.stride[0] * encoder.conv2.stride[0]  # mel frames per encoder frame
    return LogMelFrontEnd(feature_extractor, feature_extractor.hop_length * stride, encoder.config.max_source_positions)


FRONT_ENDS = {"waveform": _waveform_front_end, "log-mel": _log_mel_front_end}  # AudioFamily.input_kind


def prepare_waveform(feature_extractor, wave: np.ndarray) -> np.ndarray:
    """One utterance through the feature extractor (its normalisation, if any) -> float32 (S,).

    Applied per utterance before padding, so a normalising extractor sees no padding either."""
    values = feature_extractor(wave, sampling_rate=feature_extractor.sampling_rate, return_tensors="np")
    return np.asarray(values["input_values"][0], dtype=np.float32)


def tokenize(tokenizer, texts: Sequence[str], max_tokens: int) -> Dict[str, torch.Tensor]:
    """Transcripts -> the tokenizer's tensors (input_ids, attention_mask, ...), (B, T) padded to
    the longest, T <= max_tokens with the tokenizer's own special tokens ([CLS]/[SEP], <s>/</s>) included."""
    return dict(tokenizer(list(texts), max_length=max_tokens, truncation=True, padding=True, return_tensors="pt"))


# ---------------------------------------------------------------------------------- encoders
def weights_digest(model: nn.Module) -> str:
    """BLAKE2b-128 of a model's weights (every tensor of its state dict, by name, as stored bytes):
    two folders with the same digest hold the same model, wherever they lie and whatever their
    revision label; recorded in the cache's recipe and checked by swrr-predict."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _Encoder:
    """A transformers model in eval mode with its hidden-state selection, device and precision.

    Decision: "layer L" is `hidden_states[L]` as transformers returns it with output_hidden_states,
    for every family (0 = the transformer's input, L = the last layer). For stable-layer-norm
    models (wav2vec2-large-lv60, HuBERT/WavLM-large) hidden_states[L] is taken before the encoder's
    final LayerNorm, while last_hidden_state is after it; swrr stores hidden_states[L], so `--layers
    all` and `--layers last` agree on the last layer and every stored layer is one tensor of one list.
    (Whisper's hidden_states[L] is its last_hidden_state, final LayerNorm included, in transformers 5.)
    """

    def __init__(self, model: nn.Module, name: str, revision: str, layers: LayerSpec, random_init: bool):
        self.model = model.eval()
        self.name = name
        self.revision = revision
        self.random_init = random_init
        self.num_layers = int(model.config.num_hidden_layers)
        try:
            self.layers = hidden_layers.resolve(layers, self.num_layers, name)
        except hidden_layers.LayerError as exc:
            raise EncoderError(str(exc)) from None
        self.device = torch.device("cpu")
        self.fp16 = False
        self.weights_digest = weights_digest(self.model)  # as loaded, before any device or dtype move

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def to(self, device, fp16: bool = False) -> "_Encoder":
        """Move to `device`; fp16 autocast is used only on CUDA."""
        self.device = torch.device(device)
        self.fp16 = fp16 and self.device.type == "cuda"
        self.model.to(self.device)
        return self

    def _forward(self, lengths: torch.Tensor, max_length: int, **inputs) -> torch.Tensor:
        """Run the model; -> the chosen hidden states (B, L, max_length, D), zero past each row's length.

        lengths (B,) is on the device and max_length (= lengths.max()) known on the host, so
        nothing here waits for the GPU."""
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out = self.model(**inputs, output_hidden_states=True)
            hidden = torch.stack([out.hidden_states[k][:, :max_length] for k in self.layers], dim=1)
            valid = torch.arange(max_length, device=hidden.device)[None, :] < lengths[:, None]
            return hidden.masked_fill(~valid[:, None, :, None], 0.0)


class AudioEncoder(_Encoder):
    """Audio (16 kHz mono) -> frame features (20 ms for every family of the table), exact under padding."""

    def __init__(self, model, feature_extractor, name: str, revision: str, layers: LayerSpec = -1,
                 random_init: bool = False):
        self.family = family_of("audio", model.config.model_type, name)
        if self.family.encoder_of:
            model = model.get_encoder()
        super().__init__(model, name, revision, layers, random_init)
        self.feature_extractor = feature_extractor
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.front_end = FRONT_ENDS[self.family.input_kind](model, feature_extractor)
        self._steps = [s for s in (EXACT_STEPS[step](model) for step in self.family.exact_steps) if s is not None]

    @property
    def max_frames(self) -> Optional[int]:
        """The most frames one clip can give (Whisper: its window); None when unbounded."""
        return getattr(self.front_end, "window_frames", None)

    def frames(self, n_samples):
        return self.front_end.frames(n_samples)

    def samples_for(self, n_frames: int) -> int:
        return self.front_end.samples_for(n_frames)

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        return self.front_end.prepare(wave)

    def collate(self, prepared: Sequence[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.front_end.collate(prepared)

    def __call__(self, inputs: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, np.ndarray]:
        """inputs (B, S) or (B, mel, window) from `collate`, lengths (B,) samples -> features
        (B, L, F, D) on the device (zero past each row's frames), frames (B,) numpy."""
        frames = self.frames(lengths.numpy())
        inputs = inputs.to(self.device, non_blocking=True)
        lengths = lengths.to(self.device, non_blocking=True)
        frame_lengths = self.frames(lengths)
        feed = self.front_end.model_inputs(inputs, lengths)
        with contextlib.ExitStack() as exact, warnings.catch_warnings():
            for step in self._steps:
                exact.enter_context(step.active(lengths, frame_lengths))
            # transformers' WavLM attention mixes a bool padding mask with a float position bias
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            features = self._forward(frame_lengths, int(frames.max()), **feed)
        return features, frames


class TextEncoder(_Encoder):
    """Transcripts -> token features (special tokens included), at most max_tokens per row."""

    def __init__(self, model, tokenizer, name: str, revision: str, layers: LayerSpec = -1,
                 random_init: bool = False, max_tokens: int = 50):
        self.family = family_of("text", model.config.model_type, name)
        super().__init__(model, name, revision, layers, random_init)
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def tokenize(self, texts: Sequence[str]) -> Dict[str, torch.Tensor]:
        return tokenize(self.tokenizer, texts, self.max_tokens)

    def __call__(self, tokens: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, np.ndarray]:
        """tokens from `tokenize` -> features (B, L, T, D) on the device (zero past each row's
        tokens), lengths (B,) numpy."""
        lengths = tokens["attention_mask"].sum(dim=1).cpu().numpy()  # no copy for host tokens (the pipeline's)
        tokens = {k: v.to(self.device, non_blocking=True) for k, v in tokens.items() if k in self.family.inputs}
        features = self._forward(tokens["attention_mask"].sum(dim=1), int(lengths.max()), **tokens)
        return features, lengths


# ---------------------------------------------------------------------------------- loading
def _from_pretrained(loader, role: str, id_or_path: str):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its "Loading weights" bars are debris in a log; the summary says what loaded
    try:
        return loader.from_pretrained(str(id_or_path))
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        if Path(id_or_path).is_dir():
            raise EncoderError(f"{id_or_path}: cannot load the {role} encoder from this folder ({reason})") from exc
        raise EncoderError(
            f"cannot load the {role} encoder {id_or_path!r}: it is neither a local folder nor reachable "
            f"on the Hugging Face hub ({reason})", ". Download it once with network access, pass a local "
            "folder, or use --encoders tiny for an offline run with random weights") from exc


def _load_model(role: str, id_or_path: str):
    """AutoModel weights for the "audio" or "text" role; an architecture outside the role's family
    table is refused from its config, before any weights are read."""
    from transformers import AutoConfig, AutoModel

    config = _from_pretrained(AutoConfig, role, id_or_path)
    family_of(role, config.model_type, str(id_or_path))
    return _from_pretrained(AutoModel, role, id_or_path)


def _revision(model, id_or_path: str) -> str:
    """The hub commit of the weights, or where they came from."""
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return str(commit)
    if Path(id_or_path).is_dir():
        return f"local:{Path(id_or_path).resolve()}"
    return "unknown"


def load_audio_encoder(id_or_path: str, layers: LayerSpec = -1) -> AudioEncoder:
    """An audio encoder from a hub id or a local folder (model + feature extractor)."""
    from transformers import AutoFeatureExtractor

    model = _load_model("audio", id_or_path)
    feature_extractor = _from_pretrained(AutoFeatureExtractor, "audio", id_or_path)
    return AudioEncoder(model, feature_extractor, str(id_or_path), _revision(model, id_or_path), layers)


def load_text_encoder(id_or_path: str, layers: LayerSpec = -1, max_tokens: int = 50) -> TextEncoder:
    """A text encoder from a hub id or a local folder (model + tokenizer)."""
    from transformers import AutoTokenizer

    model = _load_model("text", id_or_path)
    tokenizer = _from_pretrained(AutoTokenizer, "text", id_or_path)
    return TextEncoder(model, tokenizer, str(id_or_path), _revision(model, id_or_path), layers,
                       max_tokens=max_tokens)


def build_tiny_audio(hidden_size: int = TINY_HIDDEN_SIZE, seed: int = TINY_SEED):
    """A small random WavLM (-> model, feature extractor) with the real WavLM-base conv front end
    (kernels, strides, group norm: 20 ms frames, 255 frames = 81,680 samples), 32 conv channels
    and 2 transformer layers."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    config = WavLMConfig(hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=2 * hidden_size, conv_dim=(32,) * 7,
                         num_conv_pos_embedding_groups=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WavLMModel(config).eval()
    feature_extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=False,
                                                 return_attention_mask=True)
    return model, feature_extractor


def build_tiny_text(hidden_size: int = TINY_HIDDEN_SIZE, seed: int = TINY_SEED):
    """A small random BERT (-> model, WordPiece tokenizer over extract/tiny_vocab.txt), 2 layers."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    with tempfile.TemporaryDirectory() as folder:
        # from_pretrained on a folder holding vocab.txt works the same on transformers 4.x and 5.x
        shutil.copy(TINY_VOCAB, Path(folder) / "vocab.txt")
        tokenizer = BertTokenizerFast.from_pretrained(folder, do_lower_case=True)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=2 * hidden_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config).eval()
    return model, tokenizer


def tiny_encoders(layers: LayerSpec = -1, max_tokens: int = 50,
                  text_layers: Optional[LayerSpec] = None) -> Tuple[AudioEncoder, TextEncoder]:
    """The offline preset: small random WavLM and BERT built in code, the same on every run.
    `layers` picks the hidden states of both, or of the audio one when `text_layers` is given."""
    audio_model, feature_extractor = build_tiny_audio()
    text_model, tokenizer = build_tiny_text()
    audio = AudioEncoder(audio_model, feature_extractor, TINY_AUDIO_NAME, "random", layers, random_init=True)
    text = TextEncoder(text_model, tokenizer, TINY_TEXT_NAME, "random", layers if text_layers is None else text_layers,
                       random_init=True, max_tokens=max_tokens)
    return audio, text


def load_encoders(preset: str = "pretrained", audio_encoder: str = DEFAULT_AUDIO_ENCODER,
                  text_encoder: str = DEFAULT_TEXT_ENCODER, layers: LayerSpec = -1,
                  max_tokens: int = 50, text_layers: Optional[LayerSpec] = None) -> Tuple[AudioEncoder, TextEncoder]:
    """Both encoders: `preset` "pretrained" loads the given ids/folders, "tiny" builds random ones.
    `layers` picks the hidden states of both, or of the audio one when `text_layers` is given."""
    text_layers = layers if text_layers is None else text_layers
    if preset == "tiny":
        return tiny_encoders(layers, max_tokens, text_layers)
    if preset != "pretrained":
        raise EncoderError(f"unknown encoders preset {preset!r}; choose one of {PRESETS}")
    return load_audio_encoder(audio_encoder, layers), load_text_encoder(text_encoder, text_layers, max_tokens)


def describe(encoders: List[_Encoder]) -> str:
    """One line naming the encoders, and saying loudly when they are random."""
    names = " + ".join(f"{e.name} ({e.family.label}, {e.dim}-d, {_spelled(e.layers)})" for e in encoders)
    if any(e.random_init for e in encoders):
        return f"{names}: RANDOM weights, features carry no pretrained knowledge"
    return names


def _spelled(layers: Sequence[int]) -> str:
    if len(layers) == 1:
        return f"hidden state {layers[0]}"
    if list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"hidden states {layers[0]}-{layers[-1]}"
    return "hidden states " + ",".join(map(str, layers))
