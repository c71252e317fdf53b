"""Secret redaction: every string that leaves clawmedic (logs, events, incidents, reports) passes through here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words
# Patterns that look like secrets even when clawmedic was not told about them.
_PATTERNS = [
    re.compile(
        r"(?i)(\"?(?:token|api[_-]?key|apikey|secret|password|passwd|authorization)\"?\s*[:=]\s*\"?)([^\s\",}]+)"
    ),
    re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/-]+=*)"),
    re.compile(r"()\b(sk-[A-Za-z0-9_-]{16,})"),
    # a Telegram bot token, `<bot id>:<35 characters>`, e.g. inside an API URL `https://api.telegram.org/bot<token>/`
    re.compile(r"()(?<![0-9])([0-9]{5,12}:[A-Za-z0-9_-]{30,})"),
]


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, secret: str) -> None:
        if len(secret) >= _MIN_SECRET_LEN:
            self._secrets.add(secret)

    def text(self, s: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            s = s.replace(secret, MASK)
        for pat in _PATTERNS:
            s = pat.sub(lambda m: m.group(1) + MASK, s)
        return s

    def data(self, obj: Any) -> Any:
        """Redact every string inside a JSON-like structure."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self.data(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.data(v) for v in obj]
        return obj
