"""One log line per finished model call, and the call's metrics (gateway.metrics).

The line names the call and who made it, never with a secret: the request id, the
workspace, the key's prefix (as the Keys page shows it), the product, model and node,
the status, the latency and the cost. With `LOG_FORMAT=json`, every log line is one
JSON object (gateway.jsonlog), the call's fields as its own keys.

On the call's path, `finished` only notes the call in a queue (a deque: appending is
safe from any thread and takes no lock). A thread of this worker's takes the calls
from it every `DRAIN_SECONDS`, and a scrape of /metrics first: it prices them, counts
them in the metrics and writes their log lines, so that neither the metrics' locks nor
the log's formatting and writing are paid for by the caller.
"""

import atexit
import logging
import os
import threading
import time
from collections import deque

from console.usage import call_cost
from gateway import metrics

logger = logging.getLogger("mira.calls")

DRAIN_SECONDS = 0.25

_noted: deque[tuple] = deque()
_drain_lock = threading.Lock()
_drainer: threading.Thread | None = None


def finished(call, fields: dict) -> None:
    """Note a call that `pipeline.Call.finish` has just booked (its usage record's fields)."""
    now = time.monotonic()
    arrived, sent, answered = call.arrived or call.started, call.sent_at, call.answered_at
    if not sent:
        added, upstream = now - arrived, None
    elif call.stream:
        # After the first event the call's length is the stream's, not the gateway's.
        added = sent - arrived
        upstream = answered - sent if answered else None
    else:
        added = sent - arrived + (now - answered if answered else 0.0)
        upstream = (answered or now) - sent
    _noted.append((fields, call.variant, call.caller.key_prefix, added, upstream))
    if _drainer is None:
        start()


def start() -> None:
    """Start this worker's drainer (once; the first call starts it too)."""
    global _drainer
    with _drain_lock:
        if _drainer is not None:
            return
        _drainer = threading.Thread(target=_drain_forever, name="gateway-calllog", daemon=True)
        _drainer.start()


def _forked() -> None:
    """A worker forked from a process that had started its drainer has no thread: the
    first call starts its own."""
    global _drainer, _drain_lock
    _drainer = None
    _drain_lock = threading.Lock()
    _noted.clear()


os.register_at_fork(after_in_child=_forked)


def _drain_forever() -> None:
    if metrics.MULTIPROCESS:
        atexit.register(metrics.process_ended, os.getpid())
    while True:
        time.sleep(DRAIN_SECONDS)
        try:
            drain()
            if metrics.MULTIPROCESS:
                metrics.refresh()  # for the scrapes that the other workers answer
        except Exception:
            logger.exception("could not count and log the finished calls")


@atexit.register
def drain() -> None:
    """Count and log every call noted so far (in the order they finished)."""
    with _drain_lock:
        if not _noted:
            return
        logging_calls = logger.isEnabledFor(logging.INFO)
        counted = []
        while _noted:
            fields, variant, key_prefix, added, upstream = _noted.popleft()
            try:
                # At the current prices (read again when stale, a query off the call's
                # path); None when they cannot be read (the database is down).
                cost = call_cost(fields, variant)
            except Exception:
                cost = None
            counted.append(
                (
                    fields["product"],
                    fields["model"],
                    fields["status"],
                    fields["source"],
                    fields["tokens_in"],
                    fields["tokens_out"],
                    cost,
                    added,
                    upstream,
                )
            )
            if logging_calls:
                _log(fields, key_prefix, cost)
        metrics.observe_calls(counted)


def _log(fields: dict, key_prefix: str, cost: int | None) -> None:
    entry = {
        "request_id": fields["request_id"],
        "workspace_id": fields["workspace_id"],
        "key_prefix": key_prefix or None,
        "user_id": None if key_prefix else fields["user_id"],
        "source": fields["source"],
        "product": fields["product"],
        "endpoint": fields["endpoint"],
        "model": fields["model"],
        "node": fields["node"] or None,
        "status": fields["status"],
        "stream": fields["stream"],
        "latency_ms": fields["latency_ms"],
        "ttft_ms": fields["ttft_ms"],
        "tokens_in": fields["tokens_in"],
        "tokens_out": fields["tokens_out"],
        "cost": cost,
    }
    logger.info(
        "call %s workspace=%s key=%s product=%s model=%s node=%s status=%s latency_ms=%s cost=%s",
        entry["request_id"],
        entry["workspace_id"],
        entry["key_prefix"] or "-",
        entry["product"],
        entry["model"] or "-",
        entry["node"] or "-",
        entry["status"],
        entry["latency_ms"],
        "-" if cost is None else cost,
        extra={"call": entry},
    )
