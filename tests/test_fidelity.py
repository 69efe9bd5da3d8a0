"""The paper's equations written out naively, compared with the vectorised modules, and its settings
as the defaults (docs/FIDELITY.md points here)."""
import math

import pytest
import torch
import torch.nn.functional as F

from swrr.model import FMC, SWRR, SWRRConfig, SharedLSTM, SliWa


def test_defaults_are_the_papers_settings():
    """§3.2: 768-d features, 255 frames / 50 tokens, LSTM 384 (D = 768), h_X = 5, 50 % screening."""
    cfg = SWRRConfig()
    assert (cfg.audio_dim, cfg.text_dim, cfg.max_frames, cfg.max_tokens) == (768, 768, 255, 50)
    assert cfg.lstm_hidden == 384 and cfg.model_dim == 768
    assert (cfg.window, cfg.hop, cfg.screen_ratio) == (10, 5, 0.5)
    assert (cfg.attention, cfg.hrfr, cfg.classifier, cfg.modalities) == ("sliding", "both", "fmc", "both")
    # eq. (2): all N-bar_X = N-bar_Y = 50 windows are fused; eq. (12): the chosen map itself is reused
    assert (cfg.padded_windows, cfg.reuse_weight) == ("fuse", "one")


def test_one_lstm_serves_both_modalities():
    """§2.1: the same weights filter audio and text (one bidirectional LSTM in the whole model)."""
    model = SWRR(SWRRConfig(audio_dim=16, text_dim=16, max_frames=35, max_tokens=6, lstm_hidden=8,
                            cnn_channels=(4, 4)))
    lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    assert len(lstms) == 1 and lstms[0].bidirectional
    shared = SharedLSTM(16, 16, hidden=8)
    seq = torch.randn(1, 7, 16)
    length = torch.tensor([7])
    audio_out, text_out = shared(seq, length, seq, length)
    torch.testing.assert_close(audio_out, text_out)  # same input through either side: same output


@pytest.mark.parametrize("padded_windows", ["fuse", "drop"])
def test_sliwa_equals_equations_3_to_6_written_out_per_window(padded_windows):
    """Eqs. (1)-(6) with an explicit loop over windows (the slow way the paper describes them).
    "fuse": a padded token position i is window i with the learned "no token" vector as y_i;
    "drop": its row is zero."""
    torch.manual_seed(0)
    dim, attn, window, hop, n, t = 12, 6, 4, 2, 15, 5  # (t-1)*hop + window = 12 <= 15
    sliwa = SliWa(dim, attn, window=window, hop=hop, padded_windows=padded_windows).eval()
    if padded_windows == "fuse":
        with torch.no_grad():
            sliwa.no_token.normal_()  # a trained value, not the zeros it starts from
    x, y = torch.randn(3, n, dim), torch.randn(3, t, dim)
    x_len, y_len = torch.tensor([15, 7, 3]), torch.tensor([5, 3, 1])  # row 1: windows 3 and 4 padded text
    x_mask = torch.arange(n)[None] < x_len[:, None]
    y_mask = torch.arange(t)[None] < y_len[:, None]
    fused, attention = sliwa(x, x_mask, y, y_mask)

    for b in range(3):
        for i in range(t):
            frames = [f for f in range(i * hop, i * hop + window) if f < x_len[b]]  # eq. (1), valid only
            padded = i >= y_len[b]
            if padded and (padded_windows == "drop" or not frames):  # nothing to fuse: zero row
                assert fused[b, i].abs().max() == 0 and attention[b, i].abs().max() == 0
                continue
            y_i = sliwa.no_token if padded else y[b, i]
            q = sliwa.w_q(y_i)  # eq. (3)
            kv = sliwa.w_kv(x[b, frames])
            k, v = kv[:, :attn], kv[:, attn:]  # eq. (4)
            if frames:
                coef = torch.softmax(q @ k.T / math.sqrt(attn), dim=-1)  # eq. (5)
                z = coef @ v
                torch.testing.assert_close(attention[b, i, frames], coef, atol=1e-6, rtol=1e-5)
            else:  # a window holding no valid frame contributes nothing
                z = torch.zeros(attn)
            expected = F.layer_norm(y_i + sliwa.w_z(z), (dim,), sliwa.norm.weight, sliwa.norm.bias)  # eq. (6)
            torch.testing.assert_close(fused[b, i], expected, atol=1e-5, rtol=1e-5)
            outside = torch.ones(n, dtype=torch.bool)
            outside[frames] = False
            assert attention[b, i, outside].abs().max() == 0
    if padded_windows == "fuse":  # the padded rows 3, 4 of row 1 were checked above, not skipped
        assert fused[1, 3].abs().max() > 0 and fused[1, 4].abs().max() == 0


def test_fmc_is_one_kernel_per_class_then_global_average_pooling():
    """§2.3: class k's kernel maps the last level to P^k; its mean is the class confidence p^k."""
    torch.manual_seed(0)
    fmc = FMC(channels=3, num_outputs=4)
    z = torch.randn(2, 3, 5, 7)
    for k in range(4):
        p_k = F.conv2d(z, fmc.kernels.weight[k:k + 1], fmc.kernels.bias[k:k + 1], padding=1)  # (B, 1, H, W)
        torch.testing.assert_close(fmc(z)[:, k], p_k.mean(dim=(1, 2, 3)))
    assert sum(p.numel() for p in fmc.parameters()) == 4 * (3 * 3 * 3 + 1)
