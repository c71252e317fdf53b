"""Secrets that clawmedic was not told about are still masked when they look like one."""

from __future__ import annotations

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
