"""Feeding cache rows to the model: resident tensors (default) or HDF5 streaming (`--stream`).

Both sources take the same lists of row indices (from `epoch_batches`) and yield the same
batches, so a run gives identical numbers either way; only speed and memory differ.

    batch = {"audio": (B, N, Da) cache dtype ((B, L, N, Da) when the head mixes L hidden states), "audio_len": (B,) int64 on the host,
             "text": (B, T, Dt) cache dtype, "text_len": (B,) int64 on the host,
             "label": (B,) int64 (classification) or float32 (regression)}

Embeddings stay in the cache dtype (float16 halves the memory); the model casts them. Lengths
stay on the host (pinned, with a GPU): the model checks them there (and packs by them with
lstm_padding="pack") and copies them to the device asynchronously, so a step never waits for
the GPU to hand them back.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from swrr.cache import CacheError, FeatureCache
from swrr.errors import option
from swrr.targets import Target, resolve_target, with_target
from swrr.train.config import TrainConfig, TrainError, training_layers

logger = logging.getLogger("swrr.train")  # the commands show its INFO lines on stdout (swrr.cli)

Batch = Dict[str, torch.Tensor]
LENGTHS = ("audio_len", "text_len")  # the columns that stay on the host


def target_view(config: TrainConfig) -> Tuple[FeatureCache, Target]:
    """The run's cache opened with the labels of its --target (the runner and fold worker
    processes alike), and that target."""
    cache = FeatureCache(config.cache)
    target = resolve_target(cache, config.target)
    return with_target(cache, target), target


def training_cache(config: TrainConfig, cache: Optional[FeatureCache] = None) -> FeatureCache:
    """The run's cache as its units read it: `cache` (the runner's target view), or opened here
    (fold worker processes); reading only the hidden states the head uses (`--layers`,
    `--layer-mix LAYER`) from now on."""
    if cache is None:
        cache, _ = target_view(config)
    layers = training_layers(config, cache.meta)
    return cache.select_layers(layers["audio"], layers["text"])


def epoch_batches(rows: np.ndarray, batch_size: int, generator: Optional[torch.Generator] = None) -> List[np.ndarray]:
    """Split `rows` into batches, shuffled with `generator` (None keeps the order: evaluation)."""
    rows = np.asarray(rows, dtype=np.int64)
    if generator is not None:
        rows = rows[torch.randperm(len(rows), generator=generator).numpy()]
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


def as_tensors(arrays: Dict[str, np.ndarray]) -> Batch:
    """Cache columns (FeatureCache.load / read_rows) -> a Batch of CPU tensors."""
    out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    out["audio_len"], out["text_len"] = out["audio_len"].long(), out["text_len"].long()
    if out["label"].dtype == torch.float64:
        out["label"] = out["label"].float()
    return out


class ResidentSource:
    """The whole cache loaded once and kept resident; a batch is one index_select per column.

    On CUDA the embeddings and labels live on the GPU when they take at most half of its free
    memory, so an epoch needs no host-to-device copies but one small index tensor; a larger cache
    (e.g. CMU-MOSEI, ~10 GB in float16, on an 11 GB card) stays in pinned host memory and each
    batch is copied over asynchronously. Lengths always stay on the host.
    """

    def __init__(self, cache: FeatureCache, device: torch.device):
        self.device = device
        self.labels, self.utt_id = cache.label, cache.utt_id
        need = cache.embedding_bytes()  # sized before loading: Linux kills a process that overcommits
        free = available_host_bytes()
        if free is not None and need > 0.9 * free:
            raise TrainError(too_big(cache, need, f"the {free / 1e9:.1f} GB of free host memory"))
        try:
            tensors = as_tensors(cache.load())
        except MemoryError:
            raise TrainError(too_big(cache, need, "memory")) from None
        self.lengths = {k: tensors.pop(k) for k in LENGTHS}
        self.pin = device.type == "cuda"
        self.store = device
        if self.pin:
            need = sum(t.numel() * t.element_size() for t in tensors.values())
            free_gpu = torch.cuda.mem_get_info(device)[0]
            if need > 0.5 * free_gpu:
                self.store = torch.device("cpu")
                tensors = {k: v.pin_memory() for k, v in tensors.items()}
                logger.info(f"swrr-train: the cache's embeddings ({need / 1e9:.1f} GB) take more than half of the "
                            f"GPU's free memory ({free_gpu / 1e9:.1f} GB): kept in pinned host memory, each batch "
                            "copied over")
        self.tensors = {k: v.to(self.store) for k, v in tensors.items()}

    def batches(self, batch_rows: List[np.ndarray]) -> Iterator[Batch]:
        if not batch_rows:
            return
        # one transfer for the whole epoch's order, then slices of it
        host_order = torch.from_numpy(np.concatenate(batch_rows))
        order = host_order.to(self.store)
        start = 0
        for rows in batch_rows:
            idx = order[start:start + len(rows)]
            batch = {k: v.index_select(0, idx) for k, v in self.tensors.items()}
            if self.store != self.device:
                batch = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
            host_idx = host_order[start:start + len(rows)]
            for k, v in self.lengths.items():
                batch[k] = v.index_select(0, host_idx).pin_memory() if self.pin else v.index_select(0, host_idx)
            start += len(rows)
            yield batch

    def close(self) -> None:
        self.tensors = {}


def available_host_bytes() -> Optional[int]:
    """MemAvailable of /proc/meminfo (Linux); None where there is none."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def too_big(cache: FeatureCache, need: int, where: str) -> str:
    layers = cache.layers
    return (f"{cache.path}: its embeddings ({need / 1e9:.1f} GB: {len(cache)} rows, {len(layers['audio'])} audio and "
            f"{len(layers['text'])} text hidden states) do not fit in {where}; train with {option('stream')} (rows "
            f"read from the file per batch, bounded memory) or read fewer hidden states with {option('layers')}")


class _CacheRows(Dataset):
    """Dataset whose items are whole batches: __getitem__(row indices) -> Batch (CPU tensors).

    One FeatureCache.read_rows call per batch; the FeatureCache reopens its file in each
    worker process.
    """

    def __init__(self, cache: FeatureCache):
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, rows) -> Batch:
        try:
            return as_tensors(self.cache.read_rows(rows))
        except CacheError as exc:  # returned, not raised: a worker's exception would carry its traceback
            return exc


class _BatchList(Sampler):
    """Yields the batches set for the current epoch (iterated in the main process, so a
    persistent worker pool sees each epoch's new order)."""

    def __init__(self):
        self.batch_rows: List[np.ndarray] = []

    def __iter__(self):
        return iter(self.batch_rows)

    def __len__(self) -> int:
        return len(self.batch_rows)


class StreamSource:
    """Rows read from HDF5 per batch by `workers` DataLoader processes, prefetched ahead."""

    def __init__(self, cache: FeatureCache, device: torch.device, workers: int = 2):
        self.device = device
        self.labels, self.utt_id = cache.label, cache.utt_id
        self.sampler = _BatchList()
        cuda = device.type == "cuda"
        # its own generator: a DataLoader draws worker seeds from the global RNG otherwise,
        # which would shift the dropout stream and make --stream change the results
        self.loader = DataLoader(_CacheRows(cache), sampler=self.sampler, batch_size=None,
                                 num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers > 0 else None, generator=torch.Generator())
        self.non_blocking = cuda

    def batches(self, batch_rows: List[np.ndarray]) -> Iterator[Batch]:
        self.sampler.batch_rows = batch_rows
        for batch in self.loader:
            if isinstance(batch, CacheError):  # a damaged row: one clear line, not a worker traceback
                raise batch
            yield {k: v if k in LENGTHS else v.to(self.device, non_blocking=self.non_blocking)
                   for k, v in batch.items()}

    def close(self) -> None:
        self.loader = None  # stops the persistent workers


def make_source(cache: FeatureCache, device: torch.device, stream: bool, workers: int):
    return StreamSource(cache, device, workers) if stream else ResidentSource(cache, device)
