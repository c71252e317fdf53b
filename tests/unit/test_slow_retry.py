"""Issue 17 outside the ladder: the `retry_after_gave_up_s` option and how `status` shows the next try."""

from __future__ import annotations

from pathlib import Path

import pytest

from clawmedic import defaults
from clawmedic.cli import _state_label
from clawmedic.config import load_config
from clawmedic.errors import ConfigInvalid
from tests.helpers.rig import StandinTarget, write_config


def _config(tmp_path: Path, value: object | None) -> Path:
    limits = {} if value is None else {"retry_after_gave_up_s": value}
    return write_config(tmp_path, StandinTarget(limits=limits))


def test_the_default_period_reaches_the_ladder(tmp_path: Path) -> None:
    loaded = load_config(_config(tmp_path, None))
    assert loaded.targets["svc"].ladder_limits().retry_after_gave_up_s == defaults.RETRY_AFTER_GAVE_UP_S == 600.0


@pytest.mark.parametrize("value", [0, 0.0, 1.0, 20.0, 3600])
def test_zero_turns_it_off_and_a_period_is_taken(tmp_path: Path, value: float) -> None:
    assert load_config(_config(tmp_path, value)).targets["svc"].ladder_limits().retry_after_gave_up_s == value


@pytest.mark.parametrize("value", [-1.0, 0.5, 1e-300])
def test_a_bad_period_is_one_sentence_naming_the_key(tmp_path: Path, value: object) -> None:
    path = _config(tmp_path, value)
    with pytest.raises(ConfigInvalid, match=r"retry_after_gave_up_s") as e:
        load_config(path)
    assert str(path) in str(e.value) and e.value.exit_code == defaults.EXIT_CONFIG


def test_nan_and_inf_are_refused(tmp_path: Path) -> None:
    for raw in ("nan", "inf"):
        path = _config(tmp_path, 1.0)
        path.write_text(path.read_text().replace('retry_after_gave_up_s" = 1.0', f'retry_after_gave_up_s" = {raw}'))
        with pytest.raises(ConfigInvalid, match=r"retry_after_gave_up_s"):
            load_config(path)


@pytest.mark.parametrize(
    ("status", "label"),
    [
        ({"state": "gave_up", "next_retry_at": 1420.0}, "gave up; next try in 7 min"),
        ({"state": "gave_up", "next_retry_at": 1030.0}, "gave up; next try in 30 s"),
        ({"state": "gave_up", "next_retry_at": 900.0}, "gave up; next try in 0 s"),
        ({"state": "gave_up", "next_retry_at": None}, "gave up; waiting for a human (clawmedic resume)"),
        ({"state": "retrying"}, "gave up; trying again now"),
        ({"state": "healthy"}, "healthy"),
    ],
)
def test_status_says_when_the_next_try_is(status: dict[str, object], label: str) -> None:
    assert _state_label(status, now=1000.0) == label
