"""The daemon's rotating log file: 0600, redacted, rotated with the old files kept private too."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawmedic.config import load_config
from clawmedic.logfiles import HANDLER_NAME, PrivateTimedRotatingFileHandler, setup_file_logging


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    lg = logging.getLogger("clawmedic.test-logfiles")
    try:
        yield lg
    finally:
        for h in list(lg.handlers):
            lg.removeHandler(h)
            h.close()


def _config(tmp_path: Path, logfile: str = "") -> Path:
    (tmp_path / "secrets.env").write_text("TOKEN=plantedLogSecret99\n")
    path = tmp_path / "c.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "state"
env_file = "secrets.env"
[daemon.logfile]
{logfile}
[targets.svc]
kind = "http"
liveness = {{ url = "http://127.0.0.1:9/health" }}
start = {{ command = ["sleep", "1"], env = {{ KEY = "${{TOKEN}}" }} }}
"""
    )
    return path


def test_the_log_file_is_private_redacted_and_rotates(tmp_path: Path, logger: logging.Logger) -> None:
    loaded = load_config(_config(tmp_path, "keep_days = 3"))
    path = setup_file_logging(loaded, logger.name)
    assert path == tmp_path / "state" / "logs" / "clawmedic.log"
    setup_file_logging(loaded, logger.name)  # twice: still one handler
    assert [h.get_name() for h in logger.handlers] == [HANDLER_NAME]
    logger.setLevel(logging.INFO)
    logger.info("started with %s", "plantedLogSecret99")
    handler = logger.handlers[0]
    assert isinstance(handler, PrivateTimedRotatingFileHandler)
    assert handler.backupCount == 3 and handler.when == "MIDNIGHT"
    handler.flush()
    line = json.loads(path.read_text().splitlines()[0])
    assert line["message"] == "started with ***" and line["level"] == "info"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    handler.doRollover()
    logger.info("after the rollover")
    handler.flush()
    rotated = [p for p in path.parent.iterdir() if p.name != path.name]
    assert len(rotated) == 1 and rotated[0].stat().st_mode & 0o777 == 0o600
    assert path.stat().st_mode & 0o777 == 0o600 and "after the rollover" in path.read_text()


def test_the_log_file_can_be_turned_off_or_moved(tmp_path: Path, logger: logging.Logger) -> None:
    assert setup_file_logging(load_config(_config(tmp_path, "enabled = false")), logger.name) is None
    moved = setup_file_logging(load_config(_config(tmp_path, 'path = "elsewhere/daemon.log"')), logger.name)
    assert moved == tmp_path / "elsewhere" / "daemon.log" and moved.exists()
