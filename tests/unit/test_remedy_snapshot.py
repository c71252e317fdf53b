"""A remedy that changes the config names the snapshot holding the config as it was before — also when that
config was already snapshotted (e.g. as known-good after boot), so no new snapshot is made."""

from __future__ import annotations

from pathlib import Path

from clawmedic.config import load_config
from clawmedic.doctor.remedies import RemedyContext, _snapshot
from clawmedic.knowngood_client import KnownGoodClient


def _ctx(tmp_path: Path) -> tuple[RemedyContext, Path]:
    home = tmp_path / "home"
    (home / ".openclaw").mkdir(parents=True)
    cfg = home / ".openclaw" / "openclaw.json"
    cfg.write_text('{"gateway": {"mode": "local"}, "channels": {"telegram": {"enabled": true}}}\n')
    toml = tmp_path / "clawmedic.toml"
    toml.write_text(
        f'[daemon]\nstate_dir = "state"\n\n[targets.gw]\nkind = "openclaw"\nport = 19999\nopenclaw_home = "{home}"\n'
        '[targets.gw.start]\nmode = "managed"\ncommand = ["true"]\n'
    )
    loaded = load_config(toml)
    return RemedyContext(loaded, "gw", KnownGoodClient(loaded.state_dir)), cfg


def test_a_config_already_snapshotted_is_named_by_that_snapshot(tmp_path: Path) -> None:
    ctx, cfg = _ctx(tmp_path)
    kg = ctx.known_good.snapshot("gw", {"openclaw.json": cfg}, "healthy after boot", "healthy", known_good=True)
    assert kg is not None
    before = _snapshot(ctx, "before disabling channel telegram")
    assert before == kg.rev, "nothing changed since the known-good snapshot: it holds the config as it is"
    assert ctx.known_good.read("gw", "openclaw.json", before) == cfg.read_bytes()


def test_a_changed_config_gets_a_new_snapshot(tmp_path: Path) -> None:
    ctx, cfg = _ctx(tmp_path)
    kg = ctx.known_good.snapshot("gw", {"openclaw.json": cfg}, "healthy after boot", "healthy", known_good=True)
    assert kg is not None
    cfg.write_text('{"gateway": {"mode": "local"}}\n')
    before = _snapshot(ctx, "before a change")
    assert before is not None and before != kg.rev
    assert ctx.known_good.read("gw", "openclaw.json", before) == cfg.read_bytes()


def test_a_first_snapshot_is_made_when_there_is_none(tmp_path: Path) -> None:
    ctx, cfg = _ctx(tmp_path)
    before = _snapshot(ctx, "before a change")
    assert before is not None
    assert ctx.known_good.read("gw", "openclaw.json", before) == cfg.read_bytes()
