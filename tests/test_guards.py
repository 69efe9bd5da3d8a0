"""swrr_core.guards and swrr_core.progress with real processes: a held lock refuses a second
holder and names its pid, dies with its holder (SIGKILL), is not inherited by a forked child;
a child that called die_with_parent does not outlive a SIGKILLed parent; log-mode progress
bars write whole lines."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swrr.guards import LockHeld, OutputLock, lock_path
from swrr.progress import LogLines, progress_bar

REPO = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from swrr.guards import OutputLock
lock = OutputLock(sys.argv[2], "swrr-extract").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _start_holder(target: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(REPO), str(target)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_held_lock_refuses_another_process_naming_its_pid_and_dies_with_it(tmp_path):
    target = tmp_path / "cache.h5"
    child = _start_holder(target)
    try:
        with pytest.raises(LockHeld, match=rf"another swrr-extract \(pid {child.pid}\) is writing .*cache.h5") as err:
            OutputLock(target, "swrr-extract").acquire()
        assert err.value.pid == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with OutputLock(target, "swrr-extract") as lock:  # the kernel dropped it with the process
        assert lock.held
        assert lock_path(target).read_text().strip() == str(os.getpid())
    assert not lock.held


def test_a_forked_child_does_not_inherit_the_lock(tmp_path):
    target = tmp_path / "out.h5"
    with OutputLock(target, "swrr-extract"):
        pid = os.fork()
        if pid == 0:  # the child lives on after the parent releases; it must hold nothing
            time.sleep(3)
            os._exit(0)
    try:
        probe = subprocess.run([sys.executable, "-c", HOLDER.replace("time.sleep(120)", ""), str(REPO), str(target)],
                               capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0 and "locked" in probe.stdout, probe.stderr
    finally:
        os.waitpid(pid, 0)


PARENT = """
import multiprocessing as mp, sys, time
sys.path.insert(0, sys.argv[1])
from swrr.guards import die_with_parent

def child():
    die_with_parent()
    time.sleep(120)

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=child)
    p.start()
    print(p.pid, flush=True)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def test_a_child_that_called_die_with_parent_ends_after_its_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(REPO)], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    time.sleep(1.0)  # the child has reached die_with_parent
    assert _alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child_pid), "the child outlived its killed parent by more than 5 s"


def test_log_mode_progress_writes_one_line_per_tenth_and_no_carriage_returns():
    out = io.StringIO()  # not a terminal
    bar = progress_bar(total=100, desc="extract demo", unit="utt", file=out)
    assert isinstance(bar, LogLines)
    for _ in range(100):
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 10, lines
    assert all(line.startswith("extract demo:") for line in lines)
    assert "100/100" in lines[-1]


def test_log_mode_progress_prints_the_final_state_of_an_unfinished_bar_once():
    out = io.StringIO()
    bar = progress_bar(total=50, desc="epoch 3", file=out)
    bar.update(7)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == [lines[0]] and "7/50" in lines[0]
