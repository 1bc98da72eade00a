"""The realtime line of `make bench`: what the gateway adds to a relayed audio frame, and
how many realtime sessions one console worker holds.

Frames: one session directly on the simulator and one through the console's
`/v1/realtime`, each sends `--realtime-frames` turns of an audio frame (100 ms of PCM16
at 24 kHz, as `input_audio_buffer.append`) followed by `input_audio_buffer.clear`, and
times each until the node's `input_audio_buffer.cleared` comes back: the frame relayed
up, and an event relayed down. The two sessions take turns in rounds, as the HTTP modes
do.

Sessions: then `--realtime-sessions` sessions are opened through the console, 50 at a
time, and held open together; each makes one such turn once all are open. The line says
how many were held (a refusal or a failure is counted and named), how long opening them
took, their turn's p50 and p99 while all were open, and the console's memory per session.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from bench.report import Summary
from bench.servers import HOST

FRAME = json.dumps(
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(4800)).decode()}
)
CLEAR = json.dumps({"type": "input_audio_buffer.clear"})
SESSION_BATCH = 50
TIMEOUT = 30.0


@dataclass
class Result:
    frames: dict[str, list[float]] = field(default_factory=dict)  # target: seconds per turn
    sessions_asked: int = 0
    sessions_held: int = 0
    open_seconds: float = 0.0
    held_turns: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    kib_per_session: float | None = None


async def _open(port: int, key: str) -> ClientConnection:
    url = f"ws://{HOST}:{port}/v1/realtime?model=mira"
    connection = await connect(
        url,
        additional_headers={"Authorization": f"Bearer {key}"},
        max_size=16 * 1024 * 1024,
        compression=None,
        open_timeout=TIMEOUT,
        proxy=None,
    )
    async with asyncio.timeout(TIMEOUT):
        while json.loads(await connection.recv())["type"] != "session.created":
            pass
    return connection


async def _turn(connection: ClientConnection) -> float:
    """An audio frame and a clear, until the clear is answered: seconds."""
    started = time.perf_counter()
    await connection.send(FRAME)
    await connection.send(CLEAR)
    async with asyncio.timeout(TIMEOUT):
        while True:
            message = await connection.recv()
            if '"input_audio_buffer.cleared"' in message:
                return time.perf_counter() - started


def _rss_kib(pid: int) -> int | None:
    """The resident memory of a process and its children (the workers), in KiB."""
    total, found = 0, False
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    found = True
        except OSError:
            continue
    return total if found else None


async def measure(setup, frames: int, sessions: int, rounds: int) -> Result:
    """Both measurements against running servers (a bench.gateway.Setup)."""
    result = Result(sessions_asked=sessions)
    targets = {
        "direct": (setup.simulator.port, setup.upstream_key),
        "gateway": (setup.console.port, setup.gateway_key),
    }
    connections = {name: await _open(*where) for name, where in targets.items()}
    try:
        for connection in connections.values():
            for _ in range(20):  # warm up
                await _turn(connection)
        per_round = max(1, frames // rounds)
        order = list(connections)
        for index in range(rounds):
            for name in order if index % 2 == 0 else order[::-1]:
                times = result.frames.setdefault(name, [])
                for _ in range(per_round):
                    times.append(await _turn(connections[name]))
    finally:
        for connection in connections.values():
            await connection.close()
    await asyncio.sleep(0.5)
    await _hold_sessions(setup, sessions, result)
    return result


async def _hold_sessions(setup, sessions: int, result: Result) -> None:
    before = _rss_kib(setup.console.pid)
    held: list[ClientConnection] = []
    started = time.perf_counter()

    async def one() -> None:
        try:
            held.append(await _open(setup.console.port, setup.gateway_key))
        except InvalidStatus as exc:
            result.failures[f"refused {exc.response.status_code}"] += 1
        except (OSError, TimeoutError, WebSocketException) as exc:
            result.failures[type(exc).__name__] += 1

    try:
        for start in range(0, sessions, SESSION_BATCH):
            await asyncio.gather(*(one() for _ in range(min(SESSION_BATCH, sessions - start))))
        result.open_seconds = time.perf_counter() - started
        result.sessions_held = len(held)
        after = _rss_kib(setup.console.pid)
        if before is not None and after is not None and held:
            result.kib_per_session = (after - before) / len(held)

        async def turn(connection: ClientConnection) -> None:
            try:
                result.held_turns.append(await _turn(connection))
            except (OSError, TimeoutError, WebSocketException) as exc:
                result.failures[f"turn {type(exc).__name__}"] += 1

        for start in range(0, len(held), SESSION_BATCH):
            await asyncio.gather(*(turn(c) for c in held[start : start + SESSION_BATCH]))
    finally:
        await asyncio.gather(*(c.close() for c in held), return_exceptions=True)


def lines(result: Result) -> list[str]:
    """The realtime section of the report."""
    out = ["Realtime, WSS /v1/realtime (an audio frame of 100 ms and a clear, until cleared)"]
    direct = Summary.of(result.frames.get("direct", []))
    gateway = Summary.of(result.frames.get("gateway", []))
    out.append(
        f"  frame turn, ms: direct p50 {direct.p50:.2f} p99 {direct.p99:.2f}; gateway p50 "
        f"{gateway.p50:.2f} p99 {gateway.p99:.2f}; added p50 {gateway.p50 - direct.p50:+.2f} "
        f"p99 {gateway.p99 - direct.p99:+.2f} ({len(result.frames.get('gateway', []))} turns each)"
    )
    held = Summary.of(result.held_turns)
    memory = (
        f", {result.kib_per_session:.0f} KiB of console memory each"
        if result.kib_per_session is not None
        else ""
    )
    out.append(
        f"  sessions held at once by the console: {result.sessions_held} of "
        f"{result.sessions_asked} (opened in {result.open_seconds:.1f} s{memory}); "
        f"a turn on each while all were open: p50 {held.p50:.2f} ms, p99 {held.p99:.2f} ms"
    )
    if result.failures:
        problems = ", ".join(f"{n} {what}" for what, n in result.failures.most_common())
        out.append(f"  failures: {problems}")
    return out


def as_json(result: Result) -> dict:
    return {
        "frames_ms": {
            name: {"p50": Summary.of(t).p50, "p99": Summary.of(t).p99, "turns": len(t)}
            for name, t in result.frames.items()
        },
        "sessions_asked": result.sessions_asked,
        "sessions_held": result.sessions_held,
        "open_seconds": round(result.open_seconds, 3),
        "held_turn_ms": {
            "p50": Summary.of(result.held_turns).p50,
            "p99": Summary.of(result.held_turns).p99,
        },
        "kib_per_session": result.kib_per_session,
        "failures": dict(result.failures),
    }
