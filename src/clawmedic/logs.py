"""Logging for the daemon: readable lines through Rich, or one JSON object a line; both redacted."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
from types import TracebackType

from rich.console import Console
from rich.logging import RichHandler

from clawmedic.redact import Redactor


class RedactFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the message and the exception text. The traceback is rendered here, redacted into `exc_text`, and
        `exc_info` dropped, so no handler (Rich's pretty tracebacks, with their locals, included) can render the
        exception itself: an exception's message often quotes a URL, a command line or a config value."""
        record.msg = self.redactor.text(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = record.exc_text or _FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        return True


_FORMATTER = logging.Formatter()
LINE_FIELDS = ("target", "state", "incident")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in LINE_FIELDS:  # set by a target's supervisor (`extra=`): which target, its state, its incident
            if (value := getattr(record, key, None)) is not None:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text  # redacted by RedactFilter, which every handler of ours carries
        return json.dumps(entry)


def setup_logging(level: str, json_logs: bool, redactor: Redactor) -> None:
    root = logging.getLogger("clawmedic")
    root.handlers.clear()
    root.setLevel(level.upper())
    root.propagate = False
    handler: logging.Handler
    if json_logs:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False, log_time_format="%H:%M:%S")
    handler.addFilter(RedactFilter(redactor))
    root.addHandler(handler)
    logging.Formatter.converter = time.localtime
    _redact_other_loggers(json_logs, redactor)
    install_excepthooks(redactor)


_OTHERS = "clawmedic-other-loggers"


class _StderrNow(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record comes (as logging's last resort does)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _redact_other_loggers(json_logs: bool, redactor: Redactor) -> None:
    """Warnings of other libraries' loggers (asyncio's "Task exception was never retrieved" with its traceback,
    httpx, apprise) would reach stderr through logging's last resort, unredacted: give them a redacting handler."""
    top = logging.getLogger()
    for h in list(top.handlers):
        if h.get_name() == _OTHERS:
            top.removeHandler(h)
    other = _StderrNow()
    other.set_name(_OTHERS)
    other.setLevel(logging.WARNING)
    other.setFormatter(JsonFormatter() if json_logs else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    other.addFilter(RedactFilter(redactor))
    top.addHandler(other)


def install_excepthooks(redactor: Redactor) -> None:
    """A traceback that escapes everything (a crash of the daemon itself) is printed redacted too: under the
    guardian or systemd, stderr ends up in a file or the journal."""

    def hook(tp: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        sys.stderr.write(redactor.text("".join(traceback.format_exception(tp, value, tb))))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit and args.exc_value is not None:
            where = f"Exception in thread {args.thread.name if args.thread else '?'}:\n"
            sys.stderr.write(where + redactor.text("".join(traceback.format_exception(args.exc_value))))

    sys.excepthook = hook
    threading.excepthook = thread_hook
