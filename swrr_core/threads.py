"""CPU threads: how torch's idle threads wait, and how many threads training uses (issue 22).

Measured on the 2-core development machine, training the demo head (docs/TRAINING.md, Speed):
beside one other CPU-bound process it ran 0.23 steps/s with torch's default of 2 threads against
14 steps/s alone (60x slower), and 3-5 steps/s with 1 thread. Two causes, two fixes:

- Spinning. torch's OpenMP runtime (libgomp) lets a thread that waits for the others at the end
  of each parallel region spin on its core. Beside another job, the thread it waits for is often
  not running at all, and the spinning takes the core it would need: 1.37 s of CPU per demo step
  instead of 0.11 s. With OMP_WAIT_POLICY=PASSIVE waiting threads sleep (3.9 steps/s there).
  libgomp reads the variable once, when torch loads it, so `wait_passively` must run before
  torch is imported: the console scripts call it first (swrr.entry); a value already in the
  environment is kept. Code that imports swrr as a library decides for itself.
- Splitting small work. The BiLSTM's recurrence is a chain of one small matrix product per time
  step; for a small head each one is too short to share between cores, so a second thread buys
  little (1.3x for 1.5x the CPU on the demo, quiet) and makes every step wait for the slower
  thread, which a co-tenant stretches. Below SMALL_RECURRENT_STEP multiply-adds per step,
  training uses one thread unless `--threads` says otherwise.
"""
from __future__ import annotations

import os
from typing import Optional

# Decision: multiply-adds of one recurrent step of the BiLSTM (batch x hidden x 4 hidden) below which
# a training run uses one thread. The demo's is 8 x 64 x 256 = 131k (one thread: measured above and
# by benchmarks/demo.py); the paper's head is 32 x 384 x 1536 = 18.9M, whose matrix products do
# split well, so it keeps torch's default (one thread per core).
SMALL_RECURRENT_STEP = 1_000_000


def wait_passively() -> None:
    """Make torch's idle OpenMP threads sleep instead of spin; effective only before torch loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def recurrent_step_work(batch_size: int, lstm_hidden: int) -> int:
    """Multiply-adds of one time step of one BiLSTM direction's recurrence (h @ W_hh)."""
    return batch_size * lstm_hidden * 4 * lstm_hidden


def training_threads(batch_size: int, lstm_hidden: int) -> Optional[int]:
    """The thread count a run uses when `--threads` is not given: 1 for a small head, else None
    (torch's default)."""
    return 1 if recurrent_step_work(batch_size, lstm_hidden) < SMALL_RECURRENT_STEP else None
