"""The few exceptions clawmedic raises, each named by what happens next.

Every one that can reach the command line carries an exit code and a one-sentence message; the CLI prints the
message and exits with the code, never a traceback.
"""

from __future__ import annotations

from clawmedic import defaults


class ClawmedicError(Exception):
    """A failure the user should read as one sentence."""

    exit_code: int = defaults.EXIT_FAILURE


class ConfigInvalid(ClawmedicError):
    """The clawmedic config cannot be used; nothing was started."""

    exit_code = defaults.EXIT_CONFIG


class UnknownTarget(ClawmedicError):
    """A command named a target the config does not have."""

    exit_code = defaults.EXIT_CONFIG


class EnvironmentMissing(ClawmedicError):
    """A binary, a download or an install clawmedic needs is not available."""

    exit_code = defaults.EXIT_ENVIRONMENT


class AlreadyRunning(ClawmedicError):
    """Another clawmedic daemon owns this state folder."""

    exit_code = defaults.EXIT_LOCKED


class NotOurProcess(ClawmedicError):
    """clawmedic refused to signal a process it did not start."""

    exit_code = defaults.EXIT_FAILURE
