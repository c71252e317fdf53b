"""Secret redaction: every string that leaves clawmedic (logs, events, incidents, reports, status, messages, LLM
requests) passes through here.

Two kinds of secret are masked:
- values clawmedic was told about or can tell from its config: every resolved "${NAME}", the env_file's values and
  `start.env` values that look like secrets, the secret parts of configured URLs, the LLM backend's key (registered
  by `config.LoadedConfig` when the config loads);
- text that looks like a credential whatever its origin: one combined regular expression over the common families.

Why hand-written patterns and not `detect-secrets` (the maintained scanner on PyPI): it *reports* findings in files
(plugin by plugin, line by line, with hashed secrets) and has no call that rewrites a string in place; it pulls in
requests and PyYAML, runs ~25 plugins one after the other on each line, and misses current formats (github_pat_…,
sk-proj-…, sk-ant-…). Masking runs on every event and log line, so it is one compiled pass of a few microseconds
(bench/bench_redact.py). The families follow detect-secrets' and GitHub secret scanning's documented formats.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from clawmedic import defaults

MASK = "***"

# Names whose value is a secret, in `name=value`, `name: value` and JSON `"name": "value"`.
_CRED_NAMES = (
    r"(?:token|secret|password|passwd|passphrase|pwd|api[_-]?key|apikey|access[_-]?key"
    r"|secret[_-]?key|private[_-]?key|client[_-]?secret|credentials?|authorization|session[_-]?id)"
)
# Query parameters that carry a credential in a URL (`?key=…&sig=…`).
_QUERY_NAMES = (
    r"(?:key|sig|signature|auth|access_token|refresh_token|id_token|api_key|apikey|token|secret|password|passwd"
    r"|pass|client_secret)"
)
# A bare value counts as a credential only when it holds a digit or a symbol (so "token expired", "password reset"
# and "Basic configuration" stay as they are).
_RANDOMISH = r"(?=[^\s\"'<>]*[0-9+/=_~!@#$%^&*])"
# Words that follow "password …" / "password is …" in ordinary messages: never taken for the password itself.
_PLAIN_WORDS = (
    r"(?:is|was|wrong|incorrect|invalid|required|missing|empty|set|unset|not|too|expired|correct|valid|needed|the"
    r"|a|an|being|ok|weak|strong|changed|rejected|accepted|stored|saved|used|reset|for|of|and|or|to|in|on|with"
    r"|from|protected|mismatch|change|policy|manager|field|prompt|length|hash|file|none|null|true|false"
    r"|[a-z]+ed|[a-z]+ing)\b"  # "no password is configured", "password is pending": a state, not a value
)
# The same names inside a camelCase key: `accessToken`, `clientSecret`, `openaiApiKey`.
_CAMEL_NAMES = r"(?:Token|Secret|Password|Passwd|Passphrase|ApiKey|AccessKey|SecretKey|PrivateKey|Credentials?)"
_NAME_HINTS = ("token", "secret", "pass", "pwd", "key", "credential", "authorization", "session")
_PW_WORD = r"(?i:\b(?:password|passphrase|passwd|passcode)\s+)"
_QUOTED = r"\"[^\"\n]+\"|'[^'\n]+'"

# (trigger, kept prefix, masked part). The prefix stays readable (`ghp_***`), the rest of the match becomes MASK. A
# family's expression runs only when its trigger (cheap substring tests on the lower-cased text) says it could
# match: a plain log line pays a few substring searches, not thirteen regular expressions.
_Trigger = Callable[[str], bool]
_FAMILIES: list[tuple[_Trigger, str, str]] = [
    # PEM private key blocks, whole; a block cut short is masked to the end of the string
    (
        lambda low: "private key" in low,
        r"-----BEGIN[A-Z0-9 ]{0,20} PRIVATE KEY(?: BLOCK)?-----",
        r"[\s\S]*?(?=-----END[A-Z0-9 ]{0,20} PRIVATE KEY(?: BLOCK)?-----|\Z)",  # the END line stays: idempotent
    ),
    # a line that is nothing but long mixed-case base64 with digits: a private key's body read line by line
    (
        lambda low: len(low) >= 40 and ("\n" in low or " " not in low.strip()),  # a line alone, or many lines
        r"(?m:^)[ \t]*",
        r"(?=[A-Za-z0-9+/]{40})(?=[A-Za-z0-9+/]*[0-9])(?=[A-Za-z0-9+/]*[a-z])(?=[A-Za-z0-9+/]*[A-Z])"
        r"[A-Za-z0-9+/]{40,}={0,2}[ \t]*(?m:$)",
    ),
    # GitHub: ghp_ (classic), gho_ (OAuth), ghu_/ghs_ (app user/server), ghr_ (refresh), github_pat_ (fine-grained)
    (lambda low: "gh" in low, r"\b(?:gh[pousr]_|github_pat_)", r"[A-Za-z0-9_]{20,}"),
    # Slack: xoxb- bot, xoxp- user, xoxa-/xoxo-/xoxs-/xoxr-, and xapp- app-level tokens
    (lambda low: "xox" in low or "xapp-" in low, r"\b(?:xox[abposr]|xapp)-", r"[A-Za-z0-9-]{10,}"),
    # AWS access key ids: long-term AKIA…, temporary ASIA… (the secret key goes by name: aws_secret_access_key=…)
    (lambda low: "akia" in low or "asia" in low, r"\b(?:AKIA|ASIA)", r"[A-Z0-9]{16}\b"),
    # Anthropic (sk-ant-…) and OpenAI (sk-…, sk-proj-…, sk-svcacct-…, sk-admin-…) API keys
    (lambda low: "sk-" in low, r"\bsk-(?:ant-|proj-|svcacct-|admin-)?", r"[A-Za-z0-9_-]{16,}"),
    # JSON Web Tokens: header.payload.signature, the first two base64url JSON objects ("eyJ" is `{"`)
    (lambda low: "eyj" in low, r"\b", r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    # Telegram bot tokens, `<bot id>:<35 characters>`, e.g. in `https://api.telegram.org/bot<token>/getMe`
    # (their secret half starts with "AA"; a bare one is seen in a bot API URL)
    (lambda low: ":aa" in low or "bot" in low, r"(?<![0-9])", r"[0-9]{5,12}:[A-Za-z0-9_-]{30,}"),
    # the password of a URL's userinfo: scheme://user:PASSWORD@host
    (lambda low: "://" in low and "@" in low, r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/@?#]*:", r"[^\s/?#]+(?=@)"),
    # credential-named query parameters in a URL: ?token=…, &key=…, &sig=…
    (lambda low: "=" in low, rf"(?i:[?&;]{_QUERY_NAMES}=)", r"[^&#\s\"'<>]+"),
    # Authorization credentials: Bearer / Basic / Token
    (
        lambda low: "bearer" in low or "basic" in low or "token" in low,
        r"(?i:\b(?:bearer|basic|token)\s+)" + _RANDOMISH,
        r"[A-Za-z0-9._~+/-]{8,}=*",
    ),
    # name=value, name: value, "name": "value" when the name says secret (aws_secret_access_key=…, "apiKey": …)
    (
        lambda low: ("=" in low or ":" in low) and any(w in low for w in _NAME_HINTS),
        rf"(?:(?<![A-Za-z0-9])(?i:{_CRED_NAMES})|(?<=[a-z0-9]){_CAMEL_NAMES})"
        r"[\"']?[ \t]*[:=][ \t]*[\"']?(?i:(?:bearer|basic)[ \t]+)?",
        r"[^\s\"',;}&]+",
    ),
    # prose: "the password is Tr0ub4dor&3", "passphrase was 'x y'" (but not "password is wrong")
    (
        lambda low: "pass" in low,
        _PW_WORD + r"(?i:(?:is|was)\s+)(?!(?i:" + _PLAIN_WORDS + "))",
        rf"(?:{_QUOTED}|\S+)",
    ),
    # prose: "password hunter2", "password 's3cret'" (but not "password reset", "password for bob")
    (
        lambda low: "pass" in low,
        _PW_WORD + r"(?!(?i:" + _PLAIN_WORDS + "))",
        rf"(?:{_QUOTED}|{_RANDOMISH}\S+)",
    ),
]
_COMPILED = [(trigger, re.compile(f"({keep})(?:{mask})")) for trigger, keep, mask in _FAMILIES]


def _keep_prefix(m: re.Match[str]) -> str:
    return m.group(1) + MASK


def redact_patterns(s: str) -> str:
    """Mask what looks like a credential in `s`, whoever it belongs to."""
    low = s.lower()
    for trigger, pattern in _COMPILED:
        if trigger(low):
            s = pattern.sub(_keep_prefix, s)
    return s


# Values never registered as secrets, however they were configured: masking them would blank ordinary text.
_ORDINARY = frozenset(
    {"true", "false", "none", "null", "yes", "no", "on", "off", "production", "development", "debug", "info"}
    | {"warning", "error", "localhost", "127.0.0.1", "0.0.0.0", "::1", "http", "https"}  # noqa: S104 (words)
)
# A variable name that says its value is a secret.
_SECRET_VAR = re.compile(
    r"(?i)(?:^|[_.-])(?:[a-z]*token|secrets?|pass(?:word|wd|phrase|code)?|pwd|key|api_?key|auth|creds?|credentials?"
    r"|private|session|cookie|sig|signature|dsn|pat)(?:[_.-]|$)"
)


def _long_token(s: str) -> bool:
    """A path segment or query value of an Apprise URL that is a token (not an e-mail address: mailto://…?to=)."""
    return len(s) >= defaults.REDACT_MIN_URL_TOKEN_LEN and "@" not in s


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._literal: re.Pattern[str] | None = None
        for s in secrets:
            self.add(s)

    def add(self, secret: str) -> None:
        """Mask this exact value from now on (unless it is too short or too ordinary to be told from text)."""
        secret = secret.strip()
        if len(secret) < defaults.REDACT_MIN_SECRET_LEN or secret.lower() in _ORDINARY or secret in self._secrets:
            return
        self._secrets.add(secret)
        self._literal = None

    @property
    def generation(self) -> int:
        """Grows with every secret added: text redacted at an older generation may hold a secret learnt since."""
        return len(self._secrets)

    def absorb(self, other: Redactor) -> None:
        """Mask everything `other` masks too (a reloaded config's secrets join the running daemon's)."""
        for s in other._secrets:
            self.add(s)

    def add_guessed(self, name: str, value: str) -> None:
        """A value that may or may not be a secret (a `start.env` or env_file entry): registered when its name says
        secret (`DB_PASSWORD`, `GITHUB_TOKEN`, `API_KEY`) or it looks random (long, letters and digits), and never
        when it is short, a path or a small number, so `DEBUG=1`, `MODE=true`, `HOME=/home/me` or `SESSION_TTL=3600`
        do not blank every "1", "true", path or number in the records. A URL gives its secret parts."""
        value = value.strip()
        if "://" in value:
            self.add_url(value)
        if value.startswith(("/", "~", "./", "../")) or "://" in value:
            return
        named = (
            _SECRET_VAR.search(name) is not None
            and len(value) >= defaults.REDACT_MIN_NAMED_SECRET_LEN
            and not (value.isdigit() and len(value) < defaults.REDACT_MIN_GUESSED_SECRET_LEN)
        )
        randomish = (
            len(value) >= defaults.REDACT_MIN_GUESSED_SECRET_LEN
            and " " not in value
            and any(c.isdigit() for c in value)
            and any(c.isalpha() for c in value)
        )
        if named or randomish:
            self.add(value)

    def add_url(self, url: str, *, apprise: bool = False) -> None:
        """Register the secret parts of a URL: the userinfo password, credential-named query values, and for an
        Apprise URL (which carries tokens anywhere) every long path segment and query value, and its user part."""
        try:
            parts = urlsplit(url.strip())
            password = parts.password
        except ValueError:
            return
        candidates = [password or ""]
        for k, v in parse_qsl(parts.query):
            named = re.fullmatch(_QUERY_NAMES, k, re.IGNORECASE) or _SECRET_VAR.search(k)
            if named or (apprise and _long_token(v)):
                candidates.append(v)
        if apprise:
            candidates += [s for s in parts.path.split("/") if _long_token(s)]
            if parts.scheme not in ("json", "form", "xml", "mailto", "mailtos") and parts.username:
                candidates.append(parts.username)  # e.g. tgram://BOT_TOKEN/…: the "user" part is the token
        for c in candidates:
            if c:
                self.add(c)

    def text(self, s: str) -> str:
        if self._secrets:
            if self._literal is None:
                ordered = sorted(self._secrets, key=len, reverse=True)  # the longest first: no half-masked values
                self._literal = re.compile("|".join(map(re.escape, ordered)))
            s = self._literal.sub(MASK, s)
        return redact_patterns(s)

    def data(self, obj: Any) -> Any:
        """Redact every string inside a JSON-like structure."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self.data(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.data(v) for v in obj]
        return obj
