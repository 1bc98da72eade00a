"""Fixtures for /v1/fetch and the Fetch page: web sites on loopback that record the
connections they are offered, and a resolver the test controls (no real lookup is made).

`site` serves on 127.0.0.1, `listener` on 127.0.0.3 (a place no refused fetch may reach);
`names` answers names as the test maps them; `fetch_settings` lets pages be fetched from
the sites' ports and allow-lists `site.test` (mapped to 127.0.0.1).
"""

import gzip
import http.server
import ipaddress
import socket
import threading

import pytest

ARTICLE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Tides of the North Sea</title></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/about">About the harbour office</a></li>
<li><a href="/shop">Gift shop and souvenirs</a></li></ul></nav>
<article>
<h1>Tides of the North Sea</h1>
<p>The North Sea has two high tides a day, and the range between them grows towards the
south, where <a href="https://example.org/wash">the Wash</a> sees more than six metres at
spring tides.</p>
<p>{filler}</p>
<h2>Why the range grows</h2>
<p>The basin is shallow, and the tidal wave that enters from the Atlantic turns around
three amphidromic points, where the range is close to nothing.</p>
</article>
<footer>Copyright 2026 the harbour office. Cookie settings.</footer>
</body></html>
""".format(
    filler="Pilots have read these waters for centuries, and the charts of the estuaries "
    "change after every storm. " * 12
)


class _Site(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Pages)
        self.connections: list[str] = []
        self.stopping = threading.Event()

    def verify_request(self, request, client_address) -> bool:
        self.connections.append(client_address[0])
        return True


class _Pages(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        server: _Site = self.server
        path, _, query = self.path.partition("?")
        if path == "/article":
            self._send(200, ARTICLE.encode(), "text/html; charset=utf-8")
        elif path == "/notes.txt":
            self._send(200, b"plain notes\nsecond line\n", "text/plain; charset=utf-8")
        elif path == "/big":
            self._send(200, b"x" * (2 * 1024 * 1024), "text/plain")
        elif path == "/bomb":
            # 64 MiB of spaces, a few tens of KiB on the wire.
            self._send(
                200, gzip.compress(b" " * (64 * 1024 * 1024), 6), "text/html",
                Content_Encoding="gzip",
            )  # fmt: skip
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"a little, then nothing")
            self.wfile.flush()
            server.stopping.wait(5)
        elif path == "/picture":
            self._send(200, b"\x89PNG\r\n\x1a\n", "image/png")
        elif path == "/go":
            # /go?to=<url>: a redirect to anywhere.
            self._send(302, b"", "text/plain", Location=query.removeprefix("to="))
        elif path == "/missing":
            self._send(404, b"no such page", "text/plain")
        else:
            self._send(200, b"home", "text/plain")


def serve_site(host: str, port: int = 0):
    server = _Site((host, port))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def site():
    """A web site on 127.0.0.1 that records the connections it is offered."""
    server = serve_site("127.0.0.1")
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def listener():
    """A site on 127.0.0.3 that no refused fetch may reach: it records every connection."""
    server = serve_site("127.0.0.3")
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()


class Names:
    """The test's resolver: each name's answers in turn (the last one repeated); an
    unknown name is not found. Every lookup is logged."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []

    def map(self, name: str, *answers: list[str]) -> None:
        self.answers[name] = list(answers)

    async def __call__(self, host: str, port: int):
        self.lookups.append(host)
        answers = self.answers.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return [ipaddress.ip_address(address) for address in answer]


@pytest.fixture(autouse=True)
def _no_lookup_leaves_this_machine(monkeypatch):
    """Every test: a fetch (the API's conformance run sends it made-up hosts) never asks
    the system's resolver, whose query could leave this machine; it finds no name but
    those a test maps with `names`."""
    from gateway import fetch as fetch_module

    monkeypatch.setattr(fetch_module, "resolve_name", Names())
    monkeypatch.setattr(fetch_module, "_protected_addresses", {})


@pytest.fixture
def names(monkeypatch) -> Names:
    from gateway import fetch as fetch_module

    resolver = Names()
    monkeypatch.setattr(fetch_module, "resolve_name", resolver)
    monkeypatch.setattr(fetch_module, "_protected_addresses", {})
    return resolver


@pytest.fixture
def fetch_settings(settings, site, listener, names):
    """Pages may be fetched from the test sites' ports; `site.test` is allow-listed."""
    settings.FETCH_PORTS = [80, 443, site.server_address[1], listener.server_address[1]]
    settings.FETCH_ALLOW = ["site.test"]
    names.map("site.test", ["127.0.0.1"])
    return settings
