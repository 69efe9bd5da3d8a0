"""--transcripts asr: WER by hand, an ASR cache of the IEMOCAP tree with a tiny random Whisper (its
transcripts, references and per-row WER equal jiwer's), resume from the progress file, and a gold
run and an ASR run of the same rows paired by swrr-compare."""
import json

import numpy as np
import pytest

from swrr.cache import open_cache
from swrr.extract.pipeline import ExtractConfig
from swrr.extract.runner import run_extraction
from swrr.extract.transcripts import progress_path, word_error_rates

jiwer = pytest.importorskip("jiwer")


def test_word_error_rates_by_hand():
    refs = ["Hello, world!", "the cat sat", "", "One two"]
    hyps = ["hello word", "The cat sat on", "anything", ""]
    rows, corpus = word_error_rates(refs, hyps)
    # punctuation and case do not count: 1 substitution of 2 words; 1 insertion of 3; no reference; 2 deletions of 2
    assert rows[0] == pytest.approx(0.5) and rows[1] == pytest.approx(1 / 3) and np.isnan(rows[2])
    assert rows[3] == pytest.approx(1.0)
    assert corpus == pytest.approx((1 + 1 + 2) / 7)  # all edits over all reference words, not a mean of rows
    assert np.isnan(word_error_rates([""], ["x"])[1])


def _config(root, out, whisper, **kw):
    return ExtractConfig(dataset="iemocap", root=root, out=out, encoders="tiny", device="cpu", num_workers=0,
                         progress=False, transcripts="asr", asr=str(whisper), **kw)


@pytest.fixture
def whisper(tmp_path):
    from swrr.predict.asr import save_random_whisper

    return save_random_whisper(tmp_path / "whisper")


@pytest.mark.slow
def test_an_asr_cache_stores_asr_text_references_and_wer(iemocap_tree, whisper, tmp_path):
    gold_out = tmp_path / "gold.h5"
    run_extraction(ExtractConfig(dataset="iemocap", root=iemocap_tree.root, out=gold_out, encoders="tiny",
                                 device="cpu", num_workers=0, progress=False))
    out = tmp_path / "asr.h5"
    # an interrupted earlier run left one row transcribed: it is reused, not transcribed again
    progress_path(out).write_text(json.dumps({"utt_id": "Ses01F_impro01_F000", "model": str(whisper),
                                              "text": "excuse me"}) + "\n" + '{"utt_id": "cut sho')
    summary = run_extraction(_config(iemocap_tree.root, out, whisper))
    gold, asr = open_cache(gold_out), open_cache(out)
    assert list(asr.utt_id) == list(gold.utt_id) and (asr.label == gold.label).all()
    assert asr.meta.transcripts == "asr" and asr.meta.asr["model"] == str(whisper) and gold.meta.transcripts == "gold"
    assert gold.wer is None and asr.meta.config["transcripts"] == "asr"
    assert list(asr.reference_transcript) == list(gold.transcript)
    row = list(asr.utt_id).index("Ses01F_impro01_F000")
    assert asr.transcript[row] == "excuse me" and asr.wer[row] == pytest.approx(0.0)  # "Excuse me." normalised
    transform = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                               jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    scored = [i for i, ref in enumerate(asr.reference_transcript) if ref.strip()]
    for i in range(len(asr)):
        if i in scored:
            assert asr.wer[i] == pytest.approx(jiwer.wer(asr.reference_transcript[i], asr.transcript[i],
                                                         reference_transform=transform, hypothesis_transform=transform))
        else:  # Ses01M_script01_1_F001 has an empty transcript: no WER
            assert np.isnan(asr.wer[i])
    corpus = jiwer.wer([asr.reference_transcript[i] for i in scored], [asr.transcript[i] for i in scored],
                       reference_transform=transform, hypothesis_transform=transform)
    assert asr.meta.asr["corpus_wer"] == pytest.approx(corpus) and asr.meta.asr["scored_rows"] == len(scored)
    assert any(f"WER {100 * corpus:.1f}%" in note and f"over {len(scored)} rows" in note for note in summary.notes)
    assert not progress_path(out).exists()  # removed once the cache is complete
    assert not (asr.transcript == gold.transcript).all()  # the random model's words are not the corpus'


@pytest.mark.slow
def test_gold_and_asr_runs_pair_in_swrr_compare(iemocap_tree, whisper, tmp_path):
    from swrr.train.compare import run_compare
    from swrr.train.config import TrainConfig
    from swrr.train.runner import run

    caches = {}
    for name, extra in (("gold", {}), ("asr", {"transcripts": "asr", "asr": str(whisper)})):
        caches[name] = tmp_path / f"{name}.h5"
        run_extraction(ExtractConfig(dataset="iemocap", root=iemocap_tree.root, out=caches[name], encoders="tiny",
                                     device="cpu", num_workers=0, progress=False, **extra))
    runs = {name: run(TrainConfig(cache=str(path), runs_dir=str(tmp_path / "runs"), name=name, epochs=1,
                                  batch_size=4, model={"lstm_hidden": 8, "cnn_channels": [4, 8]}, threads=1,
                                  progress=False, device="cpu"))
            for name, path in caches.items()}
    gold_config = json.loads((runs["gold"] / "config.json").read_text())["cache"]
    asr_config = json.loads((runs["asr"] / "config.json").read_text())["cache"]
    assert gold_config["fingerprint"] != asr_config["fingerprint"]  # other features ...
    assert gold_config["task_digest"] == asr_config["task_digest"]  # ... the same task
    assert (gold_config["transcripts"], asr_config["transcripts"]) == ("gold", "asr")
    rows, folder = run_compare([runs["gold"], runs["asr"]], ["UA"], tmp_path / "compare", 200, 0)
    assert rows[0]["units"] == 4 and (folder / "compare.csv").exists()  # the 4 speakers' folds, paired
