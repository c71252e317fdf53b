"""The plain kind: any service with an HTTP liveness URL. It knows nothing beyond what the config says."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clawmedic.config import LoadedConfig, TargetConfig
    from clawmedic.doctor.changes import Change
    from clawmedic.doctor.evidence import Evidence


@dataclass(frozen=True)
class HttpKind:
    name: str = "http"
    noun: str = "the service"
    advice: Mapping[str, str] = field(
        default_factory=lambda: {
            "port-taken-by-foreign-process": "Stop the program that holds the port, or move the service to another "
            "port (the target's `port` and probe URLs in clawmedic's config, and the service's own setting).",
        }
    )

    def data_dirs(self, cfg: TargetConfig) -> list[Path]:
        return []

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
        return {}

    def install_changes(self, loaded: LoadedConfig, name: str, since: float | None) -> list[Change]:
        return []  # clawmedic does not know what a plain service installs
