"""Concurrent slow streams through one console worker (`python -m bench.streams`).

Starts the simulator with a long pause between stream chunks (`--chunk-delay-ms`) and the
console (`manage.py serve`, one worker by default), as `bench.gateway` does, then:

1. times the first chunk of `--probes` fresh streamed chat calls, one at a time, with
   nothing else open (idle);
2. opens `--streams` streamed chat calls through the console, `--batch` at a time, each
   on its own connection, and waits for each one's first chunk: these streams then stay
   open, a chunk every `--chunk-delay-ms`, for about `--max-tokens` chunks;
3. once all are open, reads the console's resident memory (all its processes) and times
   the first chunk of `--probes` fresh calls again, while they are open;
4. waits for every held stream to end and counts those that ended with `data: [DONE]`.

The report: how many streams were held at once, how long opening them took, the memory
added per open stream, and the first chunk of a fresh call idle and while they were open.
The open file limit of the harness (and so of the servers it starts) is raised to its
hard limit first: each held stream takes a socket in the harness, two in the console and
one in the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.gateway import servers
from bench.realtime import _rss_kib
from bench.report import Summary
from bench.servers import HOST, ServerError

TIMEOUT = 120.0


@dataclass
class Result:
    asked: int = 0
    held: int = 0
    completed: int = 0
    open_seconds: float = 0.0
    idle_first_chunk: list[float] = field(default_factory=list)
    loaded_first_chunk: list[float] = field(default_factory=list)
    kib_per_stream: float | None = None
    failures: Counter[str] = field(default_factory=Counter)


def _request(port: int, key: str, max_tokens: int) -> bytes:
    body = json.dumps(
        {
            "model": "mira",
            "messages": [{"role": "user", "content": "Tell me a long story, slowly"}],
            "max_tokens": max_tokens,
            "stream": True,
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Stream:
    """One streamed call on its own connection: `first` is set at its first chunk."""

    def __init__(self, raw: bytes, port: int) -> None:
        self.raw, self.port = raw, port
        self.first = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> bool:
        writer = None
        try:
            started = time.perf_counter()
            reader, writer = await asyncio.open_connection(HOST, self.port)
            writer.write(self.raw)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            status = head.split(b" ", 2)[1].decode()
            if status != "200":
                raise RuntimeError(f"status {status}")
            seen = b""
            while b"data:" not in seen:
                data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
                if not data:
                    raise RuntimeError("closed before the first chunk")
                seen += data
            self.first.set_result(time.perf_counter() - started)
            tail = seen[-64:]
            while True:
                data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
                if not data:
                    break
                tail = (tail + data)[-64:]
            if b"[DONE]" not in tail:
                raise RuntimeError("ended without [DONE]")
            return True
        except Exception as exc:
            if not self.first.done():
                self.first.set_exception(exc)
            raise
        finally:
            if writer is not None:
                writer.close()


async def _probe(raw: bytes, port: int) -> float:
    stream = Stream(raw, port)
    first = await stream.first
    stream.task.cancel()
    await asyncio.gather(stream.task, return_exceptions=True)
    return first


def _failure(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, RuntimeError) else type(exc).__name__


async def measure(setup, args: argparse.Namespace) -> Result:
    result = Result(asked=args.streams)
    port, key = setup.console.port, setup.gateway_key
    raw = _request(port, key, args.max_tokens)
    probe = _request(port, key, 4)
    for _ in range(5):  # warm up
        await _probe(probe, port)
    for _ in range(args.probes):
        result.idle_first_chunk.append(await _probe(probe, port))
    await asyncio.sleep(1.0)
    before = _rss_kib(setup.console.pid)
    held: list[Stream] = []
    started = time.perf_counter()
    for start in range(0, args.streams, args.batch):
        batch = [Stream(raw, port) for _ in range(min(args.batch, args.streams - start))]
        held += batch
        await asyncio.gather(*(s.first for s in batch), return_exceptions=True)
    result.open_seconds = time.perf_counter() - started
    open_now = [s for s in held if not s.first.exception() and not s.task.done()]
    result.held = len(open_now)
    after = _rss_kib(setup.console.pid)
    if before is not None and after is not None and open_now:
        result.kib_per_stream = (after - before) / len(open_now)
    for _ in range(args.probes):
        try:
            result.loaded_first_chunk.append(await _probe(probe, port))
        except Exception as exc:
            result.failures[f"probe: {_failure(exc)}"] += 1
    still_open = sum(not s.task.done() for s in open_now)
    if still_open < len(open_now):
        result.failures[f"{len(open_now) - still_open} held streams ended before the probes"] += 1
    for outcome in await asyncio.gather(*(s.task for s in held), return_exceptions=True):
        if outcome is True:
            result.completed += 1
        else:
            result.failures[_failure(outcome)] += 1
    return result


def lines(result: Result, args: argparse.Namespace) -> list[str]:
    idle, loaded = Summary.of(result.idle_first_chunk), Summary.of(result.loaded_first_chunk)
    memory = f"{result.kib_per_stream:.0f} KiB" if result.kib_per_stream is not None else "unknown"
    out = [
        f"Slow streams through one console ({args.workers} worker(s)): a chunk every "
        f"{args.chunk_delay_ms:g} ms, max_tokens {args.max_tokens}",
        f"  held at once: {result.held:,} of {result.asked:,} (opened in "
        f"{result.open_seconds:.1f} s, {args.batch} at a time); completed with [DONE]: "
        f"{result.completed:,}",
        f"  console memory per open stream: {memory}",
        f"  first chunk of a fresh call, ms: idle p50 {idle.p50:.1f} "
        f"p99 {idle.p99:.1f}; with the streams open p50 {loaded.p50:.1f} "
        f"p99 {loaded.p99:.1f}; added p50 {loaded.p50 - idle.p50:+.1f} ms "
        f"({len(result.loaded_first_chunk)} calls each)",
    ]
    if result.failures:
        out.append(
            "  failures: " + ", ".join(f"{n} {what}" for what, n in result.failures.most_common())
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100, help="streams opened at a time")
    parser.add_argument("--chunk-delay-ms", type=float, default=2000.0)
    parser.add_argument("--max-tokens", type=int, default=40, help="about the chunks per stream")
    parser.add_argument("--probes", type=int, default=20, help="fresh calls timed, each time")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    print(f"open file limit: {limit} (was {soft})")
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    # Every held stream keeps a connection to the upstream open while it lasts.
    os.environ.setdefault("MIRA_UPSTREAM_CONNECTIONS", str(args.streams + 1000))
    print(f"MIRA_UPSTREAM_CONNECTIONS={os.environ['MIRA_UPSTREAM_CONNECTIONS']}")
    try:
        with servers(args.workers, args.chunk_delay_ms) as setup:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                result = runner.run(measure(setup, args))
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in lines(result, args):
        print(line)
    return 0 if result.held == result.asked and not result.failures else 1


if __name__ == "__main__":
    sys.exit(main())
