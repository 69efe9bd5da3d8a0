"""One training step's forward, loss and scaled backward, eager or replayed from a CUDA graph.

A batch-32 step of the SWRR head launches hundreds of small kernels: on a big GPU the host's
launch overhead, not the GPU, sets the pace (SPEC §7). With `graphs` (CUDA only) each batch size
is run eagerly for WARMUP_STEPS steps (real training steps, on a side stream as CUDA graphs
require), then captured once and replayed: one launch per step. The optimizer step stays eager
(fused Adam with the AMP grad scaler needs no host sync).

What a replayed step computes is what the eager step computes; two things make it work:
- the model runs with `lstm_padding="align"` (its default: static shapes, no host round trip;
  a model with "pack" trains eagerly);
- gradients are zeroed in place, never set to None, because the graph writes into the same
  gradient tensors on every replay (and accumulates into them, so --grad-accum works too).
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Dict, Optional, Tuple

import torch

from swrr.model import SWRR

WARMUP_STEPS = 3  # eager steps per batch size before its capture (the CUDA graphs docs use 3)


class CaptureGate:
    """Steps of all fold lanes run together; a capture runs alone.

    The device's default RNG (dropout) is shared by every lane, and while one graph is being
    captured its state is in "capture mode": a replay or an eager dropout in another lane then
    fails ("Offset increment outside graph capture"). So a capture waits for the steps being
    launched to finish launching, and new steps wait for the capture (captures go first, or a
    busy set of lanes would starve them). Only the host-side launching is fenced, never the GPU.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._stepping = 0
        self._capturing = False
        self._waiting = 0

    @contextlib.contextmanager
    def step(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._capturing and not self._waiting)
            self._stepping += 1
        try:
            yield
        finally:
            with self._cond:
                self._stepping -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def capture(self):
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._capturing and not self._stepping)
            self._waiting -= 1
            self._capturing = True
        try:
            yield
        finally:
            with self._cond:
                self._capturing = False
                self._cond.notify_all()


_GATE = CaptureGate()  # one per process: the device RNG it protects is one per process


class FoldCancelled(Exception):
    """A fold lane was told to stop (another lane failed, or Ctrl-C)."""


class TrainStep:
    """step(batch) -> (loss (), outputs (B, C)): forward, loss and `scaler`-scaled backward."""

    def __init__(self, model: SWRR, loss_fn, task: str, scaler, grad_accum: int, amp: bool,
                 device: torch.device, graphs: bool = False, cancel: Optional[threading.Event] = None):
        self.model, self.loss_fn, self.task, self.scaler = model, loss_fn, task, scaler
        self.cancel = cancel  # set by another thread: the next step raises FoldCancelled
        self.grad_accum, self.amp, self.device = grad_accum, amp, device
        # packed sequences change shape with every batch: no graph can replay them
        self.graphs = graphs and device.type == "cuda" and model.encoder.padding == "align"
        self.warmed: Dict[int, int] = {}  # batch size -> eager steps run
        self.captured: Dict[int, Tuple[torch.cuda.CUDAGraph, Dict[str, torch.Tensor], torch.Tensor,
                                       torch.Tensor]] = {}
        self.pool = None  # one memory pool shared by all captured graphs
        self.replayed = 0  # steps run from a graph (reported in metrics.json)
        # warm-up steps and captures run here: a stream of its own per fold, none shared between lanes
        self.side_stream = torch.cuda.Stream(device) if self.graphs else None

    @property
    def zero_grad_to_none(self) -> bool:
        """Whether the optimizer may free the gradients (not when a graph writes into them)."""
        return not self.graphs

    def eager(self, batch: Dict[str, torch.Tensor], cache: bool = True):
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp,
                            cache_enabled=cache):
            outputs = self.model(batch["audio"], batch["audio_len"], batch["text"], batch["text_len"])
        loss = self.loss_fn(self.task, outputs, batch["label"])
        self.scaler.scale(loss / self.grad_accum).backward()
        return loss, outputs

    def __call__(self, batch: Dict[str, torch.Tensor]):
        if self.cancel is not None and self.cancel.is_set():
            raise FoldCancelled()
        size = batch["label"].shape[0]
        if self.graphs and size not in self.captured and self.warmed.get(size, 0) >= WARMUP_STEPS:
            self._capture(batch)
        with _GATE.step():
            if not self.graphs:
                return self.eager(batch)
            if size not in self.captured:
                self.warmed[size] = self.warmed.get(size, 0) + 1
                return self._on_side_stream(batch)
            graph, static, loss, outputs = self.captured[size]
            for k, v in batch.items():
                static[k].copy_(v, non_blocking=True)
            graph.replay()
            self.replayed += 1
            return loss, outputs

    def _on_side_stream(self, batch):
        self.side_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.side_stream):
            result = self.eager(batch)
        torch.cuda.current_stream(self.device).wait_stream(self.side_stream)
        return result

    def _capture(self, batch) -> None:
        """Record this batch size's step (nothing runs while recording); the caller replays it.
        If this torch/driver cannot capture it, warn once and go on with eager steps."""
        static = {k: v.to(self.device, copy=True) for k, v in batch.items()}  # lengths too: on the device
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: other threads (lanes, a --stream DataLoader's pinning thread) may
            # allocate and synchronise while this one records
            with _GATE.capture(), torch.cuda.graph(graph, pool=self.pool, stream=self.side_stream,
                                                   capture_error_mode="thread_local"):
                loss, outputs = self.eager(static, cache=False)  # autocast's cast cache must be off here
        except (RuntimeError, TypeError) as exc:  # TypeError: a torch without capture_error_mode
            warnings.warn(f"CUDA graph capture failed ({str(exc).splitlines()[0][:200]}); training goes on "
                          "with eager steps (--no-cuda-graphs skips the attempt)")
            torch.cuda.synchronize(self.device)
            self.graphs = False
            return
        self.pool = graph.pool()
        self.captured[batch["label"].shape[0]] = (graph, static, loss, outputs)
