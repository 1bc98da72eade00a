"""The jobs line of `make bench`: what the console adds to starting a music job, and to
learning that it has ended.

`--jobs` music jobs (2 seconds of music each; the simulator takes a second per job)
are started at once directly on the simulator, then as many through the console's
`/v1/audio/music`; the two sides take turns in `--rounds` rounds. Each job is then asked
after every `POLL` seconds until it has ended. Through the console a job has ended once
it is settled: its file copied into the console's storage, its usage booked and its
hold replaced by what it cost, so that its answer carries `cost`. The line gives each
side's create latency and time to ended (from the start call to the first answer that
says so), p50 and p99, and the difference.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from bench.report import Summary
from bench.servers import HOST

PATH = "/v1/audio/music"
BODY = {"prompt": "A short benchmark jingle", "duration_seconds": 2, "instrumental": True}
POLL = 0.05
TIMEOUT = 60.0
ENDED = ("succeeded", "failed", "cancelled")


@dataclass
class Result:
    create: dict[str, list[float]] = field(default_factory=dict)  # target: seconds
    ended: dict[str, list[float]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)


async def _one(
    session: aiohttp.ClientSession, name: str, base: str, result: Result, settled: bool
) -> None:
    started = time.perf_counter()
    try:
        async with session.post(base + PATH, json=BODY) as response:
            answer = await response.json(content_type=None)
            if response.status != 200:
                result.failures[f"{name} start {response.status}"] += 1
                return
        result.create.setdefault(name, []).append(time.perf_counter() - started)
        job_id = answer["id"]
        while True:
            if time.perf_counter() - started > TIMEOUT:
                result.failures[f"{name} did not end"] += 1
                return
            await asyncio.sleep(POLL)
            async with session.get(f"{base}{PATH}/{job_id}") as response:
                answer = await response.json(content_type=None)
            if answer.get("status") in ENDED and (not settled or "cost" in answer):
                break
        if answer["status"] != "succeeded":
            result.failures[f"{name} {answer['status']}"] += 1
            return
        result.ended.setdefault(name, []).append(time.perf_counter() - started)
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
        result.failures[f"{name} {type(exc).__name__}"] += 1


async def measure(setup, jobs: int, rounds: int, settled: tuple[str, ...] = ("gateway",)) -> Result:
    """Both sides against running servers (a bench.gateway.Setup), in turns; a job on a
    side named in `settled` has ended once its answer carries its cost."""
    result = Result()
    targets = {
        "direct": (setup.simulator.port, setup.upstream_key),
        "gateway": (setup.console.port, setup.gateway_key),
    }
    sessions = {
        name: aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {key}"},
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        )
        for name, (_, key) in targets.items()
    }
    try:
        per_round = max(1, jobs // rounds)
        order = list(targets)
        for index in range(rounds):
            for name in order if index % 2 == 0 else order[::-1]:
                base = f"http://{HOST}:{targets[name][0]}"
                await asyncio.gather(
                    *(
                        _one(sessions[name], name, base, result, name in settled)
                        for _ in range(per_round)
                    )
                )
    finally:
        for session in sessions.values():
            await session.close()
    return result


def _ms(values: list[float]) -> Summary:
    return Summary.of(values)  # in milliseconds


def lines(result: Result) -> list[str]:
    """The jobs section of the report."""
    out = [f"Jobs, POST {PATH} then GET until ended (through the console: until settled)"]
    for label, times in (("create", result.create), ("time to ended", result.ended)):
        direct, gateway = _ms(times.get("direct", [])), _ms(times.get("gateway", []))
        out.append(
            f"  {label}, ms: direct p50 {direct.p50:.1f} p99 {direct.p99:.1f}; gateway p50 "
            f"{gateway.p50:.1f} p99 {gateway.p99:.1f}; added p50 {gateway.p50 - direct.p50:+.1f}"
            f" p99 {gateway.p99 - direct.p99:+.1f} ({len(times.get('gateway', []))} jobs)"
        )
    if result.failures:
        problems = ", ".join(f"{n} {what}" for what, n in result.failures.most_common())
        out.append(f"  failures: {problems}")
    return out


def as_json(result: Result) -> dict:
    def summary(times: dict[str, list[float]]) -> dict:
        return {
            name: {"p50": _ms(t).p50, "p99": _ms(t).p99, "jobs": len(t)}
            for name, t in times.items()
        }

    return {
        "create_ms": summary(result.create),
        "ended_ms": summary(result.ended),
        "failures": dict(result.failures),
    }
