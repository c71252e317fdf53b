"""Starting, adopting and stopping a target's process: the one seam through which clawmedic touches processes.

A managed child runs in its own session (so it outlives the daemon and can be signalled as a group) with its
output appended to a log file (never a pipe: a dead daemon must not break the gateway's stdout). A record of the
PID and its start time lets a restarted daemon adopt the same process instead of starting a duplicate, and
guarantees clawmedic only ever signals a process it started (a reused PID has another start time).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from clawmedic import defaults
from clawmedic.errors import NotOurProcess
from clawmedic.process import identity, inspect
from clawmedic.store.files import atomic_write, private_file
from clawmedic.store.health import is_write_failure, state_writes

if TYPE_CHECKING:
    import psutil

log = logging.getLogger(__name__)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colour codes in the gateway's console output


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    create_time: float
    command: list[str]
    started_at: float
    log_path: str
    log_offset: int = 0  # where this launch's output starts in the (shared, appended) log file

    @classmethod
    def read(cls, path: Path) -> ProcessRecord:
        """The record in `path`; OSError when it cannot be read, ValueError when it is not what `_write_record`
        writes (garbage, wrong types, a PID that cannot be one): a damaged record never reaches a signal."""
        d = json.loads(path.read_text())
        if not isinstance(d, dict):
            raise ValueError("not an object")
        pid, ct, command, started, log_path, offset = (
            d.get(k) for k in ("pid", "create_time", "command", "started_at", "log_path", "log_offset")
        )
        if (
            not (isinstance(pid, int) and not isinstance(pid, bool) and 1 < pid < 2**22)  # never 0, 1 or negative
            or not isinstance(ct, int | float)
            or not isinstance(started, int | float)
            or not isinstance(command, list)
            or not all(isinstance(c, str) for c in command)
            or not isinstance(log_path, str)
            or not (isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0)
        ):
            raise ValueError(f"not a process record: {d!r:.200}")
        return cls(pid, float(ct), command, float(started), log_path, offset)


class Handle:
    """A running process of ours: a child we spawned, or one adopted from a previous daemon."""

    def __init__(self, record: ProcessRecord, proc: subprocess.Popen[bytes] | None) -> None:
        self.record = record
        self._proc = proc
        self.stop_requested = False

    @property
    def pid(self) -> int:
        return self.record.pid

    @property
    def adopted(self) -> bool:
        return self._proc is None

    def is_ours(self) -> bool:
        """Still the very process we started (not a reused PID)."""
        ct = inspect.create_time(self.pid)
        return ct is not None and abs(ct - self.record.create_time) < 1.0

    async def wait(self) -> int | None:
        """Return the exit code when the process ends (None if unknown: an adopted process is not our child).

        Our own child is waited for like a foreign one — its pidfd turns readable on the event loop — and then
        reaped with `Popen.wait()`, which returns at once. No asyncio child watcher: Python 3.11's default one
        blocks a thread per child (200 children, 200 threads), and with its pidfd watcher (the default from 3.12)
        nothing holds the child's subprocess transport once the loop ends, and a collected transport kills its
        child — a managed gateway must outlive the daemon (tests/integration/test_systemd_notify.py)."""
        if self._proc is None:
            await _wait_foreign(self.pid)
            return None
        if self._proc.returncode is None:
            await _wait_foreign(self.pid)
        return self._proc.wait()  # reaped (or already): immediate

    def output_tail(self, lines: int = defaults.LOG_TAIL_LINES) -> list[str]:
        """The last lines this very launch printed (not an earlier launch's)."""
        return tail_lines(Path(self.record.log_path), lines, start=self.record.log_offset)

    def signal_group(self, sig: signal.Signals) -> None:
        if not self.is_ours():
            if self._proc is not None and self._proc.returncode is not None:
                return  # already gone
            raise NotOurProcess(f"pid {self.pid} is no longer the process clawmedic started; not signalling it.")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)  # start_new_session=True made the pid its own group leader

    async def stop(self, timeout_s: float) -> tuple[int | None, bool]:
        """SIGTERM the group (and SIGCONT it, so a stopped process can act on it), SIGKILL after `timeout_s`.

        Returns (exit code, whether SIGKILL was needed). Never SIGUSR1: it opens Node's debugger on OpenClaw.
        """
        self.stop_requested = True
        waiter = asyncio.ensure_future(self.wait())
        try:
            self.signal_group(signal.SIGTERM)
        except NotOurProcess:
            waiter.cancel()
            raise
        # From here on "not ours" can only mean "already gone": it died of the SIGTERM and was reaped.
        with contextlib.suppress(NotOurProcess):
            self.signal_group(signal.SIGCONT)
        try:
            code = await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
            return code, False
        except TimeoutError:
            with contextlib.suppress(NotOurProcess):
                self.signal_group(signal.SIGKILL)
            return await waiter, True


def cap_log(path: Path, max_bytes: int) -> Path | None:
    """copytruncate a log another process appends to: past `max_bytes`, copy it to `<name>.<timestamp>` and empty
    it in place (a rename would leave the writer writing to the copy). Lines written between the copy and the
    truncation are lost, as with logrotate's copytruncate. Returns the copy, or None (small enough, or no file)."""
    try:
        if path.stat().st_size <= max_bytes:
            return None
        copy = path.with_name(f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}")
        n = 0
        while copy.exists():  # two caps within a second: never overwrite the earlier copy
            n += 1
            copy = path.with_name(f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}-{n}")
        shutil.copyfile(path, copy)
        copy.chmod(0o600)
        os.truncate(path, 0)
    except OSError as e:
        log.warning("cannot cap %s: %s", path, e.strerror or e)
        return None
    return copy


def cap_own_console(max_bytes: int, fds: tuple[int, ...] = (1, 2)) -> list[Path]:
    """Cap the files our own stdout/stderr are appended to — cron's `>> daemon-console.log 2>&1`, launchd's
    StandardOutPath — which nothing else rotates. Only a regular file opened O_APPEND: truncating any other would
    leave our next write past a hole. Returns the copies made."""
    import fcntl

    copies: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for fd in fds:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            if not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
                continue
            path = Path(f"/proc/self/fd/{fd}").readlink()  # Linux; elsewhere: OSError, left alone
        except OSError:
            continue
        if (copy := cap_log(path, max_bytes)) is not None:
            copies.append(copy)
    return copies


async def _wait_foreign(pid: int) -> None:
    """Wait for a process that is not our child: event-driven via pidfd on Linux, polling elsewhere."""
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await done
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return
    while inspect.is_alive(pid):  # pragma: no cover - non-Linux
        await asyncio.sleep(0.2)


def tail_lines(path: Path, lines: int, start: int = 0) -> list[str]:
    """The last `lines` lines of a file after byte `start`, reading only its end."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(start, size - 256 * 1024))
            data = f.read()
    except OSError:
        return []
    text = _ANSI.sub("", data.decode("utf-8", "replace"))
    return list(deque(text.splitlines(), maxlen=lines))


class Launcher:
    """Spawns and adopts the managed process of one target; keeps its record under the state folder."""

    def __init__(self, target_dir: Path, redact: Callable[[str], str] | None = None) -> None:
        self.target_dir = target_dir
        self.redact = redact  # process.json keeps the command with its "${NAME}"s resolved: masked when given
        self.record_path = target_dir / "process.json"
        self.log_path = target_dir / "output.log"

    def would(self, action: str) -> str | None:
        """None: go ahead with `action` (a launch, a stop…); a dry run's launcher says instead what it would do."""
        return None

    async def spawn(self, command: list[str], env: dict[str, str], cwd: Path | None) -> Handle:
        """Start the command in its own session, output appended to the target's log, our identity marker in its
        environment. Raises OSError when it cannot start (not when its record cannot be written: the marker
        still lets a restarted daemon adopt it)."""
        self._rotate_output()
        private_file(self.log_path)
        full_env = {**os.environ, **env, **identity.marker_of(self.target_dir)}
        with self.log_path.open("ab", buffering=0) as out:
            sink: int | io.FileIO = out
            try:
                out.write(f"\n--- clawmedic: starting at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
            except OSError as e:  # a full disk: the child's output goes nowhere rather than failing its writes
                if not is_write_failure(e):
                    raise
                state_writes.failed(f"{self.target_dir.name}/{self.log_path.name}", e)
                sink = subprocess.DEVNULL
            offset = out.tell()
            proc = subprocess.Popen(  # fork+exec as asyncio would do it, without tying the child to the loop
                command,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        ct = inspect.create_time(proc.pid) or time.time()
        record = ProcessRecord(proc.pid, ct, command, time.time(), str(self.log_path), offset)
        self._write_record(record)
        return Handle(record, proc)

    def _write_record(self, record: ProcessRecord) -> None:
        try:
            data = asdict(record)
            if self.redact is not None:
                data["command"] = [self.redact(a) for a in record.command]
            atomic_write(self.record_path, json.dumps(data))
        except OSError as e:
            log.warning(
                "cannot write %s (%s): a restarted daemon will find pid %d by its marker",
                self.record_path,
                e.strerror or e,
                record.pid,
            )

    def _rotate_output(self) -> None:
        """Rotate the output log between launches (a running gateway holds its file open, so never during one):
        past OUTPUT_LOG_MAX_BYTES it becomes `output.log.<timestamp>`; rotated logs older than the retention
        are clawmedic's own files and are removed."""
        try:
            if self.log_path.stat().st_size > defaults.OUTPUT_LOG_MAX_BYTES:
                self.log_path.rename(self.log_path.with_name(f"{self.log_path.name}.{time.strftime('%Y%m%dT%H%M%S')}"))
        except OSError:
            return
        cutoff = time.time() - defaults.LOG_RETENTION_DAYS * 86400
        for old in self.log_path.parent.glob(f"{self.log_path.name}.*"):
            with contextlib.suppress(OSError):
                if old.stat().st_mtime < cutoff:
                    old.unlink()

    def cap_output(self, handle: Handle | None) -> Path | None:
        """Cap the output log while the child runs (copytruncate: the child holds it open with O_APPEND, so its next
        write lands at the new end, never past a hole): past OUTPUT_LOG_MAX_BYTES the content is copied to
        `output.log.<timestamp>` and the file emptied in place. Returns the copy, or None."""
        if self.would("cap the output log") is not None:
            return None
        copy = cap_log(self.log_path, defaults.OUTPUT_LOG_MAX_BYTES)
        if copy is not None and handle is not None and handle.record.log_path == str(self.log_path):
            handle.record = replace(handle.record, log_offset=0)  # this launch's output now starts at the top
            self._write_record(handle.record)  # and for a daemon that adopts it
        return copy

    def adopt(self) -> Handle | None:
        """The process a previous daemon started, if it is still that very process: by its record (PID + start
        time), else — record missing, corrupt or stale — by the identity marker in its environment (the record is
        then rewritten if it can be)."""
        try:
            record: ProcessRecord | None = ProcessRecord.read(self.record_path)
        except (OSError, ValueError, TypeError):
            record = None
        if record is not None:
            handle = Handle(record, None)
            if handle.is_ours() and inspect.is_alive(record.pid):
                return handle
        return self._adopt_by_marker()

    def _adopt_by_marker(self) -> Handle | None:
        import psutil

        p = identity.find_ours(self.target_dir)
        if p is None:
            return None
        try:
            command, ct = p.cmdline(), p.create_time()
        except psutil.Error:
            return None
        try:
            offset = self.log_path.stat().st_size  # this launch's earlier output cannot be told from older ones'
        except OSError:
            offset = 0
        record = ProcessRecord(p.pid, ct, command, ct, str(self.log_path), offset)
        handle = Handle(record, None)
        if not (handle.is_ours() and inspect.is_alive(p.pid)):
            return None
        self._write_record(record)
        return handle

    def forget(self) -> None:
        self.record_path.unlink(missing_ok=True)  # our own bookkeeping file


async def run_command(command: list[str], env: dict[str, str], timeout_s: float) -> tuple[int | None, str]:
    """Run an external service-manager command (restart/stop); returns (exit code or None on timeout, output)."""
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None, ""
    return proc.returncode, out.decode("utf-8", "replace")[-2000:]


def stop_pid(target: int | psutil.Process, timeout_s: float) -> str:
    """SIGTERM a single process (the caller has checked it may), SIGKILL after `timeout_s`; returns what happened.

    Pass the `psutil.Process` the caller checked: psutil then refuses to signal a reused PID. A zombie counts as
    stopped: whoever started it reaps it, not us."""
    import psutil

    pid = target if isinstance(target, int) else target.pid

    def gone(deadline: float) -> bool:
        while time.monotonic() < deadline:
            if not inspect.is_alive(pid):
                return True
            time.sleep(0.1)
        return not inspect.is_alive(pid)

    try:
        p = psutil.Process(pid) if isinstance(target, int) else target
        p.send_signal(signal.SIGTERM)
        p.send_signal(signal.SIGCONT)
        if gone(time.monotonic() + timeout_s):
            return "stopped with SIGTERM"
        p.kill()
        if gone(time.monotonic() + 10):
            return f"stopped with SIGKILL after {timeout_s:g} s"
        return "still running after SIGKILL"
    except psutil.NoSuchProcess:
        return "already gone"
