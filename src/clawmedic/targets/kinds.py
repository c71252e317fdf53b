"""The target-kind seam: what generic code (the doctor, its reports) asks of a kind instead of `kind == "openclaw"`.

A kind is one folder or module under `targets/` plus a line in `KINDS`. Today it provides how reports name such a
target, where it writes (for the disk evidence), the evidence collectors and install changes only it has, and its
own words for a rule's advice; the supervisor's gates and the config-apply pipeline still branch on the kind (issue 11).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from clawmedic.targets.http import HttpKind
from clawmedic.targets.openclaw.kind import OpenClawKind

if TYPE_CHECKING:
    from clawmedic.config import LoadedConfig, TargetConfig
    from clawmedic.doctor.changes import Change
    from clawmedic.doctor.evidence import Evidence


class TargetKind(Protocol):
    @property
    def name(self) -> str:
        """The `kind` in clawmedic's config."""
        ...

    @property
    def noun(self) -> str:
        """How a report names a target of this kind: "the gateway", "the service"."""
        ...

    @property
    def advice(self) -> Mapping[str, str]:
        """Rule id -> this kind's advice in its own words; a rule's generic advice otherwise."""
        ...

    def data_dirs(self, cfg: TargetConfig) -> list[Path]:
        """Where such a target writes its state (its disk filling up is evidence)."""
        ...

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
        """The evidence collectors only this kind has, by evidence name (each may raise: it is recorded)."""
        ...

    def install_changes(self, loaded: LoadedConfig, name: str, since: float | None) -> list[Change]:
        """What changed in the installed software since `since` (the last healthy state), for "what changed"."""
        ...


KINDS: dict[str, TargetKind] = {k.name: k for k in (OpenClawKind(), HttpKind())}


def kind_of(kind: str) -> TargetKind:
    """The kind named in a config or a recorded evidence; an unknown name speaks the plain HTTP kind's words."""
    return KINDS.get(kind) or KINDS["http"]
