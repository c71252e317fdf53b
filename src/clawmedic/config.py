"""The clawmedic config: one TOML file, validated with pydantic.

A bad config becomes one `ConfigInvalid` sentence naming the file and the key; nothing is started. Secrets are
never written in the file itself: a value such as `"${OPENCLAW_GATEWAY_TOKEN}"` is taken from the environment or
from the `.env` file named by `daemon.env_file`, and every value resolved that way is registered for redaction.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import re
import shutil
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from clawmedic import defaults, paths
from clawmedic.errors import ConfigInvalid, EnvironmentMissing, UnknownTarget
from clawmedic.ladder.machine import LadderLimits
from clawmedic.redact import Redactor

# Every number has both bounds: 1e-300 s would spin a core, 1e300 s overflows the event loop's timers.
PositiveFloat = Annotated[float, Field(ge=defaults.MIN_DURATION_S, le=defaults.MAX_DURATION_S)]  # a duration


def _zero_or_duration(v: float) -> float:
    if 0 < v < defaults.MIN_DURATION_S:
        raise ValueError(f"must be 0 (none) or at least {defaults.MIN_DURATION_S:g} seconds")
    return v


NonNegFloat = Annotated[float, Field(ge=0, le=defaults.MAX_DURATION_S), AfterValidator(_zero_or_duration)]  # 0: none
Count = Annotated[int, Field(ge=1, le=defaults.MAX_COUNT)]
CountOrZero = Annotated[int, Field(ge=0, le=defaults.MAX_COUNT)]
MemoryMb = Annotated[int, Field(gt=0, le=defaults.MAX_MEMORY_LIMIT_MB)]
Port = Annotated[int, Field(ge=1, le=65535)]
_SECRET_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # also a folder name under <state>/targets/
_HOST = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


def _http_url(value: str) -> str:
    """An http(s) URL with a host, as the prober will request it ("${NAME}" secrets stand for one word). Parsed with
    the standard library: httpx's URL class cost every command ~40 ms of import for this one check."""
    try:
        url = urlsplit(_SECRET_REF.sub("secret", value))
        port = url.port
        host = url.hostname or ""  # lower-cased, an IPv6 address without its brackets
        if not host.isascii():
            host = host.encode("idna").decode("ascii")  # a Unicode host name is requested as its IDNA form
    except (ValueError, UnicodeError) as e:
        if "out of range" in str(e):  # "Port out of range 0-65535"
            raise ValueError(f"port {url.netloc.rsplit(':', 1)[-1]} is outside 1-65535") from None
        raise ValueError(f"not a URL ({str(e).rstrip('.')}); write e.g. http://127.0.0.1:18789/health") from None
    scheme = url.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"a {scheme}: URL" if scheme else "a URL without a scheme"
        raise ValueError(
            f"must be an http:// or https:// URL with a host (e.g. http://127.0.0.1:18789/health), not {shown}"
        )
    if not host:
        raise ValueError("the URL has no host (write e.g. http://127.0.0.1:18789/health)")
    _check_host(host.strip("[]"))
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1-65535")
    return value


def _check_host(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST.match(host):
            raise ValueError(f"{host!r} is not a host name or IP address") from None
    return host


def _no_empty(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty: write a path, or leave the key out for the default")
    return value


def _home_known(p: Path) -> Path:
    try:
        return p.expanduser()
    except RuntimeError:  # "~nosuchuser/…"
        user = str(p).split("/", 1)[0]
        raise ValueError(f"starts with {user}, but there is no such user on this machine") from None


def _program(cmd: list[str]) -> list[str]:
    if not cmd[0].strip():
        raise ValueError("the program (its first item) is empty")
    return cmd


# A path in the config: never empty, and a `~user` that exists (`~` is expanded).
UserPath = Annotated[Path, BeforeValidator(_no_empty), AfterValidator(_home_known)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
Command = Annotated[list[str], Field(min_length=1), AfterValidator(_program)]  # program and arguments, no shell


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ProbeConfig(_Model):
    """An HTTP check. `expect_json` keys must all be present with equal values in the response body."""

    url: HttpUrl | None = None  # openclaw targets derive it from `port`
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200
    expect_json: dict[str, Any] | None = None
    interval_s: PositiveFloat = defaults.PROBE_INTERVAL_S
    timeout_s: PositiveFloat = defaults.PROBE_TIMEOUT_S
    failure_threshold: Count = defaults.FAILURE_THRESHOLD


class StartConfig(_Model):
    """How the target is started: as a child clawmedic manages, or through an external service manager."""

    mode: Literal["managed", "external"] = "managed"
    command: Command | None = None  # managed: the command to run (no shell)
    cwd: UserPath | None = None
    env: dict[str, str] = Field(default_factory=dict)  # added to clawmedic's environment; "${NAME}" is a secret
    restart_command: Command | None = None  # external: e.g. ["systemctl", "--user", "restart", "openclaw"]
    stop_command: Command | None = None  # external: optional

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not name or "=" in name:
                raise ValueError(f"{name!r} cannot be an environment variable's name (empty, or it has '=')")
        return env

    @model_validator(mode="after")
    def _commands_for_mode(self) -> StartConfig:
        if self.mode == "managed" and not self.command:
            raise ValueError("a managed target needs `command` (a list of program and arguments)")
        if self.mode == "external" and not self.restart_command:
            raise ValueError("an external target needs `restart_command` (e.g. systemctl --user restart …)")
        return self


class LimitsConfig(_Model):
    startup_timeout_s: PositiveFloat = defaults.STARTUP_TIMEOUT_S
    probation_s: NonNegFloat = defaults.PROBATION_S
    stop_timeout_s: PositiveFloat = defaults.STOP_TIMEOUT_S
    hung_stop_timeout_s: PositiveFloat = defaults.HUNG_STOP_TIMEOUT_S
    backoff_initial_s: PositiveFloat = defaults.BACKOFF_INITIAL_S
    backoff_max_s: PositiveFloat = defaults.BACKOFF_MAX_S
    backoff_jitter: Annotated[float, Field(ge=0, le=1)] = defaults.BACKOFF_JITTER
    stable_reset_s: PositiveFloat = defaults.STABLE_RESET_S
    crash_loop_failures: Count = defaults.CRASH_LOOP_FAILURES
    crash_loop_window_s: PositiveFloat = defaults.CRASH_LOOP_WINDOW_S
    memory_limit_mb: MemoryMb | None = None  # openclaw targets default to OPENCLAW_MEMORY_LIMIT_MB
    memory_check_interval_s: PositiveFloat = defaults.MEMORY_CHECK_INTERVAL_S
    known_good_after_s: PositiveFloat = defaults.KNOWN_GOOD_AFTER_S
    snapshot_interval_s: PositiveFloat = defaults.SNAPSHOT_INTERVAL_S
    validate_config: bool = True  # validate boot-critical config before every (re)start and on every change
    # after gave_up: run the pre-start gates every this long and launch once when they pass; 0 turns it off
    retry_after_gave_up_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = defaults.RETRY_AFTER_GAVE_UP_S

    @field_validator("retry_after_gave_up_s")
    @classmethod
    def _retry_period(cls, v: float) -> float:
        if 0 < v < defaults.RETRY_AFTER_GAVE_UP_MIN_S:
            raise ValueError(f"must be 0 (off) or at least {defaults.RETRY_AFTER_GAVE_UP_MIN_S:g} seconds")
        return v


_MODEL_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}/[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,255}")


def _model_ref(v: str) -> str:
    if not _MODEL_REF.fullmatch(v):
        raise ValueError(f'a model is written "provider/model" (e.g. "openai/gpt-4o"), not {v[:80]!r}')
    return v


ModelRef = Annotated[str, AfterValidator(_model_ref)]
CooldownMin = Annotated[float, Field(ge=defaults.MODEL_COOLDOWN_MIN_MIN, le=defaults.MODEL_COOLDOWN_MAX_MIN)]


class ModelsConfig(_Model):
    """`[targets.NAME.models]`: while the default model cools, the gateway's default moves to the first available
    model of `order` ("provider/model"), and back once the original answers OpenClaw's live probe."""

    order: Annotated[list[ModelRef], Field(min_length=1, max_length=50)]
    probe_interval_s: Annotated[float, Field(ge=defaults.MODEL_PROBE_MIN_INTERVAL_S, le=defaults.MAX_DURATION_S)] = (
        defaults.MODEL_PROBE_INTERVAL_S
    )
    rate_limit_cooldown_min: CooldownMin = defaults.MODEL_RATE_LIMIT_COOLDOWN_MIN  # rate limit, quota, overloaded
    auth_cooldown_min: CooldownMin = defaults.MODEL_AUTH_COOLDOWN_MIN  # auth, scope, model not found

    @field_validator("order")
    @classmethod
    def _no_repeats(cls, order: list[str]) -> list[str]:
        repeated = sorted({m for m in order if order.count(m) > 1})
        if repeated:
            raise ValueError(f"names {', '.join(repeated)} more than once")
        return order


_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _agent_id(v: str) -> str:
    if not _AGENT_ID.fullmatch(v):
        raise ValueError(f"an agent id is letters, digits, '-' and '_' (e.g. \"main\"), not {v[:80]!r}")
    return v


class ConversationConfig(_Model):
    """`[targets.NAME.conversation]` (opt-in): beyond /health, send one short message through the gateway to
    `agent` every `interval_s` and expect an answer within `timeout_s`; a gateway that is up but cannot answer
    (its model path is broken) opens an incident. Each probe is one agent turn: it costs model tokens."""

    agent: Annotated[str, AfterValidator(_agent_id)] = "main"
    message: Annotated[str, Field(min_length=1, max_length=500)] = defaults.CONVERSATION_MESSAGE
    interval_s: Annotated[float, Field(ge=defaults.CONVERSATION_MIN_INTERVAL_S, le=defaults.MAX_DURATION_S)] = (
        defaults.CONVERSATION_INTERVAL_S
    )
    timeout_s: Annotated[
        float, Field(ge=defaults.CONVERSATION_MIN_TIMEOUT_S, le=defaults.CONVERSATION_MAX_TIMEOUT_S)
    ] = defaults.CONVERSATION_TIMEOUT_S
    failures: Annotated[int, Field(ge=1, le=defaults.CONVERSATION_MAX_FAILURES)] = defaults.CONVERSATION_FAILURES


class TargetConfig(_Model):
    kind: Literal["openclaw", "http"] = "openclaw"
    host: Annotated[str, AfterValidator(_check_host)] = "127.0.0.1"
    port: Port | None = None
    start: StartConfig
    liveness: ProbeConfig = Field(default_factory=ProbeConfig)
    readiness: ProbeConfig | None = None
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    openclaw_home: UserPath | None = None  # the HOME whose .openclaw/ holds openclaw.json (openclaw targets)
    log_file: UserPath | None = None  # the gateway's own JSON-lines log (`logging.file`)
    boot_files: list[UserPath] = Field(default_factory=list)  # extra boot-critical files to snapshot (unit, wrapper…)
    openclaw_command: Command | None = (
        None  # the openclaw CLI, e.g. ["openclaw"]; default: start.command before "gateway"
    )
    notify: TargetNotifyConfig | None = None  # extra notification URLs for this target (see NotifyConfig)
    models: ModelsConfig | None = None  # model fallback order and cooldowns (openclaw targets)
    conversation: ConversationConfig | None = None  # conversation readiness probe (openclaw targets, opt-in)

    @model_validator(mode="after")
    def _models_need_openclaw(self) -> TargetConfig:
        if self.models is not None and self.kind != "openclaw":
            raise ValueError("`models` (a model fallback order) is for openclaw targets only")
        if self.conversation is not None and self.kind != "openclaw":
            raise ValueError("`conversation` (a readiness probe through the agent) is for openclaw targets only")
        return self

    @model_validator(mode="after")
    def _derive_probes(self) -> TargetConfig:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        base = f"http://{host}:{self.port}" if self.port else None
        if self.liveness.url is None:
            if self.kind != "openclaw" or base is None:
                raise ValueError("`liveness.url` is needed (or, for an openclaw target, `port`)")
            object.__setattr__(
                self,
                "liveness",
                self.liveness.model_copy(update={"url": f"{base}/health", "expect_json": {"ok": True}}),
            )
        if self.kind == "openclaw" and base is not None:
            if self.readiness is None:
                object.__setattr__(self, "readiness", ProbeConfig(url=f"{base}/ready"))
            if self.limits.memory_limit_mb is None:
                limits = self.limits.model_copy(update={"memory_limit_mb": defaults.OPENCLAW_MEMORY_LIMIT_MB})
                object.__setattr__(self, "limits", limits)
        if self.readiness is not None and self.readiness.url is None:
            raise ValueError("`readiness.url` is needed")
        return self

    def ladder_limits(self) -> LadderLimits:
        lim = self.limits
        return LadderLimits(
            failure_threshold=self.liveness.failure_threshold,
            probe_interval_s=self.liveness.interval_s,
            startup_timeout_s=lim.startup_timeout_s,
            probation_s=lim.probation_s,
            backoff_initial_s=lim.backoff_initial_s,
            backoff_max_s=lim.backoff_max_s,
            backoff_jitter=lim.backoff_jitter,
            stable_reset_s=lim.stable_reset_s,
            crash_loop_failures=lim.crash_loop_failures,
            crash_loop_window_s=lim.crash_loop_window_s,
            stop_timeout_s=lim.stop_timeout_s,
            hung_stop_timeout_s=lim.hung_stop_timeout_s,
            retry_after_gave_up_s=lim.retry_after_gave_up_s,
        )


RiskName = Literal["read_only", "reversible", "destructive"]


LlmBackendName = Literal["auto", "off", "local", "openai", "anthropic", "cli"]


class LlmConfig(_Model):
    """`[daemon.doctor.llm]`: the LLM doctor, consulted when no rule explains an incident or its remedies failed.

    `backend = "auto"` uses the embedded local model when `clawmedic[local-llm]` is installed, else none. Keys come
    from the environment only (`api_key_env`), never from this file.
    """

    backend: LlmBackendName = "auto"
    model: str | None = None  # openai/anthropic: the model name; local: a GGUF path (default: the embedded model)
    base_url: HttpUrl | None = None  # openai: any OpenAI-compatible endpoint (Ollama, vLLM, LM Studio, OpenRouter…)
    api_key_env: str | None = None  # default OPENAI_API_KEY / ANTHROPIC_API_KEY; a local endpoint may need none
    command: Command | None = None  # cli: the agent CLI; "{prompt}" is replaced by the prompt file, else stdin
    tmux: bool = False  # cli: run it in a detached tmux session (for CLIs that need a terminal)
    max_steps: Annotated[int, Field(ge=1, le=50)] = defaults.LLM_MAX_STEPS
    time_budget_s: PositiveFloat = defaults.LLM_TIME_BUDGET_S
    request_timeout_s: PositiveFloat = defaults.LLM_REQUEST_TIMEOUT_S
    tool_output_max_chars: Annotated[int, Field(ge=200, le=1_000_000)] = defaults.LLM_TOOL_OUTPUT_MAX_CHARS
    max_tokens: Annotated[int, Field(ge=16, le=1_000_000)] = defaults.LLM_MAX_TOKENS
    cli_timeout_s: PositiveFloat = defaults.LLM_CLI_TIMEOUT_S
    threads: Annotated[int, Field(ge=1, le=1024)] | None = None  # local: CPU threads (default: all cores)

    @model_validator(mode="after")
    def _backend_needs(self) -> LlmConfig:
        if self.backend in ("openai", "anthropic") and not self.model:
            raise ValueError(f"the {self.backend} backend needs `model` (e.g. the model's name at the endpoint)")
        if self.backend == "cli" and not self.command:
            raise ValueError('the cli backend needs `command` (e.g. ["claude", "-p"])')
        return self


class GatewayChecksConfig(_Model):
    """`[daemon.doctor.gateway_checks]`: while a target is healthy, read the gateway's own state (cron jobs,
    channels, /ready, model fallbacks, session pins) every `interval_s` and heal what does not take it down."""

    enabled: bool = True
    interval_s: PositiveFloat = defaults.GATEWAY_CHECK_INTERVAL_S
    cooldown_s: NonNegFloat = defaults.GATEWAY_REMEDY_COOLDOWN_S
    verify_timeout_s: PositiveFloat = defaults.GATEWAY_VERIFY_TIMEOUT_S
    command_timeout_s: PositiveFloat = defaults.GATEWAY_CHECK_COMMAND_TIMEOUT_S
    channels: ChannelChecksConfig = Field(default_factory=lambda: ChannelChecksConfig())
    plugins: PluginChecksConfig = Field(default_factory=lambda: PluginChecksConfig())
    cron_issue_interval_s: Annotated[float, Field(ge=60.0, le=7 * 86400.0)] = defaults.CRON_ISSUE_INTERVAL_S


class ChannelChecksConfig(_Model):
    """`[daemon.doctor.gateway_checks.channels]`: a channel disconnected for `down_checks` checks in a row gets up
    to `restarts` targeted restarts, `min_interval_s` apart, before it is disabled; channels the crash-loop breaker
    suppressed are started again on a stable gateway (`start_suppressed`)."""

    down_checks: Annotated[int, Field(ge=1, le=defaults.CHANNEL_DOWN_CHECKS_MAX)] = defaults.CHANNEL_DOWN_CHECKS
    restarts: Annotated[int, Field(ge=0, le=defaults.CHANNEL_RESTARTS_MAX)] = defaults.CHANNEL_RESTARTS
    min_interval_s: Annotated[
        float, Field(ge=defaults.CHANNEL_RESTART_MIN_INTERVAL_FLOOR_S, le=defaults.CHANNEL_RESTART_MIN_INTERVAL_CEIL_S)
    ] = defaults.CHANNEL_RESTART_MIN_INTERVAL_S
    start_suppressed: bool = True


class PluginChecksConfig(_Model):
    """`[daemon.doctor.gateway_checks.plugins]`: read `plugins list --json` each check; a plugin in error that is not
    built in is disabled (at most once per `min_interval_s` each) and re-enabled by `clawmedic resume`."""

    enabled: bool = True
    min_interval_s: Annotated[
        float, Field(ge=defaults.PLUGIN_DISABLE_MIN_INTERVAL_FLOOR_S, le=defaults.CHANNEL_RESTART_MIN_INTERVAL_CEIL_S)
    ] = defaults.PLUGIN_DISABLE_MIN_INTERVAL_S


class DoctorConfig(_Model):
    """The doctor (tier 3): which remedies it may run on its own."""

    enabled: bool = True
    allow: list[RiskName] = Field(default_factory=lambda: list[RiskName](["read_only", "reversible"]))
    allow_kill_foreign: bool = False  # may it stop a process clawmedic did not start (e.g. a port squatter)?
    llm: LlmConfig = Field(default_factory=LlmConfig)
    gateway_checks: GatewayChecksConfig = Field(default_factory=GatewayChecksConfig)


class DaemonConfig(_Model):
    state_dir: UserPath | None = None  # default: the platform's user state folder
    env_file: UserPath | None = None  # secrets as NAME=value lines; relative to the config file
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    stop_targets_on_exit: bool = False  # by default managed gateways outlive the daemon and are adopted again
    doctor: DoctorConfig = Field(default_factory=DoctorConfig)
    notify: NotifyConfig = Field(default_factory=lambda: NotifyConfig())  # tier 4: telling humans (Apprise)
    heartbeat: HeartbeatConfig = Field(default_factory=lambda: HeartbeatConfig())  # dead-man's switch, off by default
    guardian: GuardianConfig = Field(default_factory=lambda: GuardianConfig())  # `clawmedic guardian`
    logfile: LogFileConfig = Field(default_factory=lambda: LogFileConfig())  # the daemon's own rotating log file
    github: GitHubConfig | None = None  # `[daemon.github]`: issues for incidents that gave up; off by default
    http: HttpConfig = Field(default_factory=lambda: HttpConfig())  # status page and /metrics, loopback by default


class Config(_Model):
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    targets: Annotated[dict[str, TargetConfig], Field(min_length=1)]


class LoadedConfig:
    """A validated config plus where it came from, its resolved secrets and its state folder."""

    def __init__(
        self, config: Config, source: Path, secrets: dict[str, str], env_file_values: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self.source = source
        self.secrets = secrets
        self.redactor = Redactor(secrets.values())
        _register_secrets(self, env_file_values or {})
        sd = config.daemon.state_dir
        self.state_dir = _relative_to(source, sd) if sd is not None else paths.default_state_dir()
        self.dry_run = False  # `run --dry-run`: decide everything, change nothing (honoured at the seams: dryrun.py)

    @property
    def targets(self) -> dict[str, TargetConfig]:
        return self.config.targets

    def target(self, name: str | None) -> tuple[str, TargetConfig]:
        if name is None:
            if len(self.targets) == 1:
                return next(iter(self.targets.items()))
            raise UnknownTarget(f"{self.source} has several targets ({', '.join(self.targets)}); name one.")
        if name not in self.targets:
            raise UnknownTarget(f"{self.source} has no target {name!r} (targets: {', '.join(self.targets)}).")
        return name, self.targets[name]

    def selected(self, name: str | None) -> list[str]:
        return list(self.targets) if name is None else [self.target(name)[0]]

    def resolve(self, value: str, key: str) -> str:
        """Replace each ${NAME} in `value` with its secret."""

        def sub(m: re.Match[str]) -> str:
            return self.secrets[m.group(1)]

        return _SECRET_REF.sub(sub, value)

    def command_env(self, name: str) -> dict[str, str]:
        t = self.targets[name]
        return {k: self.resolve(v, f"targets.{name}.start.env.{k}") for k, v in t.start.env.items()}


_LLM_KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}  # backends.py's defaults


def _register_secrets(loaded: LoadedConfig, env_file_values: Mapping[str, str]) -> None:
    """Teach the redactor every secret the config implies besides the resolved "${NAME}"s: `start.env` and env_file
    values that look like secrets (see `Redactor.add_guessed`), the secret parts of the probe, notification and
    heartbeat URLs, and the LLM backend's key."""
    r = loaded.redactor
    for k, v in env_file_values.items():
        r.add_guessed(k, v)
    for t in loaded.targets.values():
        for k, v in t.start.env.items():
            r.add_guessed(k, _SECRET_REF.sub(lambda m: loaded.secrets.get(m.group(1), ""), v))
        for probe in (t.liveness, t.readiness):
            if probe is not None and probe.url:
                r.add_url(probe.url)
    for _key, url in notify_url_refs(loaded.config):
        r.add_url(_SECRET_REF.sub(lambda m: loaded.secrets.get(m.group(1), ""), url), apprise=True)
    llm = loaded.config.daemon.doctor.llm
    var = llm.api_key_env or _LLM_KEY_VARS.get(llm.backend)
    if var and os.environ.get(var):
        r.add(os.environ[var])


def _relative_to(source: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else (source.parent / p).resolve()


def _check_folders(loaded: LoadedConfig) -> None:
    """The state folder and the log file's folder: usable, and private (see `paths.check_private_dir`)."""
    sd = loaded.config.daemon.state_dir
    key = "daemon.state_dir" if sd is not None else f"daemon.state_dir (default {loaded.state_dir})"
    try:
        paths.check_private_dir(loaded.state_dir)
    except ConfigInvalid as e:
        raise ConfigInvalid(f"{loaded.source}: {key}: {e}") from None
    log = loaded.config.daemon.logfile
    if log.enabled and log.path is not None:
        try:
            paths.check_file_folder(_relative_to(loaded.source, log.path))
        except ConfigInvalid as e:
            raise ConfigInvalid(f"{loaded.source}: daemon.logfile.path: {e}") from None


def make_state_dir(loaded: LoadedConfig) -> Path:
    """Create the state folder (0700) for `run`, or `ConfigInvalid` naming `daemon.state_dir`."""
    key = "daemon.state_dir" if loaded.config.daemon.state_dir is not None else "daemon.state_dir (default)"
    try:
        return paths.ensure_private_dir(loaded.state_dir)
    except ConfigInvalid as e:
        raise ConfigInvalid(f"{loaded.source}: {key}: {e}") from None
    except OSError as e:
        raise ConfigInvalid(f"{loaded.source}: {key}: cannot create {loaded.state_dir}: {e.strerror}.") from None


def check_commands(loaded: LoadedConfig) -> None:
    """Before a start: every target's cwd is a folder (else `ConfigInvalid`, exit 2) and the programs it will run
    exist and are executable (else `EnvironmentMissing`, exit 3, as the README says for a missing binary)."""
    for name, t in loaded.targets.items():
        start = t.start
        cwd = start.cwd
        if cwd is not None and not cwd.is_dir():
            raise ConfigInvalid(f"{loaded.source}: targets.{name}.start.cwd: {cwd} is not an existing folder.")
        fields = ("command",) if start.mode == "managed" else ("restart_command", "stop_command")
        path_var = loaded.command_env(name).get("PATH", os.environ.get("PATH", os.defpath))
        for field_name in fields:
            cmd = getattr(start, field_name)
            if not cmd:
                continue
            program = loaded.resolve(cmd[0], f"targets.{name}.start.{field_name}")
            if "/" in program:
                try:
                    p = Path(program).expanduser()
                except RuntimeError:  # ~nosuchuser/…
                    p = Path("/nonexistent")
                p = p if p.is_absolute() else (cwd or Path.cwd()) / p
                found = p.is_file() and os.access(p, os.X_OK)
            else:
                found = shutil.which(program, path=path_var) is not None
            if not found:
                raise EnvironmentMissing(
                    f"{loaded.source}: targets.{name}.start.{field_name}: {cmd[0]!r} is not an executable program "
                    + ("(no such file, or not executable)." if "/" in program else "(not found in PATH).")
                )


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(x) for x in loc)


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigInvalid(
            f"{what}: line {line} is not valid UTF-8 (byte 0x{data[e.start]:02x}); save it as UTF-8."
        ) from None


def _find_nul(value: object, where: str = "") -> str | None:
    """The key holding a NUL character, or None: no path, command, URL or environment value can carry one."""
    if isinstance(value, str):
        return where if "\0" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        key = f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}" if where else str(k)
        if isinstance(k, str) and "\0" in k:
            return key
        if (found := _find_nul(v, key)) is not None:
            return found
    return None


_MESSAGES = {  # pydantic's wording, where a user needs a different one
    "extra_forbidden": "unknown key: clawmedic has no such setting (check its spelling and its [section])",
    "finite_number": "must be a finite number (not inf or nan)",
}


def load_config(path: Path | None = None) -> LoadedConfig:
    """Read, validate and resolve the config, or raise `ConfigInvalid` with one sentence naming the file and key.

    Checked here, for every command: TOML and UTF-8, types and bounds of every key, URLs, paths, target names, one
    port per target, the env_file, and that the state and log folders are usable (exist or can be created, and no
    other user can write to them). Whether the commands exist is checked by `check_commands`, before a start."""
    source = (path or paths.default_config_path()).expanduser()
    if not source.exists():
        raise ConfigInvalid(
            f"No clawmedic config at {source}: run `clawmedic init` to write one, or pass --config FILE."
        )
    try:
        raw = tomllib.loads(_utf8(source.read_bytes(), str(source)))
    except tomllib.TOMLDecodeError as e:
        raise ConfigInvalid(f"{source} is not valid TOML: {_one_line(str(e))}.") from None
    except OSError as e:
        raise ConfigInvalid(f"Cannot read {source}: {e.strerror}.") from None
    if (nul := _find_nul(raw)) is not None:
        raise ConfigInvalid(f"{source}: {nul}: contains a NUL character, which no path, command or URL can hold.")
    try:
        config = Config.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (and {e.error_count() - 1} more problem(s))" if e.error_count() > 1 else ""
        msg = _MESSAGES.get(first["type"], first["msg"].removeprefix("Value error, "))
        where = _loc(first["loc"]) or "(top level)"
        raise ConfigInvalid(f"{source}: {where}: {_one_line(msg)}{more}.") from None
    _check_targets(config, source)
    file_values = _env_file_values(config, source)
    secrets = _resolve_secrets(config, source, file_values)
    loaded = LoadedConfig(config, source, secrets, file_values)
    _check_folders(loaded)
    from clawmedic.targets.openclaw.upgrade import apply_current_installs  # here: it imports this module

    apply_current_installs(loaded)  # a target `clawmedic upgrade` switched runs the install it recorded
    return loaded


def _check_targets(config: Config, source: Path) -> None:
    """Target names are folder names under <state>/targets/ (so never a path), no two targets declare one port, and
    no two OpenClaw targets run on one gateway state."""
    seen: dict[tuple[str, int], str] = {}
    states: dict[tuple[str, ...], str] = {}
    for name, t in config.targets.items():
        if not TARGET_NAME.match(name):
            raise ConfigInvalid(
                f"{source}: targets.{name!r}: a target name is 1-64 letters, digits, '_', '.' or '-', starting with a "
                "letter or digit (it names a folder in the state folder)."
            )
        if t.port is None:
            continue
        if t.kind == "openclaw":
            state = _gateway_state(t)
            key = "start.env.HOME" if t.openclaw_home is None and "HOME" in t.start.env else "openclaw_home"
            if state in states:
                raise ConfigInvalid(
                    f"{source}: targets.{name}.{key}: {state[0]} is already the gateway state of target "
                    f"{states[state]}; two gateways on one state fight over its lock (exit 78), and each would be the "
                    "other's duplicate to stop. Give each target its own HOME (or OPENCLAW_PROFILE/STATE_DIR)."
                )
            states[state] = name
        endpoint = ("loopback" if t.host in ("127.0.0.1", "localhost", "::1") else t.host, t.port)
        if endpoint in seen:
            raise ConfigInvalid(
                f"{source}: targets.{name}.port: port {t.port} is already target {seen[endpoint]!r}'s; each target "
                "needs its own port."
            )
        seen[endpoint] = name


def _gateway_state(t: TargetConfig) -> tuple[str, ...]:
    """Which OpenClaw state a target's gateway runs on: its HOME (as `targets.openclaw.gateway_home` picks it) and
    the variables that move the state inside it, as written (a "${NAME}" is compared by name)."""
    home = t.openclaw_home or (Path(t.start.env["HOME"]) if "HOME" in t.start.env else Path.home())
    moved = tuple(t.start.env.get(k, "") for k in ("OPENCLAW_STATE_DIR", "OPENCLAW_PROFILE", "OPENCLAW_CONFIG_PATH"))
    with contextlib.suppress(RuntimeError):  # "~nosuchuser": compared as written (the launch itself reports it)
        home = home.expanduser()
    return (os.path.normpath(home), *moved)


def _env_file_values(config: Config, source: Path) -> dict[str, str]:
    """The env_file's NAME=value pairs, or `ConfigInvalid` naming `daemon.env_file`."""
    if config.daemon.env_file is None:
        return {}
    ef = _relative_to(source, config.daemon.env_file)
    where = f"{source}: daemon.env_file: {ef}"
    try:
        text = _utf8(ef.read_bytes(), where)
    except FileNotFoundError:
        raise ConfigInvalid(f"{where} does not exist.") from None
    except OSError as e:
        raise ConfigInvalid(f"{where} cannot be read: {e.strerror}.") from None
    values = {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}
    for k, v in values.items():
        if "\0" in k or "\0" in v or "=" in k:
            raise ConfigInvalid(f"{where}: {k.replace(chr(0), '')!r} has a NUL character or '=' in its name or value.")
    return values


def _resolve_secrets(config: Config, source: Path, file_values: Mapping[str, str]) -> dict[str, str]:
    env_file = config.daemon.env_file
    secrets: dict[str, str] = {}
    for name, t in config.targets.items():
        refs: list[tuple[str, str]] = [(f"targets.{name}.start.env.{k}", v) for k, v in t.start.env.items()]
        for field_name in ("command", "restart_command", "stop_command"):
            for i, arg in enumerate(getattr(t.start, field_name) or []):
                refs.append((f"targets.{name}.start.{field_name}[{i}]", arg))
        if name == next(iter(config.targets)):
            refs += notify_url_refs(config)  # notification and heartbeat URLs: once, with the first target
        for key, value in refs:
            for ref in _SECRET_REF.findall(value):
                found = os.environ.get(ref, file_values.get(ref))
                if found is None:
                    where = f" or in {env_file}" if env_file else ""
                    raise ConfigInvalid(
                        f"{source}: {key} refers to ${{{ref}}}, which is not set in the environment{where}."
                    )
                secrets[ref] = found
    return secrets


# --- tier 4 and the watcher watched: notifications, heartbeat, guardian, log files ---------------------------------
# Defaults of these sections, each with its reason (candidates for defaults.py).

NOTIFY_REPEAT_INTERVAL_S = 3600.0  # still down: one reminder an hour reaches a human without becoming noise
NOTIFY_GROUP_WAIT_S = 30.0  # the doctor's verdict usually lands within 30 s of an escalation: one message, whole story
NOTIFY_LOG_TAIL_LINES = 20  # enough to see the crash, short enough for a phone screen
NOTIFY_RETRY_INITIAL_S = 10.0  # a receiver that failed once is retried soon ...
NOTIFY_RETRY_MAX_S = 900.0  # ... then at most every 15 minutes
NOTIFY_GIVE_UP_AFTER_S = 86400.0  # a day-old alert is stale; the incident and its report stay on disk
HEARTBEAT_INTERVAL_S = 60.0  # healthchecks.io and Uptime Kuma periods are minutes; one ping a minute is plenty
HEARTBEAT_TIMEOUT_S = 10.0  # a ping is one small request; a slow monitor must not pile requests up
GUARDIAN_STALE_AFTER_S = 60.0  # status.json is refreshed every 5 s: 12 missed ones mean hung, not slow
GUARDIAN_START_WAIT_S = 30.0  # a (re)started daemon writes its first status in well under a second
LOG_KEEP_DAYS = 14  # the daemon's log rotates at midnight; two weeks covers "what happened last weekend"

Severity = Literal["critical", "warning", "info"]
NotifyKind = Literal[
    "escalated",
    "gave_up",
    "still_down",
    "recovered",
    "latent_config_fault",
    "latent_config_resolved",
    "state_writes_failing",
    "state_writes_recovered",
    "gateway_fault",
    "gateway_fault_resolved",
    "restarted",
]
ALL_SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")
ALL_NOTIFY_KINDS: tuple[NotifyKind, ...] = (
    "escalated",
    "gave_up",
    "still_down",
    "recovered",
    "latent_config_fault",
    "latent_config_resolved",
    "state_writes_failing",
    "state_writes_recovered",
    "gateway_fault",
    "gateway_fault_resolved",
)  # the default `on`; "restarted" is opt-in: a restart that healed on its own is news only to some


class NotifyConfig(_Model):
    """`[daemon.notify]`: where and when humans are told (tier 4), through Apprise URLs of any scheme.

    Messages: `escalated` (the doctor is still working on it after `group_wait_s`), `gave_up` (a human is needed),
    `still_down` (a reminder every `repeat_interval_s`), `recovered` (after a message about the incident),
    `latent_config_fault` / `latent_config_resolved`, `gateway_fault` / `gateway_fault_resolved` (a fault inside a
    running gateway that needs a human), `state_writes_failing` / `state_writes_recovered`, and, opt-in,
    `restarted` (an incident healed by the ladder that nobody was told about: a crash restarted and healthy again, as
    monit's "alert on restart"). Severity tags: critical (escalated, gave up, gateway fault), warning (latent fault),
    info (restarted); a follow-up goes wherever the first message went. One message per incident and kind.
    `on` is the list of kinds that exist at all (`events` is its older name).
    """

    urls: list[str] = Field(default_factory=list)  # Apprise URLs; write tokens as "${NAME}" (a secret)
    severities: list[Severity] = Field(default_factory=lambda: list(ALL_SEVERITIES))  # what `urls` receive
    events: list[NotifyKind] = Field(
        default_factory=lambda: list(ALL_NOTIFY_KINDS), validation_alias=AliasChoices("on", "events")
    )  # which messages exist at all
    repeat_interval_s: NonNegFloat = NOTIFY_REPEAT_INTERVAL_S  # 0: never remind
    group_wait_s: NonNegFloat = NOTIFY_GROUP_WAIT_S
    log_tail_lines: Annotated[int, Field(ge=0, le=200)] = NOTIFY_LOG_TAIL_LINES
    retry_initial_s: PositiveFloat = NOTIFY_RETRY_INITIAL_S
    retry_max_s: PositiveFloat = NOTIFY_RETRY_MAX_S
    give_up_after_s: PositiveFloat = NOTIFY_GIVE_UP_AFTER_S


class TargetNotifyConfig(_Model):
    """`[targets.NAME.notify]`: extra URLs for this target's messages only (e.g. the phone of whoever owns it)."""

    urls: list[str] = Field(default_factory=list)
    severities: list[Severity] = Field(default_factory=lambda: list(ALL_SEVERITIES))
    daemon_urls: bool = True  # also send this target's messages to `daemon.notify.urls`


class HeartbeatConfig(_Model):
    """`[daemon.heartbeat]`: a dead-man's switch. The daemon pings `url` every `interval_s` (healthchecks.io, Uptime
    Kuma push…), so its own death is noticed from outside the machine; `fail_url`, if set, is pinged instead while a
    target waits for a human (gave up)."""

    url: HttpUrl | None = None  # None: off; "${NAME}" secrets allowed
    fail_url: HttpUrl | None = None
    method: Literal["GET", "POST"] = "GET"
    interval_s: PositiveFloat = HEARTBEAT_INTERVAL_S
    timeout_s: PositiveFloat = HEARTBEAT_TIMEOUT_S


class GuardianConfig(_Model):
    """`[daemon.guardian]`: how `clawmedic guardian` judges the daemon."""

    stale_after_s: Annotated[float, Field(ge=10, le=defaults.MAX_DURATION_S)] = (
        GUARDIAN_STALE_AFTER_S  # twice the 5 s status refresh at least
    )
    start_wait_s: PositiveFloat = GUARDIAN_START_WAIT_S


class LogFileConfig(_Model):
    """`[daemon.logfile]`: the daemon's own log, rotated at midnight, `keep_days` old files kept, all 0600."""

    enabled: bool = True
    path: UserPath | None = None  # default: <state>/logs/clawmedic.log; relative to the config file
    keep_days: Annotated[int, Field(ge=1, le=3650)] = LOG_KEEP_DAYS


GITHUB_MIN_INTERVAL_S = 3600.0  # one issue write an hour per incident signature: a flapping target is not spam
GITHUB_MAX_PER_DAY = 10  # all signatures together: a bad day opens a handful of issues, not a hundred
GITHUB_TIMEOUT_S = 15.0  # one small REST call; a slow API must not pile requests up
GITHUB_RETRY_S = 60.0  # an API that failed (down, 5xx, network) is tried again after this, then backing off
GITHUB_RETRY_MAX_S = 1800.0


class GitHubConfig(_Model):
    """`[daemon.github]`: one GitHub issue per incident signature for incidents that gave up (a repeat adds a
    comment), through the REST API. The token is read from the environment variable `token_env` only, never from
    this file, and is redacted everywhere."""

    repo: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")  # "owner/name"
    token_env: str = "GITHUB_TOKEN"  # noqa: S105 (the name of a variable, not a secret)
    api_url: HttpUrl = "https://api.github.com"
    labels: list[str] = Field(default_factory=lambda: ["clawmedic"])
    min_interval_s: NonNegFloat = GITHUB_MIN_INTERVAL_S  # at most one write (issue or comment) per signature
    max_per_day: CountOrZero = GITHUB_MAX_PER_DAY  # writes in any 24 h, all signatures together
    timeout_s: PositiveFloat = GITHUB_TIMEOUT_S
    retry_s: PositiveFloat = GITHUB_RETRY_S
    retry_max_s: PositiveFloat = GITHUB_RETRY_MAX_S


class HttpConfig(_Model):
    """`[daemon.http]`: the status page and Prometheus `/metrics` (`clawmedic.web`). `listen = ""` turns it off. An
    address that is not loopback needs a bearer token in the environment variable `token_env`, or `run` refuses."""

    listen: str = defaults.HTTP_LISTEN
    token_env: str = defaults.HTTP_TOKEN_ENV

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        from clawmedic.web.address import parse_listen

        if v:
            parse_listen(v)
        return v


TargetConfig.model_rebuild()
DaemonConfig.model_rebuild()
Config.model_rebuild()


def notify_url_refs(config: Config) -> list[tuple[str, str]]:
    """(key, value) of every config value that may hold a "${NAME}" secret besides the targets' commands."""
    d = config.daemon
    refs = [(f"daemon.notify.urls[{i}]", u) for i, u in enumerate(d.notify.urls)]
    refs += [
        (f"daemon.heartbeat.{k}", v) for k, v in (("url", d.heartbeat.url), ("fail_url", d.heartbeat.fail_url)) if v
    ]
    for name, t in config.targets.items():
        if t.notify is not None:
            refs += [(f"targets.{name}.notify.urls[{i}]", u) for i, u in enumerate(t.notify.urls)]
    return refs
