"""Encoder families: how exact batched extraction is, and what Whisper's 30 s window costs.

- exactness: for a small random model of each waveform family (real conv front end, data2vec's
  5-layer positional conv with kernel 19), the largest |batched row - one-utterance run| over the
  valid frames of the last hidden state (hidden_states[L]), for plain transformers (zero padding + attention mask)
  and for swrr's AudioEncoder (the family's exact-batching steps);
- Whisper: the encoder forward of one 5.1 s clip as Whisper runs it (padded to the 30 s window,
  1,500 frames) against the same layers on the clip's own 255 frames (what a window-free encoder
  would do), at whisper-base size (d 512, 6 layers), and WavLM-base (768, 12 layers) on 5.1 s.

    python benchmarks/encoders.py            # CPU, about a minute

Prints readable lines, then one JSON line.
"""
from __future__ import annotations

import json
import time
import warnings

import numpy as np
import torch

from swrr.extract.encoders import AudioEncoder

LENGTHS = [81680, 50000, 16000, 3000]


def tiny(config_class, **overrides):
    import transformers
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    config = getattr(transformers, config_class)(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                 intermediate_size=128, conv_dim=(32,) * 7,
                                                 num_conv_pos_embedding_groups=4, **overrides)
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    return model, Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=False)


def worst_difference(model, extractor, waves) -> dict:
    """max |batched - single| on valid frames of the last hidden state (hidden_states[L], what swrr
    stores as the last layer): plain transformers vs swrr."""
    with torch.inference_mode():
        singles = [model(torch.from_numpy(w)[None], output_hidden_states=True).hidden_states[-1][0] for w in waves]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    mask = (torch.arange(batch.shape[1])[None] < lengths[:, None]).long()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = model(batch, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    encoder = AudioEncoder(model, extractor, "bench", "random", -1)
    ours, frames = encoder(*encoder.collate(waves))
    return {"plain": max(float((plain[i, :len(s)] - s).abs().max()) for i, s in enumerate(singles)),
            "swrr": max(float((ours[i, 0, :n] - s).abs().max()) for i, (s, n) in enumerate(zip(singles, frames)))}


def timed(fn, repeats=3) -> float:
    with torch.inference_mode():
        fn()
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
    return (time.perf_counter() - started) / repeats


def whisper_cost() -> dict:
    from transformers import WavLMConfig, WavLMModel, WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                           decoder_layers=1, decoder_attention_heads=8, num_mel_bins=80)
    encoder = WhisperModel(config).get_encoder().eval()
    wave = (0.1 * np.random.default_rng(0).standard_normal(81680)).astype(np.float32)
    mel = torch.from_numpy(WhisperFeatureExtractor()(wave, sampling_rate=16000, return_tensors="np")["input_features"])

    def own_frames():  # the same convs and layers on the clip's first 255 frames only
        x = torch.nn.functional.gelu(encoder.conv1(mel[..., :510]))
        h = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1) + encoder.embed_positions.weight[:255]
        for layer in encoder.layers:
            h = layer(h, None)
            h = h[0] if isinstance(h, tuple) else h
        return encoder.layer_norm(h)

    window_s = timed(lambda: encoder(mel))
    own_s = timed(own_frames)
    wavlm = WavLMModel(WavLMConfig()).eval()
    wavlm_s = timed(lambda: wavlm(torch.from_numpy(wave)[None]))
    return {"whisper_window_s": window_s, "whisper_own_frames_s": own_s, "window_over_own": window_s / own_s,
            "frames_ratio": 1500 / 255, "wavlm_base_5.1s_s": wavlm_s}


def main():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(n) + rng.uniform(-0.05, 0.05)).astype(np.float32) for n in LENGTHS]
    out = {"exactness": {}}
    for name, (cls, overrides) in {
            "wavlm (group norm)": ("WavLMConfig", {}),
            "hubert (group norm)": ("HubertConfig", {}),
            "wav2vec2 (layer norm, stable)": ("Wav2Vec2Config", {"feat_extract_norm": "layer",
                                                                 "do_stable_layer_norm": True}),
            "data2vec-audio (5 positional convs)": ("Data2VecAudioConfig", {})}.items():
        model, extractor = tiny(cls, **overrides)
        out["exactness"][name] = worst_difference(model, extractor, waves)
        d = out["exactness"][name]
        print(f"{name}: batched vs single, max |diff|: plain transformers {d['plain']:.2e}, swrr {d['swrr']:.2e}")
    cost = whisper_cost()
    out["whisper"] = cost
    print(f"Whisper-base-size encoder, one 5.1 s clip: {cost['whisper_window_s'] * 1e3:.0f} ms on its 30 s window "
          f"vs {cost['whisper_own_frames_s'] * 1e3:.0f} ms on the clip's own 255 frames "
          f"({cost['window_over_own']:.1f}x); WavLM-base on 5.1 s: {cost['wavlm_base_5.1s_s'] * 1e3:.0f} ms "
          f"({torch.get_num_threads()} CPU threads)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
