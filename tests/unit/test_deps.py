"""Unit tests of dependency integrity (clawmedic.deps) on a small fake npm install built in tmp_path.

The fake install has the shape npm gives a prefix install: a root package.json naming openclaw, hoisted
packages (one scoped), a package with its own nested node_modules, a `.bin` symlink and `.package-lock.json`.
"""

from __future__ import annotations

import errno
import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from clawmedic import deps
from clawmedic.config import Config, DaemonConfig, LoadedConfig, StartConfig, TargetConfig
from clawmedic.errors import EnvironmentMissing

T = "gateway"


def write_package(folder: Path, name: str, version: str, files: dict[str, str], **extra: Any) -> None:
    folder.mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps({"name": name, "version": version, **extra}))
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


def make_install(prefix: Path, *, global_layout: bool = False) -> Path:
    """A fake install; returns its node_modules root."""
    nm = prefix / "node_modules" if not global_layout else prefix / "lib" / "node_modules"
    nm.mkdir(parents=True)
    required = {"foo": "^1.0.0", "@scope/bar": "^2.0.0", "baz": "^3.0.0"}
    write_package(nm / "openclaw", "openclaw", "1.0.0", {"openclaw.mjs": "//", "dist/a.js": "a"}, dependencies=required)
    (nm / "openclaw" / "openclaw.mjs").chmod(0o755)  # npm makes a bin executable
    deps_nm = nm / "openclaw" / "node_modules" if global_layout else nm
    if global_layout:
        write_package(nm / "unrelated", "unrelated", "9.9.9", {"index.js": "x"})  # another global tool
    else:
        (prefix / "package.json").write_text(json.dumps({"dependencies": {"openclaw": "1.0.0"}}))
        (nm / ".package-lock.json").write_text("{}")
    write_package(deps_nm / "foo", "foo", "1.0.0", {"index.js": "f", "lib/x.js": "x", "lib/y.js": "y", "bin.js": "b"})
    write_package(deps_nm / "@scope" / "bar", "@scope/bar", "2.0.0", {"index.js": "bar", "lib/util.js": "u"})
    write_package(deps_nm / "baz", "baz", "3.0.0", {"index.js": "baz"})
    write_package(deps_nm / "baz" / "node_modules" / "qux", "qux", "0.1.0", {"index.js": "q", "README.md": "r"})
    (deps_nm / ".bin").mkdir()
    (deps_nm / ".bin" / "foo").symlink_to("../foo/bin.js")
    return nm


def replace_file(path: Path, text: str) -> None:
    """Write a new file over `path` the way npm does (a new inode renamed over), never editing it in place:
    an in-place edit would change the pristine copy too, since both names are the same inode."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text)
    tmp.replace(path)


def make_loaded(tmp_path: Path, command: list[str], env: dict[str, str] | None = None) -> LoadedConfig:
    target = TargetConfig(port=18789, start=StartConfig(command=command, env=env or {}))
    config = Config(daemon=DaemonConfig(state_dir=tmp_path / "state"), targets={T: target})
    return LoadedConfig(config, tmp_path / "clawmedic.toml", {})


@pytest.fixture
def nm(tmp_path: Path) -> Path:
    return make_install(tmp_path / "install")


@pytest.fixture
def loaded(tmp_path: Path, nm: Path) -> LoadedConfig:
    entry = nm / "openclaw" / "openclaw.mjs"
    return make_loaded(tmp_path, ["node", str(entry), "gateway", "run"], env={"PATH": str(tmp_path / "empty-bin")})


def kinds(problems: list[deps.Problem]) -> dict[str, str]:
    return {p.path: p.kind for p in problems}


# --- locating ---------------------------------------------------------------------------------------------


def test_locate_from_the_entry_point_in_the_command(loaded: LoadedConfig, nm: Path) -> None:
    assert deps.locate(loaded.targets[T]) == nm.resolve()
    loc = deps.find_location(loaded.targets[T])
    assert loc is not None and loc.layout == "prefix"


def test_locate_through_an_openclaw_bin_symlink_on_path(tmp_path: Path, nm: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "openclaw").symlink_to(nm / "openclaw" / "openclaw.mjs")
    loaded = make_loaded(tmp_path, ["openclaw", "gateway", "run"], env={"PATH": str(bin_dir)})
    assert deps.locate(loaded.targets[T]) == nm.resolve()


def test_locate_uses_openclaw_command_first(tmp_path: Path, nm: Path) -> None:
    target = TargetConfig(
        port=1,
        start=StartConfig(command=["/bin/sh", "-c", "exec something"]),
        openclaw_command=["node", str(nm / "openclaw" / "openclaw.mjs")],
    )
    assert deps.locate(target) == nm.resolve()


def test_locate_finds_nothing_and_check_says_so_in_one_sentence(tmp_path: Path) -> None:
    loaded = make_loaded(tmp_path, ["/usr/bin/true", "gateway"])
    assert deps.locate(loaded.targets[T]) is None
    with pytest.raises(EnvironmentMissing, match="Cannot find the npm install of openclaw"):
        deps.check(loaded, T)


# --- the manifest and the pristine copy -------------------------------------------------------------------------


def test_record_writes_a_private_manifest_of_every_package(loaded: LoadedConfig, nm: Path) -> None:
    m = deps.record(loaded, T)
    path = deps.manifest_path(loaded, T)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["openclaw_version"] == "1.0.0"
    assert data["root"] == str(nm.resolve())
    assert data["required"] == {"foo": "^1.0.0", "@scope/bar": "^2.0.0", "baz": "^3.0.0"}
    assert data["packages"] == {
        "openclaw": {"name": "openclaw", "version": "1.0.0", "files": 3},
        "foo": {"name": "foo", "version": "1.0.0", "files": 5},
        "@scope/bar": {"name": "@scope/bar", "version": "2.0.0", "files": 3},
        "baz": {"name": "baz", "version": "3.0.0", "files": 2},  # its nested node_modules is not counted
        "baz/node_modules/qux": {"name": "qux", "version": "0.1.0", "files": 3},
    }
    assert data["package_count"] == 5
    assert deps.load_manifest(loaded, T) == m


def test_pristine_copy_shares_inodes_with_the_live_files(loaded: LoadedConfig, nm: Path) -> None:
    deps.record(loaded, T)
    pristine = deps.pristine_root(loaded, T)
    for rel in ("foo/lib/x.js", "@scope/bar/index.js", "baz/node_modules/qux/README.md", ".package-lock.json"):
        live, copy = nm / rel, pristine / rel
        assert live.stat().st_ino == copy.stat().st_ino, rel  # tmp_path holds both: one filesystem
        assert copy.read_bytes() == live.read_bytes()
    assert (pristine / ".bin" / "foo").is_symlink()
    assert (pristine / ".bin" / "foo").readlink() == Path("../foo/bin.js")
    assert stat.S_IMODE(deps.deps_dir(loaded, T).stat().st_mode) == 0o700


def test_record_is_idempotent_and_cheap_when_nothing_changed(loaded: LoadedConfig) -> None:
    first = deps.record(loaded, T)
    inode = (deps.pristine_root(loaded, T) / "foo").stat().st_ino
    again = deps.record(loaded, T)
    assert again == first  # same recorded_at: nothing was rescanned or relinked
    assert (deps.pristine_root(loaded, T) / "foo").stat().st_ino == inode


def test_record_keeps_the_baseline_when_the_install_is_damaged(loaded: LoadedConfig, nm: Path, tmp_path: Path) -> None:
    first = deps.record(loaded, T)
    (nm / "foo").rename(tmp_path / "foo-away")
    assert deps.record(loaded, T) == first
    assert (deps.pristine_root(loaded, T) / "foo" / "package.json").is_file()


def test_record_takes_a_new_baseline_when_packages_were_added_or_openclaw_upgraded(
    loaded: LoadedConfig, nm: Path
) -> None:
    first = deps.record(loaded, T)
    write_package(nm / "extra", "extra", "1.0.0", {"index.js": "e"})
    second = deps.record(loaded, T)
    assert "extra" in second.packages and second.recorded_at > first.recorded_at
    assert (deps.pristine_root(loaded, T) / "extra" / "index.js").is_file()
    pj = nm / "openclaw" / "package.json"
    replace_file(pj, pj.read_text().replace('"1.0.0"', '"2.0.0"', 1))
    third = deps.record(loaded, T)
    assert third.openclaw_version == "2.0.0"
    assert not [p for p in deps.pristine_root(loaded, T).parent.parent.iterdir() if ".staging-" in p.name]


def test_global_layout_records_only_openclaw_and_its_nested_dependencies(tmp_path: Path) -> None:
    nm = make_install(tmp_path / "prefix", global_layout=True)
    loaded = make_loaded(tmp_path, ["node", str(nm / "openclaw" / "openclaw.mjs"), "gateway"])
    loc = deps.find_location(loaded.targets[T])
    assert loc is not None and loc.layout == "global"
    m = deps.record(loaded, T)
    assert set(m.packages) == {
        "openclaw",
        "openclaw/node_modules/foo",
        "openclaw/node_modules/@scope/bar",
        "openclaw/node_modules/baz",
        "openclaw/node_modules/baz/node_modules/qux",
    }
    assert not (deps.pristine_root(loaded, T) / "unrelated").exists()
    (nm / "openclaw" / "node_modules" / "foo").rename(tmp_path / "foo-away")
    assert kinds(deps.check(loaded, T)) == {"openclaw/node_modules/foo": "missing"}
    report = deps.fix(loaded, T, allow_network=False)
    assert [(o.path, o.action, o.status) for o in report.outcomes] == [
        ("openclaw/node_modules/foo", "restored_from_pristine", "ok")
    ]
    assert deps.check(loaded, T) == []


# --- check ------------------------------------------------------------------------------------------------------------


def test_check_of_an_intact_install_is_empty(loaded: LoadedConfig) -> None:
    assert deps.check(loaded, T) == []  # no manifest yet: required deps only
    deps.record(loaded, T)
    assert deps.check(loaded, T) == []


def test_check_finds_removed_truncated_and_changed_packages(loaded: LoadedConfig, nm: Path, tmp_path: Path) -> None:
    deps.record(loaded, T)
    (nm / "foo").rename(tmp_path / "foo-away")  # removed
    (nm / "@scope" / "bar" / "index.js").unlink()  # truncated
    replace_file(nm / "baz" / "package.json", json.dumps({"name": "baz", "version": "3.1.0"}))  # another version
    replace_file(nm / "baz" / "node_modules" / "qux" / "package.json", "{not json")
    problems = deps.check(loaded, T)
    assert kinds(problems) == {
        "foo": "missing",
        "@scope/bar": "truncated",
        "baz": "version_changed",
        "baz/node_modules/qux": "bad_package_json",
    }
    by_path = {p.path: p for p in problems}
    assert by_path["foo"].expected_version == "1.0.0"
    assert "2 of its 3 files" in by_path["@scope/bar"].detail
    assert by_path["foo"].to_dict()["package"] == "foo"


def test_check_reports_nested_packages_once_under_a_missing_parent(
    loaded: LoadedConfig, nm: Path, tmp_path: Path
) -> None:
    deps.record(loaded, T)
    (nm / "baz").rename(tmp_path / "baz-away")
    assert kinds(deps.check(loaded, T)) == {"baz": "missing"}


def test_check_without_a_manifest_resolves_required_dependencies(
    loaded: LoadedConfig, nm: Path, tmp_path: Path
) -> None:
    (nm / "@scope" / "bar").rename(tmp_path / "bar-away")
    (nm / "baz" / "package.json").unlink()
    (nm / "foo" / "lib" / "x.js").unlink()  # not visible without a manifest
    problems = deps.check(loaded, T)
    assert kinds(problems) == {"@scope/bar": "missing", "baz": "no_package_json"}
    assert all(p.expected_version is None for p in problems)


def test_a_required_dependency_found_higher_up_resolves(loaded: LoadedConfig, nm: Path, tmp_path: Path) -> None:
    (nm / "foo").rename(tmp_path / "install" / "foo-away")
    outer = tmp_path / "node_modules" / "foo"  # Node's lookup walks up past the install
    write_package(outer, "foo", "1.0.0", {})
    assert deps.check(loaded, T) == []


def test_an_unreadable_manifest_is_one_sentence(loaded: LoadedConfig) -> None:
    deps.record(loaded, T)
    deps.manifest_path(loaded, T).write_text("{broken")
    with pytest.raises(EnvironmentMissing, match=r"manifest .* is unreadable"):
        deps.check(loaded, T)
    with pytest.raises(EnvironmentMissing):
        deps.fix(loaded, T)
    deps.record(loaded, T)  # record sets the bad one aside and takes a new baseline
    assert deps.check(loaded, T) == []
    assert [p for p in deps.deps_dir(loaded, T).iterdir() if p.name.startswith("manifest.json.broken-")]


def test_a_manifest_of_another_openclaw_version_is_not_used(loaded: LoadedConfig, nm: Path) -> None:
    deps.record(loaded, T)
    pj = nm / "openclaw" / "package.json"
    replace_file(pj, pj.read_text().replace('"1.0.0"', '"2.0.0"', 1))
    (nm / "foo" / "lib" / "x.js").unlink()  # would be "truncated" against the old baseline
    assert deps.check(loaded, T) == []


# --- fix ----------------------------------------------------------------------------------------------------


def test_fix_restores_from_pristine_and_moves_the_broken_folder_aside(
    loaded: LoadedConfig, nm: Path, tmp_path: Path
) -> None:
    deps.record(loaded, T)
    (nm / "foo").rename(tmp_path / "foo-away")
    (nm / "@scope" / "bar" / "index.js").unlink()
    (nm / "@scope" / "bar" / "lib" / "util.js").unlink()
    (nm / "@scope" / "bar" / "extra-note.txt").write_text("the user's")
    report = deps.fix(loaded, T)
    assert report.ok
    outcome = {o.path: o for o in report.outcomes}
    assert set(outcome) == {"foo", "@scope/bar"}
    assert all(o.action == "restored_from_pristine" and o.status == "ok" for o in report.outcomes)
    assert (nm / "foo" / "lib" / "y.js").read_text() == "y"
    assert (nm / "@scope" / "bar" / "index.js").read_text() == "bar"
    aside = [p for p in (nm / "@scope").iterdir() if p.name.startswith("bar.broken-")]
    assert len(aside) == 1
    assert (aside[0] / "extra-note.txt").read_text() == "the user's"  # kept, with its content
    assert json.loads((aside[0] / "package.json").read_text())["version"] == "2.0.0"
    assert f"now {aside[0]}" in outcome["@scope/bar"].detail
    assert deps.check(loaded, T) == []
    # the set-aside folder is not a package: a new record ignores it and check stays clean
    assert "@scope/bar.broken" not in " ".join(deps.record(loaded, T, force=True).packages)
    d = report.to_dict()
    assert d["ok"] is True and d["dry_run"] is False and len(d["outcomes"]) == 2  # type: ignore[arg-type]
    assert report.outcomes[0].to_dict() == {
        "package": "@scope/bar",
        "path": "@scope/bar",
        "problem": "truncated",
        "action": "restored_from_pristine",
        "status": "ok",
        "detail": outcome["@scope/bar"].detail,
    }


def test_fix_restores_a_changed_version_and_a_missing_nested_package(
    loaded: LoadedConfig, nm: Path, tmp_path: Path
) -> None:
    deps.record(loaded, T)
    replace_file(nm / "baz" / "package.json", json.dumps({"name": "baz", "version": "3.1.0"}))
    (nm / "foo" / "lib").rename(tmp_path / "lib-away")
    report = deps.fix(loaded, T)
    assert [(o.path, o.problem, o.status) for o in report.outcomes] == [
        ("baz", "version_changed", "ok"),
        ("foo", "truncated", "ok"),
    ]
    assert json.loads((nm / "baz" / "package.json").read_text())["version"] == "3.0.0"
    assert (nm / "baz" / "node_modules" / "qux" / "index.js").is_file()  # the nested package came back with it


def test_fix_is_idempotent(loaded: LoadedConfig, nm: Path, tmp_path: Path) -> None:
    deps.record(loaded, T)
    (nm / "foo").rename(tmp_path / "foo-away")
    assert deps.fix(loaded, T).outcomes
    second = deps.fix(loaded, T)
    assert second.outcomes == [] and second.ok


def test_fix_dry_run_changes_nothing(loaded: LoadedConfig, nm: Path, tmp_path: Path) -> None:
    deps.record(loaded, T)
    (nm / "foo").rename(tmp_path / "foo-away")
    (nm / "baz" / "index.js").unlink()
    before = sorted(str(p.relative_to(nm)) for p in nm.rglob("*"))
    report = deps.fix(loaded, T, dry_run=True)
    assert report.dry_run
    assert [(o.path, o.action, o.status) for o in report.outcomes] == [
        ("baz", "restored_from_pristine", "planned"),
        ("foo", "restored_from_pristine", "planned"),
    ]
    assert sorted(str(p.relative_to(nm)) for p in nm.rglob("*")) == before
    assert kinds(deps.check(loaded, T)) == {"baz": "truncated", "foo": "missing"}


def test_fix_without_pristine_or_network_fails_without_crashing(loaded: LoadedConfig, nm: Path, tmp_path: Path) -> None:
    (nm / "foo").rename(tmp_path / "foo-away")  # no record: nothing to restore from
    report = deps.fix(loaded, T, allow_network=False)
    assert [(o.path, o.action, o.status) for o in report.outcomes] == [("foo", "none", "failed")]
    assert not report.ok
    report = deps.fix(loaded, T)  # online, but PATH has no node and no npm
    assert [(o.action, o.status) for o in report.outcomes] == [("npm_install", "failed")]
    assert "no npm" in report.outcomes[0].detail


def test_fix_falls_back_to_npm_install_for_a_package_not_in_pristine(
    tmp_path: Path, nm: Path, loaded: LoadedConfig
) -> None:
    bin_dir = tmp_path / "npm-bin"
    bin_dir.mkdir()
    calls = tmp_path / "npm-calls.json"
    fake = bin_dir / "npm"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys\n"
        "args = sys.argv[1:]\n"
        f"pathlib.Path({str(calls)!r}).write_text(json.dumps(args))\n"
        "prefix = pathlib.Path(args[args.index('--prefix') + 1])\n"
        "for spec in [a for a in args[1:] if not a.startswith('-') and a != str(prefix)]:\n"
        "    name, _, version = spec.rpartition('@')\n"
        "    d = prefix / 'node_modules' / name\n"
        "    d.mkdir(parents=True)\n"
        "    (d / 'package.json').write_text(json.dumps({'name': name, 'version': version.lstrip('^')}))\n"
    )
    fake.chmod(0o755)
    online = make_loaded(tmp_path, loaded.targets[T].start.command or [], env={"PATH": str(bin_dir)})
    (nm / "@scope" / "bar").rename(tmp_path / "bar-away")
    plan = deps.fix(online, T, dry_run=True)
    assert [(o.action, o.status) for o in plan.outcomes] == [("npm_install", "planned")]
    assert not (nm / "@scope" / "bar").exists()
    report = deps.fix(online, T)
    assert [(o.package, o.action, o.status) for o in report.outcomes] == [("@scope/bar", "npm_install", "ok")]
    args = json.loads(calls.read_text())
    assert args[:2] == ["install", "@scope/bar@^2.0.0"]
    for flag in ("--ignore-scripts", "--no-audit", "--no-fund", "--no-save"):
        assert flag in args
    assert args[args.index("--prefix") + 1] == str(nm.parent)
    assert deps.check(online, T) == []


# --- the hard-link copy ----------------------------------------------------------------------------------------------


def test_link_tree_copies_across_filesystems(tmp_path: Path, nm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, target: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(Path, "hardlink_to", refuse)
    stats = deps.link_tree(nm, tmp_path / "copy")
    assert stats.linked == 0 and stats.copied > 0 and stats.copy_only
    assert (tmp_path / "copy" / "foo" / "lib" / "x.js").read_text() == "x"
    assert (tmp_path / "copy" / "foo" / "lib" / "x.js").stat().st_ino != (nm / "foo" / "lib" / "x.js").stat().st_ino
    assert (tmp_path / "copy" / ".bin" / "foo").is_symlink()


def test_link_tree_keeps_folder_modes_and_skips_set_aside_folders(tmp_path: Path, nm: Path) -> None:
    (nm / "foo" / "lib").chmod(0o555)
    (nm / "foo.broken-20260101T000000").mkdir()
    try:
        stats = deps.link_tree(nm, tmp_path / "copy")
        assert stat.S_IMODE((tmp_path / "copy" / "foo" / "lib").stat().st_mode) == 0o555
        assert (tmp_path / "copy" / "foo" / "lib" / "y.js").is_file()
        assert not (tmp_path / "copy" / "foo.broken-20260101T000000").exists()
        assert stats.linked > 0 and stats.symlinks == 1
    finally:
        (nm / "foo" / "lib").chmod(0o755)
        if (tmp_path / "copy" / "foo" / "lib").exists():
            (tmp_path / "copy" / "foo" / "lib").chmod(0o755)
