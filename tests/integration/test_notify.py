"""Tier 4 for real: the daemon (in-process, `Daemon(..., plugins=plugins_for(loaded))`) supervises a stand-in that
exits 78 (config invalid: escalated, then gave up), and the notifier delivers through Apprise to REAL receivers on
loopback started here: an SMTP server (aiosmtpd) for `mailto://`, an HTTP receiver for `json://`, and a
Discord-style webhook receiver.

Apprise's `discord://` scheme always posts to discord.com and cannot be pointed at loopback, so the Discord-style
receiver is reached with Apprise's `json://` scheme, remapped to Discord's payload (`:message=content`, the other
fields dropped, `:username=clawmedic`) on a path shaped like Discord's (`/api/webhooks/ID/TOKEN`); the receiver
answers like Discord (204, or 400 for a payload Discord would refuse). The webhook token is a "${HOOK_TOKEN}" secret.

A planted secret — an env-file value the target gets through `start.env` and prints into its output log (and into
its exit message) — must never arrive in any message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from clawmedic import control
from clawmedic.cli_ops import plugins_for
from clawmedic.config import LoadedConfig, load_config
from clawmedic.daemon import Daemon
from clawmedic.notify import Notifier, Outbox, queue_path
from tests.helpers.receivers import HttpReceiver, Received, SmtpReceiver
from tests.helpers.rig import Rig, StandinTarget, free_port, holds, kill_leftovers, wait_for

pytestmark = [pytest.mark.timeout(120)]

SECRET = "plantedQ7v9x2LmZ4r8T"  # looks like no known token pattern: only value-based redaction can catch it
HOOK_TOKEN = "hookTok3nWq8e1Rt5Yu7Io0Pa"
CLAWMEDIC_OPS = [sys.executable, "-c", "import clawmedic.cli_ops, clawmedic.cli as c; c.main()"]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        with contextlib.suppress(Exception):
            kill_leftovers(r.load())  # commands with resolved secrets: matched as the daemon ran them
        r.cleanup()


def discord_url(hook: HttpReceiver) -> str:
    remap = ":message=content&:title=&:version=&:attachments=&:type=&:username=clawmedic"
    return hook.url("/api/webhooks/123456789/${HOOK_TOKEN}?" + remap)


def write_config(rig: Rig, urls: list[str], exit_file: Path, **notify: Any) -> Path:
    target = StandinTarget(
        args=[
            "--exit-file",
            str(exit_file),
            "--exit-code",
            "78",
            "--print-env",
            "UPSTREAM_CRED",
            "--print",
            "upstream rejected the credential ${TOKEN} (config invalid)",
        ],
        env={"UPSTREAM_CRED": "${TOKEN}"},
    )
    # the escalation waits this long for the doctor's verdict, so one message carries both: on 2 cores at load 10 the
    # doctor takes seconds (its what-changed collector reads the known-good store in a child process)
    settings = {"urls": urls, "group_wait_s": 10.0, "retry_initial_s": 0.3, "retry_max_s": 1.0, **notify}
    return rig.write_config(target, env_file={"TOKEN": SECRET, "HOOK_TOKEN": HOOK_TOKEN}, daemon={"notify": settings})


def write(rig: Rig, urls: list[str], exit_file: Path, **notify: Any) -> LoadedConfig:
    return load_config(write_config(rig, urls, exit_file, **notify))


@contextlib.asynccontextmanager
async def daemon(loaded: LoadedConfig) -> AsyncIterator[asyncio.Task[None]]:
    """The daemon with the plugins its config asks for; always stopped, its children killed by PID."""
    d = Daemon(loaded, plugins=plugins_for(loaded))
    task = asyncio.get_running_loop().create_task(d.run())
    try:
        yield task
    finally:
        d.request_stop()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            kill_leftovers(loaded)


async def wait_event(rig: Rig, task: asyncio.Task[None], kind: str, count: int = 1, **fields: Any) -> dict[str, Any]:
    def found() -> list[dict[str, Any]] | None:
        evs = [e for e in rig.events(kind) if all(e.get(k) == v for k, v in fields.items())]
        return evs if len(evs) >= count else None

    evs = await wait_for(found, 40, what=f"{count} {kind!r} event(s)", describe=rig.describe, watch=task)
    return evs[-1]


async def until(predicate: Any, what: str, timeout: float = 20.0) -> Any:
    return await wait_for(predicate, timeout, what=what)


def assert_no_secret(texts: list[str]) -> None:
    for t in texts:
        assert SECRET not in t, t
        assert HOOK_TOKEN not in t, t


def json_message(r: Received) -> str:
    data = r.json()
    return f"{data.get('title', '')}\n{data.get('message', data.get('content', ''))}"


async def escalate(rig: Rig, task: asyncio.Task[None], exit_file: Path, count: int) -> dict[str, Any]:
    """Make the stand-in exit 78 and wait for the `count`-th `gave_up` event."""
    exit_file.touch()
    return await wait_event(rig, task, "gave_up", count)


def test_gave_up_is_told_once_per_channel_with_the_story_then_recovered(rig: Rig) -> None:
    exit_file = rig.tmp_path / "exit-now"
    with SmtpReceiver() as mail, HttpReceiver() as hook, HttpReceiver(discord=True) as discord:
        urls = [mail.mailto_url(), hook.url("/hooks/clawmedic"), discord_url(discord)]
        loaded = write(rig, urls, exit_file)

        async def scenario() -> None:
            async with daemon(loaded) as task:
                await wait_event(rig, task, "state", new="healthy")
                gave_up = await escalate(rig, task, exit_file, 1)
                incident = gave_up["incident"]
                await until(lambda: len(mail.items()) >= 1 and hook.items() and discord.items(), "the first message")

                # The same incident escalates (and gives up) again after a `resume`: nobody is told twice.
                exit_file.touch()
                control.resume(rig.state_dir, ["svc"])
                second = await wait_event(rig, task, "gave_up", 2)
                assert second["incident"] == incident
                await holds(lambda: len(mail.items()) == len(hook.items()) == len(discord.items()) == 1, 2.0)

                control.resume(rig.state_dir, ["svc"])  # fixed (no exit file): the stand-in stays up
                await wait_event(rig, task, "incident_closed", incident=incident, outcome="recovered")
                await until(
                    lambda: len(mail.items()) >= 2 and len(hook.items()) >= 2 and len(discord.items()) >= 2, "recovered"
                )
                await holds(lambda: len(mail.items()) == len(hook.items()) == len(discord.items()) == 2, 1.0)

        asyncio.run(scenario())

        inc = next(e["incident"] for e in rig.events("gave_up"))
        mails, hooks, discords = mail.items(), hook.items(), discord.items()
        assert not discord.rejected, [r.text for r in discord.rejected]
        down_texts = [f"{mails[0].subject}\n{mails[0].body}", json_message(hooks[0]), discords[0].json()["content"]]
        for text in down_texts:
            assert "svc is down and clawmedic gave up: a human is needed" in text  # the summary
            assert f"incident #{inc}" in text
            assert "reason: " in text and "78" in text  # why it escalated: exit 78
            assert "diagnosis: " in text and "needs a human" in text  # the doctor's verdict
            assert "last " in text and "output.log" in text  # a log tail …
            assert "listening on 127.0.0.1" in text  # … with the gateway's own lines
            assert "env UPSTREAM_CRED: ***" in text  # … redacted
            assert f"clawmedic incidents show {inc} --report --config {loaded.source}" in text  # the full report
        up_texts = [f"{mails[1].subject}\n{mails[1].body}", json_message(hooks[1]), discords[1].json()["content"]]
        for text in up_texts:
            assert f"svc recovered (incident #{inc})." in text
            assert "live again" in text
        assert mails[0].subject == f"clawmedic: svc is down — a human is needed (incident #{inc})"
        assert hooks[0].json()["type"] == "failure" and hooks[1].json()["type"] == "success"
        assert set(discords[0].json()) == {"content", "username"}  # Discord's shape
        assert all(r.path.startswith(f"/api/webhooks/123456789/{HOOK_TOKEN}") for r in discords)  # resolved secret

        # The planted secrets never arrive, anywhere: raw bytes (headers, encodings) and decoded text.
        assert_no_secret([m.raw.decode("utf-8", "replace") for m in mails] + [m.body for m in mails])
        assert_no_secret([r.text for r in hooks + discords])
        output_log = (rig.state_dir / "targets" / "svc" / "output.log").read_text()
        assert SECRET in output_log  # it was really planted where the tail is read from
        queue = queue_path(rig.state_dir)
        assert SECRET.encode() not in queue.read_bytes() and HOOK_TOKEN.encode() not in queue.read_bytes()
        assert queue.stat().st_mode & 0o777 == 0o600


def test_a_reminder_comes_after_the_repeat_interval_while_still_down_and_stops_on_recovery(rig: Rig) -> None:
    exit_file = rig.tmp_path / "exit-now"
    with HttpReceiver() as hook:
        # a group wait longer than the doctor takes on a loaded machine: the first message is the verdict
        loaded = write(rig, [hook.url("/hooks/clawmedic")], exit_file, repeat_interval_s=1.5, group_wait_s=10.0)

        async def scenario() -> None:
            async with daemon(loaded) as task:
                await wait_event(rig, task, "state", new="healthy")
                await escalate(rig, task, exit_file, 1)
                await until(lambda: len(hook.items()) >= 3, "the first message and two reminders", 15)
                control.resume(rig.state_dir, ["svc"])
                await wait_event(rig, task, "incident_closed", outcome="recovered")
                await until(lambda: any("recovered" in json_message(r) for r in hook.items()), "recovered")
                settled = len(hook.items())
                await holds(lambda: len(hook.items()) == settled, 3.5, what="no reminder after recovery")

        asyncio.run(scenario())
        items = hook.items()
        titles = [r.json()["title"] for r in items]
        assert "is down" in titles[0]
        assert "still down" in titles[1] and "still down" in titles[2]
        assert "reminder 1" in json_message(items[1]) and "reminder 2" in json_message(items[2])
        gaps = [b.at - a.at for a, b in itertools.pairwise(items[:3])]
        assert all(g >= 1.2 for g in gaps), gaps  # not before the interval (tick and delivery add a little)
        assert [i for i, t in enumerate(titles) if "recovered" in t] == [len(titles) - 1]  # once, and last


def test_a_receiver_that_is_down_gets_the_queued_message_once_it_is_back(rig: Rig) -> None:
    exit_file = rig.tmp_path / "exit-now"
    port = free_port()  # nothing listens there yet: connections are refused
    hook = HttpReceiver(port)
    # a group wait longer than the doctor takes on a loaded machine: one message (the verdict), not two
    loaded = write(rig, [hook.url("/hooks/clawmedic")], exit_file, group_wait_s=10.0)

    def queued() -> list[Any]:
        outbox = Outbox(queue_path(rig.state_dir))
        try:
            return outbox.all()
        finally:
            outbox.close()

    async def scenario() -> None:
        async with daemon(loaded) as task:
            await wait_event(rig, task, "state", new="healthy")
            await escalate(rig, task, exit_file, 1)
            rows = await until(lambda: [r for r in queued() if r.attempts >= 2], "two failed attempts on disk")
            assert rows[0].status == "pending" and rows[0].last_error
            assert not task.done()  # the daemon goes on
            hook.start()  # the receiver is back
            await until(lambda: hook.items(), "the queued message delivered")
            await until(lambda: all(r.status == "sent" for r in queued()), "the queue emptied")

    try:
        asyncio.run(scenario())
    finally:
        hook.stop()
    assert len(hook.items()) == 1
    assert "a human is needed" in json_message(hook.items()[0])


def test_the_queue_survives_a_daemon_restart(rig: Rig) -> None:
    exit_file = rig.tmp_path / "exit-now"
    hook = HttpReceiver(free_port())
    loaded = write(rig, [hook.url("/hooks/clawmedic")], exit_file)

    def pending() -> int:
        outbox = Outbox(queue_path(rig.state_dir))
        try:
            return len(outbox.all("pending"))
        finally:
            outbox.close()

    async def first_run() -> None:
        async with daemon(loaded) as task:
            await wait_event(rig, task, "state", new="healthy")
            await escalate(rig, task, exit_file, 1)
            await until(lambda: pending() == 1, "the message queued on disk")

    async def second_run() -> None:
        async with daemon(load_config(rig.config_path)) as task:
            await until(lambda: hook.items(), "the message from the previous run delivered")
            await holds(lambda: len(hook.items()) == 1, 1.0)
            assert not task.done()

    try:
        asyncio.run(first_run())
        assert pending() == 1 and not hook.items()
        hook.start()
        asyncio.run(second_run())
    finally:
        hook.stop()
    assert pending() == 0
    assert "a human is needed" in json_message(hook.items()[0])


def test_notify_test_reaches_each_url_and_names_the_bad_ones(rig: Rig, tmp_path: Path) -> None:
    exit_file = rig.tmp_path / "exit-now"
    with HttpReceiver() as hook, HttpReceiver(discord=True) as discord:
        write(rig, [hook.url("/hooks/t"), discord_url(discord)], exit_file)
        done = subprocess.run(
            [*CLAWMEDIC_OPS, "notify", "test", "--config", str(rig.config_path), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "test message" in hook.wait_for(1)[0].json()["title"]
        assert "test message from clawmedic" in discord.wait_for(1)[0].json()["content"]
        assert HOOK_TOKEN not in done.stdout + done.stderr

    # The receivers are gone: delivery fails, exit 1.
    down = subprocess.run(
        [*CLAWMEDIC_OPS, "notify", "test", "--config", str(rig.config_path)], capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 1, down.stdout + down.stderr
    assert HOOK_TOKEN not in down.stdout + down.stderr

    # A scheme Apprise does not know: exit 2, one sentence naming the key.
    write(rig, ["json://127.0.0.1:9/ok", "nosuchscheme://x/y"], exit_file)
    bad = subprocess.run(
        [*CLAWMEDIC_OPS, "notify", "test", "--config", str(rig.config_path)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "daemon.notify.urls[1]" in bad.stderr and "Traceback" not in bad.stderr


def test_a_missing_secret_in_a_notify_url_is_a_config_error(rig: Rig) -> None:
    exit_file = rig.tmp_path / "exit-now"
    write_config(rig, ["json://127.0.0.1:9/${NOT_SET_ANYWHERE}"], exit_file)
    done = subprocess.run(
        [*CLAWMEDIC_OPS, "notify", "test", "--config", str(rig.config_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "daemon.notify.urls[0] refers to ${NOT_SET_ANYWHERE}" in done.stderr


def test_a_notifier_never_stops_the_daemon_when_apprise_raises(rig: Rig) -> None:
    """A sender that raises (a broken plugin) is caught: the message stays queued, the daemon keeps supervising."""
    exit_file = rig.tmp_path / "exit-now"
    loaded = write(rig, ["json://127.0.0.1:9/x"], exit_file)

    class Exploding:
        calls = 0

        def send(self, url: str, title: str, body: str, notify_type: str) -> tuple[bool, str]:
            self.calls += 1
            raise RuntimeError("a plugin blew up")

    sender = Exploding()

    async def scenario() -> None:
        notifier = Notifier(loaded, sender=sender)
        d = Daemon(loaded, plugins=[notifier])
        task = asyncio.get_running_loop().create_task(d.run())
        try:
            await wait_event(rig, task, "state", new="healthy")
            await escalate(rig, task, exit_file, 1)
            await until(lambda: sender.calls >= 2, "two delivery attempts")
            control.resume(rig.state_dir, ["svc"])
            await wait_event(rig, task, "incident_closed", outcome="recovered")
            assert not task.done()
        finally:
            d.request_stop()
            await asyncio.wait_for(task, 30)
            kill_leftovers(loaded)

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 60
