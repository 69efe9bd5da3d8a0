"""Encoders: loading through the real from_pretrained path, exact batching, layers, errors.

Tiny random models of every family (tests/zoo.py) are saved with save_pretrained into a temp
folder and loaded the way a hub id would be; the reference for "exact" is the plain transformers
model run on one utterance at a time, with no attention mask and no padding, and its
`hidden_states[k]` for every k.
"""
import socket

import numpy as np
import pytest
import torch

import zoo
from swrr.extract.encoders import (AUDIO_FAMILIES, TEXT_FAMILIES, EncoderError, build_tiny_audio, build_tiny_text,
                                   describe, load_audio_encoder, load_encoders, load_text_encoder, tiny_encoders)

# Lengths in samples: the 5.1 s cap, mid-length, short, and just one frame (400 samples).
LENGTHS = [81680, 50000, 16000, 3000, 400]
TEXTS = ["I am so angry with you right now", "okay", "that is wonderful news, thank you", ""]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Folders holding a tiny WavLM (+ feature extractor) and a tiny BERT (+ tokenizer)."""
    root = tmp_path_factory.mktemp("models")
    audio_dir, text_dir = root / "wavlm", root / "bert"
    model, feature_extractor = build_tiny_audio()
    model.save_pretrained(audio_dir)
    feature_extractor.save_pretrained(audio_dir)
    model, tokenizer = build_tiny_text()
    model.save_pretrained(text_dir)
    tokenizer.save_pretrained(text_dir)
    return audio_dir, text_dir


@pytest.fixture(scope="module")
def waves():
    rng = np.random.default_rng(0)
    # speech-like scale with a DC offset per clip, so padding would visibly shift GroupNorm means
    return [(0.1 * rng.standard_normal(n) + rng.uniform(-0.05, 0.05)).astype(np.float32) for n in LENGTHS]


def _plain(folder):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(folder)).eval()


def _single_reference(model, waves, **kwargs):
    """The plain transformers model on one utterance at a time: list of (F_i, D)."""
    with torch.inference_mode():
        return [model(torch.from_numpy(w)[None], **kwargs) for w in waves]


def test_batched_audio_rows_equal_single_utterance_runs(saved, waves):
    audio_dir, _ = saved
    encoder = load_audio_encoder(str(audio_dir))
    assert encoder.revision.startswith("local:")
    reference = [out.last_hidden_state[0] for out in _single_reference(_plain(audio_dir), waves)]

    input_values, lengths = encoder.collate([encoder.prepare(w) for w in waves])
    features, frames = encoder(input_values, lengths)
    longer, _ = encoder(torch.nn.functional.pad(input_values, (0, 999)), lengths)  # extra padding changes nothing
    torch.testing.assert_close(longer, features, atol=1e-5, rtol=1e-5)

    assert list(frames) == [r.shape[0] for r in reference]
    assert features.shape == (len(waves), 1, 255, encoder.dim)
    features = features[:, 0]
    for row, (ref, n) in enumerate(zip(reference, frames)):
        torch.testing.assert_close(features[row, :n], ref, atol=1e-4, rtol=1e-4)
        assert torch.count_nonzero(features[row, n:]) == 0  # padded frames are zero


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
def test_plain_zero_padding_changes_the_numbers(saved, waves):
    """Control: the same batch through plain transformers (attention mask, no masked GroupNorm)
    differs from single runs, so the test above really checks the fix."""
    audio_dir, _ = saved
    model = _plain(audio_dir)
    reference = [out.last_hidden_state[0] for out in _single_reference(model, waves)]
    input_values, lengths = load_audio_encoder(str(audio_dir)).collate(waves)
    mask = (torch.arange(input_values.shape[1])[None] < lengths[:, None]).long()
    with torch.inference_mode():
        plain = model(input_values, attention_mask=mask).last_hidden_state
    worst = max((plain[i, : len(r)] - r).abs().max().item() for i, r in enumerate(reference[1:], 1))
    assert worst > 0.05
    torch.testing.assert_close(plain[0], reference[0], atol=1e-4, rtol=1e-4)  # the unpadded row is fine


def test_batched_text_rows_equal_single_runs(saved):
    _, text_dir = saved
    encoder = load_text_encoder(str(text_dir))
    model = _plain(text_dir)
    tokens = encoder.tokenize(TEXTS)
    features, lengths = encoder(tokens)
    features = features[:, 0]
    for row, text in enumerate(TEXTS):
        single = encoder.tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            ref = model(**single).last_hidden_state[0]
        assert lengths[row] == ref.shape[0]
        torch.testing.assert_close(features[row, : lengths[row]], ref, atol=1e-4, rtol=1e-4)
        assert torch.count_nonzero(features[row, lengths[row]:]) == 0
    assert lengths[-1] == 2  # an empty transcript is [CLS] [SEP]


def test_text_is_cut_at_max_tokens_with_cls_and_sep(saved):
    _, text_dir = saved
    encoder = load_text_encoder(str(text_dir), max_tokens=50)
    tokens = encoder.tokenize(["happy " * 80])
    features, lengths = encoder(tokens)
    ids = tokens["input_ids"][0]
    assert lengths[0] == 50 and features.shape[2] == 50
    assert ids[0] == encoder.tokenizer.cls_token_id and ids[49] == encoder.tokenizer.sep_token_id


def test_frame_arithmetic_matches_wavlm():
    audio, _ = tiny_encoders()
    assert audio.frames(81680) == 255
    assert audio.samples_for(255) == 81680
    assert audio.frames(400) == 1 and audio.frames(399) == 0
    assert audio.frames(81680 + 319) == 255 and audio.frames(81680 + 320) == 256
    features, frames = audio(*audio.collate([np.zeros(81680, np.float32)]))
    assert features.shape == (1, 1, 255, 64) and frames[0] == 255


def test_layer_picks_a_hidden_state(saved, waves):
    audio_dir, text_dir = saved
    with torch.inference_mode():
        ref = _single_reference(_plain(audio_dir), waves[2:3], output_hidden_states=True)[0]
    first = load_audio_encoder(str(audio_dir), 1)
    features, _ = first(*first.collate(waves[2:3]))
    torch.testing.assert_close(features[0, 0], ref.hidden_states[1][0], atol=1e-4, rtol=1e-4)
    assert (features[0, 0] - ref.last_hidden_state[0]).abs().max() > 1e-2
    last = load_audio_encoder(str(audio_dir), 2)
    torch.testing.assert_close(last(*last.collate(waves[2:3]))[0][0, 0], ref.last_hidden_state[0], atol=1e-4, rtol=1e-4)
    picked = load_audio_encoder(str(audio_dir), "0,2")
    assert picked.layers == [0, 2]
    both, _ = picked(*picked.collate(waves[2:3]))
    torch.testing.assert_close(both[0, 1], ref.hidden_states[2][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both[0, 0], ref.hidden_states[0][0], atol=1e-4, rtol=1e-4)
    with pytest.raises(EncoderError, match="layers='3' is out of range"):
        load_text_encoder(str(text_dir), 3)


def test_missing_model_gives_a_clear_error_without_network(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import transformers.utils.hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import time: also set the flags already read
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True, raising=False)

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(EncoderError) as err:
        load_audio_encoder("no-such-org/no-such-wavlm")
    message = str(err.value)
    assert "'no-such-org/no-such-wavlm'" in message
    assert "neither a local folder nor reachable" in message and "--encoders tiny" in message
    with pytest.raises(EncoderError, match="neither a local folder"):
        load_encoders("pretrained", str(tmp_path / "absent"), "bert-base-uncased")


def test_wrong_kind_of_model_is_refused(saved):
    audio_dir, text_dir = saved
    with pytest.raises(EncoderError, match="not usable as the audio encoder; supported audio families: WavLM, "
                                           "HuBERT, wav2vec2, data2vec-audio, Whisper encoder"):
        load_audio_encoder(str(text_dir))


def test_tiny_preset_is_fixed_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    audio_a, text_a = tiny_encoders()
    assert torch.equal(torch.rand(1), expected)
    audio_b, text_b = tiny_encoders()
    for a, b in ((audio_a, audio_b), (text_a, text_b)):
        assert a.random_init and a.revision == "random" and a.dim == 64
        for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.equal(pa, pb), name
    ids = text_a.tokenize(["I am so angry, thank you!"])["input_ids"][0]
    assert text_a.tokenizer.unk_token_id not in ids.tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast is used on CUDA only")
def test_fp16_batched_rows_match_fp32_single_runs(saved, waves):
    audio_dir, text_dir = saved
    reference = [out.last_hidden_state[0] for out in _single_reference(_plain(audio_dir), waves)]
    encoder = load_audio_encoder(str(audio_dir)).to("cuda", fp16=True)
    features, frames = encoder(*encoder.collate(waves))
    for row, (ref, n) in enumerate(zip(reference, frames)):
        cosine = torch.nn.functional.cosine_similarity(features[row, 0, :n].float().cpu(), ref, dim=-1)
        assert cosine.min() >= 0.999, (row, cosine.min())
    text = load_text_encoder(str(text_dir)).to("cuda", fp16=True)
    features, lengths = text(text.tokenize(TEXTS))
    model = _plain(text_dir)
    for row, sentence in enumerate(TEXTS):
        with torch.inference_mode():
            ref = model(**text.tokenizer(sentence, return_tensors="pt")).last_hidden_state[0]
        cosine = torch.nn.functional.cosine_similarity(features[row, 0, : lengths[row]].float().cpu(), ref, dim=-1)
        assert cosine.min() >= 0.999, (row, cosine.min())


def test_loading_an_encoder_switches_off_transformers_progress_bars(saved):
    """Its "Loading weights" bars would be `\\r` debris in a log (issue 13, P3)."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    load_encoders("pretrained", str(saved[0]), str(saved[1]))
    assert not hf_logging.is_progress_bar_enabled()


# ---------------------------------------------------------------------------------- every family
ZOO_LENGTHS = [81680, 30000, 16000, 400]  # the 5.1 s cap, shorter rows, one frame


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


def _saved(zoo_dir, name, builder):
    folder = zoo_dir / name
    if not folder.exists():
        zoo.save(builder, folder)
    return folder


def test_every_family_of_the_tables_has_a_tiny_model():
    assert set(zoo.AUDIO) == set(AUDIO_FAMILIES)
    assert set(zoo.TEXT) == set(TEXT_FAMILIES)
    assert {family for family, _ in zoo.AUDIO_VARIANTS.values()} == set(AUDIO_FAMILIES)


def _plain_single_audio(folder, wave):
    """hidden_states of the plain transformers model on one clip, no mask, no padding (Whisper: its
    own feature extractor's 30 s window, as Whisper always runs)."""
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(str(folder)).eval()
    with torch.inference_mode():
        if model.main_input_name == "input_features":
            fe = AutoFeatureExtractor.from_pretrained(str(folder))
            mel = torch.from_numpy(fe(wave, sampling_rate=16000, return_tensors="np")["input_features"])
            return model.get_encoder()(mel, output_hidden_states=True).hidden_states
        return model(torch.from_numpy(wave)[None], output_hidden_states=True).hidden_states


@pytest.mark.parametrize("variant", list(zoo.AUDIO_VARIANTS))
def test_every_audio_family_batched_rows_equal_plain_single_runs_at_every_layer(zoo_dir, waves, variant):
    family, builder = zoo.AUDIO_VARIANTS[variant]
    folder = _saved(zoo_dir, variant, builder)
    encoder = load_audio_encoder(str(folder), "all")
    assert encoder.family is AUDIO_FAMILIES[family] and encoder.layers == [0, 1, 2]
    clips = [waves[0][:n] + 0.01 * i for i, n in enumerate(ZOO_LENGTHS)]
    features, frames = encoder(*encoder.collate([encoder.prepare(w) for w in clips]))
    assert features.shape == (len(clips), 3, 255, encoder.dim)
    assert list(frames) == [encoder.frames(n) for n in ZOO_LENGTHS] and (frames[0], frames[-1]) == (255, 1)
    for row, clip in enumerate(clips):
        reference = _plain_single_audio(folder, clip)
        n = frames[row]
        for k in encoder.layers:
            torch.testing.assert_close(features[row, k, :n], reference[k][0, :n], atol=1e-4, rtol=1e-4,
                                       msg=lambda m: f"{variant} row {row} hidden state {k}: {m}")
        assert torch.count_nonzero(features[row, :, n:]) == 0


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("variant", ["wavlm-group", "data2vec-audio"])
def test_plain_padded_batches_of_the_families_with_a_fix_are_not_exact(zoo_dir, waves, variant):
    """Control: without its exact-batching step the family's padded rows differ from single runs."""
    from transformers import AutoModel

    folder = _saved(zoo_dir, variant, zoo.AUDIO_VARIANTS[variant][1])
    model = AutoModel.from_pretrained(str(folder)).eval()
    clips = [waves[0][:n] for n in ZOO_LENGTHS[:3]]
    batch, lengths = load_audio_encoder(str(folder)).collate(clips)
    mask = (torch.arange(batch.shape[1])[None] < lengths[:, None]).long()
    with torch.inference_mode():
        plain = model(batch, attention_mask=mask).last_hidden_state
    singles = [_plain_single_audio(folder, clip)[-1][0] for clip in clips]
    worst = max((plain[i, : len(r)] - r).abs().max().item() for i, r in enumerate(singles))
    assert worst > 0.01, worst


@pytest.mark.parametrize("family", list(zoo.TEXT))
def test_every_text_family_batched_rows_equal_plain_single_runs_at_every_layer(zoo_dir, family):
    from transformers import AutoModel

    folder = _saved(zoo_dir, family, zoo.TEXT[family])
    encoder = load_text_encoder(str(folder), "all", max_tokens=12)
    model = AutoModel.from_pretrained(str(folder)).eval()
    texts = ["okay", "that is wonderful news thank you " * 3, "I am so angry with you right now", ""]
    tokens = encoder.tokenize(texts)
    features, lengths = encoder(tokens)
    assert features.shape[:2] == (len(texts), encoder.num_layers + 1)
    tok = encoder.tokenizer
    first, last = (tok.cls_token_id, tok.sep_token_id) if tok.cls_token_id is not None else \
        (tok.bos_token_id, tok.eos_token_id)
    assert lengths[1] == 12  # cut at --max-tokens with the family's own special tokens inside
    assert tokens["input_ids"][1, 0] == first and tokens["input_ids"][1, 11] == last
    assert lengths[3] == 2  # an empty transcript is just the two special tokens
    for row, text in enumerate(texts):
        single = tok(text, max_length=12, truncation=True, return_tensors="pt")
        single = {k: v for k, v in single.items() if k in TEXT_FAMILIES[family].inputs}
        with torch.inference_mode():
            reference = model(**single, output_hidden_states=True).hidden_states
        n = lengths[row]
        assert reference[0].shape[1] == n
        for k in encoder.layers:
            torch.testing.assert_close(features[row, k, :n], reference[k][0], atol=1e-4, rtol=1e-4,
                                       msg=lambda m: f"{family} row {row} hidden state {k}: {m}")
        assert torch.count_nonzero(features[row, :, n:]) == 0


def test_an_unsupported_architecture_is_refused_in_one_line_naming_the_families(tmp_path):
    from transformers import AlbertConfig, AlbertModel, SEWConfig, SEWModel

    SEWModel(SEWConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       conv_dim=(16,) * 13)).save_pretrained(tmp_path / "sew")
    with pytest.raises(EncoderError) as err:
        load_audio_encoder(str(tmp_path / "sew"))
    assert "'sew' model) is not usable as the audio encoder; supported audio families: WavLM" in str(err.value)
    assert "\n" not in str(err.value)
    AlbertModel(AlbertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             embedding_size=16)).save_pretrained(tmp_path / "albert")
    with pytest.raises(EncoderError, match="supported text families: BERT, RoBERTa, XLM-R, DeBERTa-v2/v3, "
                                           "DistilBERT, ELECTRA, MPNet"):
        load_text_encoder(str(tmp_path / "albert"))


def test_hidden_sizes_that_differ_between_the_encoders_are_reported(zoo_dir):
    audio = load_audio_encoder(str(_saved(zoo_dir, "hubert-48", lambda h: zoo.AUDIO["hubert"](48))), "last")
    text = load_text_encoder(str(_saved(zoo_dir, "roberta", zoo.TEXT["roberta"])), "all")
    assert (audio.dim, text.dim) == (48, 32)
    assert describe([audio, text]) == (f"{audio.name} (HuBERT, 48-d, hidden state 2) + "
                                       f"{text.name} (RoBERTa, 32-d, hidden states 0-2)")
