"""Benchmarks for Mira Console.

`python -m bench.gateway` (or `make bench`) measures what the /v1 gateway adds to a
chat call compared with calling the upstream directly. See `bench/README.md`.

Modules:

- `bench.client`: a small HTTP/1.1 keep-alive client (asyncio + httptools) whose own
  cost per request is low enough not to hide the gateway's.
- `bench.load`: closed-loop load at a fixed concurrency, and latency statistics.
- `bench.servers`: the simulator and the console as subprocesses on free loopback ports.
- `bench.simulator`: the simulator served by uvicorn, as its own process.
- `bench.report`: the tables the CLI prints.
- `bench.gateway`: the command line.
"""
