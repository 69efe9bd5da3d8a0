"""Training and evaluation of one fold, resumable after a kill at any point.

`fit_fold` is the algorithm (epochs, schedule, evaluation, model selection, the state to resume
from); train.unit_files.UnitWriter persists what it hands over (checkpoints, logs, predictions,
the bundle, metrics.json); `train_fold` joins the two for one unit folder. After every epoch
`last.pt` holds the model, optimizer, grad scaler, RNG and shuffle-generator states, the epoch
log and the model-selection state, so `train_fold` called again on the same folder continues
exactly where the last finished epoch left off: on CPU with a fixed seed the resumed fold ends
with bit-identical weights and metrics.
"""
from __future__ import annotations

import math
import resource
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from swrr import objectives
from swrr.metrics import SELECTION_METRIC, compute_metrics, headline, is_better, metric_options
from swrr.model import SWRR, SWRRConfig
from swrr.progress import progress_bar
from swrr.rundir import unit_name
from swrr.train.config import TrainConfig, TrainError, objective
from swrr.train.data import epoch_batches
from swrr.train.protocols import Fold
from swrr.train.step import TrainStep
from swrr.train.unit_files import UnitWriter

SYNC_EVERY = 25  # steps between host syncs for the progress bar and the NaN check


class RunInterrupted(Exception):
    """Raised by --stop-after-epochs: the run stops as if it had been killed."""


class EpochBudget:
    """Counts finished epochs across folds; raises RunInterrupted when `limit` is reached.
    `progress` (e.g. the fold lanes' shared tqdm bar) is advanced by each finished epoch."""

    def __init__(self, limit: Optional[int], progress=None):
        self.limit, self.spent, self.progress = limit, 0, progress

    def spend(self) -> None:
        self.spent += 1
        if self.progress is not None:
            self.progress.update()
        if self.limit is not None and self.spent >= self.limit:
            raise RunInterrupted(f"stopped after {self.spent} epochs (--stop-after-epochs)")


@dataclass
class FoldJob:
    """Everything `train_fold` needs besides the data source (picklable, for worker processes)."""

    fold: Fold
    num_folds: int
    config: TrainConfig
    model_config: SWRRConfig
    task: str
    label_names: List[str]
    fold_dir: str
    identity: Dict[str, Any]
    recipe: Optional[Dict[str, Any]] = None  # the cache's CacheMeta as a dict: copied into the fold's bundle

    def unit_name(self) -> str:
        """The unit's folder name (swrr_core/rundir.py): its seed shows only in a run with --seeds."""
        return unit_name(self.fold.number, None if self.config.seeds is None else self.config.seed)

    def unit_key(self) -> Tuple[int, int]:
        """(fold number, seed): what identifies a unit within a run and across runs (swrr-compare)."""
        return self.fold.number, self.config.seed

    def metric_options(self) -> Dict[str, Any]:
        """What compute_metrics and headline need besides the task: a dimensional task's dimensions,
        a regression label's scale (CH-SIMS' [-1, 1] has metrics of its own)."""
        return metric_options(self.task, self.label_names, (self.recipe or {}).get("label_scale") or ())


@dataclass
class FoldOutcome:
    """What `fit_fold` hands to the writer: the unit's result (metrics.json) and the selected
    model with its outputs on the test rows."""

    result: Dict[str, Any]
    model: SWRR
    test_ids: np.ndarray
    test_labels: np.ndarray
    outputs: np.ndarray  # (test rows, outputs) float32
    attention: Optional[np.ndarray]  # mean token x frame attention on the test rows; None without attention


def fold_seed(seed: int, fold_number: int) -> int:
    """A fold's seed depends only on the run seed and the fold, never on which folds run."""
    return seed * 1009 + fold_number


def use_amp(config: TrainConfig, device: torch.device) -> bool:
    return config.amp and device.type == "cuda"


def make_optimizer(model: SWRR, config: TrainConfig, device: torch.device) -> torch.optim.Adam:
    """Adam as configured; on CUDA its fused kernel, which also lets the AMP grad scaler skip the
    host sync it needs for other optimizers (one per step otherwise)."""
    return torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                            weight_decay=config.weight_decay, **({"fused": True} if device.type == "cuda" else {}))


def make_scaler(enabled: bool):
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


loss_fn = objectives.loss  # loss_fn(objective, outputs, labels): "ce", "l1" or "ce7"


@torch.no_grad()
def predict(model: SWRR, source, rows: np.ndarray, batch_size: int, device: torch.device, amp: bool,
            attention: bool = False):
    """Model outputs on `rows` in their order: (outputs (n, C) float32, mean attention (T, N) or None)."""
    model.eval()
    outputs, attn_sum = [], None
    for batch in source.batches(epoch_batches(rows, batch_size)):
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            out, attn = model(batch["audio"], batch["audio_len"], batch["text"], batch["text_len"],
                              return_attention=True)
        outputs.append(out.float())
        if attention and attn is not None:
            summed = attn.float().sum(dim=0)
            attn_sum = summed if attn_sum is None else attn_sum + summed
    out = torch.cat(outputs).cpu().numpy() if outputs else np.zeros((0, model.config.num_outputs), np.float32)
    mean_attn = None if attn_sum is None else (attn_sum / max(len(rows), 1)).cpu().numpy()
    return out, mean_attn


def evaluate(job: FoldJob, model, source, rows, device, attention=False):
    """-> (metrics dict with 'loss', outputs, mean attention) on `rows` (labels from `source`)."""
    labels = source.labels[rows]
    amp = use_amp(job.config, device)
    outputs, attn = predict(model, source, rows, 4 * job.config.batch_size, device, amp, attention)
    bad = np.flatnonzero(~np.isfinite(outputs).all(axis=1))
    if len(bad):  # else argmax/metrics of NaN would be reported as if they were results
        raise TrainError(f"the model's outputs are not finite on {len(bad)} of {len(rows)} evaluated rows of fold "
                         f"{job.fold.number} (e.g. {', '.join(source.utt_id[np.asarray(rows)[bad[:3]]])}): "
                         "their cached features hold NaN/inf, or training diverged; stopping")
    goal = objective(job.config, job.task)
    metrics = compute_metrics(job.task, labels, objectives.scores(goal, outputs), len(job.label_names),
                              **job.metric_options())
    metrics["loss"] = (float(loss_fn(goal, torch.from_numpy(outputs), torch.as_tensor(labels)))
                       if len(rows) else float("nan"))
    return metrics, outputs, attn


def train_epoch(job: FoldJob, model, optimizer, scaler, source, generator, device, epoch: int,
                step: Optional[TrainStep] = None) -> Dict[str, float]:
    """One pass over the fold's training rows; raises TrainError on a non-finite loss.

    `step` runs each batch's forward and backward (kept across epochs: it holds the CUDA graphs);
    None = an eager one."""
    cfg = job.config
    step = step or TrainStep(model, loss_fn, objective(cfg, job.task), scaler, cfg.grad_accum,
                             use_amp(cfg, device), device)
    model.train()
    batches = epoch_batches(job.fold.train, cfg.batch_size, generator)
    # a live bar on a terminal; in a log (stderr not a terminal) one line per epoch, with its loss
    bar = progress_bar(total=len(batches), leave=False, disable=not cfg.progress, dynamic_ncols=True, log_step=1.0,
                       desc=f"fold {job.fold.number}/{job.num_folds} ({job.fold.name}) epoch {epoch + 1}/{cfg.epochs}")
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    optimizer.zero_grad(set_to_none=step.zero_grad_to_none)
    for i, batch in enumerate(source.batches(batches), start=1):
        loss, outputs = step(batch)
        if i % cfg.grad_accum == 0 or i == len(batches):
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=step.zero_grad_to_none)
        n = batch["label"].shape[0]
        seen += n
        loss_sum += loss.detach() * n
        if job.task == "classification":
            correct += (outputs.detach().argmax(-1) == batch["label"]).sum()
        if i % SYNC_EVERY == 0 or i == len(batches):
            mean_loss = loss_sum.item() / seen
            _check_finite(mean_loss, job, epoch, step.amp)
            bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)  # shown by the update below
        bar.update()
    bar.close()
    record = {"train_loss": loss_sum.item() / max(seen, 1)}
    if job.task == "classification":
        record["train_acc"] = correct.item() / max(seen, 1)
    return record


def _check_finite(loss: float, job: FoldJob, epoch: int, amp: bool) -> None:
    if not math.isfinite(loss):
        hint = "; try without --amp" if amp else ""
        raise TrainError(f"the training loss became {loss} in fold {job.fold.number} epoch {epoch + 1}: "
                         f"training diverged, stopping. Try a lower --lr (now {job.config.lr}){hint}")


def _rng_state(generator: torch.Generator) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any], generator: torch.Generator, lane: bool) -> None:
    generator.set_state(state["shuffle"])
    if lane:  # the process's RNGs are shared by all lanes: only the fold's own generator is its own
        return
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _epoch_record(epoch, lr, train, valid, test, job: FoldJob) -> Dict[str, Any]:
    record = {"epoch": epoch + 1, "lr": lr, **train}
    for prefix, metrics in (("valid", valid), ("test", test)):
        if metrics is not None:
            record[f"{prefix}_loss"] = metrics["loss"]
            record.update({f"{prefix}_{k}": metrics[k] for k in headline(job.task, **job.metric_options())})
    return record


def selects_on_valid(job: FoldJob) -> bool:
    rule = job.config.select
    if rule == "valid" and not len(job.fold.valid):
        raise TrainError(f"--select valid, but fold {job.fold.number} has no validation rows "
                         "(add --early-stop-speaker for the LOSO protocols)")
    return rule == "valid" or (rule == "auto" and len(job.fold.valid) > 0)


def train_fold(job: FoldJob, source, device: torch.device, budget: EpochBudget,
               cancel: Optional[threading.Event] = None) -> Dict[str, Any]:
    """Train (or continue) one fold in `job.fold_dir`; returns its result (also in metrics.json).

    `cancel` is given to a fold lane (train.parallel.run_lanes: folds trained by threads of one
    process, each on its own CUDA stream); setting it stops the fold at its next step."""
    try:
        writer = UnitWriter(job)
        return writer.finish(fit_fold(job, source, device, budget, writer, cancel))
    except torch.cuda.OutOfMemoryError:
        raise TrainError(f"out of GPU memory in fold {job.fold.number} at batch size {job.config.batch_size}: "
                         f"use e.g. --batch-size {max(1, job.config.batch_size // 2)} --grad-accum "
                         f"{2 * job.config.grad_accum}, fewer --parallel-folds, or --stream") from None


_MODEL_INIT = threading.Lock()  # lanes build their models one at a time: init draws from the global RNG


def new_model(job: FoldJob, device: torch.device, lane: bool) -> SWRR:
    """The fold's freshly initialised model, the same for a given seed and fold wherever it runs."""
    with _MODEL_INIT:
        if lane:  # seed only the CPU generator the init uses: the device RNG belongs to every lane
            # (on CUDA nothing else draws from the CPU generator: the lanes' dropout is on the device)
            torch.default_generator.manual_seed(fold_seed(job.config.seed, job.fold.number))
        else:
            torch.manual_seed(fold_seed(job.config.seed, job.fold.number))
        return SWRR(job.model_config).to(device)


def training_parts(job: FoldJob, device: torch.device, cancel: Optional[threading.Event] = None):
    """-> (model, optimizer, grad scaler, TrainStep) of a fold, freshly initialised."""
    cfg, amp = job.config, use_amp(job.config, device)
    model = new_model(job, device, lane=cancel is not None)
    optimizer = make_optimizer(model, cfg, device)
    scaler = make_scaler(amp)
    step = TrainStep(model, loss_fn, objective(cfg, job.task), scaler, cfg.grad_accum, amp, device,
                     graphs=cfg.cuda_graphs, cancel=cancel)
    return model, optimizer, scaler, step


def fit_fold(job: FoldJob, source, device: torch.device, budget: EpochBudget, store,
             cancel: Optional[threading.Event] = None) -> FoldOutcome:
    """The fold's training algorithm: the epochs with their lr schedule, evaluation on the valid
    and test rows, model selection, and the state to resume from. It writes nothing itself:
    `store` (train.unit_files.UnitWriter) keeps what must survive a kill, and hands it back:

        store.saved_state() -> the state of the last finished epoch, or None (a fresh fold)
        store.epoch_done(state)   after every epoch (state: epoch, model, optimizer, scaler, rng,
                                  history = the epoch records, best = the selection so far)
        store.select(model_state, epoch)   the model selected so far (or at the end: the last)
        store.selected_model() -> that model's state dict, to report it
        store.epochs_done()       after the last epoch
    """
    cfg, fold = job.config, job.fold
    lane = cancel is not None
    started = time.time()
    if device.type == "cuda" and not lane:  # lanes share the process's peak: not reset per fold
        torch.cuda.reset_peak_memory_stats(device)

    model, optimizer, scaler, step = training_parts(job, device, cancel)
    generator = torch.Generator().manual_seed(fold_seed(cfg.seed, fold.number))
    on_valid = selects_on_valid(job)
    history: List[Dict[str, Any]] = []
    best: Dict[str, Any] = {"epoch": 0, "valid": None}
    start_epoch = 0
    state = store.saved_state()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], generator, lane)
        history, best, start_epoch = state["history"], state["best"], state["epoch"]

    decay_epoch = round(cfg.epochs * cfg.lr_decay_at)
    train_seconds, train_steps = 0.0, 0
    for epoch in range(start_epoch, cfg.epochs):
        lr = cfg.lr * (cfg.lr_decay_factor if epoch >= decay_epoch else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        tick = time.time()
        train = train_epoch(job, model, optimizer, scaler, source, generator, device, epoch, step)
        train_seconds += time.time() - tick
        train_steps += math.ceil(len(fold.train) / cfg.batch_size)
        valid = evaluate(job, model, source, fold.valid, device)[0] if len(fold.valid) else None
        test = evaluate(job, model, source, fold.test, device)[0]
        history.append(_epoch_record(epoch, lr, train, valid, test, job))
        if on_valid and is_better(job.task, valid, best["valid"]):
            best = {"epoch": epoch + 1,
                    "valid": {k: valid[k] for k in (*headline(job.task, **job.metric_options()), "loss")}}
            store.select(model.state_dict(), epoch + 1)
        store.epoch_done({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scaler": scaler.state_dict(), "rng": _rng_state(generator), "history": history,
                          "best": best})
        budget.spend()
    store.epochs_done()

    if not on_valid:  # the reported model is the last epoch's
        best = {"epoch": cfg.epochs, "valid": None}
        store.select(model.state_dict(), cfg.epochs)
    else:
        model.load_state_dict(store.selected_model())
    metrics, outputs, attention = evaluate(job, model, source, fold.test, device, attention=True)
    selection = "best valid epoch by " + SELECTION_METRIC[job.task][0] if on_valid else "last epoch"
    result = {
        "fold": fold.number, "seed": cfg.seed, "name": fold.name,
        "valid_speaker": None if cfg.protocol == "split" else fold.valid_name,
        "sizes": {"train": len(fold.train), "valid": len(fold.valid), "test": len(fold.test)},
        "selection": selection,
        "selected_epoch": best["epoch"], "valid_at_selected": best["valid"],
        "metrics": metrics,
        "seconds": time.time() - started,
        "train_steps_per_s": train_steps / train_seconds if train_seconds else None,
        "device": str(device),
        "steps_from_cuda_graphs": step.replayed,  # in this process (a resumed fold counts anew)
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    return FoldOutcome(result, model, source.utt_id[fold.test], source.labels[fold.test], outputs, attention)
