"""The evaluation summary: accuracy by fault and by remedy, the median case and the median decision."""

from __future__ import annotations

from clawmedic.doctor.llm.evals import Score, summary


def _score(case: str, fault_ok: bool, remedy_ok: bool, steps: int, seconds: float) -> Score:
    return Score(case, "f", "f" if fault_ok else "g", fault_ok, ["r"], "r", remedy_ok, steps, "finished", seconds)


def test_the_summary_counts_faults_remedies_and_times_a_decision() -> None:
    scores = [
        _score("a", True, True, 2, 40.0),  # 20 s a decision
        _score("b", True, False, 4, 40.0),  # 10 s
        _score("c", False, False, 1, 90.0),  # 90 s
        _score("d", True, True, 0, 5.0),  # the backend failed before a turn: no decision to time
    ]
    s = summary("local", scores)
    assert (s["accuracy"], s["fault_accuracy"], s["remedy_accuracy"]) == (0.5, 0.75, 0.5)
    assert s["median_seconds"] == 40.0
    assert s["median_seconds_per_decision"] == 20.0
    assert [x["ok"] for x in s["scores"]] == [True, False, False, True]


def test_an_empty_run_summarises_to_zeros() -> None:
    s = summary("local", [])
    assert (s["cases"], s["median_seconds"], s["median_seconds_per_decision"]) == (0, 0.0, 0.0)
