"""The event kinds that mean "a human is needed", and where each one must reach.

Events are written as plain dicts (`EventLog.emit(kind, …)`); the kinds that call for a person are declared here, in
one place, so that the notifier and the GitHub plugin handle them *by type* and a test can enumerate them. Before this
list existed, `gateway_fault_escalated` ("needs a human") reached no notifier and no GitHub issue.
"""

from __future__ import annotations

from enum import StrEnum


class HumanNeeded(StrEnum):
    """Each event kind after which clawmedic cannot finish the job alone."""

    ESCALATED = "escalated"  # a restart will not fix it; the doctor is working on it (told after the group wait)
    GAVE_UP = "gave_up"  # the target is down and nothing is left to try
    LATENT_CONFIG_FAULT = "latent_config_fault"  # the config on disk is invalid: the next restart would fail
    GATEWAY_FAULT_ESCALATED = "gateway_fault_escalated"  # a fault inside a running gateway the healer cannot fix
    STATE_WRITES_FAILING = "state_writes_failing"  # clawmedic cannot write its own state folder (a full disk)


# The notification each of them becomes (config `[daemon.notify] events` names these).
NOTIFY_KIND: dict[HumanNeeded, str] = {
    HumanNeeded.ESCALATED: "escalated",
    HumanNeeded.GAVE_UP: "gave_up",
    HumanNeeded.LATENT_CONFIG_FAULT: "latent_config_fault",
    HumanNeeded.GATEWAY_FAULT_ESCALATED: "gateway_fault",
    HumanNeeded.STATE_WRITES_FAILING: "state_writes_failing",
}

# The ones that also open (or comment on) a GitHub issue: a target that stays broken until someone acts. An
# escalation is still in the doctor's hands; a latent fault is healed before the next restart; a full disk is the
# host's, not the gateway's, and GitHub is not where an operator learns of it.
GITHUB_KINDS: frozenset[HumanNeeded] = frozenset({HumanNeeded.GAVE_UP, HumanNeeded.GATEWAY_FAULT_ESCALATED})
