"""The tables `python -m bench.gateway` prints, built from paired direct/gateway runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.load import Samples, Summary


@dataclass
class Run:
    """One timed run: a mode ("chat", "stream", "image" or "speech") at a concurrency, direct or through the
    gateway, with what it measured and the CPU seconds each process spent meanwhile."""

    mode: str
    concurrency: int
    target: str
    samples: Samples
    cpu: dict[str, float | None] = field(default_factory=dict)

    def cpu_per_call_us(self, process: str) -> float:
        """CPU microseconds `process` spent per call during the timed phase."""
        seconds = self.cpu.get(process)
        calls = self.samples.ok + self.samples.error_count
        if seconds is None or not calls:
            return math.nan
        return seconds / calls * 1e6


@dataclass(frozen=True)
class Pair:
    """The direct and the gateway run of one mode at one concurrency."""

    mode: str
    concurrency: int
    direct: Run
    gateway: Run


def pairs(runs: Sequence[Run]) -> list[Pair]:
    """Match each gateway run with the direct run of the same mode and concurrency."""
    found: dict[tuple[str, int], dict[str, Run]] = {}
    for run in runs:
        found.setdefault((run.mode, run.concurrency), {})[run.target] = run
    return [
        Pair(mode, concurrency, both["direct"], both["gateway"])
        for (mode, concurrency), both in found.items()
        if "direct" in both and "gateway" in both
    ]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _added(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.2f}"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) or math.isinf(value) else f"{value:.2f}x"


def _us(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A plain-text table; the first `left` columns are left-aligned, the rest right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.ljust(width) if index < left else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


_SERIES = {
    "chat": [("chat, complete", "total")],
    "stream": [("stream, last byte", "total"), ("stream, first chunk", "first")],
    "image": [("image, complete", "total")],
    "speech": [("speech, last byte", "total"), ("speech, first byte", "first")],
}


def latency_table(found: Sequence[Pair]) -> str:
    """p50 and p99 in ms, direct and through the gateway, the difference and the ratio."""
    headers = [
        "call", "c", "direct p50", "gateway p50", "added p50", "ratio p50",
        "direct p99", "gateway p99", "added p99", "ratio p99",
    ]  # fmt: skip
    rows = []
    for mode in _SERIES:
        for label, series in _SERIES[mode]:
            for pair in (p for p in found if p.mode == mode):
                direct = Summary.of(getattr(pair.direct.samples, series))
                gateway = Summary.of(getattr(pair.gateway.samples, series))
                rows.append(
                    [
                        label,
                        str(pair.concurrency),
                        _ms(direct.p50),
                        _ms(gateway.p50),
                        _added(gateway.p50 - direct.p50),
                        _ratio(_div(gateway.p50, direct.p50)),
                        _ms(direct.p99),
                        _ms(gateway.p99),
                        _added(gateway.p99 - direct.p99),
                        _ratio(_div(gateway.p99, direct.p99)),
                    ]
                )
    return table(headers, rows)


def throughput_table(found: Sequence[Pair]) -> str:
    """Calls timed, errors and calls per second, direct and through the gateway."""
    headers = [
        "call", "c", "calls d/g", "errors d/g", "direct rps", "gateway rps", "ratio rps",
    ]  # fmt: skip
    rows = []
    for pair in found:
        d, g = pair.direct.samples, pair.gateway.samples
        calls = f"{d.ok + d.error_count}/{g.ok + g.error_count}"
        marks = "*" if d.hit_time_limit or g.hit_time_limit else ""
        rows.append(
            [
                pair.mode,
                str(pair.concurrency),
                calls + marks,
                f"{d.error_count}/{g.error_count}",
                f"{d.throughput:,.0f}",
                f"{g.throughput:,.0f}",
                _ratio(_div(g.throughput, d.throughput)),
            ]
        )
    return table(headers, rows)


def cpu_table(found: Sequence[Pair]) -> str:
    """CPU microseconds per call of each process, the cost behind the throughput figures."""
    headers = [
        "call", "c", "console (gw)", "simulator d/g", "load generator d/g",
    ]  # fmt: skip
    rows = []
    for pair in found:
        d, g = pair.direct, pair.gateway
        rows.append(
            [
                pair.mode,
                str(pair.concurrency),
                _us(g.cpu_per_call_us("console")),
                f"{_us(d.cpu_per_call_us('simulator'))}/{_us(g.cpu_per_call_us('simulator'))}",
                f"{_us(d.cpu_per_call_us('generator'))}/{_us(g.cpu_per_call_us('generator'))}",
            ]
        )
    return table(headers, rows)


def errors_detail(runs: Sequence[Run]) -> list[str]:
    """One line per run that had errors, naming their kinds."""
    lines = []
    for run in runs:
        if run.samples.errors:
            kinds = ", ".join(f"{kind}: {count}" for kind, count in run.samples.errors.items())
            lines.append(f"{run.mode} c={run.concurrency} {run.target}: {kinds}")
    return lines


def as_json(runs: Sequence[Run]) -> list[dict[str, object]]:
    """The runs as plain data, for keeping and comparing results between changes."""
    out: list[dict[str, object]] = []
    for run in runs:
        total, first = Summary.of(run.samples.total), Summary.of(run.samples.first)
        out.append(
            {
                "mode": run.mode,
                "concurrency": run.concurrency,
                "target": run.target,
                "ok": run.samples.ok,
                "errors": dict(run.samples.errors),
                "seconds": round(run.samples.elapsed, 3),
                "rps": round(run.samples.throughput, 1),
                "total_ms": _summary_dict(total),
                "first_chunk_ms": _summary_dict(first),
                "cpu_us_per_call": {
                    name: round(run.cpu_per_call_us(name), 1) for name in sorted(run.cpu)
                },
            }
        )
    return out


def _summary_dict(summary: Summary) -> dict[str, float]:
    return {
        "p50": round(summary.p50, 3),
        "p90": round(summary.p90, 3),
        "p99": round(summary.p99, 3),
        "mean": round(summary.mean, 3),
    }
