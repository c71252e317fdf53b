"""What a config reload changes: which targets were added, removed or changed, which changed targets must be
relaunched, and which daemon-wide settings only a daemon restart applies. Pure: two validated configs in, a
`ConfigDiff` out; the daemon (`Daemon.reload`) carries it out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clawmedic.config import LoadedConfig

# Daemon-wide settings re-read on reload: the env_file's values are the targets' secrets, applied with the targets.
LIVE_DAEMON_KEYS = frozenset({"env_file"})


@dataclass(frozen=True)
class ConfigDiff:
    added: list[str]
    removed: list[str]
    changed: list[str]  # its supervisor is replaced: the new one adopts the process…
    relaunch: list[str]  # …or, when how it is launched changed, restarts it through the ladder
    needs_restart: list[str]  # `daemon.*` keys that changed and take effect only when the daemon restarts

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.needs_restart)

    def sentence(self) -> str:
        """One sentence for the log, `status` and `clawmedic reload`."""
        parts = []
        for label, names in (("added", self.added), ("removed", self.removed), ("changed", self.changed)):
            if names:
                parts.append(f"{label} {', '.join(names)}")
        if self.relaunch:
            parts.append(f"restarting {', '.join(self.relaunch)} (its launch command, env or cwd changed)")
        said = "; ".join(parts) if parts else "no target changed"
        if self.needs_restart:
            keys = ", ".join(f"daemon.{k}" for k in self.needs_restart)
            said += f"; {keys} changed and needs a restart of the daemon to take effect"
        return f"config reloaded: {said}."


def _launch_key(loaded: LoadedConfig, name: str) -> tuple[object, ...]:
    """How the target is started and stopped, secrets resolved: a new value of a "${NAME}" counts as a change."""
    start = loaded.targets[name].start

    def resolved(cmd: list[str] | None, key: str) -> tuple[str, ...] | None:
        return None if cmd is None else tuple(loaded.resolve(x, key) for x in cmd)

    return (
        start.mode,
        resolved(start.command, "command"),
        tuple(sorted(loaded.command_env(name).items())),
        start.cwd,
        resolved(start.restart_command, "restart_command"),
        resolved(start.stop_command, "stop_command"),
    )


def diff(old: LoadedConfig, new: LoadedConfig) -> ConfigDiff:
    added = [n for n in new.targets if n not in old.targets]
    removed = [n for n in old.targets if n not in new.targets]
    changed: list[str] = []
    relaunch: list[str] = []
    for name in (n for n in new.targets if n in old.targets):
        launch_changed = _launch_key(old, name) != _launch_key(new, name)
        if launch_changed or old.targets[name] != new.targets[name]:
            changed.append(name)
            if launch_changed and new.targets[name].start.mode == "managed":
                relaunch.append(name)
    old_d, new_d = old.config.daemon, new.config.daemon
    needs_restart = [
        k for k in type(new_d).model_fields if k not in LIVE_DAEMON_KEYS and getattr(old_d, k) != getattr(new_d, k)
    ]
    if new.state_dir != old.state_dir and "state_dir" not in needs_restart:  # e.g. the file moved, relative path
        needs_restart.insert(0, "state_dir")
    return ConfigDiff(added, removed, changed, relaunch, needs_restart)


def keep_daemon_settings(old: LoadedConfig, new: LoadedConfig) -> LoadedConfig:
    """`new` with the running daemon's own settings (state folder, HTTP listener, notifications…) kept, since
    only a restart applies those, and with its secrets masked by the running daemon's redactor (which every log
    handler and store already holds)."""
    new.config = new.config.model_copy(update={"daemon": old.config.daemon})
    new.state_dir = Path(old.state_dir)
    new.dry_run = old.dry_run
    old.redactor.absorb(new.redactor)
    new.redactor = old.redactor
    return new
