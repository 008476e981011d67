"""Slow: each claim of the Alignment Forum post about the sequence tasks holds on the default sizes,
decided by the rules (mechgrok.analysis.phase_changes, mechgrok.analysis.crossover), not by eye.
One experiment per test, trained from scratch on one thread (minutes each on a 2-core machine)."""

import pytest

from mechgrok.reproduce.phase_changes import pipeline, tasks as T

pytestmark = pytest.mark.slow


def _claims(tmp_path, experiment: str) -> dict:
    plans = {"tasks": {experiment: T.plan()[experiment]}}
    pipeline.train_all(tmp_path, plans, executor="inline", threads=1)
    summary = T.summarise(tmp_path)
    assert set(summary) == {experiment}
    return summary, T.claims(summary)


def test_addition_shows_a_separate_phase_change_for_at_least_4_digits(tmp_path):
    summary, claims = _claims(tmp_path, "addition")
    assert claims["addition_digit_phase_changes"], summary["addition"]["phase_changes"]
    steps = [r["step"] for r in summary["addition"]["phase_changes"] if r["step"] == r["step"]]
    assert len(set(steps)) == len(steps)  # separate: no two digits change at one step


def test_the_induction_score_jumps_with_the_loss_drop(tmp_path):
    summary, claims = _claims(tmp_path, "induction")
    assert claims["induction_score_jumps_with_loss"], summary["induction"]
    assert summary["induction"]["induction_head"]["layer"] == 1


def test_max_of_a_list_shows_a_phase_change_per_skip_trigram(tmp_path):
    summary, claims = _claims(tmp_path, "max_list")
    assert claims["max_list_trigram_phase_changes"], summary["max_list"]["phase_changes"]


def test_the_crossover_search_brackets_a_train_size_that_groks(tmp_path):
    summary, claims = _claims(tmp_path, "crossover")
    assert claims["crossover_bracketed"], summary["crossover"]["runs"]
