"""The benchmark's servers: the CPU time a server process and its children spend."""

import os
import signal
import subprocess
import time
from pathlib import Path

from bench.servers import cpu_seconds


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_cpu_time_below_one_clock_tick_is_counted():
    # `sleep` starts and waits using far less CPU than one clock tick (10 ms), the
    # granularity of the kernel's per-process counters in /proc/<pid>/stat: a meter that
    # reads those says 0 for it, and 0 for a short round of a benchmark.
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert cpu_seconds(sleeper.pid) > 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_process_is_counted_with_its_children():
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    try:
        # Measured once the child runs `sleep`: a child just forked may not have run yet,
        # and has then spent no CPU time at all.
        for _ in range(500):
            if [c for c in _children(shell.pid) if _command(c) == "sleep"]:
                break
            time.sleep(0.01)
        (child,) = _children(shell.pid)
        alone = cpu_seconds(child)
        assert alone > 0
        assert cpu_seconds(shell.pid) > alone
    finally:
        os.killpg(shell.pid, signal.SIGKILL)  # the shell and its sleep: their own group
        shell.wait()
