"""Record the requests a coding agent sends, as fixtures for tests/gateway/test_agents.py.

    python -m tests.agents.capture --target http://127.0.0.1:8000 --port 8001 --out DIR

serves a recording proxy on 127.0.0.1:PORT in front of a console: point the agent at
the proxy (README, "Use with"), run it, and each request is written to DIR as JSON
(method, path, the headers that shape the request, the body) before it is passed on.
The clients' own prose (system prompts, tool descriptions, reminders) is replaced
with a placeholder of the same kind; the shapes, block types and fields are kept.
Secrets (keys, session and device ids) are never written.
"""

import argparse
import itertools
import json
import re
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

# Headers that change how a request is read; the rest (keys, ids, user agents' details)
# are left out of a fixture.
KEPT_HEADERS = ("anthropic-beta", "anthropic-version", "content-type", "accept")
_TAGGED = re.compile(r"<([a-z_-]+)>.*?</\1>", re.DOTALL)
_LONG = 120
_PROSE_KEYS = ("text", "description", "instructions", "content", "output", "thinking")
_ID_KEYS = ("user_id", "prompt_cache_key", "client_metadata", "session_id", "device_id")


def redact_text(text: str) -> str:
    """A long text of the client's own: its tagged sections kept as tags around a
    placeholder, the rest replaced by one sentence."""
    if len(text) <= _LONG:
        return text
    tags = [match.group(1) for match in _TAGGED.finditer(text)]
    rest = _TAGGED.sub("", text).strip()
    parts = [f"<{tag}>\nContext the client attached.\n</{tag}>" for tag in tags]
    if rest:
        parts.append(rest if len(rest) <= _LONG else "Instructions of the client's own.")
    return "\n".join(parts)


def redact(value: Any, key: str = "") -> Any:
    if key == "system" and isinstance(value, list):
        return [{**block, "text": "A system prompt of the client's own."} for block in value]
    if key in _ID_KEYS:
        return "redacted" if isinstance(value, str) else redact_ids(value)
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item, key) for item in value]
    if isinstance(value, str) and key == "description":
        return "Described by the client."
    if isinstance(value, str) and key in _PROSE_KEYS:
        return redact_text(value)
    return value


def redact_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "redacted" for k in value}
    return value


def record(method: str, path: str, headers: dict, raw: bytes) -> dict:
    body = json.loads(raw) if raw else None
    return {
        "method": method,
        "path": path,
        "headers": {k.lower(): v for k, v in headers.items() if k.lower() in KEPT_HEADERS},
        "body": redact(body),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="the console's URL")
    parser.add_argument("--port", type=int, required=True, help="the proxy's port")
    parser.add_argument("--out", type=Path, required=True, help="where to write the requests")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    numbers = itertools.count()

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        entry = record(request.method, request.path_qs, dict(request.headers), raw)
        (options.out / f"{next(numbers):03d}.json").write_text(json.dumps(entry, indent=1))
        skipped = ("host", "content-length")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skipped}
        async with ClientSession(auto_decompress=False) as session:
            async with session.request(
                request.method, options.target + request.path_qs, data=raw, headers=headers
            ) as upstream:
                dropped = ("content-length", "transfer-encoding", "connection")
                kept = {k: v for k, v in upstream.headers.items() if k.lower() not in dropped}
                response = web.StreamResponse(status=upstream.status, headers=kept)
                await response.prepare(request)
                async for piece in upstream.content.iter_any():
                    await response.write(piece)
                return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=options.port, print=None)


if __name__ == "__main__":
    main()
