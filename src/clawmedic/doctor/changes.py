"""What changed: every difference between the target now and its last healthy state, with when it changed.

Most outages follow a change. For the incident's target this lists: openclaw.json as a semantic diff against the
known-good snapshot (setting by setting, secrets masked), the other boot-critical files, packages that differ from
the recorded pristine install, the OpenClaw version, the Node binary, and clawmedic's own config (the launch command
and environment). Each change carries the time it happened where the file system tells (its mtime) and says where
that lies relative to the last healthy probe and the first failure. The change rule (rules.py) reverts what is
reversible; everything else is shown to the human.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clawmedic import defaults
from clawmedic.config import LoadedConfig
from clawmedic.redact import MASK, Redactor
from clawmedic.targets import kinds, openclaw
from clawmedic.text import clip

# a setting whose own name says its value is a secret is never shown, whatever the value looks like: any word of
# the name (camelCase, snake_case, kebab-case and SCREAMING_CASE split) is one of these, or the whole name is
_SECRET_WORDS = frozenset(
    [
        "token",
        "secret",
        "secrets",
        "password",
        "passwd",
        "passphrase",
        "pass",
        "pwd",
        "key",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "sessionid",
        "dsn",
        "salt",
        "signature",
        "pem",
        "privatekey",
    ]
)
_SECRET_NAMES = frozenset({"auth", "session_id", "sessionid"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def secret_name(name: str) -> bool:
    """A setting whose name says its value is a secret (`botToken`, `ACME_TOKEN_VALUE`, `signingKey`, `pass`…)."""
    words = {w.lower() for w in _WORD.findall(name)}
    return name.lower() in _SECRET_NAMES or bool(words & _SECRET_WORDS)


# `key: value` in JSON5 text: a quoted or bare key, then a quoted string (escapes kept) or a bare word
_KEY_VALUE = re.compile(
    r"""(?P<key>"[^"\n]*"|'[^'\n]*'|[A-Za-z_$][\w$-]*)(?P<sep>\s*:\s*)"""
    r"""(?P<value>"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?|[^\s,{}\[\]]+)"""
)


def mask_secret_settings(text: str) -> str:
    """openclaw.json's text that does not parse: the value of every secret-named setting masked, the rest as is."""

    def one(m: re.Match[str]) -> str:
        if not secret_name(m["key"].strip("\"'")):
            return m[0]
        return f'{m["key"]}{m["sep"]}"{MASK}"'

    return _KEY_VALUE.sub(one, text)


_UNSET = object()


@dataclass(frozen=True)
class Change:
    what: str  # config | boot_file | dependencies | openclaw | node | launch
    key: str  # the file's key, a package, "node", the clawmedic config's name
    summary: str  # one line a human reads
    changed_at: float | None = None  # epoch s, when the file system tells
    reversible: bool = False  # a declared remedy puts the previous state back
    remedy: str | None = None
    settings: list[str] = field(default_factory=list)  # config: each changed setting, secrets masked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- pure parts ---------------------------------------------------------------------------------------------------


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf by its path; list items too (`accounts[0].botToken`), so a secret in a list is known by name."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(obj, list) and obj:
        for i, v in enumerate(obj):
            out |= _flatten(v, f"{prefix}[{i}]")
        return out
    return {prefix: obj}


def _leaf(path: str) -> str:
    return re.sub(r"(\[\d+\])+$", "", path.rsplit(".", 1)[-1])


def _show(path: str, value: Any, redactor: Redactor) -> str:
    if value is _UNSET:
        return "(unset)"
    if secret_name(_leaf(path)) and value not in (None, "", {}, []):
        return MASK
    return clip(redactor.text(json.dumps(value, ensure_ascii=False)), defaults.CHANGE_MAX_VALUE_CHARS)


def config_diff(old: Any, new: Any, redactor: Redactor) -> list[str]:
    """The settings that differ, as `path: was → now` lines, secrets masked (by name and by known value)."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for path in sorted(set(a) | set(b)):
        was, now = a.get(path, _UNSET), b.get(path, _UNSET)
        if was != now:
            shown_was, shown_now = _show(path, was, redactor), _show(path, now, redactor)
            if shown_was == shown_now:  # a secret's value changed: say so without showing either
                shown_was, shown_now = f"{MASK} (old)", f"{MASK} (new)"
            # "(secret)" keeps `password: value` patterns of the redactor from masking "(unset)" later on
            label = f"{path} (secret)" if secret_name(_leaf(path)) else path or "(whole file)"
            lines.append(f"{label}: {shown_was} → {shown_now}")
    return lines


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def _span(seconds: float) -> str:
    s = abs(seconds)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def when(changed_at: float | None, last_healthy_at: float | None, first_failure_at: float | None) -> str:
    """Where a change lies relative to the last healthy probe and the first failure, in words."""
    if changed_at is None:
        return "when is unknown"
    parts = [f"at {_clock(changed_at)}"]
    if last_healthy_at is not None:
        d = changed_at - last_healthy_at
        parts.append(f"{_span(d)} {'after' if d >= 0 else 'before'} the last healthy probe")
    if first_failure_at is not None:
        d = changed_at - first_failure_at
        parts.append(f"{_span(d)} {'after' if d > 0 else 'before'} the first failure")
    return ", ".join(parts)


def before_failure(change: dict[str, Any], first_failure_at: float | None) -> bool:
    """The failures began after this change (or one of the times is unknown, so it may have caused them)."""
    at = change.get("changed_at")
    return not isinstance(at, int | float) or first_failure_at is None or at <= first_failure_at


# --- the collector ------------------------------------------------------------------------------------------------


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _parse(data: bytes) -> Any:
    return openclaw.loads(data.decode("utf-8", "replace"))


def _boot_file_changes(loaded: LoadedConfig, name: str, read_known_good: Callable[[str], bytes | None]) -> list[Change]:
    out = []
    for key, path in openclaw.boot_files(loaded.targets[name]).items():
        old = read_known_good(key)
        if old is None:
            continue
        try:
            now: bytes | None = path.read_bytes()
        except OSError:
            now = None
        if now == old:
            continue
        at = _mtime(path)
        if key != openclaw.CONFIG_KEY:
            what = "deleted" if now is None else "differs from its known-good copy"
            out.append(Change("boot_file", key, f"{path} {what}", at, True, "restore_known_good"))
            continue
        if now is None:
            out.append(Change("config", key, f"{path} was deleted", None, True, "restore_known_good"))
            continue
        try:
            settings = config_diff(_parse(old), _parse(now), loaded.redactor)
        except ValueError:
            settings = []
        if settings:
            more = len(settings) - defaults.CHANGE_MAX_SETTINGS
            summary = f"{len(settings)} setting(s) of {path} differ from known-good: " + "; ".join(settings[:3])
            settings = settings[: defaults.CHANGE_MAX_SETTINGS] + ([f"… and {more} more"] if more > 0 else [])
        else:
            try:
                _parse(now)
                summary = f"{path} differs from known-good in form only (comments, order, whitespace)"
                out.append(Change("config", key, summary, at))  # the same settings: not what broke it
                continue
            except ValueError:
                summary = f"{path} no longer parses (its known-good copy did)"
        out.append(Change("config", key, clip(summary, 400), at, True, "restore_known_good", settings))
    return out


def _launch_changes(loaded: LoadedConfig, since: float | None) -> list[Change]:
    """clawmedic's own config holds the launch command and environment; its env file the secrets it passes."""
    if since is None:
        return []
    out = []
    files = [loaded.source]
    if loaded.config.daemon.env_file is not None:
        files.append(loaded.source.parent / loaded.config.daemon.env_file)
    for f in files:
        if (at := _mtime(f)) is not None and at > since:
            out.append(Change("launch", f.name, f"{f} (launch command and environment) changed", at))
    return out


def deps_changes(problems: list[dict[str, Any]], root: Path | None) -> list[Change]:
    """Packages that differ from the pristine install recorded while healthy (`deps.check`'s problems)."""
    if not problems:
        return []
    names = ", ".join(f"{p.get('package')} ({p.get('kind')})" for p in problems[:10])
    times = [
        at for p in problems if root is not None and (at := _mtime((root / str(p.get("path", ""))).parent)) is not None
    ]
    return [
        Change(
            "dependencies",
            ",".join(str(p.get("package")) for p in problems[:10]),
            f"{len(problems)} package(s) differ from the recorded install: {names}",
            max(times) if times else None,
            True,
            "restore_deps",
        )
    ]


def collect_changes(
    loaded: LoadedConfig,
    name: str,
    read_known_good: Callable[[str], bytes | None],
    known_good_at: float | None,
    last_healthy_at: float | None,
) -> list[Change]:
    """Boot files, install and launch changes; `read_known_good(key)`: the known-good copy of a boot file."""
    since = last_healthy_at if last_healthy_at is not None else known_good_at
    changes = _boot_file_changes(loaded, name, read_known_good)
    changes += kinds.kind_of(loaded.targets[name].kind).install_changes(loaded, name, since)
    return changes + _launch_changes(loaded, since)


def as_dicts(
    changes: list[Change], last_healthy_at: float | None, first_failure_at: float | None
) -> list[dict[str, Any]]:
    return [c.to_dict() | {"when": when(c.changed_at, last_healthy_at, first_failure_at)} for c in changes]
