"""The SWRR head: windows, masking, HRS arithmetic, gradients, ablations, and that it learns."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from swrr.model import (ABLATIONS, FMC, HRS, READINGS, SWRR, LinearClassifier, SliWa, SWRRConfig,
                             ablation_config, count_parameters, heaviside, lengths_to_mask, row_filter)

# 12 tokens and D = 32 keep H' >= 2 and W' >= 3 at every HRS level: with H' = 1 beta is always 0
# (see the test below), with W' = 2 the two points of a frame always split 1/1
TINY = dict(audio_dim=16, text_dim=12, max_frames=65, max_tokens=12, lstm_hidden=16,
            cnn_channels=(4, 8, 8), dropout=0.0)
ALL_VARIANTS = ["swrr", *ABLATIONS, *READINGS]


def tiny_config(name="swrr", **overrides):
    return ablation_config(SWRRConfig(**{**TINY, **overrides}), name)


def random_batch(cfg, audio_len, text_len, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(audio_len)
    return (torch.randn(b, cfg.max_frames, cfg.audio_dim, generator=g), torch.tensor(audio_len),
            torch.randn(b, cfg.max_tokens, cfg.text_dim, generator=g), torch.tensor(text_len))


def test_window_arithmetic_paper_sizes():
    sliwa = SliWa(dim=8, attn_dim=8, window=10, hop=5)
    index = sliwa.window_index(50)
    assert (255 - 10) // 5 + 1 == 50  # eq. (2)
    assert index.shape == (50, 10)
    for i in (0, 1, 17, 49):
        assert index[i].tolist() == list(range(5 * i, 5 * i + 10))
    assert int(index.max()) == 254  # the last window ends on the last frame


def test_window_50_pads_with_masked_frames():
    torch.manual_seed(0)
    sliwa = SliWa(dim=8, attn_dim=8, window=50, hop=5)
    x, y = torch.randn(2, 255, 8), torch.randn(2, 50, 8)
    x_mask = lengths_to_mask(torch.tensor([255, 30]), 255)
    fused, attention = sliwa(x, x_mask, y, torch.ones(2, 50, dtype=torch.bool))
    assert attention.shape == (2, 50, 255) and torch.isfinite(fused).all()
    # token 49's window is frames 245..294: the 40 frames past the end are masked padding
    assert torch.allclose(attention[0, 49, 245:].sum(), torch.tensor(1.0))
    assert attention[0, 49, :245].abs().sum() == 0
    assert attention[1, :, 30:].abs().sum() == 0  # no weight on padded frames
    assert attention[1, 6:].abs().sum() == 0  # windows from frame 30 on hold no valid frame


@pytest.mark.parametrize("num_tokens,hop", [(1, 5), (7, 0)])
def test_single_window_over_all_frames_equals_full_attention(num_tokens, hop):
    torch.manual_seed(0)
    n = 20
    sliding = SliWa(dim=8, attn_dim=6, window=n, hop=hop, mode="sliding")
    full = SliWa(dim=8, attn_dim=6, mode="full")
    full.load_state_dict(sliding.state_dict())
    x, y = torch.randn(3, n, 8), torch.randn(3, num_tokens, 8)
    x_mask = lengths_to_mask(torch.tensor([20, 13, 1]), n)
    y_mask = lengths_to_mask(torch.tensor([num_tokens, 1, num_tokens]), num_tokens)
    fused_s, att_s = sliding(x, x_mask, y, y_mask)
    fused_f, att_f = full(x, x_mask, y, y_mask)
    assert torch.allclose(fused_s, fused_f, atol=1e-6)
    assert torch.allclose(att_s, att_f, atol=1e-6)
    assert att_f[0, 0].abs().sum() > 0


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_padding_content_does_not_change_outputs(name):
    torch.manual_seed(0)
    cfg = tiny_config(name)
    model = SWRR(cfg).eval()
    # row 1: padded token positions 4..7 have windows over valid audio (fused unless "drop")
    audio, audio_len, text, text_len = random_batch(cfg, [65, 40, 3], [12, 4, 1])
    noisy_audio, noisy_text = audio.clone(), text.clone()
    for b in range(3):
        noisy_audio[b, audio_len[b]:] = 100 * torch.randn_like(noisy_audio[b, audio_len[b]:])
        noisy_text[b, text_len[b]:] = 100 * torch.randn_like(noisy_text[b, text_len[b]:])
    assert not torch.equal(audio, noisy_audio) and not torch.equal(text, noisy_text)
    logits, att = model(audio, audio_len, text, text_len, return_attention=True)
    logits2, att2 = model(noisy_audio, audio_len, noisy_text, text_len, return_attention=True)
    assert torch.allclose(logits, logits2, atol=1e-5)
    if att is not None:
        assert torch.allclose(att, att2, atol=1e-6)
    # and the valid content does matter
    (text if cfg.modalities == "text" else audio)[1, 0] += 5.0
    assert not torch.allclose(model(audio, audio_len, text, text_len), logits, atol=1e-5)


@pytest.mark.parametrize("name", ["swrr", "audio-only", "text-only"])
def test_aligned_lstm_equals_packed_lstm(name):
    """lstm_padding="align" (the default: static shapes, CUDA graphs) computes what packing computes,
    values and gradients, and ignores padding content just the same."""
    torch.manual_seed(0)
    packed = SWRR(tiny_config(name, lstm_padding="pack")).double().train()
    aligned = SWRR(tiny_config(name, lstm_padding="align")).double().train()
    aligned.load_state_dict(packed.state_dict())
    audio, audio_len, text, text_len = random_batch(tiny_config(name), [65, 12, 3, 40], [12, 4, 1, 12])
    audio, text = audio.double(), text.double()
    for b in range(4):  # loud padding: it must not enter either recurrence
        audio[b, audio_len[b]:] = 100.0
        text[b, text_len[b]:] = -100.0
    out_p = packed(audio, audio_len, text, text_len)
    out_a = aligned(audio, audio_len, text, text_len)
    assert torch.allclose(out_p, out_a, atol=1e-10)
    grads_p = torch.autograd.grad(out_p.square().sum(), list(packed.parameters()))
    grads_a = torch.autograd.grad(out_a.square().sum(), list(aligned.parameters()))
    assert all(torch.allclose(gp, ga, atol=1e-9) for gp, ga in zip(grads_p, grads_a))
    x = torch.randn(4, 65, aligned.encoder.lstm.input_size, dtype=torch.double)
    lengths = torch.tensor([65, 12, 3, 40])
    out = aligned.encoder.run(x, lengths)
    assert out[1, 12:].abs().max() == 0 and out[2, 3:].abs().max() == 0  # zeros past each length
    with pytest.raises(ValueError, match="lstm_padding"):
        SWRRConfig(lstm_padding="sorted")


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_padding_windows_and_one_frame_one_token_are_finite(name):
    torch.manual_seed(0)
    cfg = tiny_config(name)
    model = SWRR(cfg)
    # row 0: 1 frame, 1 token; row 1: 3 frames and 12 tokens, so windows 1..11 are all padding
    audio, audio_len, text, text_len = random_batch(cfg, [1, 3], [1, 12])
    logits, att = model(audio, audio_len, text, text_len, return_attention=True)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if att is not None:
        assert torch.isfinite(att).all()
        if cfg.attention == "sliding" and cfg.window == 10:
            assert att[1, 1:].abs().sum() == 0  # empty windows give zeros
            assert torch.allclose(att[1, 0].sum(), torch.tensor(1.0))
        assert torch.allclose(att[0, 0, 0], torch.tensor(1.0))  # the only frame takes it all


@pytest.mark.parametrize("mode", ["sliding", "full"])
def test_every_valid_frame_is_attended_for_any_text_and_audio_length(mode):
    """Paper sizes (N = 255, T = 50, omega_X = 10, h_X = 5): with padded_windows="fuse" every valid
    frame has a non-zero weight in some window, for every text length 1..50 and audio length
    1..255; padded frames have none. With "drop" only the first min(n, 5 l + 5) frames do."""
    torch.manual_seed(0)
    n_max, t = 255, 50
    fuse = SliWa(dim=4, attn_dim=4, window=10, hop=5, mode=mode, padded_windows="fuse")  # the width
    drop = SliWa(dim=4, attn_dim=4, window=10, hop=5, mode=mode, padded_windows="drop")  # plays no part
    drop.load_state_dict(fuse.state_dict(), strict=False)
    audio_len = torch.arange(1, n_max + 1)  # one row per audio length
    x, y = torch.randn(n_max, n_max, 4), torch.randn(n_max, t, 4)
    x_mask = lengths_to_mask(audio_len, n_max)
    for tokens in range(1, t + 1):
        y_mask = lengths_to_mask(torch.full((n_max,), tokens), t)
        with torch.no_grad():
            coverage = fuse(x, x_mask, y, y_mask)[1].sum(dim=1)  # (B, N): weight each frame receives
            coverage_drop = drop(x, x_mask, y, y_mask)[1].sum(dim=1)
        assert (coverage[x_mask] > 0).all(), f"{tokens} tokens: a valid frame gets no weight"
        assert coverage[~x_mask].abs().max() == 0
        reached = audio_len if mode == "full" else audio_len.clamp(max=5 * tokens + 5)
        assert torch.equal((coverage_drop > 0).sum(dim=1), reached)


def test_late_audio_reaches_the_fused_map_only_when_padded_windows_are_fused():
    torch.manual_seed(0)
    fuse = SliWa(dim=8, attn_dim=8, window=10, hop=5, padded_windows="fuse")
    drop = SliWa(dim=8, attn_dim=8, window=10, hop=5, padded_windows="drop")
    drop.load_state_dict(fuse.state_dict(), strict=False)
    x, y = torch.randn(1, 255, 8), torch.randn(1, 50, 8)
    x_mask, y_mask = lengths_to_mask(torch.tensor([255]), 255), lengths_to_mask(torch.tensor([2]), 50)
    late = x.clone()
    late[0, 200] += 3.0  # frame 200: window 39 (and 38), far past the 2 tokens' windows (frames 0..14)
    assert not torch.allclose(fuse(x, x_mask, y, y_mask)[0], fuse(late, x_mask, y, y_mask)[0])
    assert torch.equal(drop(x, x_mask, y, y_mask)[0], drop(late, x_mask, y, y_mask)[0])


def test_return_attention_holds_every_fused_window_at_paper_sizes():
    torch.manual_seed(0)
    cfg = SWRRConfig()
    audio, audio_len, text, text_len = random_batch(cfg, [255, 90, 4], [2, 12, 50])
    with torch.no_grad():
        _, att = SWRR(cfg).eval()(audio, audio_len, text, text_len, return_attention=True)
    rows = att.sum(dim=2)  # 1 for every fused window, 0 for a window over padding only
    assert torch.allclose(rows[0], torch.ones(50))  # 2 tokens, all 50 windows fused
    assert torch.allclose(rows[1, :18], torch.ones(18)) and rows[1, 18:].abs().max() == 0  # 5*17 < 90
    assert torch.allclose(rows[2, :1], torch.ones(1))  # 4 frames: window 0 only; tokens 1..49 see none
    assert rows[2, 1:].abs().max() == 0
    for b, n in enumerate((255, 90, 4)):
        assert (att[b].sum(dim=0)[:n] > 0).all() and att[b, :, n:].abs().sum() == 0


def test_zero_sizes_are_refused_and_hop_zero_is_the_documented_shared_window():
    for name in ("attn_dim", "lstm_hidden", "window"):
        with pytest.raises(ValueError, match=name):
            SWRRConfig(**{name: 0})
    with pytest.raises(ValueError, match="padded_windows"):
        SWRRConfig(padded_windows="keep")
    with pytest.raises(ValueError, match="reuse_weight"):
        SWRRConfig(reuse_weight="half")
    index = SliWa(dim=8, attn_dim=8, window=10, hop=0).window_index(3)
    assert all(row.tolist() == list(range(10)) for row in index)  # hop 0: every token, frames 0..9
    assert SWRR(tiny_config(attn_dim=5)).fusion.w_q.out_features == 5


def hand_built_hrs(mode):
    """HRS over 2 maps with known weights; the local filter is the identity."""
    hrs = HRS(channels=2, mode=mode, screen_ratio=0.5, local_kernel=3)
    with torch.no_grad():
        if mode != "local":
            hrs.w1.weight.copy_(torch.tensor([[1.0, -1.0]]))
            hrs.w1.bias.zero_()
            hrs.w2.weight.copy_(torch.tensor([[-0.25], [0.25]]))
            hrs.w2.bias.zero_()
        if mode != "global":
            hrs.local.weight.copy_(torch.tensor([0.0, 1.0, 0.0]).view(1, 1, 1, 3))
    # the screened (pooled) maps P; z repeats each value in a 2x2 block, so pooling gives back P
    p = torch.tensor([[[1, 2, 3, 10], [5, 6, 7, 0], [1, 1, 1, 1], [0, 4, 4, 0]],
                      [[0, 0, 0, 4], [0, 0, 0, 4], [0, 0, 0, 4], [1, 2, 3, 6]]], dtype=torch.float32)
    z = p.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)[None]  # (1, 2, 8, 8)
    return hrs, z


@pytest.mark.parametrize("mode,expected_index", [("both", 0), ("global", 1), ("local", 0)])
def test_hrs_matches_hand_computation(mode, expected_index):
    hrs, z = hand_built_hrs(mode)
    alpha, beta, q = hrs.scores(z)
    # global: GAP = (46/16, 24/16); W1 -> 1.375 (LeakyReLU keeps it); W2 -> (-0.34375, 0.34375)
    sig = lambda v: 1 / (1 + math.exp(-v))
    want_alpha = torch.tensor([[sig(-0.34375), sig(0.34375)]])
    # local, map 0: frame scores (1, 3, 0, 2), mean 1.5 -> 2 keyframes;
    #        map 1: frame scores (1, 1, 1, 1), none above the mean -> 0
    want_beta = torch.tensor([[2.0, 0.0]])
    h_kept = 4  # H' = 0.5 * 8
    want_q = torch.zeros(1, 2)
    if mode != "local":
        assert torch.allclose(alpha, want_alpha)
        want_q += h_kept * want_alpha
    else:
        assert alpha is None
    if mode != "global":
        assert torch.equal(beta, want_beta)
        want_q += want_beta
    else:
        assert beta is None
    assert torch.allclose(q, want_q)
    reused, index = hrs(z)
    assert index.tolist() == [expected_index]
    assert torch.equal(reused[0, 0], z[0, expected_index])  # the value is exactly the chosen map


def test_score_reuse_scales_the_chosen_map_by_exactly_p_max():
    hrs, z = hand_built_hrs("both")
    hrs.reuse_weight = "score"
    _, _, q = hrs.scores(z)
    p = torch.softmax(q, dim=1)
    reused, index = hrs(z)
    assert index.tolist() == [0] and 0 < p[0, 0] < 1
    assert torch.equal(reused[0, 0], z[0, 0] * p[0, 0])
    reused.sum().backward()  # the weight carries the gradient to both branches
    assert hrs.w1.weight.grad.abs().sum() > 0 and hrs.local.weight.grad.abs().sum() > 0
    cfg = tiny_config("reuse-score")
    assert all(h.reuse_weight == "score" for h in SWRR(cfg).hrs) and len(SWRR(cfg).hrs) == 2


def test_local_branch_is_silent_on_a_single_screened_frame():
    # the documented exception: one frame never exceeds its own mean, so beta = 0 and the
    # local filter gets no gradient from such a level
    hrs = HRS(channels=3, mode="local")
    z = torch.randn(2, 3, 2, 8)  # H = 2 -> H' = 1
    _, beta, _ = hrs.scores(z)
    assert torch.equal(beta, torch.zeros(2, 3))


def test_heaviside_is_exact_forward_with_a_gradient():
    x = torch.tensor([-2.0, 0.0, 0.5, 3.0], requires_grad=True)
    y = heaviside(x, temperature=1.0)
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0]
    y.sum().backward()
    assert (x.grad > 0).all()


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    cfg = tiny_config(name)
    model = SWRR(cfg).train()
    # row 1: padded token positions over valid audio, so the "no token" vector is used
    audio, audio_len, text, text_len = random_batch(cfg, [65, 60, 9, 4], [12, 5, 3, 2])
    loss = F.cross_entropy(model(audio, audio_len, text, text_len), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []
    hrs_expected = 0 if cfg.hrfr == "none" else len(cfg.cnn_channels) - 1
    assert len(model.hrs) == hrs_expected


def test_fmc_has_fewer_parameters_than_linear_at_paper_sizes():
    paper = SWRRConfig()
    fmc = SWRR(paper).classifier
    linear = SWRR(ablation_config(paper, "linear")).classifier
    assert isinstance(fmc, FMC) and isinstance(linear, LinearClassifier)
    n_fmc, n_linear = count_parameters(fmc), count_parameters(linear)
    print(f"FMC head {n_fmc} parameters, linear head {n_linear}")
    assert n_fmc < n_linear


@pytest.mark.parametrize("name", ["swrr", *ABLATIONS])  # the readings change no shape
def test_ablations_run_at_paper_sizes(name):
    torch.manual_seed(0)
    cfg = ablation_config(SWRRConfig(), name)
    model = SWRR(cfg)
    audio, audio_len, text, text_len = random_batch(cfg, [255, 90], [50, 12])
    logits, att = model(audio.half(), audio_len, text.half(), text_len, return_attention=True)  # cache dtype
    assert logits.shape == (2, 4) and logits.dtype == torch.float32
    assert (att is None) == (cfg.modalities != "both")
    if att is not None:
        assert att.shape == (2, 50, 255)
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_regression_output_shape():
    cfg = tiny_config(num_outputs=1)
    logits = SWRR(cfg)(*random_batch(cfg, [65, 5], [12, 2]))
    assert logits.shape == (2, 1)


def test_bad_inputs_and_names_are_reported():
    cfg = tiny_config()
    model = SWRR(cfg)
    audio, audio_len, text, text_len = random_batch(cfg, [65, 5], [12, 2])
    with pytest.raises(ValueError, match="audio must be"):
        model(audio[:, :30], audio_len, text, text_len)
    with pytest.raises(ValueError, match="text_len must be in"):
        model(audio, audio_len, text, torch.tensor([12, 0]))
    with pytest.raises(ValueError, match="no-hrfr"):
        ablation_config(cfg, "no-such-ablation")
    with pytest.raises(ValueError, match="attention"):
        SWRRConfig(attention="global")


def test_audio_projection_when_dims_differ():
    model = SWRR(tiny_config())
    assert model.encoder.audio_proj.in_features == 16 and model.encoder.audio_proj.out_features == 12
    assert isinstance(SWRR(tiny_config(audio_dim=12)).encoder.audio_proj, torch.nn.Identity)


def test_learns_a_separable_synthetic_set():
    torch.manual_seed(0)
    cfg = tiny_config()
    n, classes = 64, 4
    labels = torch.arange(n) % classes
    audio_len = torch.randint(10, 66, (n,))
    text_len = torch.randint(2, 13, (n,))
    audio_pattern, text_pattern = torch.randn(classes, cfg.audio_dim), torch.randn(classes, cfg.text_dim)
    audio = torch.randn(n, cfg.max_frames, cfg.audio_dim) + audio_pattern[labels][:, None]
    text = torch.randn(n, cfg.max_tokens, cfg.text_dim) + text_pattern[labels][:, None]
    audio = audio * lengths_to_mask(audio_len, cfg.max_frames)[..., None]
    text = text * lengths_to_mask(text_len, cfg.max_tokens)[..., None]
    model = SWRR(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
    accuracy = 0.0
    for step in range(300):
        model.train()
        loss = F.cross_entropy(model(audio, audio_len, text, text_len), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 24:
            with torch.no_grad():
                predicted = model.eval()(audio, audio_len, text, text_len).argmax(1)
            accuracy = (predicted == labels).float().mean().item()
            if accuracy >= 0.95:
                break
    assert accuracy >= 0.95, f"train accuracy {accuracy:.2f} after {step + 1} steps"


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_row_filter_equals_the_hrs_conv2d(k):
    """HRS's local branch runs its Conv2d(1, 1, (1, k)) weight through row_filter (shifted
    multiply-adds, far faster on a CPU): the same values, shapes (even k too) and gradients."""
    torch.manual_seed(k)
    conv = nn.Conv2d(1, 1, (1, k), padding=(0, k // 2), bias=False).double()
    z = torch.randn(3, 4, 5, 7, dtype=torch.double, requires_grad=True)
    expected = conv(z.reshape(12, 1, 5, 7)).reshape(3, 4, 5, -1)
    got = row_filter(z, conv.weight.reshape(-1))
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-12)
    grads_conv = torch.autograd.grad(expected.sin().sum(), [z, conv.weight])
    grads_rows = torch.autograd.grad(got.sin().sum(), [z, conv.weight])
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grads_conv, grads_rows))
