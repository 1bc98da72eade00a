"""Serving the simulator: in a background thread of this process, or the built-in one."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from typing import Any

import uvicorn

from upstream.simulator.app import Simulator
from upstream.simulator.settings import SimulatorSettings


class SimulatorServer:
    """A simulator served by uvicorn in a daemon thread with its own event loop.

    `base_url` ends in `/v1`; `key` is a key the simulator accepts; `stats()` and
    `configure(...)` read and change the running server directly.
    """

    def __init__(
        self,
        settings: SimulatorSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.settings = settings or SimulatorSettings()
        self.app = Simulator(self.settings)
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def key(self) -> str:
        return self.settings.key or "sk-mira-simulator-" + "0" * 24

    def start(self, timeout: float = 15.0) -> SimulatorServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._server = server
        self.app.stats.connections = lambda: len(server.server_state.connections)
        self._thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"mira-simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Mira simulator did not start")
            time.sleep(0.005)
        return self

    def request_stop(self) -> None:
        """Ask the server to stop without waiting (to stop several at once)."""
        if self._server is not None:
            self._server.should_exit = True

    def stop(self, timeout: float = 10.0) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None
        self._thread = None

    def stats(self) -> dict[str, Any]:
        return self.app.stats.snapshot()

    def reset_stats(self) -> None:
        self.app.stats.reset()

    def configure(self, **changes: Any) -> None:
        for name, value in changes.items():
            if name not in SimulatorSettings.ADJUSTABLE and name != "key":
                raise ValueError(f"unknown simulator setting {name!r}")
            setattr(self.settings, name, value)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_builtin: SimulatorServer | None = None
_builtin_lock = threading.Lock()


def builtin_simulator(chunk_delay_ms: float | None = None) -> SimulatorServer:
    """The process's own simulator, started on first use on an ephemeral local port."""
    global _builtin
    with _builtin_lock:
        if _builtin is None or _builtin._thread is None or not _builtin._thread.is_alive():
            settings = SimulatorSettings(key="sk-mira-" + secrets.token_hex(20))
            if chunk_delay_ms is not None:
                settings.chunk_delay_ms = chunk_delay_ms
            _builtin = SimulatorServer(settings).start()
        return _builtin
