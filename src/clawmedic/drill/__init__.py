"""`clawmedic drill`: a game day on a sandboxed real gateway — every fault of the table injected for real, each
row's expectation and invariants checked. See `faults` (the table), `invariants` and `runner`."""

from clawmedic.drill.faults import FAULTS, Expect, Fault, select

__all__ = ["FAULTS", "Expect", "Fault", "select"]
