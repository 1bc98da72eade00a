"""Log lines as JSON (`LOG_FORMAT=json`): one object per line, for log collectors.

Imported by the logging configuration, before Django's apps are ready: nothing here
may import a model.
"""

import json
import logging
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """Each record as one line of JSON: time, level, logger and message, a call's fields
    (gateway.calllog) as keys of their own, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call = getattr(record, "call", None)
        if call:
            entry.update(call)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)
