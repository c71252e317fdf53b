"""Cutting text for people: at a sentence or word boundary, with an ellipsis, never mid-word."""

from __future__ import annotations

import re

ELLIPSIS = "…"
_SENTENCE_END = re.compile(r"[.;:!?|](?=\s)")


def clip(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its head cut at the last sentence end (or, failing one in the
    second half, the last space) and an ellipsis. A single overlong word is the only thing cut inside."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[: max(1, limit - len(ELLIPSIS))]
    half = len(head) // 2
    ends = [m.end() for m in _SENTENCE_END.finditer(head + " ") if m.end() > half]
    if ends:
        head = head[: ends[-1]]
    elif (space := head.rfind(" ")) > half:
        head = head[:space]
    return head.rstrip(" ,;:|-") + ELLIPSIS
