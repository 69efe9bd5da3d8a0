"""The SWRR head (Zhao et al., INTERSPEECH 2023, section 2) over cached WavLM/BERT features.

    audio (B, N, Da) --+                                     +--> attention (B, T, N)
                       +- SharedLSTM -> X (B,N,D), Y (B,T,D) -+- SliWa -> Z (B, T, D)
    text  (B, T, Dt) --+                                        |
                          CNN levels (Conv2d+BN+LeakyReLU+MaxPool) over Z as a 1-channel image,
                          HRS picks one map per level and HRFR adds it to the next level's output
                                                                |
                                                  FMC (or linear) -> logits (B, num_outputs)

Every row of the paper's Table 3 is a switch of `SWRRConfig` (see `ABLATIONS`); the design choices
the paper leaves open are written in docs/MODEL.md and marked "Decision:" here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ATTENTIONS = ("sliding", "full")
MODALITIES = ("both", "audio", "text")
HRFR_MODES = ("both", "global", "local", "none")
CLASSIFIERS = ("fmc", "linear")
LSTM_PADDINGS = ("pack", "align")
PADDED_WINDOWS = ("fuse", "drop")
REUSE_WEIGHTS = ("one", "score")


@dataclass
class SWRRConfig:
    audio_dim: int = 768  # from the cache
    text_dim: int = 768
    max_frames: int = 255  # N
    max_tokens: int = 50  # T
    num_outputs: int = 4  # classes; 1 = regression
    lstm_hidden: int = 384  # per direction -> D = 2 * lstm_hidden
    attn_dim: Optional[int] = None  # d of q, k, v; None = D (0 is refused, not read as None)
    window: int = 10  # omega_X (omega_Y = h_Y = 1)
    hop: int = 5  # h_X; 0 = every token sees the same first `window` frames
    attention: str = "sliding"  # "sliding" | "full"
    padded_windows: str = "fuse"  # "fuse" | "drop": windows at padded token positions (see SliWa)
    modalities: str = "both"  # "both" | "audio" | "text"
    cnn_channels: Tuple[int, ...] = (16, 32, 64, 64)  # one CNN level per entry
    cnn_kernel: int = 3
    hrfr: str = "both"  # "both" | "global" | "local" | "none"
    screen_ratio: float = 0.5  # H' = ceil(r H), W' = ceil(r W)
    local_kernel: int = 3  # the 1D conv of the HRS local branch
    heaviside_temperature: float = 1.0  # surrogate slope of the Heaviside steps in backward
    reuse_weight: str = "one"  # "one" | "score": HRFR reuses the chosen map x 1 or x p_max (eq. 12)
    classifier: str = "fmc"  # "fmc" | "linear"
    dropout: float = 0.1  # on the LSTM outputs and before the classifier
    lstm_padding: str = "align"  # "align" | "pack": how the BiLSTM skips padding (same numbers)

    def __post_init__(self):
        self.cnn_channels = tuple(int(c) for c in self.cnn_channels)  # JSON gives lists
        for name, allowed in (("attention", ATTENTIONS), ("modalities", MODALITIES),
                              ("hrfr", HRFR_MODES), ("classifier", CLASSIFIERS),
                              ("lstm_padding", LSTM_PADDINGS), ("padded_windows", PADDED_WINDOWS),
                              ("reuse_weight", REUSE_WEIGHTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"SWRRConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        positive = ("audio_dim", "text_dim", "max_frames", "max_tokens", "num_outputs", "lstm_hidden",
                    "window", "cnn_kernel", "local_kernel")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SWRRConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.attn_dim is not None and int(self.attn_dim) < 1:
            raise ValueError(f"SWRRConfig.attn_dim must be >= 1, or None for D = 2 * lstm_hidden, "
                             f"got {self.attn_dim!r}")
        if self.hop < 0:
            raise ValueError(f"SWRRConfig.hop must be >= 0, got {self.hop}")
        if not self.cnn_channels or min(self.cnn_channels) < 1:
            raise ValueError(f"SWRRConfig.cnn_channels needs at least one level of >= 1 channels, "
                             f"got {self.cnn_channels}")
        if not 0.0 < self.screen_ratio <= 1.0:
            raise ValueError(f"SWRRConfig.screen_ratio must be in (0, 1], got {self.screen_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SWRRConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def model_dim(self) -> int:
        """D: width of the shared BiLSTM output."""
        return 2 * self.lstm_hidden


# The rows of the paper's Table 3, as overrides of the full model's config.
ABLATIONS: Dict[str, Dict] = {
    "audio-only": {"modalities": "audio"},
    "text-only": {"modalities": "text"},
    "sliwa-full": {"attention": "full"},
    "window-50": {"window": 50},
    "no-hrfr": {"hrfr": "none"},
    "hrfr-global": {"hrfr": "global"},
    "hrfr-local": {"hrfr": "local"},
    "linear": {"classifier": "linear"},
}

# Readings of what the paper leaves open, as switches run and reported like Table 3 rows. Not rows
# of the paper's grid: `--ablation all` runs ABLATIONS only (docs/MODEL.md says why).
READINGS: Dict[str, Dict] = {
    "drop-padded-windows": {"padded_windows": "drop"},
    "reuse-score": {"reuse_weight": "score"},
}


def ablation_config(base: SWRRConfig, name: str) -> SWRRConfig:
    """`base` with the overrides of one Table 3 row or reading; "swrr" (the full model) gives `base`."""
    if name == "swrr":
        return replace(base)
    overrides = {**ABLATIONS, **READINGS}
    if name not in overrides:
        raise ValueError(f"unknown ablation {name!r}; valid names: {', '.join(['swrr', *overrides])}")
    return replace(base, **overrides[name])


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def lengths_to_mask(lengths: torch.Tensor, size: int, device=None) -> torch.Tensor:
    """(B,) lengths -> (B, size) bool on `device` (default: the lengths'), True on valid positions.

    Host lengths are copied without waiting for the device (asynchronously when pinned)."""
    device = lengths.device if device is None else device
    return torch.arange(size, device=device)[None, :] < lengths.to(device, non_blocking=True)[:, None]


def heaviside(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Exact step (x > 0) forward; the gradient of sigmoid(x / temperature) backward.

    Decision: the counts of HRS (eq. 10) are built from Heaviside steps, which have no gradient;
    this straight-through surrogate lets the local branch's 1D conv learn without changing any value.
    """
    soft = torch.sigmoid(x / temperature)
    return (x > 0).to(soft.dtype) + (soft - soft.detach())


class SharedLSTM(nn.Module):
    """One BiLSTM whose weights serve both modalities (paper 2.1, redundant filtering).

    forward(audio (B, N, Da), audio_len (B,), text (B, T, Dt), text_len (B,))
        -> X (B, N, D), Y (B, T, D), D = 2 * hidden; zeros at padded positions.
    Padding never enters the recurrence of a valid position, in either of two ways (`padding`):
      "align"  each direction is one LSTM call on the B rows of the padded batch: the forward
               direction reads the batch as it is, the backward direction a copy whose rows hold
               their valid frames in reverse order (its padding comes after them, as in the forward
               direction); the same index gathers its outputs back. Static shapes and no host round
               trip (CUDA graphs), and the whole-batch LSTM kernels: faster than "pack" on CPU and
               GPU alike. (Until issue 22 it was one bidirectional call on 2B rows: twice the work.)
      "pack"   packed sequences: the reference; needs the lengths on the host, shapes vary.
    Both keep nn.LSTM's parameters (bidirectional, state_dict keys unchanged).
    Decision: when Da != Dt, a linear layer maps the audio to Dt so one LSTM can read both.
    """

    def __init__(self, audio_dim: int, text_dim: int, hidden: int, padding: str = "align"):
        super().__init__()
        if padding not in LSTM_PADDINGS:
            raise ValueError(f"SharedLSTM padding must be one of {LSTM_PADDINGS}, got {padding!r}")
        self.padding = padding
        self.audio_proj = nn.Linear(audio_dim, text_dim) if audio_dim != text_dim else nn.Identity()
        self.lstm = nn.LSTM(text_dim, hidden, batch_first=True, bidirectional=True)

    def run(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, Dt), (B,) lengths (host or device) -> (B, L, D)."""
        if self.padding == "pack":
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
            return out
        size = x.shape[1]
        lengths = lengths.to(x.device, non_blocking=True)
        # step t of the backward direction reads frame len-1-t (negative: padding, clamped; it comes
        # after every valid step, so it never reaches a valid output); the map is its own inverse
        reverse = lengths[:, None] - 1 - torch.arange(size, device=x.device)[None, :]
        forward = self.direction(x, "")
        backward = shift_rows(self.direction(shift_rows(x, reverse), "_reverse"), reverse)
        valid = lengths_to_mask(lengths, size)[..., None].to(forward.dtype)
        return torch.cat([forward, backward], dim=-1) * valid

    def direction(self, x: torch.Tensor, suffix: str) -> torch.Tensor:
        """One direction of the BiLSTM (its weights "..._l0" + suffix) over (B, L, Dt) -> (B, L, hidden):
        what nn.LSTM runs for that direction, on these rows only."""
        lstm = self.lstm
        weights = [getattr(lstm, f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if x.is_cuda:  # cuDNN reads one contiguous buffer per call; nn.LSTM's holds both directions
            flat = torch.cat([w.reshape(-1) for w in weights]).split([w.numel() for w in weights])
            weights = [part.view_as(w) for part, w in zip(flat, weights)]
        zeros = x.new_zeros(1, x.shape[0], lstm.hidden_size)
        out, _, _ = torch.lstm(x, (zeros, zeros), weights, True, 1, 0.0, self.training, False, True)
        return out

    def encode_audio(self, audio, audio_len):
        return self.run(self.audio_proj(audio), audio_len)

    def forward(self, audio, audio_len, text, text_len):
        return self.encode_audio(audio, audio_len), self.run(text, text_len)


def shift_rows(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """out[b, t] = x[b, source[b, t]] for (B, L, D) x and (B, L) positions (clamped into range)."""
    source = source.clamp(0, x.shape[1] - 1)
    return x.gather(1, source[..., None].expand(-1, -1, x.shape[2]))


class SliWa(nn.Module):
    """Sliding window attention (paper 2.2, eqs. 1-7): token position i attends audio window i.

    forward(x (B, N, D), x_mask (B, N) bool, y (B, T, D), y_mask (B, T) bool)
        -> fused (B, T, D): LayerNorm(y_i + W_z z_i) on every kept row, zeros elsewhere,
           attention (B, T, N): each kept row's softmax coefficients at their frames, zeros elsewhere.
    Window i covers frames i*hop .. i*hop + window - 1 (omega_Y = h_Y = 1). All windows are
    gathered at once (eq. 7). mode="full" is standard cross-attention of every position over all
    frames. A window with no valid frame yields z_i = 0 (never NaN).
    padded_windows: what happens at token positions past the text length.
      "fuse"  (default) every window over valid audio is fused, as the paper's fixed T windows are
              (eq. 2): a padded position uses a learned "no token" vector in place of y_i, in the
              query (eq. 3) and the residual (eq. 6), so padding content never enters. Rows that
              are padding in both text and audio are zero.
      "drop"  padded positions are zero rows: audio past frame (len-1)*hop + window is never fused.
    Decision: "full" mode follows the same rule (every padded position is a row attending all frames).
    """

    def __init__(self, dim: int, attn_dim: int, window: int = 10, hop: int = 5, mode: str = "sliding",
                 padded_windows: str = "fuse"):
        super().__init__()
        if mode not in ATTENTIONS:
            raise ValueError(f"SliWa mode must be one of {ATTENTIONS}, got {mode!r}")
        if padded_windows not in PADDED_WINDOWS:
            raise ValueError(f"SliWa padded_windows must be one of {PADDED_WINDOWS}, got {padded_windows!r}")
        self.window, self.hop, self.mode, self.padded_windows = window, hop, mode, padded_windows
        if padded_windows == "fuse":  # zeros: no random draw, so the other weights' init is unchanged
            self.no_token = nn.Parameter(torch.zeros(dim))
        self.scale = 1.0 / math.sqrt(attn_dim)
        self.w_q = nn.Linear(dim, attn_dim)
        self.w_kv = nn.Linear(dim, 2 * attn_dim)
        self.w_z = nn.Linear(attn_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def window_index(self, num_windows: int, device=None) -> torch.Tensor:
        """(num_windows, window) frame index of every window: row i = i*hop + [0, window)."""
        starts = torch.arange(num_windows, device=device) * self.hop
        return starts[:, None] + torch.arange(self.window, device=device)[None, :]

    def forward(self, x, x_mask, y, y_mask):
        b, n, _ = x.shape
        t = y.shape[1]
        fuse_padding = self.padded_windows == "fuse"
        if fuse_padding:
            y = torch.where(y_mask[..., None], y, self.no_token.to(y.dtype))
        q = self.w_q(y) * self.scale  # (B, T, d)
        k, v = self.w_kv(x).chunk(2, dim=-1)  # (B, N, d) each
        if self.mode == "full":
            scores = torch.einsum("btd,bnd->btn", q, k)
            weights = masked_softmax(scores, x_mask[:, None, :]).to(v.dtype)  # (B, T, N)
            z = torch.einsum("btn,bnd->btd", weights, v)
            attention = weights
            has_frame = x_mask.any(dim=1, keepdim=True).expand(b, t)  # (B, T)
        else:
            index = self.window_index(t, x.device)  # (T, w)
            needed = (t - 1) * self.hop + self.window  # index.max() + 1, without a device sync
            if needed > n:  # Decision: e.g. window 50 -> pad with masked frames so eq. (1) holds
                k, v = F.pad(k, (0, 0, 0, needed - n)), F.pad(v, (0, 0, 0, needed - n))
                x_mask = F.pad(x_mask, (0, needed - n), value=False)
            k_win, v_win, mask_win = k[:, index], v[:, index], x_mask[:, index]  # (B, T, w, d), (B, T, w)
            scores = torch.einsum("btd,btwd->btw", q, k_win)
            weights = masked_softmax(scores, mask_win).to(v.dtype)  # (B, T, w)
            z = torch.einsum("btw,btwd->btd", weights, v_win)
            attention = scatter_windows(weights, index, max(n, needed))[:, :, :n]
            has_frame = mask_win.any(dim=2)  # (B, T): window i holds a valid frame
        fused = self.norm(y + self.w_z(z))  # eq. (6)
        keep = (y_mask | has_frame if fuse_padding else y_mask)[..., None]
        return fused * keep.to(fused.dtype), attention * keep.to(attention.dtype)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis at True positions; exact zeros where no position is valid."""
    scores = scores.float().masked_fill(~mask, torch.finfo(torch.float32).min)
    return torch.softmax(scores, dim=-1) * mask  # an all-masked row was uniform, now zero


def scatter_windows(weights: torch.Tensor, index: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, w) window coefficients -> (B, T, length), each at its frame, zeros elsewhere."""
    out = weights.new_zeros(weights.shape[0], weights.shape[1], length)
    return out.scatter_add(2, index.expand_as(weights), weights)


class HRS(nn.Module):
    """High-response feature map screening (paper 2.4, eqs. 8-12) and the map it hands to HRFR.

    scores(z (B, C, H, W)) -> alpha (B, C) or None, beta (B, C) or None, q (B, C)
        alpha = sigmoid(W2 LeakyReLU(W1 GAP(z)))                       (global branch, eqs. 8-9)
        z~ = adaptive_avg_pool(conv1d_shared(z), (H', W'))            (local branch, screening)
        frame score s_i = #{j : z~_ij > mean_j z~_i};  beta = #{i : s_i > mean_i s_i}   (eq. 10)
        q = H' * alpha + beta                                            (eq. 11)
    forward(z) -> reused (B, 1, H, W): z[b, argmax softmax(q)] times its weight, index (B,) (eq. 12).
    reuse_weight: the weight of the "score-weighted key feature map" (docs/MODEL.md weighs the readings)
      "one"   (default) 1 + (p - p.detach()), p the map's softmax weight: the value is exactly the
              chosen map, while the gradient reaches both branches through p.
      "score" p itself: the reused map is p_max * Z_gamma_max.
    """

    def __init__(self, channels: int, mode: str = "both", screen_ratio: float = 0.5,
                 local_kernel: int = 3, temperature: float = 1.0, reuse_weight: str = "one"):
        super().__init__()
        if mode not in ("both", "global", "local"):
            raise ValueError(f"HRS mode must be 'both', 'global' or 'local', got {mode!r}")
        if reuse_weight not in REUSE_WEIGHTS:
            raise ValueError(f"HRS reuse_weight must be one of {REUSE_WEIGHTS}, got {reuse_weight!r}")
        self.mode, self.screen_ratio, self.temperature = mode, screen_ratio, temperature
        self.reuse_weight = reuse_weight
        if mode in ("both", "global"):
            hidden = max(1, channels // 2)
            self.w1 = nn.Linear(channels, hidden)
            self.w2 = nn.Linear(hidden, channels)
        if mode in ("both", "local"):  # one filter shared by all maps and frames; no bias, since
            # eq. (10) compares each point with its frame mean, a constant shift cancels
            # (its weight runs through row_filter; the Conv2d keeps the parameter's name and init)
            self.local = nn.Conv2d(1, 1, (1, local_kernel), padding=(0, local_kernel // 2), bias=False)

    def screened_size(self, h: int, w: int) -> Tuple[int, int]:
        return math.ceil(self.screen_ratio * h), math.ceil(self.screen_ratio * w)

    def scores(self, z: torch.Tensor):
        b, c, h, w = z.shape
        h_kept, w_kept = self.screened_size(h, w)
        alpha = beta = None
        q = z.new_zeros(b, c, dtype=torch.float32)
        if self.mode in ("both", "global"):
            alpha = torch.sigmoid(self.w2(F.leaky_relu(self.w1(z.mean(dim=(2, 3)))))).float()
            q = q + h_kept * alpha
        if self.mode in ("both", "local"):
            filtered = row_filter(z, self.local.weight.reshape(-1))
            # Decision: screening to H' x W' = average pooling of the filtered map to that size
            filtered = F.adaptive_avg_pool2d(filtered, (h_kept, w_kept))
            filtered = filtered.float()
            blink = heaviside(filtered - filtered.mean(dim=3, keepdim=True), self.temperature)
            frame_score = blink.sum(dim=3)  # (B, C, H')
            keyframe = heaviside(frame_score - frame_score.mean(dim=2, keepdim=True), self.temperature)
            beta = keyframe.sum(dim=2)
            q = q + beta
        return alpha, beta, q

    def forward(self, z: torch.Tensor):
        _, _, q = self.scores(z)
        p = torch.softmax(q, dim=1)
        index = p.argmax(dim=1)  # (B,)
        rows = torch.arange(z.shape[0], device=z.device)
        weight = p[rows, index]
        if self.reuse_weight == "one":
            weight = 1 + (weight - weight.detach())
        chosen = z[rows, index] * weight.to(z.dtype)[:, None, None]
        return chosen[:, None], index


def row_filter(z: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) maps, (k,) kernel -> every row of every map cross-correlated with the kernel
    after k // 2 zeros on both sides: the HRS local branch's Conv2d(1, 1, (1, k), padding=(0, k // 2))
    (width W, W + 1 for an even k), as k shifted multiply-adds.

    Decision: a 1-channel convolution is the slowest kind for oneDNN on a CPU (measured: 20 ms for
    forward + backward of a demo batch vs 2.5 ms this way, benchmarks/step.py); values agree with
    the Conv2d to float32 rounding (the sums run in another order)."""
    padded = F.pad(z, (kernel.numel() // 2, kernel.numel() // 2))
    width = padded.shape[-1] - kernel.numel() + 1
    out = padded[..., :width] * kernel[0]
    for j in range(1, kernel.numel()):
        out = out + padded[..., j:j + width] * kernel[j]
    return out


class ConvLevel(nn.Module):
    """One CNN level: (B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x):
        return self.pool(F.leaky_relu(self.bn(self.conv(x))))


class FMC(nn.Module):
    """Feature map classifier (paper 2.3): one conv kernel per output -> global average pooling.

    forward(z (B, C, H, W)) -> logits (B, num_outputs); num_outputs = 1 is the regression map.
    """

    def __init__(self, channels: int, num_outputs: int, kernel: int = 3):
        super().__init__()
        self.kernels = nn.Conv2d(channels, num_outputs, kernel, padding=kernel // 2)

    def forward(self, z):
        return self.kernels(z).mean(dim=(2, 3))


class LinearClassifier(nn.Module):
    """The 'Linear' ablation: flatten the last level and one fully connected layer.

    forward(z (B, C, H, W)) -> logits (B, num_outputs); in_features = C * H * W is fixed.
    """

    def __init__(self, in_features: int, num_outputs: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_outputs)

    def forward(self, z):
        return self.fc(z.flatten(1))


class SWRR(nn.Module):
    """The SWRR head. forward(audio (B,N,Da), audio_len (B,), text (B,T,Dt), text_len (B,),
    return_attention=False) -> logits (B, num_outputs) [, attention (B, T, N) or None].
    The attention holds every fused window's coefficients: with padded_windows="fuse" that includes
    padded token positions over valid audio (they shape the output too).

    Inputs of any float dtype (the cache stores float16) are cast to the parameters' dtype; under
    torch.autocast the layers then run in the autocast dtype. Lengths must be in [1, max]; they may
    live on the host (as the trainer passes them, pinned): then a step never waits for the GPU.
    """

    def __init__(self, config: SWRRConfig):
        super().__init__()
        self.config = cfg = config
        dim = cfg.model_dim
        audio_dim = cfg.text_dim if cfg.modalities == "text" else cfg.audio_dim  # text-only: no projection
        self.encoder = SharedLSTM(audio_dim, cfg.text_dim, cfg.lstm_hidden, cfg.lstm_padding)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.modalities == "both":
            self.fusion = SliWa(dim, dim if cfg.attn_dim is None else cfg.attn_dim, cfg.window, cfg.hop,
                                cfg.attention, cfg.padded_windows)
        else:  # Decision: one modality has nothing to attend to; its LSTM output is normalised
            self.fusion = nn.LayerNorm(dim)  # and fed to the CNN as the map (N x D or T x D)
        channels = (1, *cfg.cnn_channels)
        self.levels = nn.ModuleList(ConvLevel(a, b, cfg.cnn_kernel) for a, b in zip(channels, channels[1:]))
        self.hrs = nn.ModuleList()
        if cfg.hrfr != "none":  # one HRS after every level but the last; its map joins the next level
            self.hrs.extend(HRS(c, cfg.hrfr, cfg.screen_ratio, cfg.local_kernel, cfg.heaviside_temperature,
                                cfg.reuse_weight) for c in cfg.cnn_channels[:-1])
        if cfg.classifier == "fmc":
            self.classifier = FMC(cfg.cnn_channels[-1], cfg.num_outputs, cfg.cnn_kernel)
        else:
            h, w = self.map_size()
            self.classifier = LinearClassifier(cfg.cnn_channels[-1] * h * w, cfg.num_outputs)

    def map_size(self) -> Tuple[int, int]:
        """(H, W) of the last CNN level for this config."""
        cfg = self.config
        h = cfg.max_frames if cfg.modalities == "audio" else cfg.max_tokens
        w = cfg.model_dim
        for _ in cfg.cnn_channels:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return h, w

    def check_inputs(self, audio, audio_len, text, text_len):
        """Shapes always; length values too, except while a CUDA graph is captured (reading device
        lengths would need a host sync there). Host lengths (the trainer's) cost no sync."""
        cfg = self.config
        capturing = audio.is_cuda and torch.cuda.is_current_stream_capturing()
        for name, x, lengths, size, dim in (("audio", audio, audio_len, cfg.max_frames, cfg.audio_dim),
                                           ("text", text, text_len, cfg.max_tokens, cfg.text_dim)):
            if x.dim() != 3 or x.shape[1] != size or x.shape[2] != dim:
                raise ValueError(f"{name} must be (batch, {size}, {dim}), got {tuple(x.shape)}")
            if lengths.shape != (x.shape[0],):
                raise ValueError(f"{name}_len must be ({x.shape[0]},), got {tuple(lengths.shape)}")
            if capturing:
                continue
            lengths = lengths.cpu()
            if bool((lengths < 1).any()) or bool((lengths > size).any()):
                raise ValueError(f"{name}_len must be in [1, {size}], got min {int(lengths.min())} "
                                 f"max {int(lengths.max())}")

    def fuse(self, audio, audio_len, text, text_len):
        """-> map (B, H, D) for the CNN, attention (B, T, N) or None."""
        modalities = self.config.modalities
        if modalities == "both":
            x, y = self.encoder(audio, audio_len, text, text_len)
            x_mask = lengths_to_mask(audio_len, x.shape[1], x.device)
            y_mask = lengths_to_mask(text_len, y.shape[1], y.device)
            return self.fusion(self.dropout(x), x_mask, self.dropout(y), y_mask)
        if modalities == "audio":
            m = self.encoder.encode_audio(audio, audio_len)
            mask = lengths_to_mask(audio_len, audio.shape[1], audio.device)
        else:
            m, mask = self.encoder.run(text, text_len), lengths_to_mask(text_len, text.shape[1], text.device)
        return self.fusion(self.dropout(m)) * mask[..., None].to(m.dtype), None

    def forward(self, audio, audio_len, text, text_len, return_attention: bool = False):
        self.check_inputs(audio, audio_len, text, text_len)
        dtype = self.encoder.lstm.weight_ih_l0.dtype
        audio_len, text_len = audio_len.long(), text_len.long()
        fused, attention = self.fuse(audio.to(dtype), audio_len, text.to(dtype), text_len)
        z = fused[:, None]  # (B, 1, H, D): the fused map as a one-channel image
        reused = None
        for i, level in enumerate(self.levels):
            z = level(z)
            if reused is not None:  # HRFR: the previous level's chosen map, resized, added to all maps
                z = z + F.adaptive_avg_pool2d(reused, z.shape[-2:]).to(z.dtype)
            reused = self.hrs[i](z)[0] if i < len(self.hrs) else None
        logits = self.classifier(self.dropout(z))
        return (logits, attention) if return_attention else logits
