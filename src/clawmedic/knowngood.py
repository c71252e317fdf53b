"""The known-good store: a git repository under clawmedic's state folder tracking each target's boot-critical files.

Why dulwich rather than the git CLI: it is pure Python, so the store works on a minimal VPS or container without
git installed, and clawmedic never depends on the user's git configuration, hooks or signing settings.

Layout: one folder per target in the repository's work tree (`<target>/<key>`, where the key is a file's stable
name, e.g. `openclaw.json`). Each commit says why it was taken and the health at that moment (trailers
`Target:`, `Reason:`, `Health:`, `Known-Good:`). `refs/known-good/<target>` points at the latest commit marked
known-good. Restoring a file moves the replaced one aside as `NAME.broken-<timestamp>`; nothing is deleted.

Several processes open the store (the daemon's short-lived `knowngood` children, `clawmedic config apply`, the CLI):
every write (creating the repository, a snapshot, a known-good mark, a restore) holds `known-good.lock` beside the
repository, a `filelock` that also serialises threads. Readers take no lock: objects are immutable and refs are
replaced atomically.
"""

from __future__ import annotations

import difflib
import time
from pathlib import Path

from dulwich import porcelain
from dulwich.errors import NotTreeError
from dulwich.object_store import tree_lookup_path
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo
from filelock import FileLock

from clawmedic import defaults
from clawmedic.knowngood_client import NoKnownGood, Restored, Snapshot, UnknownRevision
from clawmedic.paths import ensure_private_dir
from clawmedic.store.files import atomic_write, keep_copy

_IDENTITY = b"clawmedic <clawmedic@localhost>"


def _kg_ref(target: str) -> Ref:
    return Ref(f"refs/known-good/{target}".encode())


class KnownGoodStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "known-good"
        if not self.root.exists():
            ensure_private_dir(self.root)
        self._lock = FileLock(
            state_dir / "known-good.lock", timeout=defaults.KNOWN_GOOD_LOCK_TIMEOUT_S, mode=defaults.FILE_MODE
        )
        with self._lock:  # two processes may find no repository at once: one creates it
            if (self.root / ".git").exists():
                self.repo = Repo(str(self.root))
            else:
                self.repo = Repo.init(str(self.root))

    # --- writing ---------------------------------------------------------------------------------------

    def snapshot(
        self,
        target: str,
        files: dict[str, Path],
        reason: str,
        health: str,
        *,
        known_good: bool = False,
        now: float | None = None,
    ) -> Snapshot | None:
        """Commit the current content of `files` (key -> path). Returns None when nothing changed and no
        known-good mark is asked for. A file that does not exist is left out (and named in the message)."""
        with self._lock:
            tdir = self.root / target
            ensure_private_dir(tdir)
            present: list[str] = []
            missing: list[str] = []
            for key, src in files.items():
                dest = tdir / key
                if src.is_file():
                    atomic_write(dest, src.read_bytes())
                    present.append(key)
                else:
                    missing.append(key)
                    if dest.exists():
                        dest.unlink()  # a copy inside our own repository, not the user's file
            rel = [f"{target}/{k}" for k in files]
            porcelain.add(self.repo, paths=[str(self.root / p) for p in rel if (self.root / p).exists()])
            for p in rel:
                if not (self.root / p).exists() and self._in_index(p):
                    porcelain.remove(self.repo, paths=[str(self.root / p)], cached=True)
            changed = self._staged_changes()
            head = self._head()
            if not changed and head is not None and not known_good:
                return None
            if not changed and head is not None and known_good and self._is_known_good(target, head):
                return self._snapshot_of(self.repo[head.encode()])  # type: ignore[arg-type]
            lines = [
                f"{reason} ({target})",
                "",
                f"Target: {target}",
                f"Reason: {reason}",
                f"Health: {health}",
                f"Known-Good: {'yes' if known_good else 'no'}",
                f"Files: {', '.join(present) or '-'}",
            ]
            if missing:
                lines.append(f"Missing: {', '.join(missing)}")
            ts = int(now if now is not None else time.time())
            rev = porcelain.commit(
                self.repo,
                message="\n".join(lines).encode(),
                author=_IDENTITY,
                committer=_IDENTITY,
                commit_timestamp=ts,
                author_timestamp=ts,
            )
            if known_good:
                self.repo.refs[_kg_ref(target)] = ObjectID(rev)
            commit = self.repo[rev]
            assert isinstance(commit, Commit)
            return self._snapshot_of(commit)

    def mark_known_good(self, target: str, rev: str) -> None:
        with self._lock:
            commit = self._resolve(rev)
            self.repo.refs[_kg_ref(target)] = commit.id

    # --- reading -----------------------------------------------------------------------------------------

    def history(self, target: str | None = None, limit: int = 50) -> list[Snapshot]:
        if self._head() is None:
            return []
        out: list[Snapshot] = []
        for entry in self.repo.get_walker():
            snap = self._snapshot_of(entry.commit)
            if target is None or snap.target == target:
                out.append(snap)
            if len(out) >= limit:
                break
        return out

    def known_good(self, target: str) -> Snapshot | None:
        ref = _kg_ref(target)
        if ref not in self.repo.refs:
            return None
        commit = self.repo[self.repo.refs[ref]]
        assert isinstance(commit, Commit)
        return self._snapshot_of(commit)

    def latest(self, target: str) -> Snapshot | None:
        h = self.history(target, limit=1)
        return h[0] if h else None

    def read(self, target: str, key: str, rev: str) -> bytes | None:
        commit = self._resolve(rev)
        try:
            _, sha = tree_lookup_path(self.repo.__getitem__, commit.tree, f"{target}/{key}".encode())
        except (KeyError, NotTreeError):
            return None
        blob = self.repo[sha]
        return blob.data if isinstance(blob, Blob) else None

    def diff(self, target: str, key: str, current: Path, rev: str | None = None) -> str:
        """Unified diff from the snapshot `rev` (default: the known-good one, else the latest) to `current`."""
        snap = self._pick(target, rev)
        old = (self.read(target, key, snap.rev) or b"").decode("utf-8", "replace").splitlines(keepends=True)
        new = (
            current.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True) if current.exists() else []
        )
        return "".join(difflib.unified_diff(old, new, f"{key}@{snap.short}", str(current)))

    # --- restoring -------------------------------------------------------------------------------------------

    def restore(self, target: str, key: str, dest: Path, rev: str | None = None) -> Restored:
        """Put the file back from `rev` (default: known-good). The replaced file is moved aside, never deleted."""
        with self._lock:
            return self._restore(target, key, dest, rev)

    def _restore(self, target: str, key: str, dest: Path, rev: str | None) -> Restored:
        snap = self._pick(target, rev)
        data = self.read(target, key, snap.rev)
        if data is None:
            raise NoKnownGood(f"Snapshot {snap.short} of {target} has no {key}.")
        aside = None
        if dest.exists() or dest.is_symlink():
            if dest.is_file() and dest.read_bytes() == data:
                return Restored(key, dest, snap.rev, None)  # already that content: nothing to do (idempotent)
            aside = keep_copy(dest, "broken") if dest.is_file() else None
        mode = 0o600
        atomic_write(dest, data, mode=mode)
        return Restored(key, dest, snap.rev, aside)

    # --- internals --------------------------------------------------------------------------------------------

    def _pick(self, target: str, rev: str | None) -> Snapshot:
        if rev is not None:
            return self._snapshot_of(self._resolve(rev))
        snap = self.known_good(target)
        if snap is None:
            raise NoKnownGood(
                f"There is no known-good snapshot of {target} yet (one is taken after it has served healthy for a "
                "while, or with `clawmedic config snapshot --known-good`)."
            )
        return snap

    def _resolve(self, rev: str) -> Commit:
        try:
            if len(rev) < 40:
                matches = [c for c in self._all_commits() if c.id.decode().startswith(rev)]
                if len(matches) != 1:
                    raise KeyError(rev)
                return matches[0]
            obj = self.repo[rev.encode()]
        except (KeyError, ValueError):
            raise UnknownRevision(
                f"There is no snapshot {rev!r} in {self.root} (see `clawmedic config history`)."
            ) from None
        if not isinstance(obj, Commit):
            raise UnknownRevision(f"{rev!r} is not a snapshot in {self.root}.")
        return obj

    def _all_commits(self) -> list[Commit]:
        if self._head() is None:
            return []
        return [e.commit for e in self.repo.get_walker()]

    def _head(self) -> str | None:
        try:
            return self.repo.head().decode()
        except KeyError:
            return None

    def _is_known_good(self, target: str, rev: str) -> bool:
        ref = _kg_ref(target)
        return ref in self.repo.refs and self.repo.refs[ref].decode() == rev

    def _in_index(self, rel: str) -> bool:
        return rel.encode() in self.repo.open_index()

    def _staged_changes(self) -> bool:
        st = porcelain.status(self.repo)
        return any(st.staged[k] for k in ("add", "delete", "modify"))

    def _snapshot_of(self, commit: Commit) -> Snapshot:
        trailers: dict[str, str] = {}
        for line in commit.message.decode("utf-8", "replace").splitlines():
            k, sep, v = line.partition(": ")
            if sep and k in ("Target", "Reason", "Health", "Known-Good", "Files"):
                trailers[k] = v
        target = trailers.get("Target", "")
        tree = self.repo[commit.tree]
        files: list[str] = []
        if isinstance(tree, Tree) and target.encode() in tree:
            _, sub = tree[target.encode()]
            subtree = self.repo[sub]
            if isinstance(subtree, Tree):
                files = sorted(e.path.decode() for e in subtree.iteritems())
        kg_ref = _kg_ref(target)
        is_kg = trailers.get("Known-Good") == "yes" or (
            kg_ref in self.repo.refs and self.repo.refs[kg_ref] == commit.id
        )
        return Snapshot(
            commit.id.decode(),
            float(commit.commit_time),
            target,
            trailers.get("Reason", ""),
            trailers.get("Health", ""),
            is_kg,
            files,
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m clawmedic.knowngood OP STATE_DIR JSON`: the store's operations in a short-lived process, so the
    long-running daemon never imports dulwich (~15 MB) — see `knowngood_client`."""
    import base64
    import json
    import sys

    args = argv if argv is not None else sys.argv[1:]
    op, state_dir, payload = args[0], Path(args[1]), json.loads(args[2])
    try:
        store = KnownGoodStore(state_dir)  # creating it writes (a full disk is reported like any write)
        if op == "snapshot":
            files = {k: Path(v) for k, v in payload["files"].items()}
            snap = store.snapshot(
                payload["target"], files, payload["reason"], payload["health"], known_good=payload["known_good"]
            )
            result: object = snap.to_dict() if snap else None
        elif op == "known_good":
            kg = store.known_good(payload["target"])
            result = kg.to_dict() if kg else None
        elif op == "known_good_files":  # the snapshot and every file in it, in one process (the doctor's diff)
            kg = store.known_good(payload["target"])
            result = (
                {
                    "snapshot": kg.to_dict(),
                    "files": {
                        key: None
                        if (data := store.read(kg.target, key, kg.rev)) is None
                        else base64.b64encode(data).decode()
                        for key in kg.files
                    },
                }
                if kg
                else None
            )
        elif op == "latest":
            last = store.latest(payload["target"])
            result = last.to_dict() if last else None
        elif op == "read":
            data = store.read(payload["target"], payload["key"], payload["rev"])
            result = base64.b64encode(data).decode() if data is not None else None
        elif op == "restore":
            r = store.restore(payload["target"], payload["key"], Path(payload["dest"]), payload.get("rev"))
            result = {
                "key": r.key,
                "path": str(r.path),
                "rev": r.rev,
                "moved_aside": str(r.moved_aside) if r.moved_aside else None,
            }
        else:
            raise SystemExit(f"unknown operation {op!r}")
    except (NoKnownGood, UnknownRevision) as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        return 0
    except OSError as e:
        from clawmedic.store.health import is_write_failure

        if not is_write_failure(e):
            raise
        print(json.dumps({"error": "StateUnwritable", "message": e.strerror or str(e), "errno": e.errno}))
        return 0
    print(json.dumps({"result": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
