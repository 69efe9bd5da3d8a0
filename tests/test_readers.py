"""Dataset readers on miniature trees in the real formats (fixtures in conftest.py)."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from swrr.extract.datasets import READERS, DatasetError, get_reader, resolve_root
from swrr.extract.datasets.demo import BUNDLED_ROOT
from swrr.extract.datasets.iemocap import speaker_of
from swrr.extract.datasets.mosei import standard_folds


def _by_id(reader):
    utts = list(reader.utterances())
    assert len({u.utt_id for u in utts}) == len(utts)
    return {u.utt_id: u for u in utts}


# ---------------------------------------------------------------- registry and roots
def test_registry_names_match_readers():
    assert set(READERS) == {"iemocap", "mosei", "meld", "mmsa", "msp-podcast", "manifest", "demo"}
    for name, cls in READERS.items():
        assert cls.name == name


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(DatasetError, match="unknown dataset 'iemocapp'.*iemocap, mosei"):
        get_reader("iemocapp")


def test_root_found_under_swrr_data(iemocap_tree, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWRR_DATA", str(iemocap_tree.root.parent))
    reader = get_reader("iemocap")
    assert reader.root == iemocap_tree.root


def test_root_found_under_data_folder(iemocap_tree, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    iemocap_tree.root.rename(tmp_path / "data" / "IEMOCAP_full_release")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWRR_DATA", raising=False)
    assert get_reader("iemocap").root == Path("data/IEMOCAP_full_release")


def test_missing_root_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWRR_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError) as err:
        resolve_root("iemocap")
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "IEMOCAP_full_release") in message
    assert "data/IEMOCAP_full_release" in message and "--root" in message and "SWRR_DATA" in message


def test_explicit_root_that_does_not_exist(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        get_reader("mosei", tmp_path / "absent")


# ---------------------------------------------------------------- IEMOCAP
def test_iemocap_labels_speakers_sessions(iemocap_tree):
    reader = get_reader("iemocap", iemocap_tree.root)
    utts = _by_id(reader)
    assert {k: u.label for k, u in utts.items()} == iemocap_tree.expected["labels"]
    assert reader.label_names == ("neu", "hap", "ang", "sad") and reader.task == "classification"
    assert utts["Ses01F_impro01_M012"].speaker == "Ses01M"  # the last `_` part decides, not the dialog
    assert utts["Ses01F_impro01_F000"].speaker == "Ses01F"
    assert utts["Ses02M_impro03_F000"].speaker == "Ses02F" and utts["Ses02M_impro03_F000"].session == "Ses02"
    assert utts["Ses01F_impro01_F000"].transcript == "Excuse me."
    assert utts["Ses01M_script01_1_F001"].transcript == ""
    wav = utts["Ses01F_impro01_F000"].audio_path
    assert wav == iemocap_tree.root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    assert all(u.split == "" and u.start is None for u in utts.values())


def test_iemocap_skips_are_counted_and_reset(iemocap_tree):
    reader = get_reader("iemocap", iemocap_tree.root)
    list(reader.utterances())
    assert dict(reader.skipped) == iemocap_tree.expected["skipped"]
    list(reader.utterances())  # a second pass does not double the counts
    assert dict(reader.skipped) == iemocap_tree.expected["skipped"]


def test_iemocap_speaker_rule():
    assert speaker_of("Ses01F_impro01_M012") == "Ses01M"
    assert speaker_of("Ses05M_script02_2_F014") == "Ses05F"


@pytest.mark.parametrize("make", ["empty", "one_session"])
def test_iemocap_wrong_root(iemocap_tree, tmp_path, make):
    root = tmp_path / "empty" if make == "empty" else iemocap_tree.root / "Session1"
    root.mkdir(exist_ok=True)
    with pytest.raises(DatasetError) as err:
        get_reader("iemocap", root)
    assert str(root) in str(err.value) and "Session" in str(err.value)
    if make == "one_session":
        assert "pass its parent" in str(err.value)


def test_iemocap_sessions_without_labels(tmp_path):
    (tmp_path / "Session1" / "dialog" / "EmoEvaluation").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no label files"):
        get_reader("iemocap", tmp_path)


# ---------------------------------------------------------------- MOSEI
def test_mosei_folds_file_is_parsed_as_data(tmp_path):
    folds_file = tmp_path / "cmu_mosei_std_folds.py"
    folds_file.write_text("import os\nstandard_train_fold=['a','b']\nstandard_valid_fold=['c']\n"
                          "standard_test_fold=['d']\nos.remove('x')  # never executed\n")
    assert standard_folds(folds_file) == {"a": "train", "b": "train", "c": "valid", "d": "test"}
    folds_file.write_text("standard_train_fold=['a']\n")
    with pytest.raises(DatasetError, match="expected the lists"):
        standard_folds(folds_file)


def test_mosei_raw_release_without_folds_file(mosei_raw_tree):
    (mosei_raw_tree.root / "cmu_mosei_std_folds.py").unlink()
    with pytest.raises(DatasetError, match="cmu_mosei_std_folds.py was not found"):
        get_reader("mosei", mosei_raw_tree.root)


def test_mosei_raw_release(mosei_raw_tree):
    reader = get_reader("mosei", mosei_raw_tree.root)
    assert reader.task == "regression" and reader.label_names == () and reader.label_scale == (-3.0, 3.0)
    utts = _by_id(reader)
    assert set(utts) == set(mosei_raw_tree.expected["utts"])
    for utt_id, (label, split, start, end, text) in mosei_raw_tree.expected["utts"].items():
        u = utts[utt_id]
        assert u.label == pytest.approx(label) and u.split == split and u.transcript == text
        assert u.start == pytest.approx(start) and u.end == pytest.approx(end)
        assert u.audio_path.name == f"{u.speaker}.wav"
    assert dict(reader.skipped) == mosei_raw_tree.expected["skipped"]


def test_mosei_raw_labels_file_one_folder_down(mosei_raw_tree):
    labels = mosei_raw_tree.root / "CMU_MOSEI_Labels.csd"
    (mosei_raw_tree.root / "labels").mkdir()
    labels.rename(mosei_raw_tree.root / "labels" / labels.name)
    assert len(list(get_reader("mosei", mosei_raw_tree.root).utterances())) == 5


def test_mosei_refuses_the_label_csv_layout_naming_mmsa(tmp_path):
    with pytest.raises(DatasetError, match="raw release was not found.*--dataset mmsa"):
        get_reader("mosei", tmp_path)
    (tmp_path / "label.csv").write_text("video_id,clip_id,text,label,mode\nv1,0,hi,1.0,train\n")
    for root in (tmp_path, tmp_path / "label.csv"):
        with pytest.raises(DatasetError, match="label.csv: the label.csv layout .MMSA's. is read by --dataset mmsa"):
            get_reader("mosei", root)


def test_mosei_labels_file_that_is_not_a_label_sequence(mosei_raw_tree):
    import h5py

    labels = mosei_raw_tree.root / "CMU_MOSEI_Labels.csd"
    labels.write_text("not hdf5")
    with pytest.raises(DatasetError, match="CMU_MOSEI_Labels.csd: not a readable HDF5"):
        get_reader("mosei", mosei_raw_tree.root)
    with h5py.File(labels, "w") as h5:
        h5.create_group("All Labels").create_group("metadata")
    with pytest.raises(DatasetError, match="not a computational sequence"):
        get_reader("mosei", mosei_raw_tree.root)
    with h5py.File(labels, "w") as h5:
        video = h5.create_group("All Labels/data/v1")
        video["features"], video["intervals"] = np.zeros((3, 7)), np.zeros((2, 2))
    with pytest.raises(DatasetError, match="video v1: features .3, 7. and intervals .2, 2. do not pair up"):
        get_reader("mosei", mosei_raw_tree.root)


# ---------------------------------------------------------------- manifest
def test_manifest_good(manifest_tree):
    for root in (manifest_tree.root, manifest_tree.root.parent):  # the CSV or its folder
        reader = get_reader("manifest", root)
        utts = list(reader.utterances())
        assert [u.utt_id for u in utts] == manifest_tree.expected["ids"]
        assert reader.task == "classification" and reader.label_names == manifest_tree.expected["label_names"]
        assert [u.split for u in utts] == manifest_tree.expected["splits"]
        assert utts[0].audio_path == manifest_tree.root.parent / "audio" / "a.wav"
        assert utts[1].transcript == "well, no" and utts[2].transcript == ""
        assert (utts[2].start, utts[2].end) == (0.5, 1.5) and utts[0].start is None
        assert utts[1].speaker == "spk2" and utts[2].session == "s2"
        assert dict(reader.skipped) == manifest_tree.expected["skipped"]


def test_manifest_numeric_labels_mean_regression(tmp_path, wav_writer):
    wav_writer(tmp_path / "a.wav")
    wav_writer(tmp_path / "b.wav")
    (tmp_path / "m.csv").write_text("path,text,label,utt_id\na.wav,x,-1.5,u1\nb.wav,y,2,u2\n")
    reader = get_reader("manifest", tmp_path / "m.csv")
    assert reader.task == "regression" and reader.label_names == ()
    assert [u.label for u in reader.utterances()] == [-1.5, 2.0]


@pytest.mark.parametrize("content, pattern", [
    ("path,label\na.wav,x\n", r"m\.csv: missing required column\(s\) text"),
    ("wav,transcript\na.wav,x\n", r"missing required column\(s\) path, text, label"),
    ("path,text,label\na.wav,x,hap\na.wav,y,sad\n", r"duplicate utterance ids a; add a unique utt_id column"),
    ("path,text,label,utt_id\na.wav,x,hap,u\nb.wav,y,sad,u\n", "duplicate utterance ids u; make the utt_id"),
    ("path,text,label\na.wav,x,\n", r"empty label on line\(s\) 2"),
    ("path,text,label\n,x,hap\n", r"empty path on line\(s\) 2"),
    ("path,text,label,split\na.wav,x,hap,training\n", "unknown split on line.* 2 .*'training'"),
    ("path,text,label,start,end\na.wav,x,hap,2.0,1.0\n", "line 2: end 1.0 is not after start 2.0"),
    ("path,text,label,start\na.wav,x,hap,soon\n", "line 2: start='soon' is not a time"),
    ("path,text,label\n", "header but no rows"),
    ("", "not a readable CSV"),
])
def test_manifest_bad(tmp_path, content, pattern):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(DatasetError, match=pattern):
        get_reader("manifest", tmp_path / "m.csv")


def test_manifest_not_utf8_names_the_line(tmp_path):
    (tmp_path / "m.csv").write_bytes(b"path,text,label\na.wav,ok,hap\nb.wav,caf\xe9,sad\n")
    with pytest.raises(DatasetError, match=r"m\.csv: line 3 is not valid UTF-8"):
        get_reader("manifest", tmp_path / "m.csv")


def test_manifest_utf8_bom_and_non_ascii_text(tmp_path, wav_writer):
    wav_writer(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_bytes("\ufeffpath,text,label\na.wav,café über,hap\n".encode("utf-8"))
    (utt,) = get_reader("manifest", tmp_path / "m.csv").utterances()
    assert utt.transcript == "café über"


def test_manifest_folder_without_manifest(tmp_path):
    with pytest.raises(DatasetError, match="manifest.csv: manifest not found"):
        get_reader("manifest", tmp_path)


# ---------------------------------------------------------------- demo
def test_demo_bundled_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/demo here, so the bundled copy is used
    monkeypatch.delenv("SWRR_DATA", raising=False)
    reader = get_reader("demo")
    assert reader.root == BUNDLED_ROOT
    utts = list(reader.utterances())
    assert len(utts) == 96 and not reader.skipped
    assert reader.label_names == ("ang", "hap", "neu", "sad")
    assert Counter(u.label for u in utts) == {"ang": 24, "hap": 24, "neu": 24, "sad": 24}
    assert Counter(u.split for u in utts) == {"train": 48, "valid": 24, "test": 24}
    assert Counter((u.label, u.split) for u in utts)[("sad", "test")] == 6
    assert len({u.speaker for u in utts}) == 4 and {u.session for u in utts} == {"S1", "S2"}
    assert all(u.transcript for u in utts)
    # learnable by design: every valid/test sentence is also spoken (by other voices) in train
    train_texts = {u.transcript for u in utts if u.split == "train"}
    assert all(u.transcript in train_texts for u in utts)
    assert sum(p.stat().st_size for p in BUNDLED_ROOT.rglob("*") if p.is_file()) < 4_500_000


def test_iemocap_files_starting_with_a_bom_lose_no_utterance(iemocap_tree):
    """A UTF-8 BOM before the first line of a transcription or EmoEvaluation file (issue 13 P2.8)."""
    root = iemocap_tree.root
    for sub in ("transcriptions", "EmoEvaluation"):
        path = root / "Session1" / "dialog" / sub / "Ses01M_script01_1.txt"
        text = path.read_text()
        if sub == "EmoEvaluation":  # the first line is a header in the release: make an utterance line first
            text = "\n".join(line for line in text.splitlines() if not line.startswith("%"))
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert {u.utt_id: u.label for u in get_reader("iemocap", root).utterances()} == iemocap_tree.expected["labels"]


@pytest.mark.parametrize("missing", ["nan", "NA", "inf", "-inf", "NaN"])
def test_a_regression_manifest_with_a_missing_score_names_the_line(tmp_path, missing):
    (tmp_path / "m.csv").write_text(f"path,text,label\na.wav,x,0.5\nb.wav,y,{missing}\nc.wav,z,-1\n")
    with pytest.raises(DatasetError, match=f"label '{missing}' on line\\(s\\) 3 is not a finite score"):
        get_reader("manifest", tmp_path / "m.csv")


def test_a_ragged_manifest_row_is_one_line_naming_it(tmp_path):
    (tmp_path / "m.csv").write_text("path,text,label\na.wav,x,hap\nb.wav,well, no,sad\n")
    with pytest.raises(DatasetError) as err:
        get_reader("manifest", tmp_path / "m.csv")
    assert str(err.value) == (f"{tmp_path / 'm.csv'}: line 3 has 4 fields but the header has 3; "
                              'quote fields that contain commas ("well, no")')
