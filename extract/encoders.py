"""Audio (WavLM) and text (BERT) encoders: waveforms -> frame features, transcripts -> token features.

Encoders load with transformers' Auto classes from a hub id or a local folder (never remote
code), or are built small and random by `tiny_encoders()` for offline tests and demos.

Batching does not change the numbers. WavLM-base (like wav2vec2-base and HuBERT-base,
`feat_extract_norm == "group"`) normalises each channel of its first conv layer over time
with GroupNorm, so in a zero-padded batch the padding enters the statistics of every frame.
`MaskedGroupNormConv` replaces that layer and takes the statistics over each row's valid
samples only; the later convs see no padding on valid frames (their receptive fields end
inside the valid region), and the attention mask zeroes padded frames before the positional
conv and keeps them out of self-attention. A padded row's valid frames then equal a
single-utterance run (tests/test_encoders.py).
"""
from __future__ import annotations

import hashlib

import contextlib
import shutil
import tempfile
import warnings
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from swrr.errors import SwrrError

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

    Same parameters (conv, layer_norm, activation) as the layer it wraps; while `valid_samples`
    is active, GroupNorm statistics come from each row's valid frames only. Without lengths it
    behaves exactly like the original layer.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.conv = layer.conv
        self.layer_norm = layer.layer_norm
        self.activation = layer.activation
        self.sample_lengths: Optional[torch.Tensor] = None

    @contextlib.contextmanager
    def valid_samples(self, lengths: torch.Tensor):
        """lengths: (B,) valid samples of each row of the next forward's input."""
        self.sample_lengths = lengths
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


# ---------------------------------------------------------------------------------- inputs
# Module functions, so DataLoader workers need only the feature extractor and tokenizer, not the models.
def prepare_waveform(feature_extractor, wave: np.ndarray) -> np.ndarray:
    """One utterance through the feature extractor (its normalisation, if any) -> float32 (S,).

    Applied per utterance before padding, so a normalising extractor sees no padding either."""
    values = feature_extractor(wave, sampling_rate=feature_extractor.sampling_rate, return_tensors="np")
    return np.asarray(values["input_values"][0], dtype=np.float32)


def tokenize(tokenizer, texts: Sequence[str], max_tokens: int) -> Dict[str, torch.Tensor]:
    """Transcripts -> the tokenizer's tensors (input_ids, attention_mask, ...), (B, T) padded to
    the longest, T <= max_tokens with [CLS] and [SEP] included."""
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
    """A transformers model in eval mode with layer selection, device and precision."""

    def __init__(self, model: nn.Module, name: str, revision: str, layer: int, random_init: bool):
        self.model = model.eval()
        self.name = name
        self.revision = revision
        self.random_init = random_init
        n_layers = model.config.num_hidden_layers
        if not (layer == -1 or 0 <= layer <= n_layers):
            raise EncoderError(f"--layer {layer} is out of range for {name}: it has {n_layers} layers; "
                               f"use 0..{n_layers} (0 = the transformer's input) or -1 for the last")
        self.layer = layer
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
        """Run the model; -> the chosen layer (B, max_length, D), zero past each row's length.

        lengths (B,) is on the device and max_length (= lengths.max()) known on the host, so
        nothing here waits for the GPU."""
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out = self.model(**inputs, output_hidden_states=self.layer != -1)
            hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
            valid = torch.arange(max_length, device=hidden.device)[None, :] < lengths[:, None]
            return hidden[:, :max_length].masked_fill(~valid[..., None], 0.0)


class AudioEncoder(_Encoder):
    """Waveforms (16 kHz mono) -> frame features (20 ms hop for WavLM), exact under padding."""

    def __init__(self, model, feature_extractor, name: str, revision: str, layer: int = -1,
                 random_init: bool = False):
        super().__init__(model, name, revision, layer, random_init)
        self.feature_extractor = feature_extractor
        self.sample_rate = int(feature_extractor.sampling_rate)
        self._kernels = list(model.config.conv_kernel)
        self._strides = list(model.config.conv_stride)
        self._first_conv = _install_masked_group_norm(model)

    def frames(self, n_samples):
        """Output frames for n_samples (int, numpy or torch integers); 0 when shorter than one frame."""
        n = np.asarray(n_samples, dtype=np.int64) if not torch.is_tensor(n_samples) else n_samples
        for kernel, stride in zip(self._kernels, self._strides):
            n = (n - kernel) // stride + 1
            n = n * (n > 0)
        return n

    def samples_for(self, n_frames: int) -> int:
        """The fewest samples that give n_frames (255 frames: 254 * 320 + 400 = 81,680 for WavLM)."""
        receptive, hop = 1, 1
        for kernel, stride in zip(self._kernels, self._strides):
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

    def __call__(self, input_values: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, np.ndarray]:
        """input_values (B, S), lengths (B,) -> features (B, F, D) on the device (zero past each
        row's frames), frames (B,) numpy."""
        frames = self.frames(lengths.numpy())
        input_values = input_values.to(self.device, non_blocking=True)
        lengths = lengths.to(self.device, non_blocking=True)
        mask = torch.arange(input_values.shape[1], device=self.device)[None, :] < lengths[:, None]
        exact = self._first_conv.valid_samples(lengths) if self._first_conv is not None else contextlib.nullcontext()
        with exact, warnings.catch_warnings():
            # transformers' WavLM attention mixes a bool padding mask with a float position bias
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            features = self._forward(self.frames(lengths), int(frames.max()), input_values=input_values,
                                     attention_mask=mask.long())
        return features, frames


class TextEncoder(_Encoder):
    """Transcripts -> token features ([CLS] and [SEP] included), at most max_tokens per row."""

    def __init__(self, model, tokenizer, name: str, revision: str, layer: int = -1,
                 random_init: bool = False, max_tokens: int = 50):
        super().__init__(model, name, revision, layer, random_init)
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def tokenize(self, texts: Sequence[str]) -> Dict[str, torch.Tensor]:
        return tokenize(self.tokenizer, texts, self.max_tokens)

    def __call__(self, tokens: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, np.ndarray]:
        """tokens from `tokenize` -> features (B, T, D) on the device (zero past each row's
        tokens), lengths (B,) numpy."""
        lengths = tokens["attention_mask"].sum(dim=1).cpu().numpy()  # no copy for host tokens (the pipeline's)
        tokens = {k: v.to(self.device, non_blocking=True) for k, v in tokens.items()}
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


_MODEL_INPUT = {"audio": ("input_values", "--audio-encoder wants a WavLM/wav2vec2-style model"),
                "text": ("input_ids", "--text-encoder wants a BERT-style model")}


def _load_model(role: str, id_or_path: str):
    """AutoModel weights for the "audio" or "text" role, refusing a model of the other kind."""
    from transformers import AutoModel

    model = _from_pretrained(AutoModel, role, id_or_path)
    expected, hint = _MODEL_INPUT[role]
    if getattr(model, "main_input_name", "") != expected:
        raise EncoderError(f"{id_or_path} is not usable as the {role} encoder (it takes {model.main_input_name!r}); {hint}")
    return model


def _revision(model, id_or_path: str) -> str:
    """The hub commit of the weights, or where they came from."""
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return str(commit)
    if Path(id_or_path).is_dir():
        return f"local:{Path(id_or_path).resolve()}"
    return "unknown"


def load_audio_encoder(id_or_path: str, layer: int = -1) -> AudioEncoder:
    """An audio encoder from a hub id or a local folder (model + feature extractor)."""
    from transformers import AutoFeatureExtractor

    model = _load_model("audio", id_or_path)
    feature_extractor = _from_pretrained(AutoFeatureExtractor, "audio", id_or_path)
    return AudioEncoder(model, feature_extractor, str(id_or_path), _revision(model, id_or_path), layer)


def load_text_encoder(id_or_path: str, layer: int = -1, max_tokens: int = 50) -> TextEncoder:
    """A text encoder from a hub id or a local folder (model + tokenizer)."""
    from transformers import AutoTokenizer

    model = _load_model("text", id_or_path)
    tokenizer = _from_pretrained(AutoTokenizer, "text", id_or_path)
    return TextEncoder(model, tokenizer, str(id_or_path), _revision(model, id_or_path), layer,
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


def tiny_encoders(layer: int = -1, max_tokens: int = 50) -> Tuple[AudioEncoder, TextEncoder]:
    """The offline preset: small random WavLM and BERT built in code, the same on every run."""
    audio_model, feature_extractor = build_tiny_audio()
    text_model, tokenizer = build_tiny_text()
    audio = AudioEncoder(audio_model, feature_extractor, TINY_AUDIO_NAME, "random", layer, random_init=True)
    text = TextEncoder(text_model, tokenizer, TINY_TEXT_NAME, "random", layer, random_init=True,
                       max_tokens=max_tokens)
    return audio, text


def load_encoders(preset: str = "pretrained", audio_encoder: str = DEFAULT_AUDIO_ENCODER,
                  text_encoder: str = DEFAULT_TEXT_ENCODER, layer: int = -1,
                  max_tokens: int = 50) -> Tuple[AudioEncoder, TextEncoder]:
    """Both encoders: `preset` "pretrained" loads the given ids/folders, "tiny" builds random ones."""
    if preset == "tiny":
        return tiny_encoders(layer, max_tokens)
    if preset != "pretrained":
        raise EncoderError(f"unknown encoders preset {preset!r}; choose one of {PRESETS}")
    return load_audio_encoder(audio_encoder, layer), load_text_encoder(text_encoder, layer, max_tokens)


def describe(encoders: List[_Encoder]) -> str:
    """One line naming the encoders, and saying loudly when they are random."""
    names = " + ".join(f"{e.name} ({e.dim}-d)" for e in encoders)
    if any(e.random_init for e in encoders):
        return f"{names}: RANDOM weights, features carry no pretrained knowledge"
    return names
