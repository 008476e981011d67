"""The phase-change rule (mechgrok.analysis.phase_changes) on curves whose answer is known."""

import numpy as np
import pytest

from mechgrok.analysis.phase_changes import detect, largest, table

STEPS = np.arange(0, 2000, 10.0)


def _drop(t0: float, width: float, hi: float, lo: float) -> np.ndarray:
    """A reverse-S in ln(loss): a plateau at hi, a fall around t0, a plateau at lo."""
    return np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) / (1 + np.exp((STEPS - t0) / width)))


def test_a_plateau_then_a_sharp_fall_is_one_phase_change_at_its_steepest_step():
    rng = np.random.default_rng(0)
    loss = _drop(800, 20, 2.3, 0.01) * np.exp(rng.normal(0, 0.05, len(STEPS)))
    (change,) = detect(STEPS, loss)
    assert abs(change.step - 800) <= 30
    assert change.before > 4 * change.after
    assert change.start < change.step < change.end


@pytest.mark.parametrize("loss", [2.3 * np.exp(-STEPS / 300), 2.3 * (1 + STEPS) ** -1.5, np.full(len(STEPS), 0.7)])
def test_steady_or_slowing_declines_and_plateaus_are_not_phase_changes(loss):
    assert detect(STEPS, loss) == []


def test_two_separate_falls_are_two_changes_and_a_small_fall_is_none():
    loss = _drop(400, 15, 2.3, 0.1) * _drop(1400, 15, 1.0, 0.05)
    assert [round(c.step / 100) for c in detect(STEPS, loss)] == [4, 14]
    assert detect(STEPS, _drop(1000, 15, 1.0, 0.67)) == []  # a 1.5x fall is below the default 2x


def test_a_rising_score_and_the_table_lists_every_component():
    score = 0.9 / (1 + np.exp(-(STEPS - 600) / 15))
    (change,) = detect(STEPS, score, log=False, rising=True)
    assert abs(change.step - 600) <= 20 and change.after > change.before
    frame = table({"jump": (STEPS, _drop(900, 15, 2.0, 0.01)), "flat": (STEPS, np.full(len(STEPS), 2.0))})
    assert list(frame.component) == ["jump", "flat"] and np.isnan(frame.step.iloc[1])
    assert largest(detect(STEPS, _drop(900, 15, 2.0, 0.01))).step == int(frame.step.iloc[0])


def test_bad_curves_are_refused_by_name():
    with pytest.raises(ValueError, match="increase strictly"):
        detect(STEPS[::-1], np.ones(len(STEPS)))
    with pytest.raises(ValueError, match="finite"):
        detect(STEPS, np.full(len(STEPS), np.nan))
    with pytest.raises(ValueError, match="log=False"):
        detect(STEPS, -np.ones(len(STEPS)))
    with pytest.raises(ValueError, match="window="):
        detect(STEPS, np.ones(len(STEPS)), window=1e6)
