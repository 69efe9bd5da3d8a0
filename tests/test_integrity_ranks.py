"""Issue 18: RANK/WORLD_SIZE without a launcher: one line saying what is missing, a bounded wait
for the other ranks, and collectives that still wait as long as the work needs. Real processes."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from swrr.ranks import RankError, Ranks

JOIN_AND_BROADCAST = """
import sys, time
from swrr.ranks import Ranks
ranks = Ranks.from_env()
with ranks.group():
    if ranks.is_main:
        time.sleep(float(sys.argv[1]))  # longer than the rendezvous timeout
    print("got", ranks.broadcast("hello" if ranks.is_main else None), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    return {**env, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), **extra}


def test_bad_or_missing_launch_variables_are_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "abc")
    with pytest.raises(RankError, match="WORLD_SIZE='abc' is not an integer"):
        Ranks.from_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RankError, match="WORLD_SIZE=2 but RANK is not set"):
        Ranks.from_env()
    monkeypatch.setenv("RANK", "0")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RankError, match="MASTER_ADDR and MASTER_PORT are not"):
        with Ranks.from_env().group():
            pass
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    monkeypatch.setenv("SWRR_RENDEZVOUS_TIMEOUT", "soon")
    with pytest.raises(RankError, match="SWRR_RENDEZVOUS_TIMEOUT='soon' must be a number"):
        with Ranks.from_env().group():
            pass


def test_a_rank_whose_peers_never_start_stops_in_one_line(tmp_path):
    """swrr-train as rank 0 of 2 with nobody else: it says it waits, then stops, exit 2 (was: 24 h)."""
    env = rank_env(0, 2, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), SWRR_RENDEZVOUS_TIMEOUT="3")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "swrr.train", "--cache", tmp_path / "none.h5",
                             "--runs-dir", tmp_path / "runs"], env=env, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[0].startswith("rank 0 of 2: waiting up to 3 s for the other ranks at 127.0.0.1:"), lines
    assert len(lines) == 2 and "could not join the other ranks" in lines[1], lines
    assert time.monotonic() - started < 60 and not (tmp_path / "runs").exists()


def test_collectives_wait_longer_than_the_rendezvous_timeout(tmp_path):
    env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), SWRR_RENDEZVOUS_TIMEOUT="3")
    procs = [subprocess.Popen([sys.executable, "-c", JOIN_AND_BROADCAST, "5"], env=rank_env(r, 2, **env),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(out.strip() == "got hello" for out, _ in outs), outs
