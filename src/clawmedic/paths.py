"""Where clawmedic keeps its files, following each platform's conventions (via platformdirs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import platformdirs

from clawmedic import defaults
from clawmedic.errors import ConfigInvalid

APP = "clawmedic"


# --- the daemon's files in its state folder (here, not in `daemon`: commands such as `status` need only these) ---


def status_path(state_dir: Path) -> Path:
    return state_dir / "status.json"


def events_path(state_dir: Path) -> Path:
    return state_dir / "events.jsonl"


def incidents_path(state_dir: Path) -> Path:
    return state_dir / "incidents.sqlite"


def learnings_path(state_dir: Path) -> Path:
    return state_dir / "learnings.sqlite"


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


def make_private_dirs(path: Path) -> Path:
    """Create `path` and its missing parents 0700, whatever the umask, and return it. Only the folders created here
    are chmodded: one that exists already (even made a moment ago by someone else) is left as it is."""
    if path.is_dir():
        return path
    if path.parent != path and not path.parent.exists():
        make_private_dirs(path.parent)
    try:
        path.mkdir(mode=defaults.DIR_MODE)
    except FileExistsError:
        return path
    path.chmod(defaults.DIR_MODE)
    return path


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) 0700 and return it; a folder clawmedic did not create is never chmodded,
    and refused (`ConfigInvalid`) if other users can write to it. OSError if it cannot be created."""
    make_private_dirs(path)
    check_private_dir(path)
    return path


def _shared(mode: int) -> bool:
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def check_private_dir(path: Path) -> None:
    """`ConfigInvalid` (a sentence for after "FILE: KEY: ") unless `path` can hold clawmedic's private files: a folder
    no other user can write to, or one that can be created (its nearest existing parent is a folder we may write)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        _check_creatable(path)
        return
    except OSError as e:
        raise ConfigInvalid(f"{path} cannot be used: {e.strerror}.") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigInvalid(f"{path} is not a folder.")
    if _shared(st.st_mode):
        raise ConfigInvalid(
            f"{path} can be written by other users (mode {stat.S_IMODE(st.st_mode):03o}): clawmedic keeps its files "
            f"only in a folder it creates or only you can write to (chmod go-w {path}, or choose another folder)."
        )


def check_file_folder(path: Path) -> None:
    """`ConfigInvalid` unless clawmedic may write the file `path` outside its own folders (its log file): an existing
    `path` is a regular file of ours (not a link), and its folder exists or can be created. A folder other users can
    write to is accepted only when it is sticky, like /tmp, where nobody else can replace our file; it is never
    chmodded."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ConfigInvalid(f"{path} cannot be used: {e.strerror}.") from None
    else:
        if not stat.S_ISREG(st.st_mode):
            raise ConfigInvalid(f"{path} is not a regular file" + (" (a link)." if stat.S_ISLNK(st.st_mode) else "."))
        if st.st_uid != os.getuid():
            raise ConfigInvalid(f"{path} belongs to another user.")
    folder = path.parent
    try:
        fst = folder.stat()
    except FileNotFoundError:
        _check_creatable(folder)
        return
    except OSError as e:
        raise ConfigInvalid(f"{folder} cannot be used: {e.strerror}.") from None
    if not stat.S_ISDIR(fst.st_mode):
        raise ConfigInvalid(f"{folder} is not a folder.")
    if _shared(fst.st_mode) and not fst.st_mode & stat.S_ISVTX:
        raise ConfigInvalid(
            f"{folder} can be written by other users and is not sticky (mode {stat.S_IMODE(fst.st_mode):03o}): "
            "anyone could replace the file; choose a private folder."
        )


def _check_creatable(path: Path) -> None:
    parent = path.parent
    while True:
        try:
            st = parent.stat()
            break
        except FileNotFoundError:
            parent = parent.parent
        except OSError as e:
            raise ConfigInvalid(f"{path} cannot be created: {parent}: {e.strerror}.") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigInvalid(f"{path} cannot be created: {parent} is not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigInvalid(f"{path} cannot be created: {parent} is not writable.")
