"""Moved to `clawmedic.sandbox.model_standin` (`clawmedic drill` starts it too); import it from there. This name is
kept for tests written against the old place."""

from clawmedic.sandbox.model_standin import Mode, ModelStandin, Received

__all__ = ["Mode", "ModelStandin", "Received"]
