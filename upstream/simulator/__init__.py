"""The Mira simulator: a whole Mira node in one ASGI application, for development and tests.

It serves every endpoint of MIRA_API.md with the same shapes, statuses and
`{"detail": ...}` errors, and answers deterministically:

- chat and responses: a reply built from the last user message, streamed one
  token per chunk (role delta first, a `finish_reason` chunk, `data: [DONE]`);
  honours `max_tokens` (`length`; a larger one than the model's `max_output_tokens`
  is clamped to it), `n` (up to 8 identical choices, streamed one after another, all
  counted in `completion_tokens`), `stop`, JSON response formats, tools (a tool call
  when the prompt names a tool or says "call" / "use the tool") and image parts.
  **A user message containing `reply with: TEXT` makes the reply exactly TEXT**
  (everything after the marker, trimmed), e.g. `reply with: <script>x</script>`.
- embeddings: unit vectors by feature hashing; images: PNGs drawn from the prompt;
  speech: espeak-ng (or a synthesized signal) with the text embedded in the file so
  that transcribing it gives the text back; music and video: jobs that finish with
  a real file (a prompt containing `[fail]` makes the job fail); vision: boxes;
  realtime: the WebSocket protocol of section 8.

Auth is Mira's: `Authorization: Bearer sk-mira-...`, any well-formed key unless the
server was given one key to accept.

Faults, per request (headers) or for the whole server (settings):

| header | effect |
| --- | --- |
| `x-sim-status: N` (+ `x-sim-retry-after: S`, `x-sim-detail: TEXT`) | answer N with `{"detail"}` |
| `x-sim-latency-ms: N` | wait N ms before answering |
| `x-sim-hang: 1` | never answer (until the client goes away) |
| `x-sim-reset-after-chunks: N` | drop the connection after N stream chunks (0: mid-body) |
| `x-sim-hang-after-chunks: N` | stop sending after N stream chunks |
| `x-sim-error-after-chunks: N` | send Mira's `queue_full` error event after N chunks |
| `x-sim-chunk-delay-ms: N` | this stream's delay between chunks |
| `x-sim-job-seconds: S` | how long this music/video job takes |

Settings (`SimulatorSettings`, `POST /_sim/config`, `manage.py simulator` options):
`chunk_delay_ms`, `key`, `fail_status` + `fail_retry_after`, `latency_ms`,
`job_seconds`. `GET /_sim/stats` returns counters: requests, open streams, streams
completed/cancelled by the client/reset, open connections, websocket sessions.
"""

from upstream.simulator.app import Simulator, create_app
from upstream.simulator.replies import REPLY_MARKER
from upstream.simulator.server import SimulatorServer, builtin_simulator
from upstream.simulator.settings import SimulatorSettings, SimulatorStats

__all__ = [
    "REPLY_MARKER",
    "Simulator",
    "SimulatorServer",
    "SimulatorSettings",
    "SimulatorStats",
    "builtin_simulator",
    "create_app",
]
