"""The trainer's CUDA paths: no host sync inside a step, CUDA-graph steps equal eager steps,
and a whole run on the GPU. Skipped without a CUDA device."""
import json

import numpy as np
import pytest
import torch

from swrr.cache import FeatureCache
from swrr.model import SWRR, SWRRConfig
from swrr.train.config import TrainConfig
from swrr.train.data import ResidentSource, epoch_batches
from swrr.train.loop import loss_fn, make_optimizer, make_scaler
from swrr.train.runner import run
from swrr.train.step import WARMUP_STEPS, TrainStep

from test_train import DIM, FRAMES, TINY_MODEL, TOKENS, make_cache, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def setup(graphs: bool, amp: bool, seed: int = 0):
    torch.manual_seed(seed)
    config = SWRRConfig(audio_dim=DIM, text_dim=DIM, max_frames=FRAMES, max_tokens=TOKENS, dropout=0.0,
                        **TINY_MODEL)
    model = SWRR(config).to(CUDA).train()
    optimizer = make_optimizer(model, TrainConfig(cache="", lr=2e-3), CUDA)
    scaler = make_scaler(amp)
    return model, optimizer, scaler, TrainStep(model, loss_fn, "ce", scaler, 1, amp, CUDA, graphs)


def train_steps(source, rows, graphs: bool, amp: bool, epochs: int = 4):
    """epochs x batches of 8, 8, 8, 5 (a second graph) -> (losses, parameters, step)."""
    model, optimizer, scaler, step = setup(graphs, amp)
    losses = []
    for epoch in range(epochs):
        for batch in source.batches(epoch_batches(rows, 8, torch.Generator().manual_seed(epoch))):
            loss, _ = step(batch)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=step.zero_grad_to_none)
            losses.append(loss.item())
    return np.array(losses), [p.detach().clone() for p in model.parameters()], step


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = make_cache(tmp_path_factory.mktemp("cuda") / "cache.h5")
    return ResidentSource(FeatureCache(path), CUDA)


@pytest.mark.parametrize("amp", [False, True])
def test_graph_steps_equal_eager_steps(source, amp):
    rows = np.arange(29)  # 3 batches of 8 + one of 5
    eager_losses, eager_params, _ = train_steps(source, rows, graphs=False, amp=amp)
    graph_losses, graph_params, step = train_steps(source, rows, graphs=True, amp=amp)
    assert step.graphs and sorted(step.captured) == [5, 8]  # both batch sizes were captured and replayed
    assert step.replayed == 4 * 4 - 2 * WARMUP_STEPS  # 16 steps, WARMUP_STEPS eager ones per size
    assert np.allclose(eager_losses, graph_losses, rtol=1e-4, atol=1e-5)
    for a, b in zip(eager_params, graph_params):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)
    assert eager_losses[-4:].mean() < eager_losses[:4].mean()  # and it trains


def test_a_training_step_never_waits_for_the_gpu(source):
    """Host lengths (pinned), the aligned LSTM, fused Adam with the grad scaler: nothing in a step
    copies device data back to the host (sync debug mode raises on any such sync)."""
    model, optimizer, scaler, step = setup(graphs=False, amp=True)
    batches = list(source.batches(epoch_batches(np.arange(24), 8, torch.Generator().manual_seed(0))))
    step(batches[0])  # first calls initialise cuDNN/cuBLAS handles and the optimizer state
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[1:]:
            step(batch)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_run_on_cuda_uses_graphs_and_learns(tmp_path):
    cache = make_cache(tmp_path / "cache.h5", n=96)
    config = tiny_config(cache, tmp_path / "runs", device="cuda", epochs=12, lr=1e-2, folds=[1])
    run_dir = run(config)
    result = json.loads((run_dir / "fold01" / "metrics.json").read_text())
    assert result["device"].startswith("cuda") and result["steps_from_cuda_graphs"] > 0
    assert result["peak_gpu_mem_gb"] > 0
    assert learned(run_dir / "fold01") and result["metrics"]["wa"] >= 0.7  # CPU: loss 1.4 -> 0.07, WA 1.0


def learned(fold_dir) -> bool:
    """The training loss of the last epochs is well below the first epoch's."""
    log = [json.loads(line) for line in (fold_dir / "log.jsonl").read_text().splitlines()]
    return np.mean([r["train_loss"] for r in log[-2:]]) < 0.5 * log[0]["train_loss"]


def test_fold_lanes_on_cuda_train_every_fold_with_graphs(tmp_path):
    cache = make_cache(tmp_path / "cache.h5", n=96)
    config = tiny_config(cache, tmp_path / "runs", device="cuda", epochs=12, lr=1e-2, folds=[1, 2, 3],
                         parallel_folds=3)
    run_dir = run(config)
    results = [json.loads((run_dir / f"fold{k:02d}" / "metrics.json").read_text()) for k in (1, 2, 3)]
    assert all(r["steps_from_cuda_graphs"] > 0 for r in results)
    assert all(learned(run_dir / f"fold{k:02d}") for k in (1, 2, 3))
    assert np.mean([r["metrics"]["wa"] for r in results]) >= 0.7
