"""Learned layer weights over a multi-layer cache (issue 19): the head's mixer, --layers,
--layer-mix learned|mean|LAYER, the reports, and that a one-layer cache trains as before."""
import json

import numpy as np
import pytest
import torch

from conftest import to_old_layout
from swrr.cache import CacheMeta, CacheWriter, FeatureCache, RowInfo
from swrr.model import SWRR, LayerMix, SWRRConfig
from swrr.train.config import TrainConfig, TrainError
from swrr.train.runner import run

DIM, FRAMES, TOKENS, N = 16, 35, 6, 48
STORED = [0, 4, 8]  # hidden states of the synthetic cache
SPEAKERS = ("S1F", "S1M", "S2F", "S2M")


def layered_cache(path, informative=8, stored=STORED, seed=0, keep=None):
    """Rows whose class pattern is only in hidden state `informative` (the others are noise);
    `keep` writes only those stored hidden states (a one-layer cache when one is given)."""
    rng = np.random.default_rng(seed)
    cls = (np.arange(N) // 4) % 4
    pattern = rng.normal(size=(4, DIM))
    layers = {k: rng.normal(size=(N, FRAMES, DIM)) + (2 * pattern[cls][:, None, :] if k == informative else 0)
              for k in stored}
    text = {k: rng.normal(size=(N, TOKENS, DIM)) + (2 * pattern[cls][:, None, :] if k == informative else 0)
            for k in stored}
    keep = stored if keep is None else keep
    meta = CacheMeta(dataset="synthetic", task="classification", label_names=["neu", "ang", "sad", "hap"],
                     audio_encoder="synthetic", text_encoder="synthetic", audio_dim=DIM, text_dim=DIM,
                     max_frames=FRAMES, max_tokens=TOKENS, audio_layers=list(keep), text_layers=list(keep),
                     layer=keep[0] if len(keep) == 1 else -1, config={"seed": seed})
    rows = [RowInfo(utt_id=f"u{i:03d}", label=int(cls[i]), speaker=SPEAKERS[i % 4], session=SPEAKERS[i % 4][:2],
                    split=("train", "train", "train", "valid", "test")[i % 5]) for i in range(N)]
    writer = CacheWriter.open(path, meta, rows)
    audio_len, text_len = rng.integers(8, FRAMES + 1, N), rng.integers(2, TOKENS + 1, N)
    writer.write(np.arange(N), np.stack([layers[k] for k in keep], 1).astype(np.float32), audio_len,
                 np.stack([text[k] for k in keep], 1).astype(np.float32), text_len)
    return writer.finalize()


def config(cache, runs_dir, **overrides):
    kwargs = dict(cache=str(cache), runs_dir=str(runs_dir), protocol="loso-speaker", folds=[1, 2], epochs=3,
                  batch_size=8, lr=2e-3, model={"lstm_hidden": 8, "cnn_channels": [4, 8]}, threads=1,
                  progress=False, seed=0, device="cpu")
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def unit_results(run_dir):
    return [json.loads((run_dir / f"fold{k:02d}" / "metrics.json").read_text()) for k in (1, 2)]


def best_weights(run_dir, fold=1):
    return torch.load(run_dir / f"fold{fold:02d}" / "best.pt", map_location="cpu", weights_only=True)["model"]


def assert_same_training(a, b):
    for ra, rb in zip(unit_results(a), unit_results(b)):
        assert ra["metrics"] == rb["metrics"]
    wa, wb = best_weights(a), best_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_the_mixer_is_a_softmax_weighted_sum_and_keeps_padding_zero():
    mix = LayerMix(3)
    with torch.no_grad():
        mix.logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
    x = torch.randn(2, 3, 5, 4)
    x[:, :, 3:] = 0  # padded frames
    w = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    torch.testing.assert_close(mix(x), w[0] * x[:, 0] + w[1] * x[:, 1] + w[2] * x[:, 2])
    normed = LayerMix(3, layer_norm=True)(x)
    assert torch.count_nonzero(normed[:, 3:]) == 0
    torch.testing.assert_close(normed[:, :3], torch.nn.functional.layer_norm(x[:, :, :3], (4,)).mean(1))
    assert list(LayerMix(3, "mean").parameters()) == []


def test_a_one_layer_model_has_no_mixer_and_initialises_as_before():
    """No mixer module, no parameter and no RNG draw: the weights of a one-layer SWRR and the RNG
    state after building it are those of a model whose mixers could not exist."""
    cfg = SWRRConfig(audio_dim=DIM, text_dim=DIM, max_frames=FRAMES, max_tokens=TOKENS, lstm_hidden=8)
    torch.manual_seed(3)
    one = SWRR(cfg)
    after_one = torch.rand(1)
    torch.manual_seed(3)
    multi = SWRR(SWRRConfig(**{**cfg.__dict__, "audio_layers": 3, "text_layers": 2}))
    assert torch.equal(torch.rand(1), after_one)  # the mixers draw nothing from the RNG
    assert not any("layer_mix" in k for k in one.state_dict())
    extra = set(multi.state_dict()) - set(one.state_dict())
    assert extra == {"layer_mix.audio.logits", "layer_mix.text.logits"}
    for key, value in one.state_dict().items():
        assert torch.equal(value, multi.state_dict()[key]), key


def test_a_one_layer_cache_trains_bit_identically_to_a_cache_written_the_old_way(tmp_path):
    """Schema 3 with one stored layer vs the same numbers in a schema 2 file (no layer axis, read
    through the pre-layer code path): the same metrics and weights, and no mixer in the model."""
    new = layered_cache(tmp_path / "new.h5", keep=[8])
    old = tmp_path / "old.h5"
    old.write_bytes(new.read_bytes())
    to_old_layout(old, 2)
    assert FeatureCache(old).load()["audio"].ndim == 3
    run(config(new, tmp_path / "runs", name="new"))
    run(config(old, tmp_path / "runs", name="old"))
    assert_same_training(tmp_path / "runs" / "new", tmp_path / "runs" / "old")
    assert unit_results(tmp_path / "runs" / "new")[0]["layer_weights"] == {}
    assert not (tmp_path / "runs" / "new" / "layer_weights.png").exists()


def test_layer_mix_LAYER_and_layers_N_train_as_a_one_layer_cache_of_that_layer(tmp_path):
    multi = layered_cache(tmp_path / "multi.h5")
    one = layered_cache(tmp_path / "one.h5", keep=[4])
    runs = tmp_path / "runs"
    run(config(one, runs, name="one"))
    run(config(multi, runs, name="mix4", layer_mix="4"))
    run(config(multi, runs, name="layers4", layers="4"))
    assert_same_training(runs / "one", runs / "mix4")
    assert_same_training(runs / "one", runs / "layers4")
    with pytest.raises(TrainError, match="holds the hidden states \\[0, 4, 8\\], not \\[5\\]"):
        run(config(multi, runs, name="bad", layer_mix="5"))


def test_learned_weights_find_the_informative_layer_and_are_reported(tmp_path):
    cache = layered_cache(tmp_path / "multi.h5", informative=8)
    runs = tmp_path / "runs"
    run(config(cache, runs, name="learned", epochs=8, lr=5e-3))
    results = json.loads((runs / "learned" / "results.json").read_text())["folds"]
    for result in results:
        for modality in ("audio", "text"):
            weights = result["layer_weights"][modality]
            assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-6
            assert weights[2] == max(weights), (modality, weights)  # from 1/3 each at the start
        assert result["layer_weights"]["audio"][2] > 1 / 3 + 0.02, result["layer_weights"]
    assert (runs / "learned" / "layer_weights.png").stat().st_size > 0
    from safetensors.torch import load_file

    logits = load_file(str(runs / "learned" / "fold01" / "model" / "model.safetensors"))["layer_mix.audio.logits"]
    torch.testing.assert_close(torch.softmax(logits, 0).tolist(), results[0]["layer_weights"]["audio"])


def test_mean_mix_streamed_equals_resident_and_a_layer_subset_reads_only_it(tmp_path):
    cache = layered_cache(tmp_path / "multi.h5")
    runs = tmp_path / "runs"
    run(config(cache, runs, name="resident", layer_mix="mean", layers="4:8", layer_norm=True))
    run(config(cache, runs, name="stream", layer_mix="mean", layers="4:8", layer_norm=True, stream=True, workers=0))
    assert_same_training(runs / "resident", runs / "stream")
    result = unit_results(runs / "resident")[0]
    assert result["layer_weights"] == {"audio": [0.5, 0.5], "text": [0.5, 0.5]}
    assert not any("layer_mix" in k for k in best_weights(runs / "resident"))  # mean: no parameters


def test_layer_sweep_trains_one_run_per_cached_layer_into_layers_csv(tmp_path):
    from swrr.train.compare import compare_runs, load_runs

    cache = layered_cache(tmp_path / "multi.h5")
    runs = tmp_path / "runs"
    top = run(config(cache, runs, layer_sweep=True, epochs=2))
    assert top.name == "synthetic-loso-speaker-layers"
    table = __import__("pandas").read_csv(top / "layers.csv")
    assert list(table["variant"]) == ["layer-0", "layer-4", "layer-8"]
    direct = run(config(cache, runs, name="direct4", layer_mix="4", epochs=2))
    assert_same_training(top / "layer-4", direct)  # each sweep unit is the --layer-mix K run
    rows = compare_runs(load_runs([top]), metrics=["ua"], resamples=200)
    assert {row["run"] for row in rows} == {"layer-4", "layer-8"}  # against layer-0, the first
    one_layer = layered_cache(tmp_path / "one.h5", keep=[4])
    with pytest.raises(TrainError, match="layer_sweep: .* holds one hidden state per modality"):
        run(config(one_layer, runs, layer_sweep=True))


def test_a_resident_cache_larger_than_free_memory_is_refused_before_loading(tmp_path, monkeypatch):
    """Sized before loading (an overcommitting Linux kills rather than raising MemoryError): the
    error names the size and --stream, and --stream then trains with bounded memory."""
    from swrr.train import data

    cache = layered_cache(tmp_path / "multi.h5")
    need = FeatureCache(cache).embedding_bytes()
    assert need == 2 * N * 3 * (FRAMES * DIM + TOKENS * DIM)
    monkeypatch.setattr(data, "available_host_bytes", lambda: need)  # 90% of it is the limit
    with pytest.raises(TrainError, match=r"3 audio and 3 text hidden states\) do not fit in the 0.0 GB of free "
                                         r"host memory; train with stream"):
        run(config(cache, tmp_path / "runs", name="resident"))
    run(config(cache, tmp_path / "runs", name="layers8", layers="8"))  # a third of it fits
    run(config(cache, tmp_path / "runs", name="stream", stream=True, workers=0, epochs=1))
