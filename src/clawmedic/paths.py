"""Where clawmedic keeps its files, following each platform's conventions (via platformdirs)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from clawmedic import defaults

APP = "clawmedic"


def default_config_path() -> Path:
    """`$CLAWMEDIC_CONFIG`, else e.g. ~/.config/clawmedic/config.toml."""
    env = os.environ.get("CLAWMEDIC_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


def default_state_dir() -> Path:
    """e.g. ~/.local/state/clawmedic: incidents, events, status, locks."""
    return Path(platformdirs.user_state_dir(APP))


def cache_dir() -> Path:
    """`$CLAWMEDIC_CACHE_DIR`, else e.g. ~/.cache/clawmedic: the sandbox's Node and OpenClaw install."""
    env = os.environ.get("CLAWMEDIC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir(APP))


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by the user only."""
    path.mkdir(parents=True, exist_ok=True, mode=defaults.DIR_MODE)
    path.chmod(defaults.DIR_MODE)
    return path
