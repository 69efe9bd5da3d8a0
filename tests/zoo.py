"""Tiny random encoders of every family in extract.encoders' tables, saved with save_pretrained.

One builder per config.model_type: a config small enough for a test (2 layers, 32-64 wide) with
the family's real front end (the wav2vec2 conv strides, Whisper's 80 mel bins and 30 s window),
and a feature extractor or tokenizer of the family's kind built offline (WordPiece, byte-level
BPE or a SentencePiece-style Unigram vocabulary). test_encoders.py checks that every family of
the tables has a builder here.
"""
from pathlib import Path

import torch

from swrr.extract.encoders import TINY_VOCAB

HIDDEN = 32
_LAYERS = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
_CONV = dict(conv_dim=(16,) * 7, num_conv_pos_embedding_groups=2)
WORDS = [w for w in TINY_VOCAB.read_text().split() if w.isalpha()]


def _waveform_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=False, return_attention_mask=True)


def _audio(config_class, **overrides):
    def build(hidden=HIDDEN):
        from transformers import AutoModel

        config = getattr(__import__("transformers"), config_class)(hidden_size=hidden, **_LAYERS,
                                                                   **{**_CONV, **overrides})
        return AutoModel.from_config(config), _waveform_extractor()
    return build


def _whisper(hidden=HIDDEN):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    config = WhisperConfig(d_model=hidden, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                           vocab_size=64, max_target_positions=16, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, decoder_start_token_id=0)
    return WhisperModel(config), WhisperFeatureExtractor(feature_size=80)


AUDIO = {  # model_type (family) -> builder; "wav2vec2" has three variants below
    "wavlm": _audio("WavLMConfig"),
    "hubert": _audio("HubertConfig"),
    "wav2vec2": _audio("Wav2Vec2Config", feat_extract_norm="group"),
    "data2vec-audio": _audio("Data2VecAudioConfig", num_conv_pos_embeddings=3, conv_pos_kernel_size=5),
    "whisper": _whisper,
}
AUDIO_VARIANTS = {  # name -> (family, builder): every batching rule of the table once
    "wavlm-group": ("wavlm", AUDIO["wavlm"]),
    "wavlm-stable": ("wavlm", _audio("WavLMConfig", feat_extract_norm="layer", do_stable_layer_norm=True)),
    "hubert-group": ("hubert", AUDIO["hubert"]),
    "wav2vec2-group": ("wav2vec2", AUDIO["wav2vec2"]),
    "wav2vec2-layer": ("wav2vec2", _audio("Wav2Vec2Config", feat_extract_norm="layer")),
    "wav2vec2-stable": ("wav2vec2", _audio("Wav2Vec2Config", feat_extract_norm="layer", do_stable_layer_norm=True)),
    "data2vec-audio": ("data2vec-audio", AUDIO["data2vec-audio"]),
    "whisper": ("whisper", _whisper),
}


def _wordpiece(tokenizer_class, specials=None):
    import transformers

    vocab = {w: i for i, w in enumerate(TINY_VOCAB.read_text().split("\n")) if w}
    for token in specials or ():
        vocab.setdefault(token, len(vocab))
    return getattr(transformers, tokenizer_class)(vocab=vocab, do_lower_case=True)


def _byte_bpe(tokenizer_class):
    import transformers
    from tokenizers import pre_tokenizers

    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(ch, len(vocab))
    return getattr(transformers, tokenizer_class)(vocab=vocab, merges=[])


def _unigram(tokenizer_class, specials):
    import transformers

    pieces = [(t, 0.0) for t in specials] + [("\u2581" + w, -1.0) for w in WORDS]
    pieces += [(ch, -5.0) for ch in "abcdefghijklmnopqrstuvwxyz,.!?'\u2581"]
    return getattr(transformers, tokenizer_class)(vocab=pieces)


def _text(config_class, tokenizer, **overrides):
    def build(hidden=HIDDEN):
        import transformers
        from transformers import AutoModel

        tok = tokenizer()
        config = getattr(transformers, config_class)(vocab_size=len(tok), **{**_text_sizes(config_class, hidden),
                                                                             **overrides})
        config.pad_token_id = tok.pad_token_id
        return AutoModel.from_config(config), tok
    return build


def _text_sizes(config_class, hidden):
    if config_class == "DistilBertConfig":
        return dict(dim=hidden, n_layers=2, n_heads=2, hidden_dim=64)
    return dict(hidden_size=hidden, **_LAYERS)


TEXT = {
    "bert": _text("BertConfig", lambda: _wordpiece("BertTokenizer")),
    "roberta": _text("RobertaConfig", lambda: _byte_bpe("RobertaTokenizer"), max_position_embeddings=80),
    "xlm-roberta": _text("XLMRobertaConfig", lambda: _unigram("XLMRobertaTokenizer",
                                                              ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]),
                         max_position_embeddings=80),
    "deberta-v2": _text("DebertaV2Config", lambda: _unigram("DebertaV2Tokenizer",
                                                            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
                        relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"],
                        type_vocab_size=0, max_position_embeddings=64),
    "distilbert": _text("DistilBertConfig", lambda: _wordpiece("DistilBertTokenizer")),
    "electra": _text("ElectraConfig", lambda: _wordpiece("ElectraTokenizer"), embedding_size=16),
    "mpnet": _text("MPNetConfig", lambda: _wordpiece("MPNetTokenizer", ["<s>", "</s>", "<pad>", "<mask>"])),
}


def save(builder, folder: Path, seed: int = 0, hidden: int = HIDDEN) -> Path:
    """A tiny random model of `builder` and its extractor/tokenizer in `folder`, as from_pretrained reads them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = builder(hidden)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
