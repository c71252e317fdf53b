"""Promise: clawmedic never writes a secret anywhere.

One fake token of each common credential family is planted where a real one would be: in the supervised process's
output, in its `start.env` (literal values and "${NAME}"s from the env_file), in its liveness URL (userinfo password,
`?token=`), in the notification URL and as the LLM backend's key. The process crash-loops, so clawmedic opens an
incident, gives up, consults the (scripted) LLM doctor — which echoes tokens back in its diagnosis — and tells a
human through Apprise (`json://` to a loopback receiver). Then every file under the state folder (SQLite dumped with
`iterdump` and read raw), the daemon's log and every request body the receiver and the model server got are
grepped: zero hits of any planted token.

The one exception is `targets/<name>/output.log`: the child's stdout and stderr, written by the child itself through
the file descriptor clawmedic hands it (clawmedic never copies it; everything it reads from it is redacted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from clawmedic.cli_ops import plugins_for
from clawmedic.config import LoadedConfig, load_config
from clawmedic.daemon import Daemon
from clawmedic.logfiles import HANDLER_NAME, setup_file_logging
from tests.helpers.receivers import HttpReceiver
from tests.helpers.rig import Rig, StandinTarget, free_port, kill_leftovers, wait_for
from tests.helpers.scripted_llm import ScriptedLLM, call

pytestmark = [pytest.mark.timeout(180)]

# Fake tokens in each family's real shape. None of them is, or was ever, a live credential.
PEM_BODY = [
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    "QyNTUxOQAAACDx7Kq2Lr9Zm8pT3vWb5nY1cX0aQe4sRj6hFg2uIo8kMwAAAJgK3s7LCt7O",
]
ENV_TOKENS_FROM_FILE = "EnvFileOnlyZ9x8c7v6"  # only in the env_file (no "${NAME}" uses it) and in the output
OUTPUT_TOKENS = {
    "github classic": "ghp_R8aZ2kQ9mX4vB7nT1cY6pL3wE5sD0fGhJ2uI",
    "github oauth": "gho_16C7e42F292c6912E7710c838347Ae178B4a",
    "github app": "ghs_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hI6",
    "github fine-grained": "github_pat_11ABCDEFG0123456789abc_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoP",
    "slack user": "xoxp-1234567890123-1234567890123-1234567890123-0123456789abcdef0123456789abcdef",
    "aws access key id": "AKIAZ3MPLEQ7RT5WXY2B",
    "aws secret key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8WPLANTED",
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjbGF3bWVkaWMiLCJpYXQiOjE3OTYwMDAwMDB9."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "url password": "Pg5ecretOutPut9",
    "prose password": "hunter2-Plant3d!",
    "anthropic": "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGhIjKlMnOpQrStUvWx-AA",
    "openai": "sk-proj-PlantedOpenAiKey0123456789AbCdEfGhIjKlMn",
    "telegram": "7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawZ",
    "bearer": "b3arerT0kenPlanted.0123456789abcdef",
    "basic": "YWRtaW46UGxhbnRlZEJhc2ljUGFzcw==",
    **{f"private key line {i}": line for i, line in enumerate(PEM_BODY)},
}
CRASH_OUTPUT = f"""\
boot: using GitHub token {OUTPUT_TOKENS["github classic"]} (fallback {OUTPUT_TOKENS["github oauth"]})
app installation token {OUTPUT_TOKENS["github app"]}; fine-grained {OUTPUT_TOKENS["github fine-grained"]}
slack: posting with {OUTPUT_TOKENS["slack user"]}
aws: AWS_ACCESS_KEY_ID={OUTPUT_TOKENS["aws access key id"]} aws_secret_access_key={OUTPUT_TOKENS["aws secret key"]}
session cookie {OUTPUT_TOKENS["jwt"]}
db: connecting to postgres://app:{OUTPUT_TOKENS["url password"]}@db.internal:5432/app
admin login: password {OUTPUT_TOKENS["prose password"]}
anthropic key {OUTPUT_TOKENS["anthropic"]} rejected; openai key {OUTPUT_TOKENS["openai"]} rejected
plugins: notifier bot {OUTPUT_TOKENS["telegram"]} registered
> Authorization: Bearer {OUTPUT_TOKENS["bearer"]}
> authorization: Basic {OUTPUT_TOKENS["basic"]}
loaded deploy key:
-----BEGIN OPENSSH PRIVATE KEY-----
{PEM_BODY[0]}
{PEM_BODY[1]}
-----END OPENSSH PRIVATE KEY-----
cache: warmed with key {ENV_TOKENS_FROM_FILE}
fatal: upstream refused every credential, exiting
"""

# Planted through the config: values no pattern recognises, so only registration can mask them.
ENV_FILE = {"GH_TOKEN": "ghp_EnvFileGitHubTok3n0123456789abcdefAB", "HOOK_TOKEN": "hookTok3nWq8e1Rt5Yu7Io0Pa"}
ENV_TOKENS = {
    "start.env literal opaque": "q8ZrT4mW2xK9vB7nLp3s",
    "start.env literal named": "plainwordsecret",
    "start.env dsn password": "DsnPl4ntedPass",
    "env_file unreferenced": ENV_TOKENS_FROM_FILE,
}
URL_TOKENS = {"liveness userinfo password": "L1veProbePass", "liveness ?token=": "L1veT0kenValue42"}
LLM_KEY = "sk-proj-LlmBackendKeyPlanted0123456789AbCdEf"
ALL_TOKENS = {
    **OUTPUT_TOKENS,
    **{f"env_file {k}": v for k, v in ENV_FILE.items()},
    **ENV_TOKENS,
    **URL_TOKENS,
    "llm api key": LLM_KEY,
}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        with contextlib.suppress(Exception):
            kill_leftovers(r.load())
        r.cleanup()


def write_config(rig: Rig, hook: HttpReceiver, llm: ScriptedLLM) -> LoadedConfig:
    crash_file = rig.tmp_path / "crash-output.txt"
    crash_file.write_text(CRASH_OUTPUT)
    port = free_port()
    live = URL_TOKENS
    target = StandinTarget(
        port=port,
        args=[
            "--crash-file",
            str(crash_file),
            *[a for n in ("OPAQUE_VALUE", "API_PASSWORD", "DATABASE_URL", "GITHUB_TOKEN") for a in ("--print-env", n)],
        ],
        env={
            "OPAQUE_VALUE": ENV_TOKENS["start.env literal opaque"],
            "API_PASSWORD": ENV_TOKENS["start.env literal named"],
            "DATABASE_URL": f"postgres://svc:{ENV_TOKENS['start.env dsn password']}@db.internal:5432/svc",
            "GITHUB_TOKEN": "${GH_TOKEN}",
            "DEBUG": "1",
        },
        liveness={
            "url": f"http://probe:{live['liveness userinfo password']}@127.0.0.1:{port}/health?token="
            f"{live['liveness ?token=']}&verbose=1"
        },
    )
    env_file = {**ENV_FILE, "UNUSED_CREDENTIAL": ENV_TOKENS["env_file unreferenced"]}
    notify = {"urls": [hook.url("/hooks/${HOOK_TOKEN}")], "group_wait_s": 1.0, "retry_initial_s": 0.3}
    llm_cfg = {
        "backend": "openai",
        "model": "scripted",
        "base_url": llm.url,
        "api_key_env": "CLAWMEDIC_TEST_LLM_KEY",
        "tool_output_max_chars": 20000,  # the whole log tail reaches the model: every planted line
    }
    rig.write_config(target, env_file=env_file, daemon={"notify": notify, "doctor": {"llm": llm_cfg}})
    return load_config(rig.config_path)


def written_texts(state_dir: Path) -> dict[str, str]:
    """Every file clawmedic wrote under the state folder, as text (SQLite databases also dumped), by path."""
    texts: dict[str, str] = {}
    for path in sorted(p for p in state_dir.rglob("*") if p.is_file()):
        if path.parent.parent.name == "targets" and path.name.startswith("output.log"):
            continue  # the child's own output (see the module docstring)
        texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
        if path.suffix == ".sqlite":
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                texts[f"{path} (dump)"] = "\n".join(con.iterdump())
            finally:
                con.close()
    return texts


def leaks(texts: dict[str, str], tokens: dict[str, str] = ALL_TOKENS) -> list[str]:
    return [f"{family} in {where}" for where, text in texts.items() for family, t in tokens.items() if t in text]


def test_no_planted_token_reaches_any_file_message_or_model_request(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAWMEDIC_TEST_LLM_KEY", LLM_KEY)
    echo = f"the upstream refused {OUTPUT_TOKENS['github classic']} and {ENV_TOKENS['start.env literal opaque']}"
    script = [call("log_tail", lines=40), call("finish", diagnosis=echo, fault="other")]
    with HttpReceiver() as hook, ScriptedLLM(script) as llm:
        loaded = write_config(rig, hook, llm)
        log = logging.getLogger("clawmedic")
        log_path = setup_file_logging(loaded)
        assert log_path is not None

        async def scenario() -> None:
            d = Daemon(loaded, plugins=plugins_for(loaded))
            task = asyncio.get_running_loop().create_task(d.run())
            try:
                await wait_for(lambda: rig.events("gave_up"), 60, what="gave_up", describe=rig.describe, watch=task)
                await wait_for(lambda: llm.requests, 30, what="an LLM request", describe=rig.describe, watch=task)
                reports = rig.state_dir / "reports"
                await wait_for(lambda: list(reports.glob("incident-*.md")), 60, what="the doctor's report", watch=task)
                await wait_for(hook.items, 30, what="a notification", describe=rig.describe, watch=task)
                try:  # an exception whose text quotes secrets, logged as the daemon's plugins do
                    raise RuntimeError(f"cannot reach {loaded.targets['svc'].liveness.url} with {LLM_KEY}")
                except RuntimeError:
                    log.exception("probe setup failed")
            finally:
                d.request_stop()
                try:
                    await asyncio.wait_for(task, 30)
                finally:
                    kill_leftovers(loaded)

        try:
            asyncio.run(scenario())
        finally:
            for h in list(log.handlers):
                if h.get_name() == HANDLER_NAME:
                    log.removeHandler(h)
                    h.close()

    # The tokens were really planted: the child printed them (its own output log) ...
    output = (rig.state_dir / "targets" / "svc" / "output.log").read_text()
    for family, token in {**OUTPUT_TOKENS, **ENV_TOKENS}.items():
        assert token in output, f"{family} was not planted"
    # ... the model was consulted and a human was told.
    assert len(llm.requests) >= 2 and hook.items()

    texts = written_texts(rig.state_dir)
    texts[str(log_path)] = log_path.read_text()
    assert "probe setup failed" in texts[str(log_path)] and "RuntimeError" in texts[str(log_path)]
    assert any(p.endswith("status.json") for p in texts) and any(p.endswith(".md") for p in texts)
    for i, raw in enumerate(llm.raw):
        texts[f"LLM request {i}"] = raw.decode("utf-8", "replace")
    for i, r in enumerate(hook.items()):
        texts[f"notification {i}"] = r.text
    assert leaks(texts) == []
    # ... and what carried them did arrive, masked: the model saw the output and the env, the human the tail.
    sent = "\n".join(r.decode("utf-8", "replace") for r in llm.raw)
    assert "ghp_***" in sent and "env OPAQUE_VALUE: ***" in sent and "postgres://svc:***@db.internal" in sent
    assert "aws_secret_access_key=***" in "\n".join(r.text for r in hook.items())


def test_a_secret_in_the_start_command_stays_out_of_the_process_record(rig: Rig) -> None:
    """`start.command` may carry a "${NAME}": the child gets it resolved, `process.json` (written while the child
    runs, for adoption after a daemon restart) and the events get it masked."""
    cmd_token = "ghp_CommandLineTok3n0123456789abcdefABCD"
    rig.write_config(StandinTarget(args=["--tag", "${CMD_TOKEN}"]), env_file={"CMD_TOKEN": cmd_token})

    async def scenario() -> None:
        async with rig.daemon():
            await rig.wait_state("healthy")
            record = rig.state_dir / "targets" / "svc" / "process.json"
            pid = json.loads(record.read_text())["pid"]
            assert cmd_token in psutil.Process(pid).cmdline()  # the child did get the secret
            assert leaks(written_texts(rig.state_dir), {"command": cmd_token}) == []

    asyncio.run(scenario())
    assert (rig.state_dir / "targets" / "svc" / "process.json").exists()  # kept for adoption: the child runs on
    assert leaks(written_texts(rig.state_dir), {"command": cmd_token}) == []
