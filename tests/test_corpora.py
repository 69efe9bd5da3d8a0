"""MELD, MMSA (MOSI, SIMS), MSP-Podcast and IEMOCAP's dimensions, on miniature trees in the real
layouts (tests/corpora_trees.py): counts per split, class and speaker, the quirks, and the label
kinds reaching the cache."""
from collections import Counter

import numpy as np
import pytest

from swrr.cache import open_cache
from swrr.extract.audio import check_utterances, load_audio
from swrr.extract.datasets import DatasetError, get_reader
from swrr.extract.datasets.meld import repair_c1
from swrr.extract.pipeline import ExtractConfig
from swrr.extract.runner import run_extraction
from swrr.extract.video import decode_audio_track

pytest.importorskip("av")


def _by_id(reader):
    utts = list(reader.utterances())
    assert len({u.utt_id for u in utts}) == len(utts)
    return {u.utt_id: u for u in utts}


def _extract(name, root, out, **kw):
    return run_extraction(ExtractConfig(dataset=name, root=root, out=out, encoders="tiny", device="cpu",
                                        num_workers=0, progress=False, **kw))


# ---------------------------------------------------------------- video decoding
def test_mp4_audio_track_decodes_to_the_tone_written(tmp_path):
    from corpora_trees import write_mp4

    path = write_mp4(tmp_path / "clip.mp4", seconds=0.5, sample_rate=48000, channels=2, freq=440.0)
    samples, rate = decode_audio_track(path)
    assert rate == 48000 and samples.shape[1] == 2 and samples.dtype == np.float32
    assert abs(samples.shape[0] - 24000) <= 2048  # AAC adds priming / padding frames
    spectrum = np.abs(np.fft.rfft(samples[4096:20480, 0]))
    assert np.fft.rfftfreq(16384, 1 / 48000)[spectrum.argmax()] == pytest.approx(440.0, abs=3.0)

    class Clip:
        audio_path, start, end = path, None, None

    mono16k = load_audio(Clip(), 16000, max_samples=None)  # the extraction's own loader: resampled, mono
    assert abs(len(mono16k) - samples.shape[0] / 3) <= 2 and np.isfinite(mono16k).all()


def test_unreadable_and_trackless_videos_are_counted_skips(tmp_path):
    from corpora_trees import write_mp4

    from swrr.extract.datasets import Utterance

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    silent = tmp_path / "silent.mp4"
    import av

    with av.open(str(silent), "w") as out:  # a picture track only
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode(None))
    good = write_mp4(tmp_path / "good.mp4", seconds=0.3)
    utts = [Utterance(name, path, "", "x") for name, path in (("b", bad), ("s", silent), ("g", good))]
    checked = check_utterances(utts)
    assert [u.utt_id for u in checked.utterances] == ["g"]
    assert checked.skipped == {"unreadable video file": 1, "video without an audio track": 1}


# ---------------------------------------------------------------- MELD
def test_c1_punctuation_is_repaired():
    assert repair_c1("company\u0092s \u0093hi\u0094 so\u0097no\u0085") == "company\u2019s \u201chi\u201d so\u2014no\u2026"
    assert repair_c1("plain caf\u00e9") == "plain caf\u00e9"  # Latin-1 letters are not C1
    assert repair_c1("a\u0081b") == "ab"  # undefined in cp1252: dropped


def test_meld_reader(meld_tree):
    reader = get_reader("meld", meld_tree.root)
    expected = meld_tree.expected
    utts = _by_id(reader)
    assert reader.task == "classification" and reader.label_names[:2] == ("neutral", "joy")
    assert Counter(u.split for u in utts.values()) == expected["per_split"]
    assert Counter(u.label for u in utts.values()) == expected["per_class"]
    assert Counter(u.speaker for u in utts.values()) == expected["per_speaker"]
    assert dict(reader.skipped) == expected["skipped"] and reader.skipped_items == {"missing clip": expected["missing"]}
    for utt_id, text in expected["texts"].items():
        assert utts[utt_id].transcript == text
    assert not any("\u0080" <= ch <= "\u009f" for u in utts.values() for ch in u.transcript)
    for utt_id, sentiment in expected["sentiment"].items():
        assert utts[utt_id].extras == {"sentiment": sentiment}
    assert utts["valid_dia0_utt0"].audio_path == meld_tree.root / "dev/dev_splits_complete/dia0_utt0.mp4"
    list(reader.utterances())
    assert dict(reader.skipped) == expected["skipped"]  # a second pass does not count twice


def test_meld_extraction_stores_emotion_and_sentiment(meld_tree, tmp_path):
    summary = _extract("meld", meld_tree.root, tmp_path / "meld.h5")
    expected = meld_tree.expected
    assert summary.skipped == {"missing clip": 1, "unreadable video file": 1}
    bad_clip = meld_tree.root / "output_repeated_splits_test" / "dia0_utt2.mp4"
    assert set(summary.notes) == {"skipped (missing clip): valid/dia0_utt2",
                                  f"skipped (unreadable video file): {bad_clip}"}  # named, not only counted
    assert summary.per_split == {"train": 7, "valid": 2, "test": 2}
    cache = open_cache(tmp_path / "meld.h5")
    assert expected["unreadable"] not in set(cache.utt_id)
    assert cache.meta.label_kinds == {"sentiment": {"type": "classes", "names": ["negative", "neutral", "positive"]}}
    row = {u: i for i, u in enumerate(cache.utt_id)}
    names = cache.meta.label_kinds["sentiment"]["names"]
    for utt_id, sentiment in expected["sentiment"].items():
        assert names[cache.extra_labels["sentiment"][row[utt_id]]] == sentiment
    assert cache.meta.label_names[cache.label[row["train_dia1_utt0"]]] == "joy"
    assert cache.transcript[row["train_dia0_utt0"]] == expected["texts"]["train_dia0_utt0"]
    assert (cache.audio_len > 10).all()  # 0.4 s of decoded audio: ~20 WavLM frames


@pytest.mark.parametrize("broken", ["no_csv", "no_clips", "bad_emotion"])
def test_meld_wrong_root(meld_tree, broken):
    import shutil

    root = meld_tree.root
    if broken == "no_csv":
        (root / "dev_sent_emo.csv").unlink()
        pattern = "lacks dev_sent_emo.csv"
    elif broken == "no_clips":
        for folder in ("train_splits", "dev", "output_repeated_splits_test"):
            shutil.rmtree(root / folder)
        pattern = "holds none of the clip folders"
    else:
        path = root / "test_sent_emo.csv"
        path.write_text(path.read_text().replace(",anger,", ",angry,"))
        pattern = r"test_sent_emo.csv: unknown Emotion value\(s\) \['angry'\]"
    with pytest.raises(DatasetError, match=pattern):
        get_reader("meld", root)


# ---------------------------------------------------------------- MMSA
def test_mmsa_mosi(mosi_tree):
    for root in (mosi_tree.root, mosi_tree.root / "label.csv"):
        reader = get_reader("mmsa", root)
        assert reader.corpus == "mosi" and reader.label_scale == (-3.0, 3.0) and reader.label_kinds == {}
        utts = _by_id(reader)
        assert {k: (u.label, u.split) for k, u in utts.items()} == mosi_tree.expected["utts"]
        assert dict(reader.skipped) == mosi_tree.expected["skipped"]
        assert utts["0h-zjBukYpk_2"].audio_path.suffix == ".wav"  # an audio file beside the clip wins
        assert utts["03bSnISJMiM_10"].audio_path.suffix == ".mp4" and utts["03bSnISJMiM_10"].speaker == "03bSnISJMiM"
        assert Counter(u.split for u in utts.values()) == {"train": 2, "valid": 1, "test": 1}


def test_mmsa_sims_scale_and_unimodal_labels(sims_tree, tmp_path):
    reader = get_reader("mmsa", sims_tree.root)
    assert reader.corpus == "sims" and reader.label_scale == (-1.0, 1.0)
    assert set(reader.label_kinds) == {"sentiment_text", "sentiment_audio", "sentiment_vision"}
    utts = _by_id(reader)
    assert utts["video_0001_0001"].extras == {"sentiment_text": 0.4, "sentiment_audio": -0.4, "sentiment_vision": 1.0}
    assert utts["video_0001_0001"].transcript == "\u6211\u5f88\u9ad8\u5174"
    _extract("mmsa", sims_tree.root, tmp_path / "sims.h5")
    cache = open_cache(tmp_path / "sims.h5")
    assert cache.meta.label_scale == [-1.0, 1.0] and cache.meta.task == "regression"
    row = {u: i for i, u in enumerate(cache.utt_id)}
    assert cache.label[row["video_0002_0001"]] == pytest.approx(-1.0)
    assert np.isnan(cache.extra_labels["sentiment_vision"][row["video_0003_0001"]])  # NaN in label.csv
    assert cache.extra_labels["sentiment_text"][row["video_0001_0002"]] == pytest.approx(0.1)


def test_mmsa_scale_from_the_labels_when_the_folder_does_not_say(sims_tree, mosi_tree, tmp_path):
    for tree, corpus in ((sims_tree, "sims"), (mosi_tree, "mosei")):
        moved = tmp_path / f"renamed_{corpus}"
        tree.root.rename(moved)
        assert get_reader("mmsa", moved).corpus == corpus


def test_mmsa_wrong_root_and_bad_mode(tmp_path):
    with pytest.raises(DatasetError, match="no label.csv in it"):
        get_reader("mmsa", tmp_path)
    (tmp_path / "label.csv").write_text("video_id,clip_id,text,label,mode\nv1,0,hi,1.0,training\n")
    with pytest.raises(DatasetError, match="unknown mode.*training"):
        get_reader("mmsa", tmp_path)
    (tmp_path / "label.csv").write_text("video_id,clip_id,text,mode\nv1,0,hi,train\n")
    with pytest.raises(DatasetError, match="missing required column.*label"):
        get_reader("mmsa", tmp_path)


# ---------------------------------------------------------------- MSP-Podcast
def test_msp_podcast_reader(msp_podcast_tree):
    reader = get_reader("msp-podcast", msp_podcast_tree.root)
    expected = msp_podcast_tree.expected
    utts = _by_id(reader)
    assert {k: u.label for k, u in utts.items()} == {**expected["labels"], **expected["optional"]}
    assert dict(reader.skipped) == expected["skipped"]
    a = utts["MSP-PODCAST_0002_0033"]
    assert a.extras == dict(zip(("arousal", "valence", "dominance"), expected["dims"]["MSP-PODCAST_0002_0033"]))
    assert a.transcript == "words of 0002_0033" and a.speaker == "861" and a.split == "train"
    assert reader.label_kinds["valence"] == {"type": "score", "scale": [1.0, 7.0]}


def test_msp_podcast_extraction_leaves_o_and_x_out_unless_asked(msp_podcast_tree, tmp_path):
    expected = msp_podcast_tree.expected
    summary = _extract("msp-podcast", msp_podcast_tree.root, tmp_path / "msp.h5")
    assert summary.skipped == {**expected["skipped"], "label O": 1, "label X": 1}
    assert summary.per_split == expected["splits"]
    cache = open_cache(tmp_path / "msp.h5")
    assert Counter(cache.speaker) == expected["speakers"]
    assert {u: cache.meta.label_names[i] for u, i in zip(cache.utt_id, cache.label)} == expected["labels"]
    row = list(cache.utt_id).index("MSP-PODCAST_0002_0033")
    got = [cache.extra_labels[k][row] for k in ("arousal", "valence", "dominance")]
    assert got == pytest.approx(expected["dims"]["MSP-PODCAST_0002_0033"])
    with_o = _extract("msp-podcast", msp_podcast_tree.root, tmp_path / "msp_o.h5", labels=("N", "H", "O"))
    assert with_o.per_class == {"H": 1, "N": 1, "O": 1}
    with pytest.raises(DatasetError, match="--labels: Q not among the dataset's classes"):
        _extract("msp-podcast", msp_podcast_tree.root, tmp_path / "msp_q.h5", labels=("Q",))


def test_msp_podcast_without_transcripts_or_labels(msp_podcast_tree):
    import shutil

    shutil.rmtree(msp_podcast_tree.root / "Transcripts")
    with pytest.raises(DatasetError, match="no Transcripts/ folder"):
        get_reader("msp-podcast", msp_podcast_tree.root)
    (msp_podcast_tree.root / "Labels" / "labels_consensus.csv").unlink()
    with pytest.raises(DatasetError, match="expected Labels/labels_consensus.csv"):
        get_reader("msp-podcast", msp_podcast_tree.root)


# ---------------------------------------------------------------- IEMOCAP dimensions
def test_iemocap_vad_is_read_exactly(iemocap_tree, tmp_path):
    evaluation = iemocap_tree.root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    text = evaluation.read_text().replace("Ses01F_impro01_M012\tang\t[2.5000, 3.0000, 2.5000]",
                                          "Ses01F_impro01_M012\tang\t[1.5000, 4.5000, 3.6667]")
    evaluation.write_text(text)
    utts = _by_id(get_reader("iemocap", iemocap_tree.root))
    assert utts["Ses01F_impro01_M012"].extras == {"valence": 1.5, "arousal": 4.5, "dominance": 3.6667}
    assert all(u.extras == {"valence": 2.5, "arousal": 3.0, "dominance": 2.5}
               for k, u in utts.items() if k != "Ses01F_impro01_M012")
    _extract("iemocap", iemocap_tree.root, tmp_path / "iemocap.h5")
    cache = open_cache(tmp_path / "iemocap.h5")
    assert cache.meta.label_kinds["arousal"] == {"type": "score", "scale": [1.0, 5.0]}
    row = list(cache.utt_id).index("Ses01F_impro01_M012")
    assert cache.extra_labels["dominance"][row] == pytest.approx(3.6667)
    assert cache.extra_labels["valence"].dtype == np.float32 and len(cache.extra_labels["valence"]) == len(cache)


def test_a_cache_without_label_kinds_opens_as_before(iemocap_tree, tmp_path):
    """Caches written before label kinds existed lack the attributes and /labels: no further kinds."""
    import h5py

    out = tmp_path / "old.h5"
    _extract("iemocap", iemocap_tree.root, out)
    with h5py.File(out, "r+") as h5:
        del h5["labels"], h5.attrs["label_kinds"], h5.attrs["label_scale"]
    cache = open_cache(out)
    assert cache.extra_labels == {} and cache.meta.label_kinds == {} and cache.meta.label_scale == []
    assert len(cache) == 8


def test_the_new_optional_fields_leave_an_old_caches_fingerprint_as_it_was():
    from swrr.cache import OPTIONAL_FIELDS, CacheMeta

    plain = CacheMeta(dataset="iemocap", task="classification", label_names=["neu"], audio_encoder="a",
                      text_encoder="t", audio_dim=4, text_dim=4)
    assert not set(OPTIONAL_FIELDS) & set(plain.identity_attrs())  # as a cache written before them hashes
    assert {k: v for k, v in plain.to_attrs().items() if k not in OPTIONAL_FIELDS} == plain.identity_attrs()
    kinds = CacheMeta(**{**plain.__dict__, "label_kinds": {"valence": {"type": "score", "scale": [1.0, 5.0]}}})
    assert "label_kinds" in kinds.identity_attrs()
