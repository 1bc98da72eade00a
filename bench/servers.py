"""The processes a benchmark runs: the simulator and the console, on free loopback ports.

Each server is its own process group, so stopping it also stops any uvicorn workers it
forked, and each is told to die with this process where the platform allows it
(Linux's parent-death signal), so that nothing is left behind even when the harness
itself is killed. Server output goes to log files whose tail is shown when a server
fails to start.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent

_PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """A server could not be started or did not answer."""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the harness goes away (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Server:
    """A running server process: its name, port, process handle and log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the server's process group, then SIGKILL if it has not exited."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(grace)


def spawn(
    name: str, port: int, command: Sequence[str], env: Mapping[str, str], log: Path
) -> Server:
    """Start `command` in the project directory as its own process group."""
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - the harness's own fixed command lines
            list(command),
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return Server(name=name, port=port, process=process, log=log)


def wait_until_answering(
    server: Server, path: str, headers: Mapping[str, str], timeout: float = 60.0
) -> None:
    """Poll `GET path` until it answers 200; ServerError if the server dies or times out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerError(
                f"the {server.name} exited with status {server.process.returncode}:\n"
                f"{server.log_tail()}"
            )
        connection = http.client.HTTPConnection(HOST, server.port, timeout=5)
        try:
            connection.request("GET", path, headers=dict(headers))
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                return
            last = f"status {response.status}"
        except OSError as exc:
            last = type(exc).__name__
        finally:
            connection.close()
        time.sleep(0.1)
    raise ServerError(
        f"the {server.name} did not answer GET {path} with 200 within {timeout:g} s "
        f"(last: {last}):\n{server.log_tail()}"
    )


def manage(command: Sequence[str], env: Mapping[str, str], timeout: float = 300.0) -> str:
    """Run `python manage.py ...` in the project and return its standard output."""
    result = subprocess.run(  # noqa: S603 - the harness's own fixed command lines
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise ServerError(
            f"manage.py {' '.join(command)} failed ({result.returncode}):\n"
            f"{result.stderr[-3000:] or result.stdout[-3000:]}"
        )
    return result.stdout


def _cpu_clock(pid: int) -> float | None:
    """A process's CPU seconds (all its threads, also those that have ended), to the
    nanosecond: the process's CPU-time clock, which Linux lets any process read, under
    the id `clock_getcpuclockid(pid)` gives it. None where it cannot be read."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # CPUCLOCK_SCHED of the process
    except (OSError, OverflowError, AttributeError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of a process and all its descendants (Linux only).

    Read from each process's CPU-time clock: /proc/<pid>/stat counts in clock ticks
    (10 ms), too coarse for the short rounds a benchmark measures, in which a server
    may spend a few milliseconds and show none. The ticks stand in for a process whose
    clock cannot be read.
    """
    proc = Path("/proc")
    if not (proc / str(pid) / "stat").exists():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        fields = raw[raw.rindex(")") + 2 :].split()
        child, parent = int(entry.name), int(fields[1])
        children.setdefault(parent, []).append(child)
        times[child] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in times:
            clock = _cpu_clock(current)
            total += times[current] if clock is None else clock
        todo.extend(children.get(current, ()))
    return total


def cpu_counters() -> tuple[int, int] | None:
    """(all CPU time, the part the hypervisor gave to other guests: "steal"), in ticks,
    for the whole machine since boot (Linux only)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(value) for value in fields[1:9]]  # guest time is counted in user already
    return sum(ticks), ticks[7]


def steal_share(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """The share of CPU time stolen by other guests between two `cpu_counters()`."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return (end[1] - start[1]) / (end[0] - start[0])
