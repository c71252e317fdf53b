"""The daemon's own log file: rotated at midnight, `keep_days` old files kept (14 by default), every file 0600,
every line redacted. Configured by `[daemon.logfile]`; `clawmedic run` calls `setup_file_logging` after
`setup_logging`, so the file gets the same lines as the console.

The managed gateway's console output (`<state>/targets/NAME/output.log`) is rotated between launches by the
launcher (the running gateway holds it open), not here.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from clawmedic import defaults
from clawmedic.config import LoadedConfig
from clawmedic.errors import ConfigInvalid
from clawmedic.logs import JsonFormatter, RedactFilter
from clawmedic.paths import check_file_folder, make_private_dirs
from clawmedic.store.health import is_write_failure

HANDLER_NAME = "clawmedic-logfile"


class PrivateTimedRotatingFileHandler(logging.handlers.TimedRotatingFileHandler):
    """A `TimedRotatingFileHandler` whose every file (the live one and each rotated one) is 0600."""

    def _open(self) -> io.TextIOWrapper:
        path = Path(self.baseFilename)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, defaults.FILE_MODE)
        try:
            os.fchmod(fd, defaults.FILE_MODE)  # the file only: its folder may be /tmp, which is not ours
        finally:
            os.close(fd)
        return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:
        """A full (or read-only) disk loses file lines, said once; the console still has them — no traceback per
        line, which is what `logging` prints by default."""
        e = sys.exc_info()[1]
        self._failed_now = True
        if e is None or not is_write_failure(e):
            super().handleError(record)
            return
        if not self._write_failing:
            self._write_failing = True
            sys.stderr.write(
                f"clawmedic: cannot write the log file {self.baseFilename} ({e}); logging to the console\n"
            )

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)
        if not self._failed_now:
            self._write_failing = False  # a line went through: the next failure is said again

    _write_failing = False
    _failed_now = False

    def doRollover(self) -> None:
        super().doRollover()
        for p in Path(self.baseFilename).parent.glob(Path(self.baseFilename).name + ".*"):
            if p.is_file():
                p.chmod(defaults.FILE_MODE)


def log_file_path(loaded: LoadedConfig) -> Path | None:
    """Where the daemon logs, or None when `[daemon.logfile] enabled = false`."""
    cfg = loaded.config.daemon.logfile
    if not cfg.enabled:
        return None
    if cfg.path is None:
        return loaded.state_dir / "logs" / "clawmedic.log"
    p = cfg.path.expanduser()
    return p if p.is_absolute() else (loaded.source.parent / p).resolve()


def setup_file_logging(loaded: LoadedConfig, logger_name: str = "clawmedic") -> Path | None:
    """Add the rotating file handler to the `clawmedic` logger (once); return the file, or None when disabled.

    Lines are JSON objects (ts, level, logger, message), redacted with the config's redactor.
    """
    path = log_file_path(loaded)
    if path is None:
        return None
    key = "daemon.logfile.path" if loaded.config.daemon.logfile.path is not None else "daemon.state_dir"
    try:
        check_file_folder(path)  # a folder we did not create is used as it is, never chmodded
        make_private_dirs(path.parent)
    except ConfigInvalid as e:
        raise ConfigInvalid(f"{loaded.source}: {key}: {e}") from None
    except OSError as e:
        raise ConfigInvalid(f"{loaded.source}: {key}: cannot create {path.parent}: {e.strerror}.") from None
    logger = logging.getLogger(logger_name)
    for h in list(logger.handlers):
        if h.get_name() == HANDLER_NAME:
            logger.removeHandler(h)
            h.close()
    handler = PrivateTimedRotatingFileHandler(
        path, when="midnight", backupCount=loaded.config.daemon.logfile.keep_days, encoding="utf-8"
    )
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactFilter(loaded.redactor))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(loaded.config.daemon.log_level.upper())
    return path
