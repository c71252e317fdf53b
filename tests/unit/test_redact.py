"""Secrets that clawmedic was not told about are still masked when they look like one."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading

import pytest
from rich.console import Console
from rich.logging import RichHandler

from clawmedic.logs import JsonFormatter, RedactFilter, install_excepthooks, setup_logging
from clawmedic.redact import MASK, Redactor

BOT_TOKEN = "1234567890:AAHfakeFAKEfake_fake-FAKEfakeFAKEfa"


def test_a_telegram_bot_token_is_masked_wherever_it_appears() -> None:
    r = Redactor()
    url = f"request to https://api.telegram.org/bot{BOT_TOKEN}/getMe failed, reason: getaddrinfo EAI_AGAIN"
    assert BOT_TOKEN not in r.text(url)
    assert r.text(url) == f"request to https://api.telegram.org/bot{MASK}/getMe failed, reason: getaddrinfo EAI_AGAIN"
    assert BOT_TOKEN not in str(r.data({"lastError": [f"token {BOT_TOKEN}", BOT_TOKEN]}))


def test_times_ports_and_ids_are_not_taken_for_bot_tokens() -> None:
    r = Redactor()
    for text in ("at 12:30:45 on 127.0.0.1:19185", "job 1796000743:done", "agent:main:main", "ts 1796000743.2"):
        assert r.text(text) == text


# --- one row per credential family: the secret part is masked, and nothing else is changed -----------------------
# Fake tokens in each family's real shape (lengths and alphabets as the issuers document them).
GH_CLASSIC = "ghp_" + "R8aZ2kQ9mX4vB7nT1cY6pL3wE5sD0fGhJ2uI"
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDx7Kq2Lr9Zm8pT3vWb5nY1cX0aQe4sRj6hFg2uIo8kMwAAAJgK3s7LCt7O\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
FAMILIES = [
    # (family, text, expected)
    ("github classic", f"push failed: {GH_CLASSIC}", "push failed: ghp_***"),
    ("github oauth", "gho_16C7e42F292c6912E7710c838347Ae178B4a used", "gho_*** used"),
    ("github app user", "ghu_wJ3kL9mN2pQ5rS8tV1xY4zA7bC0dE3fG6hI9 x", "ghu_*** x"),
    ("github app server", "GH_TOKEN=ghs_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hI6", "GH_TOKEN=***"),
    ("github refresh", "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E1ccbF66C46812d16D5B1A9Dc86A1498", "ghr_***"),
    (
        "github fine-grained",
        "github_pat_11ABCDEFG0123456789abc_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPqRs0 ok",
        "github_pat_*** ok",
    ),
    ("slack bot", "token xoxb-1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "token xoxb-***"),
    ("slack user", "xoxp-1234567890123-1234567890123-1234567890123-0123456789abcdef0123456789abcdef", "xoxp-***"),
    ("aws access key id", "key id AKIAIOSFODNN7EXAMPLE in ~/.aws", "key id AKIA*** in ~/.aws"),
    ("aws temporary key id", "ASIAY34FZKBOKMUTVV7A expired", "ASIA*** expired"),
    (
        "aws secret key",
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY region=eu",
        "aws_secret_access_key=*** region=eu",
    ),
    (
        "jwt",
        "session eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U!",
        "session ***!",
    ),
    (
        "url userinfo",
        "connect postgres://app:Pg5ecr3t@db.internal:5432/app failed",
        "connect postgres://app:***@db.internal:5432/app failed",
    ),
    ("url userinfo with @", "redis://:p@ss:w0rd@cache:6379/0", "redis://:***@cache:6379/0"),
    (
        "url token param",
        "GET http://127.0.0.1:9/health?token=Zm9vYmFy&x=1",
        "GET http://127.0.0.1:9/health?token=***&x=1",
    ),
    ("url key and sig params", "https://h/x?key=abcdef123&sig=Q1w2E3r4", "https://h/x?key=***&sig=***"),
    ("url api_key param", "https://h/x?a=1&api_key=s3cr3tv4lue", "https://h/x?a=1&api_key=***"),
    ("prose password", "login with password hunter2 now", "login with password *** now"),
    ("prose passphrase is", "the passphrase is correcthorsebatterystaple.", "the passphrase is ***"),
    ("prose quoted password", "use password 'Tr0ub4dor &3' here", "use password *** here"),
    ("anthropic", "x-api-key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGhIj-AA", "x-api-key sk-ant-***"),
    ("openai project", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789aBcD rejected", "sk-proj-*** rejected"),
    ("openai legacy", "OPENAI key sk-AbCdEfGhIjKlMnOpQrStT3BlbkFJAbCdEfGhIjKlMnOpQrSt", "OPENAI key sk-***"),
    ("telegram", f"bot{BOT_TOKEN}/getMe", f"bot{MASK}/getMe"),
    ("bearer", "Authorization: Bearer abc.def-123_456", "Authorization: Bearer ***"),
    ("basic", "authorization: Basic dXNlcjpwYXNzd29yZA==", "authorization: Basic ***"),
    ("bearer in prose", "sent bearer 9f8e7d6c5b4a3f2e1d0c to the API", "sent bearer *** to the API"),
    ("json api key", '{"apiKey": "AIzaSyA-1234567890abcdefgh", "n": 1}', '{"apiKey": "***", "n": 1}'),
    ("camelCase secret", "clientSecret=Zq8wX2c4V6b8N0m2", "clientSecret=***"),
    (
        "pem block",
        f"key:\n{PEM}\nthen",
        "key:\n-----BEGIN OPENSSH PRIVATE KEY-----***-----END OPENSSH PRIVATE KEY-----\nthen",
    ),
    ("pem block cut short", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow", "-----BEGIN RSA PRIVATE KEY-----***"),
    ("pem body line alone", PEM.splitlines()[1], MASK),
]


@pytest.mark.parametrize(("family", "text", "expected"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_credential_family_is_masked(family: str, text: str, expected: str) -> None:
    assert Redactor().text(text) == expected, family
    assert Redactor().text(expected) == expected, "masking twice changes nothing (text is often redacted again)"


ORDINARY = [
    "commit 3f2a9c1e0b7d4a5f6e8c9b0a1d2e3f4a5b6c7d8e on main",  # a git sha
    "request 123e4567-e89b-12d3-a456-426614174000 done",  # a UUID
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # a digest
    "password reset email sent to the user",
    "the password is wrong (attempt 3 of 5)",
    "password for bob changed",
    "gateway.auth.mode is password but no password is configured",  # OpenClaw's own refusal, quoted in reports
    "the password is pending rotation",
    "token expired, refreshing",
    "Basic configuration loaded",
    "max_tokens=300 temperature=0.2",
    "api_key_env = OPENAI_API_KEY",
    "listening on ws://127.0.0.1:18789 at 12:30:45 (PID 41822)",
    "http://127.0.0.1:18789/health?verbose=1&page=2",
    "skip sk-short and task-runner-0123456789abcdef",
    "ASIAN markets; AKIA short",
    "user@example.com wrote https://example.com/a@b",
    "a publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor().text(text) == text


def test_configured_values_are_masked_but_short_and_ordinary_ones_are_not() -> None:
    r = Redactor(["plantedQ7v9x2LmZ4r8T", "1", "true", "abc"])
    r.add_guessed("DEBUG", "1")
    r.add_guessed("MODE", "production")
    r.add_guessed("HOME", "/home/someone/with-a-long-path-9")
    r.add_guessed("UPSTREAM_TOKEN", "hunter")  # the name says secret
    r.add_guessed("OPAQUE", "q8ZrT4mW2xK9vB7n")  # random-looking
    r.add_guessed("GREETING", "hello world")
    r.add_guessed("DB_PASSWORD", "correct horse battery")  # a named secret may hold spaces
    r.add_guessed("MONKEY_MODE", "enabled")  # "KEY" inside a word does not make it a secret
    r.add_guessed("SESSION_TTL", "3600")
    r.add_url("http://probe:Liv3Pass@127.0.0.1:9/health?token=t0k3n&verbose=1")
    text = (
        "plantedQ7v9x2LmZ4r8T 1 true abc production /home/someone/with-a-long-path-9 hunter q8ZrT4mW2xK9vB7n hello "
        "world Liv3Pass t0k3n verbose correct horse battery enabled 3600"
    )
    kept = "*** 1 true abc production /home/someone/with-a-long-path-9 *** *** hello world *** *** verbose"
    kept += " *** enabled 3600"
    assert r.text(text) == kept


def test_apprise_urls_give_their_tokens() -> None:
    r = Redactor()
    r.add_url("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/987654/", apprise=True)
    r.add_url("json://127.0.0.1:9/hooks/hookTok3nWq8e1Rt5Yu7Io0Pa", apprise=True)
    r.add_url("mailtos://alerts:SmtpPa55word@mail.example.com?to=oncall-team@example.com", apprise=True)
    out = r.text("tgram 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw, json /hooks/hookTok3nWq8e1Rt5Yu7Io0Pa")
    assert "AAHdqTcv" not in out and "hookTok3n" not in out
    assert r.text("sent to oncall-team@example.com with SmtpPa55word") == "sent to oncall-team@example.com with ***"


def _log_through(handler: logging.Handler, redactor: Redactor) -> None:
    handler.addFilter(RedactFilter(redactor))
    log = logging.getLogger("clawmedic.test-redact")
    log.propagate = False
    log.addHandler(handler)
    try:
        raise RuntimeError(f"cannot reach postgres://app:Pg5ecr3t@db:5432/x with {GH_CLASSIC}")
    except RuntimeError:
        log.exception("connect failed for %s", "configured-Zq8w2x")
    finally:
        log.removeHandler(handler)


def test_exception_text_is_redacted_in_json_logs_and_rich_tracebacks() -> None:
    r = Redactor(["configured-Zq8w2x"])
    json_out, rich_out = io.StringIO(), io.StringIO()
    json_handler = logging.StreamHandler(json_out)
    json_handler.setFormatter(JsonFormatter())
    _log_through(json_handler, r)
    _log_through(RichHandler(console=Console(file=rich_out, width=200), show_path=False), r)
    entry = json.loads(json_out.getvalue())
    assert "RuntimeError: cannot reach postgres://app:***@db:5432/x with ghp_***" in entry["exc"]
    assert entry["message"] == "connect failed for ***"
    assert "RuntimeError" in rich_out.getvalue()
    for out in (json_out.getvalue(), rich_out.getvalue()):
        assert "Pg5ecr3t" not in out and GH_CLASSIC not in out and "configured-Zq8w2x" not in out


def test_a_crash_traceback_is_printed_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    saved = sys.excepthook, threading.excepthook
    try:
        install_excepthooks(Redactor(["configured-Zq8w2x"]))
        try:
            raise RuntimeError(f"daemon died holding {GH_CLASSIC} and configured-Zq8w2x")
        except RuntimeError as e:
            sys.excepthook(type(e), e, e.__traceback__)
    finally:
        sys.excepthook, threading.excepthook = saved
    err = capsys.readouterr().err
    assert "RuntimeError: daemon died holding ghp_*** and ***" in err and "Traceback" in err


def test_other_libraries_warnings_are_redacted_too(capsys: pytest.CaptureFixture[str]) -> None:
    top = logging.getLogger()
    before = list(top.handlers)
    try:
        setup_logging("info", True, Redactor())
        try:
            raise OSError(f"connect to postgres://app:Pg5ecr3t@db:5432/x failed, token {GH_CLASSIC}")
        except OSError:
            logging.getLogger("asyncio").exception("Task exception was never retrieved")
    finally:
        for h in top.handlers[:]:
            if h not in before:
                top.removeHandler(h)
        logging.getLogger("clawmedic").handlers.clear()
        sys.excepthook, threading.excepthook = sys.__excepthook__, threading.__excepthook__
    err = capsys.readouterr().err
    assert "Task exception was never retrieved" in err and "postgres://app:***@db" in err
    assert "Pg5ecr3t" not in err and GH_CLASSIC not in err
