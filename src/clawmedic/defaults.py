"""Every limit and default clawmedic uses, in one place, each with the reason for its value.

Config models take their defaults from here; nothing else in the tree hard-codes a timeout.
"""

from __future__ import annotations

from typing import Final

# --- the pinned sandbox -------------------------------------------------------------------------
OPENCLAW_VERSION: Final = "2026.9.6"  # the version whose behaviour ../shared/openclaw/FACTS.md records
NODE_VERSION: Final = "24.21.0"  # satisfies openclaw's engines ">=24.16.0 <25"; ships as node-<os>-<arch> on npm
NPM_VERSION: Final = "11.19.1"  # bootstrapped from the registry so a machine without npm can install
NPM_REGISTRY: Final = "https://registry.npmjs.org"  # overridden by $npm_config_registry

# --- probing -------------------------------------------------------------------------------------
PROBE_INTERVAL_S: Final = 5.0  # 5 s keeps an idle daemon under 1 % of a core while catching a hang quickly
PROBE_TIMEOUT_S: Final = 3.0  # /health answers in milliseconds when alive; 3 s rides out a busy event loop
PROBE_KEEPALIVE_S: Final = 30.0  # idle probe connections outlive a few probe intervals (the server may close first)
SUSPECT_INTERVAL_S: Final = 1.0  # once a probe failed, confirm quickly instead of waiting a full interval
FAILURE_THRESHOLD: Final = 3  # consecutive failed liveness checks before acting: one lost probe is not an outage
STARTUP_TIMEOUT_S: Final = 90.0  # OpenClaw boots in 7-25 s, slower under contention (FACTS §1 says >= 60 s)
STARTUP_POLL_S: Final = 0.25  # during boot, probe often so recovery time is not rounded up to an interval

# --- the ladder ------------------------------------------------------------------------------------
BACKOFF_INITIAL_S: Final = 10.0  # second restart in a row waits this long; the first is immediate
BACKOFF_MAX_S: Final = 600.0  # never wait more than 10 minutes between attempts
BACKOFF_JITTER: Final = 0.2  # +/-20 % so several gateways on one host do not restart in lockstep
STABLE_RESET_S: Final = 300.0  # healthy this long forgets past failures (matches OpenClaw's own 300 s breaker)
CRASH_LOOP_FAILURES: Final = 5  # this many failures ...
CRASH_LOOP_WINDOW_S: Final = 600.0  # ... within this window is a crash loop: escalate instead of restarting
PROBATION_S: Final = 30.0  # after a restart the target must stay live this long before it counts as healed
RETRY_AFTER_GAVE_UP_S: Final = 600.0  # gave up: one gated launch every 10 min (a bash watchdog checks every 3 min,
# Kubernetes retries a crash-looping pod every 5 min); slow enough that a target that still fails costs little
RETRY_AFTER_GAVE_UP_MIN_S: Final = 1.0  # below a second the retry would spin (a period is a launch and a probation)
RETRY_AFTER_GAVE_UP_JITTER: Final = 0.1  # +/-10 % so several daemons that gave up together do not retry in lockstep

# --- gateway checks while healthy (faults that do not take the gateway down) ----------------------------
GATEWAY_CHECK_INTERVAL_S: Final = 60.0  # a check runs 2-3 openclaw CLIs (3-7 s, ~150 MB each): a minute is cheap
GATEWAY_CHECK_COMMAND_TIMEOUT_S: Final = 45.0  # the CLI answers in 3-7 s, 15 s under load; a hung one is killed
GATEWAY_REMEDY_COOLDOWN_S: Final = 600.0  # a remedy that did not help is not retried sooner: no flapping
GATEWAY_REMEDY_MAX_TRIES: Final = 2  # per remedy and incident; then the incident goes to humans
GATEWAY_VERIFY_TIMEOUT_S: Final = 90.0  # re-check after a remedy this long: `config set` hot-reloads in ~5 s (FACTS §7)
GATEWAY_VERIFY_POLL_S: Final = 3.0  # between re-checks while verifying (each costs a few CLI calls)
CRON_ERRORS_BEFORE_DISABLE: Final = 2  # one failed run can be a blip; two in a row is a failing job
CRON_ISSUE_INTERVAL_S: Final = 6 * 3600.0  # one GitHub issue write per disabled cron job per 6 h: a job is not spam
CHANNEL_DOWN_CHECKS: Final = 3  # a channel reconnecting after a network blip is down for a check or two
CHANNEL_DOWN_CHECKS_MAX: Final = 100  # at a minute per check, more would leave a dead channel for hours
CHANNEL_RESTARTS: Final = 1  # one targeted restart heals a stuck socket; a second rarely does what the first did not
CHANNEL_RESTARTS_MAX: Final = 10
CHANNEL_RESTART_MIN_INTERVAL_S: Final = 300.0  # a channel's login and reconnect take up to minutes; no restart storms
CHANNEL_RESTART_MIN_INTERVAL_FLOOR_S: Final = 5.0  # below this a restart overlaps the previous stop/start (seconds)
CHANNEL_RESTART_MIN_INTERVAL_CEIL_S: Final = 7 * 86400.0  # a week, like every other duration bound
PLUGIN_DISABLE_MIN_INTERVAL_S: Final = 300.0  # a plugin disable that did not take is not retried sooner
PLUGIN_DISABLE_MIN_INTERVAL_FLOOR_S: Final = 5.0  # `plugins list` itself takes ~3-8 s
MODEL_RATE_LIMIT_COOLDOWN_MIN: Final = 300.0  # rate limit / quota / overloaded: provider windows reset within hours
MODEL_AUTH_COOLDOWN_MIN: Final = 720.0  # auth / scope / model-not-found: a human must act; half a day, probed meanwhile
MODEL_COOLDOWN_MIN_MIN: Final = 1.0  # a shorter cooldown would flap the default on every failed turn
MODEL_COOLDOWN_MAX_MIN: Final = 7 * 1440.0  # a week, like every other duration bound
MODEL_PROBE_INTERVAL_S: Final = 300.0  # one live probe costs a CLI run (~150 MB, seconds) and a model call
MODEL_PROBE_MIN_INTERVAL_S: Final = 60.0  # probing a cooling provider more often than this only spends its quota
MODEL_PROBE_TIMEOUT_S: Final = 20.0  # OpenClaw's own default for `models.probe` (it allows 5-60 s)
# conversation readiness (`[targets.NAME.conversation]`, opt-in): one real agent turn through the gateway
CONVERSATION_INTERVAL_S: Final = 900.0  # a turn sends OpenClaw's whole prompt (~15k input tokens): 96 a day is cheap
CONVERSATION_MIN_INTERVAL_S: Final = 10.0  # a turn takes seconds; more often, probes would overlap
CONVERSATION_RETRY_S: Final = 120.0  # while failing, ask again this often (or every interval_s, if shorter)
CONVERSATION_TIMEOUT_S: Final = 120.0  # a model says "pong" in seconds; OpenClaw retries a 429 for minutes first
CONVERSATION_MIN_TIMEOUT_S: Final = 5.0  # below this the CLI has not even reached the gateway on a busy machine
CONVERSATION_MAX_TIMEOUT_S: Final = 3600.0  # OpenClaw's own agent timeout is 600 s; an hour is surely a typo
CONVERSATION_FAILURES: Final = 2  # turns in a row without an answer before an incident: one slow turn is no outage
CONVERSATION_MAX_FAILURES: Final = 10  # at the retry period, more would hide a dead agent for over 20 min
CONVERSATION_CLI_MARGIN_S: Final = 60.0  # the CLI boots in 2-10 s (a minute under load) before the turn's timeout
CONVERSATION_MESSAGE: Final = "clawmedic readiness check: reply with one word."  # ~10 tokens beside the prompt

# --- the doctor's evidence -------------------------------------------------------------------------------------
EVIDENCE_LEAD_S: Final = STARTUP_TIMEOUT_S  # log records count from the launch that failed: at most a startup before
EVIDENCE_WINDOW_S: Final = 3600.0  # `diagnose` with no incident: the gateway's last hour of log is its present
EVIDENCE_COLLECTOR_BUDGET_S: Final = 4.0  # collectors run in parallel; one not done by then is recorded as timed out
# the what-changed collector may run this long (one known-good read in a child process: ~3 s under load 10);
# the change rule reverts what it finds, so it is worth the wait
EVIDENCE_CHANGES_BUDGET_S: Final = 20.0
EVIDENCE_LINT_TIMEOUT_S: Final = 20.0  # `openclaw doctor --lint --json` takes ~3 s idle; later is not waited for
EVIDENCE_NODE_TIMEOUT_S: Final = 10.0  # `node --version` answers in ~50 ms; a wedged binary is not waited on
EVIDENCE_DB_BUSY_S: Final = 2.0  # the state database is opened read-only; a gateway mid-write is not waited on long
EVIDENCE_MAX_LINES: Final = 60  # lines of output/log kept as evidence
EVIDENCE_MAX_LINE_CHARS: Final = 400  # characters per line
LOW_DISK_MB: Final = 200  # below this, a gateway that writes logs and SQLite will fail in odd ways
LOW_DISK_FRACTION: Final = 0.05  # ... but a small filesystem is only "full" below 5 % of its size (a 64 MB one is not)
NEAR_LOW_DISK_FACTOR: Final = 4  # free space under 4x the threshold is worth telling the LLM doctor: low, not "full"
BREAKER_WINDOW_S: Final = 300.0  # FACTS §5: OpenClaw's breaker counts unclean boots within 300 s, clears itself after
CHANGE_MAX_SETTINGS: Final = 20  # changed settings listed per file; the rest are counted
CHANGE_MAX_VALUE_CHARS: Final = 80  # characters of a setting's value shown
GATEWAY_CHECK_LOG_TAIL_LINES: Final = 2000  # model decisions since the last check; a busy gateway logs far fewer/min
GATEWAY_CHECK_MAX_ITEMS: Final = 50  # jobs, accounts, events or pins kept per check
GATEWAY_CHECK_MAX_TEXT: Final = 300  # characters per error string
OPENCLAW_VALIDATE_TIMEOUT_S: Final = 60.0  # `openclaw config validate` answers in ~2 s idle; allow for a loaded machine
OPENCLAW_DOCTOR_FIX_TIMEOUT_S: Final = 120.0  # `openclaw doctor --fix` rewrites the config in seconds; 2 min under load

# --- stopping ---------------------------------------------------------------------------------------
STOP_TIMEOUT_S: Final = 30.0  # SIGTERM, then SIGKILL: OpenClaw may drain for 325 s; FACTS advises 15-30 s
HUNG_STOP_TIMEOUT_S: Final = 5.0  # a process that failed liveness cannot drain anything; do not wait long
FOREIGN_STOP_TIMEOUT_S: Final = 15.0  # a stale gateway or port squatter: FACTS' low end, it serves nobody of ours
LAUNCH_MARKER_SLACK_S: Final = 3.0  # a launch starts within this of its marker's time; what it spawns, later

# --- resources ---------------------------------------------------------------------------------------
OPENCLAW_MEMORY_LIMIT_MB: Final = 3072  # OpenClaw's own "critical" memory pressure level is 3 GB (FACTS §9)
MEMORY_CHECK_INTERVAL_S: Final = 15.0  # walking the process tree costs more than an HTTP probe

# --- known-good state and prevention ------------------------------------------------------------------------
KNOWN_GOOD_AFTER_S: Final = 300.0  # a config that served healthy this long is snapshotted as known-good
KNOWN_GOOD_RECHECK_S: Final = 30.0  # after that, while healthy, the files are looked at again (an edit no watcher saw)
SNAPSHOT_INTERVAL_S: Final = 3600.0  # scheduled snapshot of boot-critical files, hourly
KNOWN_GOOD_LOCK_TIMEOUT_S: Final = 60.0  # a snapshot holds the store's lock well under a second; a minute is hung
KNOWN_GOOD_OP_TIMEOUT_S: Final = 120.0  # one store operation in its own process: well under a second, minutes loaded
APPLY_PROBATION_S: Final = 60.0  # `config apply`: the gateway must stay healthy this long or the change is rolled back
WATCH_DEBOUNCE_MS: Final = 300  # editors write a file in several steps; validate once they are done

# --- files --------------------------------------------------------------------------------------------
FILE_MODE: Final = 0o600  # logs, reports, state and secrets are private to the user
DIR_MODE: Final = 0o700
LOG_TAIL_LINES: Final = 200  # lines of a managed child's output kept in memory to classify its exit
EVENTS_MAX_BYTES: Final = 20 * 1024 * 1024  # the JSONL stream is rotated past this size
EVENTS_KEPT_WHILE_UNWRITABLE: Final = 5000  # events held in memory while the disk is full (~1 MB), then written
STATE_WRITES_SETTLE_S: Final = 10.0  # writes count as recovered after this long without a failed one (no flapping)
STATE_DB_REOPEN_S: Final = 5.0  # a store the full disk kept from opening tries its file again this often (cheap)
OUTPUT_LOG_MAX_BYTES: Final = 20 * 1024 * 1024  # a managed gateway's console output, rotated between launches
LOG_RETENTION_DAYS: Final = 14  # rotated logs clawmedic wrote are kept this long
CONTROL_POLL_S: Final = 0.5  # at start, the control loop waits in tenths of this for every target to start
CONSOLE_CAP_CHECK_S: Final = 60.0  # the daemon's own output appended to a file (cron/launchd): size checked this often
STATUS_DETAIL_REFRESH_S: Final = 60.0  # status.json's per-probe figures (latency, memory) are at most this old
CONTROL_RECHECK_S: Final = 5.0  # commands poke the daemon (control.poke); else it looks at control + config this often
SYSTEMD_WATCHDOG_S: Final = 60  # the unit's WatchdogSec=: a hung daemon is restarted within a minute
SYSTEMD_WATCHDOG_MIN_PING_S: Final = 0.5  # never ping systemd more often than this, whatever WATCHDOG_USEC says
TIMER_SAFETY_S: Final = 30.0  # a target's ladder timer wakes at its deadlines; this only bounds a missed wake-up
CONTROL_ACK_TIMEOUT_S: Final = 15.0  # the daemon takes a request within a poll (0.5 s); longer means it is hung
RESTART_WAIT_MARGIN_S: Final = 30.0  # `fix restart` waits stop + startup timeouts plus this for the new process
RESTART_PROGRESS_EVERY_S: Final = 10.0  # while waiting for a restart, say so at least this often (a human watches)

# --- bounds of every number in the config ---------------------------------------------------------------------
MIN_DURATION_S: Final = 0.05  # an interval or timeout under 50 ms only burns CPU (1e-300 s pegged a core)
MAX_DURATION_S: Final = 7 * 86400.0  # a week: longer is a typo, and 1e300 s overflows the event loop's timers
MAX_COUNT: Final = 10_000  # thresholds and counts: beyond this a limit is never reached, so it is a mistake
MAX_MEMORY_LIMIT_MB: Final = 1024 * 1024  # 1 TB: no gateway host has more

# --- exit codes of the clawmedic command ------------------------------------------------------------------
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1  # the job ran and failed (a fault was not healed, a target is down)
EXIT_CONFIG: Final = 2  # bad clawmedic config or usage: nothing was started
EXIT_ENVIRONMENT: Final = 3  # something outside clawmedic is missing: a binary, the sandbox, the network
EXIT_LOCKED: Final = 4  # another clawmedic daemon holds the state folder's lock

# --- the LLM doctor -------------------------------------------------------------------------------------------
LLM_MAX_STEPS: Final = 8  # model turns per consultation; a diagnosis + one remedy + a conclusion needs about 3
LLM_TIME_BUDGET_S: Final = 1800.0  # 30 min: a local 1.5B model on 2 cores needs 20-35 s per decision
LLM_REQUEST_TIMEOUT_S: Final = 180.0  # one model turn; a cloud answer takes seconds, a local one under a minute
LLM_TOOL_OUTPUT_MAX_CHARS: Final = 3000  # per tool result; more is cut, with a notice the model can see
LLM_MAX_TOKENS: Final = 300  # per decision: a tool call or a short conclusion, never an essay (CPU time is precious)
LLM_CLI_TIMEOUT_S: Final = 900.0  # an agent CLI gets 15 min for its whole answer
LLM_CONSULTATIONS_PER_INCIDENT: Final = 2  # a second look after the first one's remedies did not hold; then humans
LLM_KILL_GRACE_S: Final = 15.0  # past the time budget, the child gets this long to end its last request, then killed
LLM_STDERR_DRAIN_S: Final = 5.0  # the ended child's last stderr lines; a grandchild holding the pipe is not waited on
LLM_TMUX_TIMEOUT_S: Final = 10.0  # `tmux new-session -d` / `kill-session` return at once; a hung tmux is not waited on
LOCAL_MODEL_CONTEXT: Final = 8192  # tokens: the evidence summary, the tools and a few turns fit comfortably
LOCAL_MODEL_ASSEMBLY_LOCK_TIMEOUT_S: Final = 900.0  # another process joining the parts: 1.1 GB takes seconds
LOCAL_MODEL_READ_CHUNK_BYTES: Final = 4 * 1024 * 1024  # streaming buffer while joining and hashing the parts
LOCAL_MODEL_THOUGHT_MAX_CHARS: Final = 0  # a thought before the choice: off (trials: twice the tokens, no better)
LOCAL_MODEL_CONCLUSION_MAX_CHARS: Final = 400  # the last answer: 3 sentences, ~90 tokens (1-3 tokens/s, 2 cores)
REDACT_MIN_SECRET_LEN: Final = 4  # a configured secret shorter than this would mask ordinary words and numbers
REDACT_MIN_NAMED_SECRET_LEN: Final = 6  # `API_TOKEN=…` in start.env/env_file: long enough not to blank common words
REDACT_MIN_GUESSED_SECRET_LEN: Final = 12  # any other env value counts as a secret only if long, with digits+letters
REDACT_MIN_URL_TOKEN_LEN: Final = 16  # an Apprise URL's path segment or query value this long is a token

# --- the HTTP server: status page and Prometheus /metrics ([daemon.http]) ------------------------------------
# 18780: below OpenClaw's 18789 and the ports it derives from it (18789 and up), outside Prometheus' fully allocated
# 9100-9999 exporter range and the ephemeral range, so it collides with neither the gateway nor a node exporter.
HTTP_LISTEN: Final = "127.0.0.1:18780"  # on by default, loopback only: nothing is exposed beyond this machine
# the environment variable holding the bearer token that a non-loopback address needs (a name, not a secret)
HTTP_TOKEN_ENV: Final = "CLAWMEDIC_HTTP_TOKEN"  # noqa: S105
HTTP_BIND_RETRY_S: Final = 30.0  # a busy port is retried this often; supervision never waits for the page
HTTP_INCIDENTS_SHOWN: Final = 50  # the status page lists this many latest incidents: a bad week, one screen
HTTP_REFRESH_S: Final = 5  # the status page reloads itself this often (the status file's own refresh period)
HTTP_STATS_WINDOW_S: Final = 7 * 86400.0  # the page's stats cover a week, like `clawmedic stats`' default
HTTP_STATS_REFRESH_S: Final = 60.0  # reading a week of events costs milliseconds; once a minute is plenty
# Histogram buckets (seconds). Time to recover: a kill -9 heals in seconds, a doctor's remedy in a minute or two,
# an LLM consultation in up to half an hour. Probe duration: a healthy probe answers in milliseconds, a probe
# timeout is seconds.
TTR_BUCKETS_S: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
PROBE_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
