"""`python -m bench.gateway`: what the /v1 gateway adds to a chat call, against the upstream.

It starts two processes on free loopback ports: the Mira simulator (uvicorn, no chunk
delay) and the console (`manage.py serve`: uvicorn with uvloop and httptools,
`BENCH_WORKERS` workers, 1 by default) on a throwaway SQLite database (PostgreSQL and
Redis with `BENCH_DB=postgres`, see bench/databases.py) with a demo workspace and key.
Then, for non-streamed and streamed
`POST /v1/chat/completions` at each concurrency, and for a few image generations
(`POST /v1/images/generate`), it makes the same calls directly to the simulator and
through the gateway, and prints the latency percentiles, the added
latency and the ratios, the throughput and the CPU cost per call of each process.
Music jobs are started on both sides and followed until they end (bench.jobs).
Both servers are stopped and the database removed at the end, on errors and on
Ctrl-C too. See `bench/README.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType

from bench import jobs, realtime, report
from bench.client import Answer, Connection, build_request
from bench.databases import Databases, databases
from bench.databases import wanted as databases_wanted
from bench.load import Load, Plan, Target, alternating, round_sizes
from bench.servers import (
    HOST,
    Server,
    ServerError,
    cpu_counters,
    cpu_seconds,
    free_port,
    manage,
    spawn,
    steal_share,
    wait_until_answering,
)
from bench.simulator import KEY_VARIABLE

PATH = "/v1/chat/completions"
IMAGE_PATH = "/v1/images/generate"
SPEECH_PATH = "/v1/audio/speech"
MODES = ("chat", "stream", "image", "speech", "realtime", "jobs")
PROMPT = "Say hello to the benchmark in a few words."
IMAGE_PROMPT = "A lighthouse at dusk"
# The simulator draws and encodes each picture (tens of milliseconds of CPU), so image
# calls run at these concurrencies only, and fewer of them (--image-requests).
IMAGE_CONCURRENCY = (1, 4)
# A speech call runs espeak-ng in the simulator (a process per call, tens of milliseconds),
# so it is measured like images; WAV, so that no encoder's time hides the gateway's.
SPEECH_TEXT = "The lighthouse keeper counted the ships that passed at dusk."


# --- options ------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give positive whole numbers separated by commas")
    return values


def _modes(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(values) - set(MODES))
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}")
    return values


def _default_workers() -> int:
    raw = os.environ.get("BENCH_WORKERS", "").strip()
    try:
        workers = int(raw) if raw else 1
    except ValueError:
        raise SystemExit(f"BENCH_WORKERS must be a whole number, not {raw!r}") from None
    if workers < 1:
        raise SystemExit("BENCH_WORKERS must be at least 1")
    return workers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway",
        description="Measure the latency and throughput the /v1 gateway adds to chat calls.",
    )
    parser.add_argument(
        "--concurrency", type=_int_list, default=[1, 16, 64], help="default 1,16,64"
    )
    parser.add_argument("--modes", type=_modes, default=list(MODES), help=",".join(MODES))
    parser.add_argument(
        "--requests-c1", type=int, default=1000, help="timed calls at concurrency 1"
    )
    parser.add_argument(
        "--requests", type=int, default=3000, help="timed calls at higher concurrency"
    )
    parser.add_argument(
        "--image-requests",
        type=int,
        default=100,
        help="timed image calls at each concurrency of 1 and 4 that is asked for",
    )
    parser.add_argument(
        "--realtime-frames",
        type=int,
        default=1000,
        help="timed audio frames through one realtime session, direct and through the gateway",
    )
    parser.add_argument(
        "--realtime-sessions",
        type=int,
        default=1000,
        help="realtime sessions to hold open through the console at once",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=40,
        help="music jobs started on each side, direct and through the console",
    )
    parser.add_argument(
        "--warmup", type=int, default=100, help="untimed calls first (at least 3 per client)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=15.0, help="time limit of one timed run"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="rounds per run, direct and gateway taking turns (default 10)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds of quiet after each round, for the console's background work",
    )
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each call")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="console worker processes (default: BENCH_WORKERS or 1)",
    )
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="the simulator's delay between chunks"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = _default_workers()
    counts = (args.workers, args.requests, args.requests_c1, args.image_requests, args.rounds,
              args.realtime_frames, args.realtime_sessions, args.jobs)  # fmt: skip
    if min(counts) < 1 or args.settle < 0:
        parser.error("workers, rounds and request counts must be at least 1, --settle not negative")
    return args


# --- the servers ----------------------------------------------------------------------


@dataclass
class Setup:
    """The running servers and what it takes to call them."""

    simulator: Server
    console: Server
    upstream_key: str
    gateway_key: str
    workdir: Path


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _console_env(
    workdir: Path, simulator_port: int, upstream_key: str, dbs: Databases
) -> dict[str, str]:
    """The console's environment: production settings, a throwaway database, the simulator."""
    env = dict(os.environ)
    env.pop("MIRA_TESTING", None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": dbs.database_url,
            # The images the gateway keeps go with the rest of the throwaway files.
            "MEDIA_ROOT": str(workdir / "media"),
            "GATEWAY_JOURNAL_DIR": str(workdir / "journal"),
            "LOG_LEVEL": "WARNING",
            "MIRA_API_BASE": f"http://{HOST}:{simulator_port}/v1",
            "MIRA_API_KEY": upstream_key,
            "MIRA_FLEET_FILE": "",
            # Set (possibly empty) so that a development .env file cannot change it.
            "REDIS_URL": dbs.redis_url,
            # The realtime line holds many sessions on the one key.
            "GATEWAY_REALTIME_SESSIONS_PER_KEY": "1000000",
        }
    )
    return env


# Enough for any number of benchmark calls: the database is thrown away afterwards.
CREDIT = "1000000"


def _grant_credit(env: dict[str, str]) -> None:
    """Give the demo workspace a balance, so that calls are not refused with 402."""
    try:
        manage(["grantcredit", "--workspace", "demo", "--amount", CREDIT, "--note", "bench"], env)
    except ServerError as exc:
        # A console without billing has no such command and needs no credit.
        if "Unknown command" not in str(exc):
            raise


def simulator_command(port: int, chunk_delay_ms: float) -> list[str]:
    """The simulator in its own process, under uvicorn with uvloop and httptools."""
    options = f"--port {port} --chunk-delay-ms {chunk_delay_ms:g}"
    return [sys.executable, "-m", "bench.simulator", *options.split()]


def console_command(port: int, workers: int) -> list[str]:
    """The console as it is served in production: `manage.py serve` (uvicorn workers with
    uvloop and httptools under its supervisor)."""
    options = f"--host {HOST} --port {port} --workers {workers} --graceful-seconds 2"
    return [sys.executable, "manage.py", "serve", *options.split()]


def _start(
    name: str,
    command: Callable[[int], list[str]],
    env: dict[str, str],
    log: Path,
    ready: tuple[str, dict[str, str]],
    started: list[Server],
) -> Server:
    """Start a server on a free port and wait until `GET ready[0]` answers 200.

    The port is free when chosen but may be taken before the server binds it; then
    another port is tried. Every process started is added to `started` at once, so
    that it is stopped whatever happens next.
    """
    for attempt in range(1, 4):
        port = free_port()
        server = spawn(name, port, command(port), env, log)
        started.append(server)
        try:
            wait_until_answering(server, *ready)
        except ServerError:
            server.stop()
            if attempt < 3 and "address already in use" in server.log_tail().lower():
                continue
            raise
        return server
    raise AssertionError("unreachable")


@contextmanager
def servers(workers: int, chunk_delay_ms: float) -> Iterator[Setup]:
    """Start the simulator and the console (and with BENCH_DB=postgres, PostgreSQL and
    Redis); stop them and delete their files afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="mira-bench-"))
    stack = ExitStack()
    started: list[Server] = []
    try:
        dbs = stack.enter_context(databases(workdir))
        upstream_key = "sk-mira-" + secrets.token_hex(20)
        simulator = _start(
            "simulator",
            lambda port: simulator_command(port, chunk_delay_ms),
            dict(os.environ) | {KEY_VARIABLE: upstream_key},
            workdir / "simulator.log",
            ("/v1/models", {"Authorization": f"Bearer {upstream_key}"}),
            started,
        )
        env = _console_env(workdir, simulator.port, upstream_key, dbs)
        _progress("preparing the database (migrate, demo workspace, key)...")
        manage(["migrate", "--noinput"], env)
        manage(["demo"], env | {"DEMO_PASSWORD": secrets.token_urlsafe(16)})
        output = manage(["createapikey", "--workspace", "demo", "--name", "bench"], env)
        gateway_key = next(
            (line.strip() for line in output.splitlines() if line.strip().startswith("sk-")), ""
        )
        if not gateway_key:
            raise ServerError("createapikey printed no key")
        _grant_credit(env)
        console = _start(
            "console",
            lambda port: console_command(port, workers),
            env,
            workdir / "console.log",
            ("/v1/models", {"Authorization": f"Bearer {gateway_key}"}),
            started,
        )
        yield Setup(simulator, console, upstream_key, gateway_key, workdir)
    finally:
        for server in reversed(started):
            server.stop()
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)


# --- the calls ------------------------------------------------------------------------


def request_body(mode: str, max_tokens: int) -> bytes:
    """The same small chat call for both targets; streams ask for the usage chunk, as the
    gateway always does upstream, so that the simulator does the same work either way.
    An image call asks for one low-quality square picture as base64, as the gateway
    asks the upstream before it keeps the picture."""
    if mode == "image":
        image = {"prompt": IMAGE_PROMPT, "size": "1024x1024", "quality": "low",
                 "response_format": "b64_json"}  # fmt: skip
        return json.dumps(image, separators=(",", ":")).encode()
    if mode == "speech":
        speech = {"input": SPEECH_TEXT, "voice": "aria", "response_format": "wav"}
        return json.dumps(speech, separators=(",", ":")).encode()
    body: dict[str, object] = {
        "model": "mira",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
    }
    if mode == "stream":
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body, separators=(",", ":")).encode()


def _complete_json(answer: Answer) -> bool:
    return answer.body.startswith(b"{") and b'"choices"' in answer.body


def _complete_stream(answer: Answer) -> bool:
    return answer.body.endswith(b"data: [DONE]\n\n")


def _complete_image(answer: Answer) -> bool:
    return answer.body.startswith(b"{") and b'"b64_json"' in answer.body


def _complete_speech(answer: Answer) -> bool:
    return answer.body.startswith(b"RIFF") and len(answer.body) > 10_000


def target(name: str, port: int, key: str, mode: str, max_tokens: int) -> Target:
    """A prepared chat (or image) call to a server on this machine."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if mode == "stream":
        headers["Accept"] = "text/event-stream"
    path = {"image": IMAGE_PATH, "speech": SPEECH_PATH}.get(mode, PATH)
    raw = build_request(HOST, port, path, request_body(mode, max_tokens), headers)
    stream = mode == "stream"
    checks = {"chat": _complete_json, "stream": _complete_stream, "image": _complete_image,
              "speech": _complete_speech}  # fmt: skip
    return Target(
        name=name,
        host=HOST,
        port=port,
        raw_request=raw,
        keep_body=not stream,
        check=checks[mode],
    )


def concurrencies(mode: str, asked: list[int]) -> list[int]:
    """The concurrencies a mode runs at: image and speech calls only at the low ones asked
    for."""
    if mode not in ("image", "speech"):
        return asked
    return [c for c in asked if c in IMAGE_CONCURRENCY] or [1]


# --- measuring ------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds the console, the simulator and this process spend between `start()`
    and `stop()`, added up over every such interval (None where a process's counters
    cannot be read)."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.started: dict[str, float | None] = {}
        self.spent: dict[str, float | None] = {}

    def _servers(self) -> dict[str, float | None]:
        return {
            "console": cpu_seconds(self.setup.console.pid),
            "simulator": cpu_seconds(self.setup.simulator.pid),
        }

    def start(self) -> None:
        # This process is read last here and first in stop(): reading the servers'
        # counters costs it CPU time that is not the load's.
        self.started = self._servers()
        self.started["generator"] = time.process_time()

    def stop(self) -> None:
        ended: dict[str, float | None] = {"generator": time.process_time()}
        ended |= self._servers()
        for process, start in self.started.items():
            end, total = ended[process], self.spent.get(process, 0.0)
            known = None not in (start, end, total)
            self.spent[process] = total + end - start if known else None


async def check_targets(targets: dict[str, Target]) -> None:
    """One call to each target first: a refusal stops the benchmark with its reason."""
    for name, prepared in targets.items():
        connection = Connection(prepared.host, prepared.port, keep_body=True)
        try:
            answer = await connection.request(prepared.raw_request, 30.0)
        finally:
            connection.close()
        if answer.status != 200 or not prepared.check(answer):
            body = answer.body[:500].decode("utf-8", "replace")
            raise ServerError(f"the {name} call answered {answer.status}: {body}")


async def measure(setup: Setup, args: argparse.Namespace) -> list[report.Run]:
    """Every mode at every concurrency, direct and through the gateway in turns."""
    runs: list[report.Run] = []
    for mode in args.modes:
        if mode in ("realtime", "jobs"):
            continue  # measured on their own (bench.realtime, bench.jobs)
        direct = (setup.simulator.port, setup.upstream_key)
        gateway = (setup.console.port, setup.gateway_key)
        targets = {
            "direct": target("direct", *direct, mode, args.max_tokens),
            "gateway": target("gateway", *gateway, mode, args.max_tokens),
        }
        await check_targets(targets)
        for concurrency in concurrencies(mode, args.concurrency):
            requests = args.requests_c1 if concurrency == 1 else args.requests
            warmup = args.warmup
            if mode in ("image", "speech"):
                requests, warmup = args.image_requests, min(warmup, 10)
            plan = Plan(
                concurrency=concurrency,
                requests=requests,
                warmup=max(warmup, 3 * concurrency),
                max_seconds=args.max_seconds,
            )
            for name, load, cpu in await _in_turns(setup, targets, plan, args.rounds, args.settle):
                runs.append(report.Run(mode, concurrency, name, load.samples, cpu))
                _progress(
                    f"  {mode:6} c={concurrency:<3} {name:7} {load.samples.ok:5} ok "
                    f"{load.samples.error_count:4} errors  {load.samples.throughput:8.0f} rps  "
                    f"p50 {report.Summary.of(load.samples.total).p50:7.2f} ms"
                )
    return runs


async def _in_turns(
    setup: Setup, targets: dict[str, Target], plan: Plan, rounds: int, settle: float
) -> list[tuple[str, Load, dict[str, float | None]]]:
    """Time the targets in alternating rounds (A B, B A, A B, ...), so that a machine
    that gets busier or quieter during a run weighs on both alike.

    After each round the machine is left alone for `settle` seconds, within the round's
    CPU accounting: the console books calls in the background (every 0.25 s), and that
    work belongs to its round, not to the direct round after it.
    """
    loads = {name: Load(prepared, plan) for name, prepared in targets.items()}
    meters = {name: CpuMeter(setup) for name in loads}
    try:
        for load in loads.values():
            await load.open()
        sizes = round_sizes(plan.requests, plan.concurrency, rounds)
        for size, names in zip(sizes, alternating(list(loads), len(sizes)), strict=True):
            for name in names:
                for server in (setup.simulator, setup.console):
                    if not server.alive():
                        raise ServerError(f"the {server.name} died:\n{server.log_tail()}")
                meters[name].start()
                await loads[name].round(size)
                await asyncio.sleep(settle)
                meters[name].stop()
            if any(load.time_left <= 0 for load in loads.values()):
                break
    finally:
        for load in loads.values():
            load.close()
    return [(name, load, meters[name].spent) for name, load in loads.items()]


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def describe_setup(args: argparse.Namespace) -> list[str]:
    """What the numbers were measured on: the machine and the servers."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    if databases_wanted() == "postgres":
        storage = (
            "PostgreSQL and Redis (BENCH_DB=postgres: DATABASE_URL and REDIS_URL, or temporary)"
        )
    else:
        redis = "Redis (REDIS_URL)" if os.environ.get("REDIS_URL") else "in-process"
        storage = f"SQLite (temporary), shared state {redis}"
    return [
        f"load average {_load()} at the start (1 min); the benchmark itself needs most of "
        f"{os.cpu_count()} cores, so other busy processes make its wall-clock figures noisy",
        f"machine: {os.cpu_count()} cores ({usable} usable), {platform.machine()}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"console: uvicorn {_version('uvicorn')} (uvloop {_version('uvloop')}, httptools "
        f"{_version('httptools')}), {args.workers} worker(s), config.asgi:application, "
        f"DEBUG=false, {storage}",
        "console command: python "
        + " ".join(console_command(0, args.workers)[1:]).replace("--port 0", "--port PORT"),
        f"upstream: Mira simulator in its own uvicorn process (uvloop, httptools), "
        f"chunk delay {args.chunk_delay_ms:g} ms",
        "load: one process, uvloop, raw HTTP/1.1 keep-alive client on httptools, "
        "one connection per concurrent caller, closed loop",
        f"images: POST {IMAGE_PATH}, one 1024x1024 picture of low quality as base64, "
        f"{args.image_requests} timed at each of c={'/'.join(map(str, IMAGE_CONCURRENCY))} "
        "asked for (c=1 otherwise)",
        f"speech: POST {SPEECH_PATH}, {len(SPEECH_TEXT)} characters as WAV (espeak-ng), as many "
        "calls as images, at the same concurrencies",
        f"realtime: WSS /v1/realtime with a Bearer key, {args.realtime_frames} turns of a 100 ms "
        f"audio frame and a clear, direct and through the gateway in turns; then "
        f"{args.realtime_sessions} sessions held open at once through the console",
        f"jobs: POST {jobs.PATH}, {args.jobs} music jobs of 2 s a side started together in "
        f"up to {args.rounds} rounds, then polled every {jobs.POLL * 1000:g} ms until ended "
        "(through the console: settled)",
        f"calls: POST {PATH}, model mira, max_tokens {args.max_tokens}; "
        f"{args.requests_c1} timed at c=1, {args.requests} above, after "
        f"max({args.warmup}, 3 x c) warm-up calls; at most {args.max_seconds:g} s per run; "
        f"direct and gateway take turns in up to {args.rounds} rounds of at least 10 x c calls, "
        f"{args.settle:g} s apart",
    ]


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop like on Ctrl-C (the servers are stopped on the way out)."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    for line in describe_setup(args):
        print(line)
    print(flush=True)
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    started = time.monotonic()
    try:
        with servers(args.workers, args.chunk_delay_ms) as setup:
            _progress(
                f"servers up: simulator :{setup.simulator.port}, console :{setup.console.port}"
            )
            counters = cpu_counters()
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runs = runner.run(measure(setup, args))
                sessions = None
                if "realtime" in args.modes:
                    _progress("  realtime: frames, then sessions held at once")
                    sessions = runner.run(
                        realtime.measure(
                            setup, args.realtime_frames, args.realtime_sessions, args.rounds
                        )
                    )
                job_times = None
                if "jobs" in args.modes:
                    _progress(f"  jobs: {args.jobs} music jobs a side, until each has ended")
                    job_times = runner.run(jobs.measure(setup, args.jobs, args.rounds))
            stolen = steal_share(counters, cpu_counters())
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print("interrupted; servers stopped", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130
    found = report.pairs(runs)
    if found:
        print("Latency, ms (added = gateway - direct; ratio = gateway / direct)")
        print(report.latency_table(found))
        print()
        print("Throughput, calls per second (* = stopped by the time limit)")
        print(report.throughput_table(found))
        print()
        print("CPU per call, microseconds (d = direct run, g = gateway run)")
        print(report.cpu_table(found))
    if sessions is not None:
        print()
        for line in realtime.lines(sessions):
            print(line)
    if job_times is not None:
        print()
        for line in jobs.lines(job_times):
            print(line)
    problems = report.errors_detail(runs)
    if sessions is not None and sessions.failures:
        problems.append(f"realtime: {dict(sessions.failures)}")
    if job_times is not None and job_times.failures:
        problems.append(f"jobs: {dict(job_times.failures)}")
    if problems:
        print()
        print("Errors:")
        for line in problems:
            print(f"  {line}")
    print()
    print(f"total time {time.monotonic() - started:.0f} s; load average {_load()} at the end")
    if stolen is not None:
        # On a virtual machine, time the host gave to other guests while this one wanted
        # to run: a few percent or more means the wall-clock figures above are noisy.
        print(f"CPU steal during the runs: {stolen:.1%} of this machine's CPU time")
    if args.json is not None:
        results = report.as_json(runs)
        if sessions is not None:
            results.append({"mode": "realtime", **realtime.as_json(sessions)})
        if job_times is not None:
            results.append({"mode": "jobs", **jobs.as_json(job_times)})
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
