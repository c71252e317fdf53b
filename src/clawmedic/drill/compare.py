"""`clawmedic drill --compare supervisord`: the same faults under supervisord, side by side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clawmedic.errors import EnvironmentMissing
from clawmedic.sandbox.install import Install


def run_compare(install: Install, result: dict[str, Any], on_step: Callable[[str], None]) -> dict[str, Any]:
    raise EnvironmentMissing("--compare supervisord is not built yet.")
