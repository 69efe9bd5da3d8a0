"""The files of one unit folder (fold x seed): what train.loop.fit_fold hands over, persisted.

The algorithm (train/loop.py) never names a file; this writer keeps the unit's folder in the
layout of swrr_core/rundir.py:

- after every epoch: last.pt (the state to resume from), log.csv + log.jsonl (rewritten whole
  from the checkpointed history, so they always match the checkpoint, also after a kill), and
  the TensorBoard scalars with --tensorboard;
- on each selection: best.pt (the selected model; at the end, with --select last, the last one);
- at the end: attention.npy, predictions.csv, the model bundle (model/), then metrics.json,
  last, so that a unit with a metrics.json is always complete.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np

from swrr import objectives, rundir
from swrr.bundle import write_bundle
from swrr.train import checkpoint
from swrr.train.config import objective
from swrr.train.tensorboard_log import EpochScalars

if TYPE_CHECKING:  # types only: loop imports this module
    from swrr.train.loop import FoldJob, FoldOutcome


class UnitWriter:
    """The store of train.loop.fit_fold for `job`'s unit folder (made if missing)."""

    def __init__(self, job: "FoldJob"):
        self.job = job
        self.unit = rundir.UnitFolder(job.fold_dir)
        self.unit.path.mkdir(parents=True, exist_ok=True)
        self.scalars = EpochScalars(self.unit.tensorboard) if job.config.tensorboard else None

    # ------------------------------------------------------------------ during training
    def saved_state(self) -> Optional[Dict[str, Any]]:
        """The last finished epoch's state (last.pt, checked against the job's identity), or None."""
        if not self.unit.last_checkpoint.exists():
            return None
        return checkpoint.load(self.unit.last_checkpoint, self.job.identity)

    def epoch_done(self, state: Dict[str, Any]) -> None:
        checkpoint.save(self.unit.last_checkpoint, state, self.job.identity)
        write_log(self.unit, state["history"])
        if self.scalars:
            self.scalars.add(state["history"][-1])

    def epochs_done(self) -> None:
        if self.scalars:
            self.scalars.close()

    def select(self, model_state: Dict[str, Any], epoch: int) -> None:
        job = self.job
        checkpoint.save(self.unit.best_checkpoint, {
            "epoch": epoch, "model": model_state, "model_config": asdict(job.model_config),
            "label_names": list(job.label_names), "task": job.task,
            "objective": objective(job.config, job.task)}, job.identity)

    def selected_model(self) -> Dict[str, Any]:
        return checkpoint.load(self.unit.best_checkpoint, self.job.identity)["model"]

    # ------------------------------------------------------------------ at the end
    def finish(self, outcome: "FoldOutcome") -> Dict[str, Any]:
        """Write the unit's result files, metrics.json last; -> the result."""
        result = outcome.result
        if outcome.attention is not None:
            np.save(self.unit.attention, outcome.attention)
        self._write_predictions(outcome)
        self._write_bundle(outcome)
        rundir.write_json(self.unit.metrics, result)
        return result

    def _write_predictions(self, outcome: "FoldOutcome") -> None:
        job = self.job
        write_predictions(self.unit.predictions, outcome.test_ids, outcome.test_labels, outcome.outputs, job.task,
                          job.label_names, objective(job.config, job.task))

    def _write_bundle(self, outcome: "FoldOutcome") -> None:
        """The unit's reported model as a bundle (written before metrics.json, so a finished unit
        always has one)."""
        job, result = self.job, outcome.result
        if job.recipe is None:  # a FoldJob built without its cache's recipe (benchmarks)
            return
        metrics = result["metrics"] if len(job.fold.test) else None
        provenance = {"dataset": job.recipe["dataset"], "protocol": job.config.protocol, "fold": job.fold.number,
                      "test_group": job.fold.name if len(job.fold.test) else "", "valid_group": job.fold.valid_name,
                      "selected_epoch": result["selected_epoch"], "selection": result["selection"],
                      "ablation": job.config.ablation,
                      "metrics": {k: v for k, v in (metrics or {}).items() if k != "confusion"},
                      "cache_fingerprint": job.identity.get("cache"), "train": job.config.result_fields()}
        write_bundle(self.unit.bundle, outcome.model.state_dict(), job.model_config, job.task, job.label_names,
                     job.recipe, provenance, objective=objective(job.config, job.task))


def write_predictions(path: Path, utt_id, labels, outputs, task: str, label_names, goal: str) -> None:
    """predictions.csv: per row the id, the true label and the prediction; for classification the
    predicted class index and one logit column per class, for dimensional targets one true and one
    predicted column per dimension. swrr-evaluate writes its units' tables with it too."""
    import pandas as pd

    if task == "dimensional":
        columns = {"utt_id": utt_id}
        for k, name in enumerate(label_names):
            columns[f"label_{name}"] = labels[:, k]
            columns[f"prediction_{name}"] = outputs[:, k]
        pd.DataFrame(columns).to_csv(path, index=False)
        return
    table = pd.DataFrame({"utt_id": utt_id, "label": labels})
    if task == "classification":
        table["prediction"] = outputs.argmax(-1)
        for i, name in enumerate(label_names):
            table[f"logit_{name}"] = outputs[:, i]
    else:  # the sentiment score the metrics read (for "ce7" the expected value of the 7 points)
        table["prediction"] = objectives.scores(goal, outputs)
    table.to_csv(path, index=False)


def write_log(unit: rundir.UnitFolder, history: List[Dict[str, Any]]) -> None:
    """The per-epoch log as JSON lines and CSV."""
    import pandas as pd

    with open(unit.log_jsonl, "w") as f:
        for record in history:
            f.write(json.dumps(record) + "\n")
    pd.DataFrame(history).to_csv(unit.log_csv, index=False)
