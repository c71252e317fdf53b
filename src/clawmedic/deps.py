"""Dependency integrity for an npm-installed OpenClaw: a manifest, a hard-link pristine copy, check and fix.

A package folder that vanishes from the install (a cleanup script, a half-finished `npm install`, a disk tool)
stops the gateway at boot (`Cannot find module 'ws/package.json'`, exit 78) or silently disables a feature
(FACTS §6). `npm install --offline` cannot repair it (ENOTCACHED), so while the gateway is healthy clawmedic
records what the install holds and keeps a pristine copy of it; a later repair needs neither npm nor the network.

Layout under the state folder::

    deps/<target>/manifest.json           every package folder: name, version, count of regular files (0600)
    deps/<target>/pristine/node_modules/  a hard-link copy of the install's node_modules
    deps/<target>/lock                    serialises record() and fix() between the daemon and the CLI

The root is the `node_modules` folder that holds `openclaw/`. In a prefix install (`npm install --prefix P
openclaw`) the dependencies are hoisted beside it and everything in that folder belongs to the install; in a
global install (`<prefix>/lib/node_modules/openclaw`) they are nested in `openclaw/node_modules` and the folder
also holds unrelated global packages, so only `openclaw/` is recorded (an `npm uninstall -g` of another tool
must not look like damage).

The manifest is a baseline, not a mirror: while openclaw's version is unchanged, `record()` keeps the old
baseline when the live tree lost packages or files (damage must not become the new normal); it takes a new one
when openclaw was upgraded, when packages were only added, or with `force=True`. A repaired folder is moved
aside as `NAME.broken-<timestamp>` next to the original, never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

import filelock

from clawmedic import defaults
from clawmedic.config import LoadedConfig, TargetConfig
from clawmedic.errors import EnvironmentMissing
from clawmedic.paths import ensure_private_dir
from clawmedic.store.files import atomic_write, move_aside, timestamp
from clawmedic.targets.openclaw import cli_command

MANIFEST_FORMAT: Final = 1
NPM_TIMEOUT_S: Final = 600.0  # FACTS §6: an online `npm install` restored a package in ~1 s; a slow link needs more
LOCK_WAIT_S: Final = 900.0  # the other holder may be inside an npm run (NPM_TIMEOUT_S) or a pristine rebuild
ERROR_TAIL_LINES: Final = 5  # lines of npm's output quoted when it fails
PACKAGE: Final = "openclaw"

Layout = Literal["prefix", "global"]
ProblemKind = Literal["missing", "no_package_json", "bad_package_json", "version_changed", "truncated"]
Action = Literal["restored_from_pristine", "npm_install", "none"]
Status = Literal["ok", "failed", "planned"]

_NM: Final = "/node_modules/"  # separates nesting levels in a package's path relative to the root
# Names clawmedic itself leaves in a node_modules folder: set-aside copies (`ws.broken-20261122T101500`,
# store.files.move_aside) and restores in progress (`.ws.clawmedic-restore-<pid>`). Never packages.
_SET_ASIDE: Final = re.compile(r"\.[A-Za-z]+-\d{8}T\d{6}(\.\d+)?$")
_RESTORE_TMP: Final = ".clawmedic-restore-"
# os.link fails with these when a hard link is impossible rather than wrong: another filesystem (EXDEV), a file
# we do not own under fs.protected_hardlinks (EPERM), too many links (EMLINK), no link support (ENOTSUP).
_NO_LINK: Final = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES})


# --- data ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageInfo:
    name: str
    version: str
    files: int  # regular files in the folder, not counting its own nested node_modules
    link: str | None = None  # a symlinked package (npm link, a workspace): its target; its files are not counted

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"name": self.name, "version": self.version, "files": self.files}
        if self.link is not None:
            d["link"] = self.link
        return d


@dataclass(frozen=True)
class Manifest:
    target: str
    root: Path  # the node_modules folder that holds openclaw/
    layout: Layout
    openclaw_version: str
    required: dict[str, str]  # openclaw's declared `dependencies`: name -> range
    packages: dict[str, PackageInfo]  # by path relative to the root, e.g. "ws", "@scope/x", "a/node_modules/b"
    recorded_at: float

    def to_dict(self) -> dict[str, object]:
        return {
            "format": MANIFEST_FORMAT,
            "target": self.target,
            "root": str(self.root),
            "layout": self.layout,
            "openclaw_version": self.openclaw_version,
            "recorded_at": self.recorded_at,
            "required": self.required,
            "package_count": len(self.packages),
            "packages": {rel: info.to_dict() for rel, info in sorted(self.packages.items())},
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Raises ValueError, KeyError or TypeError on anything but a manifest this version wrote."""
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ValueError("not a clawmedic dependency manifest of format 1")
        layout = data["layout"]
        if layout not in ("prefix", "global"):
            raise ValueError(f"unknown layout {layout!r}")
        packages: dict[str, PackageInfo] = {}
        for rel, p in dict(data["packages"]).items():
            link = p.get("link")
            packages[str(rel)] = PackageInfo(
                str(p["name"]), str(p["version"]), int(p["files"]), None if link is None else str(link)
            )
        return cls(
            target=str(data["target"]),
            root=Path(str(data["root"])),
            layout=cast(Layout, layout),
            openclaw_version=str(data["openclaw_version"]),
            required={str(k): str(v) for k, v in dict(data["required"]).items()},
            packages=packages,
            recorded_at=float(data["recorded_at"]),
        )


@dataclass(frozen=True)
class Problem:
    package: str  # the npm name
    path: str  # the folder relative to the root
    kind: ProblemKind
    detail: str
    expected_version: str | None = None  # the recorded version (None when there is no usable manifest)

    def to_dict(self) -> dict[str, object]:
        return {
            "package": self.package,
            "path": self.path,
            "kind": self.kind,
            "detail": self.detail,
            "expected_version": self.expected_version,
        }


@dataclass(frozen=True)
class Outcome:
    package: str
    path: str
    problem: ProblemKind
    action: Action
    status: Status
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {
            "package": self.package,
            "path": self.path,
            "problem": self.problem,
            "action": self.action,
            "status": self.status,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class DepsReport:
    target: str
    root: Path
    dry_run: bool
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing failed (an empty report: there was nothing to do)."""
        return all(o.status != "failed" for o in self.outcomes)

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "root": str(self.root),
            "dry_run": self.dry_run,
            "ok": self.ok,
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


@dataclass
class LinkStats:
    linked: int = 0
    copied: int = 0
    symlinks: int = 0
    dirs: int = 0
    copy_only: bool = False  # set after the first EXDEV: every later file is on the other filesystem too


@dataclass(frozen=True)
class Location:
    root: Path
    layout: Layout

    @property
    def openclaw_dir(self) -> Path:
        return self.root / PACKAGE

    def scope(self) -> list[str]:
        """The root's entries that belong to the install (see the module docstring)."""
        if self.layout == "global":
            return [PACKAGE]
        try:
            names = sorted(e.name for e in self.root.iterdir())
        except OSError:
            return [PACKAGE]
        return [n for n in names if not _ours(n)]


# --- locating --------------------------------------------------------------------------------------------


def locate(cfg: TargetConfig) -> Path | None:
    """The `node_modules` folder holding the `openclaw` package the target runs, or None if it cannot be found."""
    loc = find_location(cfg)
    return loc.root if loc is not None else None


def find_location(cfg: TargetConfig) -> Location | None:
    cli = cli_command(cfg)
    if not cli:
        return None
    for arg in cli:
        entry = _entry_from_arg(arg, cfg)
        if entry is None:
            continue
        try:
            pkg = entry.resolve().parent
        except OSError:
            continue
        root = pkg.parent
        if root.name == "node_modules" and pkg.name == PACKAGE and pkg.is_dir():
            layout: Layout = "prefix" if (root.parent / "package.json").is_file() else "global"
            return Location(root, layout)
    return None


def _entry_from_arg(arg: str, cfg: TargetConfig) -> Path | None:
    """`openclaw.mjs` named in the command, or the one an `openclaw` bin on PATH leads to."""
    if arg.endswith("openclaw.mjs"):
        p = Path(arg).expanduser()
        if not p.is_absolute():
            p = (cfg.start.cwd or Path.cwd()).expanduser() / p
        return p
    if Path(arg).name != PACKAGE:
        return None
    found = arg if os.sep in arg else shutil.which(arg, path=cfg.start.env.get("PATH"))
    if found is None:
        return None
    bin_path = Path(found).expanduser()
    with contextlib.suppress(OSError):
        real = bin_path.resolve()
        if real.name == "openclaw.mjs":
            return real  # npm's bin link: <prefix>/bin/openclaw -> ../lib/node_modules/openclaw/openclaw.mjs
    # A wrapper script (a version manager's shim): the global layout beside its bin folder.
    cand = bin_path.parent.parent / "lib" / "node_modules" / PACKAGE / "openclaw.mjs"
    return cand if cand.is_file() else None


def _require_location(cfg: TargetConfig, name: str) -> Location:
    loc = find_location(cfg)
    if loc is None:
        raise EnvironmentMissing(
            f"Cannot find the npm install of openclaw for target {name!r}: its command must name "
            "node_modules/openclaw/openclaw.mjs or an `openclaw` on PATH (set `openclaw_command`)."
        )
    return loc


# --- paths under the state folder --------------------------------------------------------------------------


def deps_dir(loaded: LoadedConfig, name: str) -> Path:
    return loaded.state_dir / "deps" / name


def manifest_path(loaded: LoadedConfig, name: str) -> Path:
    return deps_dir(loaded, name) / "manifest.json"


def pristine_root(loaded: LoadedConfig, name: str) -> Path:
    """The pristine copy of the root (`.../pristine/node_modules`)."""
    return deps_dir(loaded, name) / "pristine" / "node_modules"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    ensure_private_dir(folder.parent)
    ensure_private_dir(folder)
    lock = filelock.FileLock(folder / "lock", mode=defaults.FILE_MODE)
    try:
        lock.acquire(timeout=LOCK_WAIT_S)
    except filelock.Timeout:
        raise EnvironmentMissing(
            f"Another clawmedic has held {folder / 'lock'} for {LOCK_WAIT_S:g} s; try again when it finishes."
        ) from None
    try:
        yield
    finally:
        lock.release()


def load_manifest(loaded: LoadedConfig, name: str) -> Manifest | None:
    """The recorded manifest, None if there is none yet. Raises EnvironmentMissing if it cannot be read."""
    path = manifest_path(loaded, name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EnvironmentMissing(f"Cannot read the dependency manifest {path}: {exc.strerror or exc}.") from None
    try:
        return Manifest.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EnvironmentMissing(
            f"The dependency manifest {path} is unreadable ({exc}); move it aside so clawmedic records a new one."
        ) from None


def _usable(manifest: Manifest | None, loc: Location) -> Manifest | None:
    """The manifest if it describes this install as it is now (same root, same openclaw version)."""
    if manifest is None or manifest.root != loc.root or manifest.layout != loc.layout:
        return None
    current = _version_of(loc.openclaw_dir)
    if current is not None and current != manifest.openclaw_version:
        return None  # openclaw was upgraded: its dependency tree legitimately changed
    return manifest


# --- reading package folders ------------------------------------------------------------------------------------


def _ours(name: str) -> bool:
    return bool(_SET_ASIDE.search(name)) or _RESTORE_TMP in name


def _read_package_json(folder: Path) -> tuple[dict[str, Any] | None, ProblemKind | None]:
    try:
        raw = (folder / "package.json").read_bytes()
    except FileNotFoundError:
        return None, "no_package_json"
    except OSError:
        return None, "bad_package_json"
    try:
        data = json.loads(raw)
    except ValueError:
        return None, "bad_package_json"
    if not isinstance(data, dict):
        return None, "bad_package_json"
    return data, None


def _version_of(folder: Path) -> str | None:
    data, _ = _read_package_json(folder)
    return None if data is None else str(data.get("version", ""))


def _required_of(loc: Location) -> dict[str, str] | None:
    data, _ = _read_package_json(loc.openclaw_dir)
    if data is None:
        return None
    deps = data.get("dependencies")
    return {str(k): str(v) for k, v in deps.items()} if isinstance(deps, dict) else {}


def count_files(folder: Path) -> int:
    """Regular files under `folder`, not following symlinks, not counting its own `node_modules`."""
    n = 0
    stack: list[tuple[str, bool]] = [(str(folder), True)]
    while stack:
        path, top = stack.pop()
        try:
            it = os.scandir(path)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        if not (top and e.name == "node_modules"):
                            stack.append((e.path, False))
                    elif e.is_file(follow_symlinks=False):
                        n += 1
                except OSError:
                    continue
    return n


def _package_folders(loc: Location) -> Iterator[tuple[str, Path]]:
    """(path relative to the root, folder) of every package folder in scope, parents before their nested ones.

    A package folder is `node_modules/<name>` or `node_modules/@scope/<name>` holding a package.json (or a
    symlink there: a linked package), at any depth of nested `node_modules`.
    """
    stack: list[tuple[str, Path, list[str] | None]] = [("", loc.root, loc.scope())]
    while stack:
        prefix, nm, names = stack.pop()
        if names is None:
            try:
                names = sorted(e.name for e in nm.iterdir() if not e.name.startswith(".") and not _ours(e.name))
            except OSError:
                continue
        found: list[tuple[str, Path]] = []
        for n in names:
            if n.startswith("."):
                continue
            p = nm / n
            if n.startswith("@") and not p.is_symlink() and p.is_dir():
                try:
                    subs = sorted(e.name for e in p.iterdir() if not e.name.startswith(".") and not _ours(e.name))
                except OSError:
                    continue
                found += [(f"{n}/{s}", p / s) for s in subs]
            else:
                found.append((n, p))
        nested: list[tuple[str, Path, list[str] | None]] = []
        for rel_name, p in found:
            rel = prefix + rel_name
            if p.is_symlink():
                yield rel, p
            elif (p / "package.json").is_file():
                yield rel, p
                if (p / "node_modules").is_dir():
                    nested.append((rel + _NM, p / "node_modules", None))
        stack.extend(reversed(nested))


def _scan(loc: Location) -> dict[str, PackageInfo]:
    packages: dict[str, PackageInfo] = {}
    for rel, p in _package_folders(loc):
        folder_name = rel.rsplit(_NM, 1)[-1]
        if p.is_symlink():
            packages[rel] = PackageInfo(folder_name, _version_of(p) or "", 0, str(p.readlink()))
            continue
        data, _ = _read_package_json(p)
        name = str(data.get("name") or folder_name) if data else folder_name
        version = str(data.get("version", "")) if data else ""
        packages[rel] = PackageInfo(name, version, count_files(p))
    return packages


def _ancestors(rel: str) -> list[str]:
    parts = rel.split(_NM)
    return [_NM.join(parts[:i]) for i in range(1, len(parts))]


def _inspect(root: Path, rel: str, info: PackageInfo) -> Problem | None:
    p = root / rel
    where = f"{rel} ({info.name}@{info.version})"
    if info.link is not None:
        if not os.path.lexists(p):
            return Problem(info.name, rel, "missing", f"the linked package {where} is gone", info.version)
        if not p.exists():
            return Problem(info.name, rel, "missing", f"the link {where} points at nothing", info.version)
        return None
    if not p.is_dir():
        return Problem(info.name, rel, "missing", f"the folder of {where} is missing", info.version)
    data, err = _read_package_json(p)
    if err == "no_package_json":
        return Problem(info.name, rel, err, f"{where} has no package.json", info.version)
    if data is None:
        return Problem(info.name, rel, "bad_package_json", f"the package.json of {where} is unreadable", info.version)
    version = str(data.get("version", ""))
    if version != info.version:
        return Problem(info.name, rel, "version_changed", f"{where} is now version {version!r}", info.version)
    n = count_files(p)
    if n < info.files:
        return Problem(info.name, rel, "truncated", f"{where} has {n} of its {info.files} files", info.version)
    return None


def _resolve(start: Path, dep: str) -> tuple[bool, Path | None, ProblemKind | None]:
    """Node's lookup of `dep` from `start`: every `node_modules/<dep>` from there up to the filesystem root.

    Returns (found, first broken candidate folder, its problem).
    """
    broken: Path | None = None
    kind: ProblemKind | None = None
    for d in (start, *start.parents):
        if d.name == "node_modules":
            continue
        cand = d / "node_modules" / dep
        if not cand.is_dir():
            continue
        data, err = _read_package_json(cand)
        if data is not None:
            return True, None, None
        if broken is None:
            broken, kind = cand, err
    return False, broken, kind


def _default_rel(loc: Location, dep: str) -> str:
    return f"{PACKAGE}{_NM}{dep}" if loc.layout == "global" else dep


def _check(loc: Location, manifest: Manifest | None) -> list[Problem]:
    problems: dict[str, Problem] = {}

    def under_missing(rel: str) -> bool:
        return any(a in problems and problems[a].kind == "missing" for a in _ancestors(rel))

    if manifest is not None:
        for rel in sorted(manifest.packages):
            if under_missing(rel):
                continue  # restoring the parent folder restores it too
            found = _inspect(loc.root, rel, manifest.packages[rel])
            if found is not None:
                problems[rel] = found
    required = _required_of(loc)
    if required is None:
        required = manifest.required if manifest is not None else {}
    for dep, wanted in sorted(required.items()):
        ok, broken, kind = _resolve(loc.openclaw_dir, dep)
        if ok:
            continue
        rel = _default_rel(loc, dep)
        if manifest is not None:
            rel = next((r for r in (f"{PACKAGE}{_NM}{dep}", dep) if r in manifest.packages), rel)
        if broken == loc.root / dep:
            rel = dep
        elif broken == loc.openclaw_dir / "node_modules" / dep:
            rel = f"{PACKAGE}{_NM}{dep}"
        if rel in problems or under_missing(rel):
            continue
        expected = manifest.packages[rel].version if manifest is not None and rel in manifest.packages else None
        if broken is not None and kind is not None:
            detail = f"openclaw requires {dep} ({wanted}) and its package.json at {broken} is missing or unreadable"
            problems[rel] = Problem(dep, rel, kind, detail, expected)
        else:
            detail = f"openclaw requires {dep} ({wanted}) and Node finds no copy of it from {loc.openclaw_dir}"
            problems[rel] = Problem(dep, rel, "missing", detail, expected)
    return sorted(problems.values(), key=lambda p: (p.path.count(_NM), p.path))


# --- hard-link copies --------------------------------------------------------------------------------------------
#
# Hand-written: shutil.copytree(copy_function=os.link) has no EXDEV/EPERM fallback per file, no way to skip our
# own set-aside folders, and fails on read-only folders it created itself; no library keeps a hard-link
# snapshot of a tree together with a manifest of it.
#
# Why hard links are safe for the pristine copy: npm never edits an installed file in place; it writes new
# files and renames them over (or removes a folder and unpacks a fresh one), which gives the live path a new
# inode and leaves the pristine link pointing at the old content. Deleting a live file or folder only drops one
# link; the pristine copy keeps the data. The limit: something that opens a live file for writing and edits
# it in place (a hand edit, `patch-package` run on the install) changes the pristine copy too, because both
# names are the same inode. The file counts and versions still catch every deletion, which is the failure
# seen in practice (FACTS §6). Across filesystems, or where linking is refused, the files are copied instead.


def _link_file(src: Path, dst: Path, st: LinkStats) -> None:
    if not st.copy_only:
        try:
            dst.hardlink_to(src)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            if exc.errno == errno.EXDEV:
                st.copy_only = True
        else:
            st.linked += 1
            return
    shutil.copy2(src, dst, follow_symlinks=False)
    st.copied += 1


def link_tree(src: Path, dst: Path, stats: LinkStats | None = None, skip: Callable[[str], bool] = _ours) -> LinkStats:
    """Copy `src` (a folder, file or symlink) to `dst`, which must not exist: folders are recreated with their
    modes, regular files hard-linked (copied where a link is impossible), symlinks copied as symlinks. Entries
    whose name `skip` accepts are left out (default: clawmedic's own set-aside folders)."""
    st = stats if stats is not None else LinkStats()
    top = src.lstat()
    if stat.S_ISLNK(top.st_mode):
        dst.symlink_to(src.readlink())
        st.symlinks += 1
        return st
    if stat.S_ISREG(top.st_mode):
        _link_file(src, dst, st)
        return st
    modes: list[tuple[Path, int]] = []  # applied last, so a read-only folder is filled before it becomes read-only
    stack = [(src, dst, top.st_mode)]
    while stack:
        s, d, mode = stack.pop()
        d.mkdir(0o700)
        st.dirs += 1
        modes.append((d, stat.S_IMODE(mode)))
        with os.scandir(s) as it:
            for e in it:
                if skip(e.name):
                    continue
                target = d / e.name
                if e.is_symlink():
                    target.symlink_to(Path(e.path).readlink())
                    st.symlinks += 1
                elif e.is_dir(follow_symlinks=False):
                    stack.append((Path(e.path), target, e.stat(follow_symlinks=False).st_mode))
                elif e.is_file(follow_symlinks=False):
                    _link_file(Path(e.path), target, st)
                # sockets, fifos and devices have no place in node_modules: left out
    for d, mode in reversed(modes):
        d.chmod(mode)
    return st


def _remove_tree(path: Path) -> None:
    """Remove one of clawmedic's own folders (a staging or superseded pristine copy), read-only parts included."""

    def retry(func: Callable[..., Any], p: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            Path(p).parent.chmod(defaults.DIR_MODE)
            func(p)

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=retry)


def _build_pristine(loc: Location, folder: Path) -> LinkStats:
    """Build `folder/pristine/node_modules` in a staging folder and rename it into place."""
    dest = folder / "pristine"
    staging = folder / f"pristine.staging-{os.getpid()}-{time.time_ns()}"
    stats = LinkStats()
    try:
        (staging / "node_modules").mkdir(parents=True, mode=defaults.DIR_MODE)
        for entry in loc.scope():
            link_tree(loc.root / entry, staging / "node_modules" / entry, stats)
        old = folder / f"pristine.old-{os.getpid()}-{time.time_ns()}"
        if dest.exists():
            dest.rename(old)
        staging.rename(dest)
        _remove_tree(old)
    except OSError as exc:
        _remove_tree(staging)
        raise EnvironmentMissing(
            f"Cannot build the pristine copy of {loc.root} in {folder}: {exc.strerror or exc}."
        ) from None
    except BaseException:
        _remove_tree(staging)
        raise
    return stats


def _remove_leftovers(folder: Path) -> None:
    """Staging and superseded copies of a run that was killed half-way (ours only, under the state folder)."""
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            if p.name.startswith(("pristine.staging-", "pristine.old-")):
                _remove_tree(p)


# --- record, check, fix ---------------------------------------------------------------------------------------------


def record(loaded: LoadedConfig, name: str, *, force: bool = False) -> Manifest:
    """Record the install's packages and refresh the pristine copy; call it when the gateway has been healthy.

    Cheap and idempotent when nothing changed: the openclaw version and the number of package folders are
    compared (about 500 stat calls) before anything is counted or linked. See the module docstring for when a
    new baseline is taken. Raises EnvironmentMissing when the install cannot be found or copied.
    """
    cfg = loaded.targets[name]
    loc = _require_location(cfg, name)
    folder = deps_dir(loaded, name)
    mpath = manifest_path(loaded, name)
    with _locked(folder):
        _remove_leftovers(folder)
        try:
            old = load_manifest(loaded, name)
        except EnvironmentMissing:
            try:
                move_aside(mpath, "broken")  # our own file, kept for a look; a new baseline is taken below
            except OSError:
                raise EnvironmentMissing(
                    f"The dependency manifest {mpath} is unreadable and cannot be moved aside."
                ) from None
            old = None
        version = _version_of(loc.openclaw_dir)
        if version is None:
            raise EnvironmentMissing(
                f"openclaw's package.json in {loc.openclaw_dir} is missing or unreadable, so its dependencies "
                "cannot be recorded."
            )
        usable = _usable(old, loc)
        have_pristine = (folder / "pristine" / "node_modules").is_dir()
        if usable is not None and have_pristine and not force:
            count = sum(1 for _ in _package_folders(loc))
            if count == len(usable.packages):
                return usable
            if _check(loc, usable):
                return usable  # damaged, not changed: keep the baseline so check() and fix() can repair it
        manifest = Manifest(
            target=name,
            root=loc.root,
            layout=loc.layout,
            openclaw_version=version,
            required=_required_of(loc) or {},
            packages=_scan(loc),
            recorded_at=time.time(),
        )
        if usable is None or not have_pristine or force or manifest.packages != usable.packages:
            _build_pristine(loc, folder)
        atomic_write(mpath, json.dumps(manifest.to_dict(), indent=1) + "\n")
        return manifest


def check(loaded: LoadedConfig, name: str) -> list[Problem]:
    """The install's dependency problems, parents before nested packages; an empty list when it is intact.

    With a manifest for this openclaw version: every recorded package folder that is missing, has a
    missing/unreadable package.json, another version, or fewer files. Always: openclaw's declared
    dependencies that Node's lookup cannot find from the openclaw package folder.
    """
    loc = _require_location(loaded.targets[name], name)
    return _check(loc, _usable(load_manifest(loaded, name), loc))


def fix(loaded: LoadedConfig, name: str, *, dry_run: bool = False, allow_network: bool = True) -> DepsReport:
    """Repair every problem `check()` finds: from the pristine copy, else with npm (online only).

    A broken folder is moved aside (`NAME.broken-<timestamp>`), never deleted. `dry_run` returns the plan
    (status "planned") and changes nothing. Idempotent: once repaired, a second call has nothing to do.
    """
    cfg = loaded.targets[name]
    loc = _require_location(cfg, name)
    if dry_run:
        return _fix(loaded, name, cfg, loc, dry_run=True, allow_network=allow_network)
    with _locked(deps_dir(loaded, name)):
        return _fix(loaded, name, cfg, loc, dry_run=False, allow_network=allow_network)


def _fix(
    loaded: LoadedConfig, name: str, cfg: TargetConfig, loc: Location, *, dry_run: bool, allow_network: bool
) -> DepsReport:
    manifest = _usable(load_manifest(loaded, name), loc)
    problems = _check(loc, manifest)
    pristine = pristine_root(loaded, name) if manifest is not None else None
    outcomes: dict[str, Outcome] = {}
    restored: list[str] = []
    for_npm: list[Problem] = []
    for p in problems:
        parent = next((a for a in _ancestors(p.path) if a in restored), None)
        if parent is not None:
            status: Status = "planned" if dry_run else "ok"
            outcomes[p.path] = _outcome(p, "restored_from_pristine", status, f"restored with its parent {parent}")
            continue
        src = pristine / p.path if pristine is not None else None
        if src is not None and (src.is_symlink() or (src / "package.json").is_file()):
            restored.append(p.path)
            if dry_run:
                outcomes[p.path] = _outcome(p, "restored_from_pristine", "planned", f"restore from {src}")
            else:
                outcomes[p.path] = _restore(loc, p, src)
            continue
        if not allow_network:
            outcomes[p.path] = _outcome(p, "none", "failed", "not in the pristine copy, and the network is not allowed")
            continue
        for_npm.append(p)
    if for_npm:
        outcomes.update(_npm_fix(loc, cfg, for_npm, dry_run))
    if not dry_run and outcomes:
        still = {p.path: p for p in _check(loc, manifest)}
        for rel, o in outcomes.items():
            if o.status == "ok" and rel in still:
                outcomes[rel] = _outcome(
                    still[rel], o.action, "failed", f"{o.detail}; still broken: {still[rel].detail}"
                )
    return DepsReport(name, loc.root, dry_run, [outcomes[p.path] for p in problems])


def _outcome(p: Problem, action: Action, status: Status, detail: str) -> Outcome:
    return Outcome(p.package, p.path, p.kind, action, status, detail)


def _set_aside(path: Path) -> Path:
    if path.is_symlink():  # move_aside would chmod the link's target
        base = path.with_name(f"{path.name}.broken-{timestamp()}")
        dest, n = base, 1
        while os.path.lexists(dest):
            dest = base.with_name(f"{base.name}.{n}")
            n += 1
        path.rename(dest)
        return dest
    dest = move_aside(path, "broken")
    if dest.is_dir():
        dest.chmod(defaults.DIR_MODE)  # move_aside's 0600 would make a folder impossible to enter
    return dest


def _restore(loc: Location, p: Problem, src: Path) -> Outcome:
    live = loc.root / p.path
    tmp = live.parent / f".{live.name}{_RESTORE_TMP}{os.getpid()}"
    try:
        live.parent.mkdir(parents=True, exist_ok=True)
        _remove_tree(tmp)  # our own leftover from a killed run
        stats = link_tree(src, tmp)  # built beside the live folder, so Node never sees half a package
        aside = _set_aside(live) if os.path.lexists(live) else None
        tmp.rename(live)
    except OSError as exc:
        _remove_tree(tmp)
        return _outcome(p, "restored_from_pristine", "failed", f"restoring {live} failed: {exc.strerror or exc}")
    version = f" {p.expected_version}" if p.expected_version else ""
    how = f"{stats.linked} files linked" + (f", {stats.copied} copied" if stats.copied else "")
    detail = f"restored {p.package}{version} from the pristine copy ({how})"
    if aside is not None:
        detail += f"; the broken folder is now {aside}"
    return _outcome(p, "restored_from_pristine", "ok", detail)


# --- npm -------------------------------------------------------------------------------------------------------------


def _node_for(cfg: TargetConfig) -> Path | None:
    """The Node binary the target runs with: the command's first word if it is a node, else `node` on PATH."""
    cli = cli_command(cfg) or []
    path = cfg.start.env.get("PATH")
    if cli and Path(cli[0]).name.startswith("node"):
        found = cli[0] if os.sep in cli[0] else shutil.which(cli[0], path=path)
        if found is not None and os.access(found, os.X_OK):
            return Path(found)
    found = shutil.which("node", path=path)
    return Path(found) if found is not None else None


def find_npm(cfg: TargetConfig) -> list[str] | None:
    """The argv prefix that runs npm with the install's own Node: npm next to that node, else npm on PATH."""
    node = _node_for(cfg)
    candidates: list[Path] = []
    if node is not None:
        candidates.append(node.parent / "npm")
    on_path = shutil.which("npm", path=cfg.start.env.get("PATH"))
    if on_path is not None:
        candidates.append(Path(on_path))
    for c in candidates:
        if not c.is_file():
            continue
        real = c.resolve()  # npm's own bin is a symlink to lib/node_modules/npm/bin/npm-cli.js
        if node is not None and real.suffix == ".js":
            return [str(node), str(real)]
        if os.access(c, os.X_OK):
            return [str(c)]  # a wrapper script; the caller puts the install's node first on PATH
    return None


def _npm_plan(loc: Location, p: Problem) -> tuple[Path, str | None] | None:
    """(the prefix to run `npm install` in, the package spec or None to install the prefix's lockfile as is);
    None when npm run by clawmedic cannot repair it (openclaw itself, installed globally)."""
    parts = p.path.split(_NM)
    if loc.layout == "global" and parts == [PACKAGE]:
        return None
    if loc.layout == "global" and parts[0] == PACKAGE:
        prefix, parts = loc.openclaw_dir, parts[1:]
    else:
        prefix = loc.root.parent
    if len(parts) != 1:
        # Nested below another package: naming it would hoist it to the top, over a different version.
        return prefix, None
    folder = parts[0]
    version = p.expected_version or ""
    if not version:
        required = _required_of(loc) or {}
        version = required.get(folder, "")
    pkg = folder if p.package == folder else f"{folder}@npm:{p.package}"
    return prefix, f"{pkg}@{version}" if version else pkg


def _npm_fix(loc: Location, cfg: TargetConfig, problems: list[Problem], dry_run: bool) -> dict[str, Outcome]:
    plans: dict[Path, list[tuple[Problem, str | None]]] = {}
    out: dict[str, Outcome] = {}
    for p in problems:
        plan = _npm_plan(loc, p)
        if plan is None:
            detail = f"not in the pristine copy; reinstall it with `npm install -g openclaw@{p.expected_version}`"
            out[p.path] = _outcome(p, "none", "failed", detail)
            continue
        plans.setdefault(plan[0], []).append((p, plan[1]))
    if not plans:
        return out
    npm = find_npm(cfg)
    if npm is None:
        for items in plans.values():
            for p, _ in items:
                out[p.path] = _outcome(p, "npm_install", "failed", "not in the pristine copy, and no npm was found")
        return out
    node = _node_for(cfg)
    env = dict(os.environ)
    if node is not None:
        env["PATH"] = os.pathsep.join(x for x in (str(node.parent), env.get("PATH", "")) if x)
    for prefix, items in plans.items():
        specs = sorted({s for _, s in items if s is not None})
        cmd = [
            *npm,
            "install",
            *specs,
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--prefix",
            str(prefix),
        ]
        shown = "npm " + " ".join(cmd[len(npm) :])
        if dry_run:
            for p, _ in items:
                out[p.path] = _outcome(p, "npm_install", "planned", shown)
            continue
        t0 = time.monotonic()
        try:
            r = subprocess.run(
                cmd, cwd=prefix, env=env, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            for p, _ in items:
                out[p.path] = _outcome(p, "npm_install", "failed", f"{shown} did not run: {exc}")
            continue
        took = time.monotonic() - t0
        if r.returncode == 0:
            status: Status = "ok"
            detail = f"{shown} ({took:.1f} s)"
        else:
            lines = (r.stdout + r.stderr).strip().splitlines()
            status = "failed"
            tail = " | ".join(lines[-ERROR_TAIL_LINES:]) or "no output"
            detail = f"{shown} exited {r.returncode} after {took:.1f} s: {tail}"
        for p, _ in items:
            out[p.path] = _outcome(p, "npm_install", status, detail)
    return out
