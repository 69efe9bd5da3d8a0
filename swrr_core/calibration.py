"""Temperature scaling (Guo et al. 2017): one scalar T > 0 that divides a classifier's logits,
fitted on validation rows by minimising their NLL, so that the softmax's confidence matches the
accuracy it has. T changes no argmax (no label, no WA/UA), only how sure the probabilities are.

    temperature = fit_temperature(valid_logits, valid_labels)
    probs = swrr.metrics.softmax(test_logits, temperature)
"""
from __future__ import annotations

import math

import numpy as np
import torch

# Decision: T is searched as exp(s) (positive without a constraint) with LBFGS from T = 1;
# the result is clipped to [0.05, 20], which covers every fit reported by Guo et al. and keeps a
# degenerate fit (e.g. a validation set the model gets 100 % right, where NLL falls without bound
# as T -> 0) from producing a near-zero temperature that makes every probability 0 or 1.
TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(logits, y_true, max_iter: int = 100) -> float:
    """The T minimising mean NLL of softmax(logits / T) on (logits, y_true); 1.0 without rows."""
    logits = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    labels = torch.as_tensor(np.asarray(y_true, dtype=np.int64))
    if not len(labels):
        return 1.0
    if not torch.isfinite(logits).all():
        raise ValueError("cannot fit a temperature on non-finite logits")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        return 1.0
    return min(max(temperature, TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1])
