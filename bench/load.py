"""Closed-loop load: N clients, each on its own keep-alive connection, one call at a time.

A run warms its connections up, then issues calls in rounds until it has made
`requests` of them or spent `max_seconds` in its rounds, whichever comes first. Every
answer is checked (status 200 and a body that ends the way it should); a wrong answer,
a reset or a timeout counts as an error and is left out of the latency figures.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.client import Answer, Connection

Check = Callable[[Answer], bool]


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send calls and the prepared request to send."""

    name: str
    host: str
    port: int
    raw_request: bytes
    keep_body: bool
    check: Check


@dataclass(frozen=True, slots=True)
class Plan:
    """How much load: concurrency, calls to time, warm-up calls, and the time limit."""

    concurrency: int
    requests: int
    warmup: int
    max_seconds: float
    timeout: float = 30.0


@dataclass(slots=True)
class Samples:
    """What one run measured: per-call seconds (to the last byte and to the first body
    bytes), error counts by kind, and the wall-clock time of the timed phase."""

    total: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    hit_time_limit: bool = False

    @property
    def ok(self) -> int:
        return len(self.total)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        """Successful calls per second over the timed phase."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def add_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The `fraction` quantile of already sorted values, interpolating linearly."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    weight = position - low
    return sorted_values[low] * (1 - weight) + sorted_values[high] * weight


@dataclass(frozen=True, slots=True)
class Summary:
    """Latency percentiles in milliseconds for one series of samples."""

    p50: float
    p90: float
    p99: float
    mean: float

    @classmethod
    def of(cls, seconds: list[float]) -> Summary:
        values = sorted(seconds)
        mean = sum(values) / len(values) if values else math.nan
        return cls(
            p50=percentile(values, 0.50) * 1000,
            p90=percentile(values, 0.90) * 1000,
            p99=percentile(values, 0.99) * 1000,
            mean=mean * 1000,
        )


async def _client(
    connection: Connection,
    target: Target,
    plan: Plan,
    samples: Samples | None,
    budget: list[int],
    deadline: float,
) -> None:
    """One simulated caller: take a call from the shared budget, make it, record it."""
    while budget[0] > 0:
        if time.perf_counter() >= deadline:
            if samples is not None:
                samples.hit_time_limit = True
            return
        budget[0] -= 1
        try:
            answer = await connection.request(target.raw_request, plan.timeout)
        except TimeoutError:
            kind = "timeout"
        except OSError as exc:
            kind = type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - any failure of one call is counted, not fatal
            kind = type(exc).__name__
        else:
            if answer.status != 200:
                kind = f"status {answer.status}"
            elif not target.check(answer):
                kind = "bad body"
            else:
                if samples is not None:
                    samples.total.append(answer.total)
                    samples.first.append(answer.first_body)
                continue
        if samples is not None:
            samples.add_error(kind)


def round_sizes(requests: int, concurrency: int, rounds: int) -> list[int]:
    """`requests` split into at most `rounds` rounds, each of at least ten calls per
    caller (so that starting and draining a round is a small part of it)."""
    size = max(math.ceil(requests / max(rounds, 1)), 10 * concurrency, 1)
    sizes = [size] * (requests // size)
    if requests % size:
        sizes.append(requests % size)
    return sizes


def alternating(names: Sequence[str], rounds: int) -> list[list[str]]:
    """Who goes first in each round: A B, then B A, then A B, and so on."""
    return [list(names) if index % 2 == 0 else list(reversed(names)) for index in range(rounds)]


class Load:
    """One target's callers: their keep-alive connections, opened and warmed up once and
    kept for every round of a run, so that rounds for two targets can take turns."""

    def __init__(self, target: Target, plan: Plan) -> None:
        self.target = target
        self.plan = plan
        self.samples = Samples()
        self.connections = [
            Connection(target.host, target.port, keep_body=target.keep_body)
            for _ in range(plan.concurrency)
        ]

    async def open(self) -> None:
        """Connect every caller and make the warm-up calls (not timed)."""
        await asyncio.gather(*(c.connect() for c in self.connections))
        warm = [max(self.plan.warmup, self.plan.concurrency)]
        deadline = time.perf_counter() + max(3.0, self.plan.max_seconds / 5)
        await asyncio.gather(
            *(_client(c, self.target, self.plan, None, warm, deadline) for c in self.connections)
        )

    @property
    def time_left(self) -> float:
        return self.plan.max_seconds - self.samples.elapsed

    async def round(self, requests: int) -> None:
        """Time `requests` more calls (fewer if the run's time limit comes first)."""
        budget = [requests]
        started = time.perf_counter()
        deadline = started + self.time_left
        await asyncio.gather(
            *(
                _client(c, self.target, self.plan, self.samples, budget, deadline)
                for c in self.connections
            )
        )
        self.samples.elapsed += time.perf_counter() - started

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
