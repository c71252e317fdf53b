"""The OpenClaw gateway as a target kind (targets/kinds.py): its words, its HOME, its own evidence collectors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clawmedic.targets import openclaw

if TYPE_CHECKING:
    from clawmedic.config import LoadedConfig, TargetConfig
    from clawmedic.doctor.changes import Change
    from clawmedic.doctor.evidence import Evidence


@dataclass(frozen=True)
class OpenClawKind:
    name: str = "openclaw"
    noun: str = "the gateway"
    advice: Mapping[str, str] = field(
        default_factory=lambda: {
            "port-taken-by-foreign-process": "Stop the program that holds the port, or move the gateway to another "
            "port (`gateway.port`).",
        }
    )

    def data_dirs(self, cfg: TargetConfig) -> list[Path]:
        return [openclaw.gateway_home(cfg)]  # its state database and logs live under its HOME

    def collectors(
        self,
        loaded: LoadedConfig,
        name: str,
        ev: Evidence,
        *,
        pid: int | None,
        config: dict[str, Any] | None,
        lint: bool,
    ) -> dict[str, Callable[[], None]]:
        from clawmedic.targets.openclaw import evidence  # imports the doctor's Evidence, which imports this registry

        return evidence.collectors(loaded, name, ev, pid=pid, config=config, lint=lint)

    def install_changes(self, loaded: LoadedConfig, name: str, since: float | None) -> list[Change]:
        from clawmedic.targets.openclaw import changes  # imports the doctor's Change, which imports this registry

        return changes.install_changes(loaded, name, since)
