"""Model fallback: per-model cooldowns, a default model that moves down `[targets.NAME.models] order` while it
cools, and back as soon as OpenClaw's own live probe says it answers — every state and move on one screen.

    on_primary ──(the default cools; a model in the order is available)──► on_fallback
    on_fallback ──(the fallback cools too; another one is available)──► on_fallback
    on_fallback ──(the original answers its probe, or its cooldown ends)──► on_primary

Cooldowns come from the gateway's `model_fallback_decision` log events: rate limit / quota / overloaded cool a model
for `rate_limit_cooldown_min` (300 min), auth / scope / model-not-found for `auth_cooldown_min` (720 min). Other
reasons (timeout, format, context overflow, server error) say nothing about the model: no cooldown. Cooling models
are probed every `probe_interval_s`; one that answers is available again at once.

`ModelFallback` decides over a clock it is given (`step(default, pins, now)` → actions; `switched`, `returned`,
`probed` tell it what happened) and saves itself as one atomic JSON file under the state folder, so a daemon
restart keeps the cooldowns, the original default and the time spent on the fallback.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

from clawmedic.store.files import atomic_write, move_aside

log = logging.getLogger("clawmedic.model_fallback")

RATE_REASONS: Final = frozenset({"rate_limit", "overloaded", "billing", "quota"})
AUTH_REASONS: Final = frozenset({"auth", "auth_permanent", "scope", "permission", "model_not_found"})
SCHEMA: Final = 1


class Mode(StrEnum):
    ON_PRIMARY = "on_primary"  # the default is the user's own (or nothing cools)
    ON_FALLBACK = "on_fallback"  # we moved the default to a model of the order; `original` is the user's


TRANSITIONS: Final[dict[Mode, frozenset[Mode]]] = {
    Mode.ON_PRIMARY: frozenset({Mode.ON_FALLBACK}),
    Mode.ON_FALLBACK: frozenset({Mode.ON_FALLBACK, Mode.ON_PRIMARY}),
}

CooldownKind = Literal["rate_limit", "auth"]


class IllegalMove(RuntimeError):
    """A move the table does not allow: a bug in the caller, never a fault of the gateway."""


@dataclass
class Cooldown:
    kind: CooldownKind
    reason: str
    since: float
    until: float


@dataclass(frozen=True)
class Action:
    kind: Literal["switch", "pin", "probe", "return", "exhausted"]
    model: str = ""  # switch/pin/return: the model to use; probe: the model to probe
    session: str = ""  # pin: the session key
    why: str = ""

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]


@dataclass
class FallbackState:
    mode: Mode = Mode.ON_PRIMARY
    original: str | None = None  # on_fallback: the default we moved away from (and return to)
    fallback: str | None = None  # on_fallback: the default we set
    since: float | None = None  # on_fallback: when we first left the original
    changed_at: float | None = None  # when the mode last changed
    cooldowns: dict[str, Cooldown] = field(default_factory=dict)
    next_probe_at: dict[str, float] = field(default_factory=dict)
    incident: int | None = None  # the open incident of this fallback, for the daemon
    exhausted: bool = False  # every model of the order cools: said once, until one is available


def cooldown_kind(reason: object) -> CooldownKind | None:
    r = str(reason or "").lower()
    if r in RATE_REASONS:
        return "rate_limit"
    if r in AUTH_REASONS:
        return "auth"
    return None


def model_ref(provider: object, model: object) -> str | None:
    """`provider/model` from an event's or a pin's two fields (a model may already carry its provider)."""
    if not isinstance(model, str) or not model:
        return None
    if "/" in model or not isinstance(provider, str) or not provider:
        return model
    return f"{provider}/{model}"


class ModelFallback:
    def __init__(
        self,
        order: list[str],
        *,
        rate_limit_cooldown_s: float,
        auth_cooldown_s: float,
        probe_interval_s: float,
        path: Path | None = None,
    ) -> None:
        self.order = list(order)
        self.durations: dict[CooldownKind, float] = {"rate_limit": rate_limit_cooldown_s, "auth": auth_cooldown_s}
        self.probe_interval_s = probe_interval_s
        self.path = path
        self.state = self._load()

    # --- the table ---------------------------------------------------------------------------------------------

    def _change(self, new: Mode, now: float) -> None:
        old = self.state.mode
        if new not in TRANSITIONS[old]:
            raise IllegalMove(f"{old.value} → {new.value}")
        self.state.mode = new
        self.state.changed_at = now

    # --- inputs --------------------------------------------------------------------------------------------------

    def observe(self, events: list[dict[str, Any]], now: float) -> list[tuple[str, Cooldown]]:
        """Cool the models that failure events show failing; returns the cooldowns that are new or became the longer
        kind (a later failure of a cooling model only moves its end, silently)."""
        changed: list[tuple[str, Cooldown]] = []
        extended = False
        for e in events:
            kind = cooldown_kind(e.get("reason"))
            ref = model_ref(e.get("provider"), e.get("model"))
            if kind is None or ref is None:
                continue
            at = e["at"] if isinstance(e.get("at"), float) else now
            until = at + self.durations[kind]
            old = self.state.cooldowns.get(ref)
            if old is not None and old.until >= until and not (kind == "auth" and old.kind == "rate_limit"):
                continue
            cd = Cooldown(kind, str(e.get("reason")), old.since if old else at, max(until, old.until if old else 0))
            self.state.cooldowns[ref] = cd
            self.state.next_probe_at.setdefault(ref, now + self.probe_interval_s)
            if old is None or old.kind != cd.kind:
                changed.append((ref, cd))
            extended = True
        if extended:
            self._save()
        return changed

    def cooling(self, model: str, now: float) -> bool:
        cd = self.state.cooldowns.get(model)
        return cd is not None and now < cd.until

    def available(self, now: float, exclude: str | None = None) -> str | None:
        return next((m for m in self.order if m != exclude and not self.cooling(m, now)), None)

    def step(self, default: str | None, pins: list[dict[str, Any]], now: float) -> list[Action]:
        """What to do now, given the gateway's default model and its session pins."""
        st = self.state
        self._expire(now)
        out: list[Action] = []
        if st.mode == Mode.ON_FALLBACK and st.original is not None and not self.cooling(st.original, now):
            out.append(Action("return", st.original, why=f"{st.original} is available again"))
            return out
        if default is not None and self.cooling(default, now):
            target = self.available(now, exclude=default)
            if target is None:
                if not st.exhausted:
                    st.exhausted = True
                    out.append(Action("exhausted", default, why=f"every model of the order cools ({default} too)"))
            else:
                cd = st.cooldowns[default]
                out.append(Action("switch", target, why=f"{default} cools ({cd.reason}) until {cd.until:.0f}"))
        else:
            st.exhausted = False
        use = next((a.model for a in out if a.kind == "switch"), default)
        if use is not None and not self.cooling(use, now):
            for p in pins:
                ref = model_ref(p.get("provider"), p.get("model"))
                key = p.get("key")
                if ref is not None and isinstance(key, str) and self.cooling(ref, now) and ref != use:
                    out.append(Action("pin", use, session=key, why=f"pinned to {ref}, which cools"))
        for model in self._probe_list(default):
            if self.cooling(model, now) and now >= st.next_probe_at.get(model, 0.0):
                out.append(Action("probe", model, why=f"{model} cools; does it answer again?"))
        return out

    def _probe_list(self, default: str | None) -> list[str]:
        """The original default first, then the order: models outside both are cooled but never probed."""
        first = self.state.original or default
        return list(dict.fromkeys([*([first] if first else []), *self.order]))

    def _expire(self, now: float) -> None:
        for m in [m for m, cd in self.state.cooldowns.items() if now >= cd.until]:
            del self.state.cooldowns[m]
            self.state.next_probe_at.pop(m, None)

    # --- outcomes ------------------------------------------------------------------------------------------------

    def switched(self, default: str, to: str, now: float) -> None:
        st = self.state
        self._change(Mode.ON_FALLBACK, now)
        if st.original is None:  # a second move keeps the user's own default as the one to return to
            st.original, st.since = default, now
        st.fallback = to
        self._save()

    def returned(self, now: float) -> float:
        """Back on the original default; returns the seconds spent on the fallback."""
        st = self.state
        self._change(Mode.ON_PRIMARY, now)
        spent = now - (st.since if st.since is not None else now)
        st.original = st.fallback = st.since = None
        st.incident = None
        self._save()
        return spent

    def probed(self, model: str, answered: bool, now: float) -> None:
        if answered:
            self.state.cooldowns.pop(model, None)
            self.state.next_probe_at.pop(model, None)
        else:
            self.state.next_probe_at[model] = now + self.probe_interval_s
        self._save()

    def set_incident(self, incident: int | None) -> None:
        self.state.incident = incident
        self._save()

    # --- persistence ---------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self.state)
        d["mode"] = self.state.mode.value
        return {"schema": SCHEMA, **d}

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            atomic_write(self.path, json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        except OSError as e:  # a full disk must not stop the healing; the next change writes again
            log.warning("cannot save the model cooldowns to %s: %s", self.path, e)

    def _load(self) -> FallbackState:
        """The saved state, or a fresh one when there is none; a damaged file (garbage, wrong types, times that are
        no times) is moved aside, never deleted, so a bad value cannot fail every later check."""
        if self.path is None or not self.path.exists():
            return FallbackState()
        try:
            d = json.loads(self.path.read_text())
            if not isinstance(d, dict):
                raise TypeError("not an object")
            cooldowns = {}
            for m, c in _dict(d.get("cooldowns", {})).items():
                c = _dict(c)
                kind = c["kind"]
                if kind not in ("rate_limit", "auth"):
                    raise ValueError(f"unknown cooldown kind {kind!r}")
                cooldowns[str(m)] = Cooldown(kind, _str(c["reason"]), _time(c["since"]), _time(c["until"]))
            return FallbackState(
                mode=Mode(d["mode"]),
                original=_opt_str(d.get("original")),
                fallback=_opt_str(d.get("fallback")),
                since=_opt_time(d.get("since")),
                changed_at=_opt_time(d.get("changed_at")),
                cooldowns=cooldowns,
                next_probe_at={str(m): _time(t) for m, t in _dict(d.get("next_probe_at", {})).items()},
                incident=_opt_int(d.get("incident")),
                exhausted=bool(d.get("exhausted", False)),
            )
        except OSError as e:
            log.warning("cannot read the model cooldowns in %s (%s): starting without them", self.path, e)
            return FallbackState()
        except (ValueError, KeyError, TypeError) as e:
            try:
                aside: Path | str = move_aside(self.path, "corrupt")
            except OSError:
                aside = "(could not move it aside)"
            log.warning(
                "the model cooldowns in %s are damaged (%s); kept as %s, starting without them", self.path, e, aside
            )
            return FallbackState()


def _dict(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TypeError(f"not an object: {v!r}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"not a string: {v!r}")
    return v


def _opt_str(v: Any) -> str | None:
    return None if v is None else _str(v)


def _time(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"not a time: {v!r}")
    return float(v)


def _opt_time(v: Any) -> float | None:
    return None if v is None else _time(v)


def _opt_int(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**63:  # an incident id: a SQLite integer
        raise TypeError(f"not an incident id: {v!r}")
    return v
