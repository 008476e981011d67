"""Phase boundaries (mechgrok/phases.py) on synthetic curves with known events, and on real runs."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _tiny_run import tiny_run
from mechgrok.analysis import phases, progress
from mechgrok.analysis.phases import PhaseRules, detect_phases

EPOCHS = np.arange(0, 20_001, 100)


def synthetic(mem=1500, drop_start=9000, drop_end=11_000, settle=13_000, final=1e-6, rng=None):
    """Curves shaped like the paper's Fig. 7, with events at known epochs.

    excluded loss: falls to its minimum at ``mem``, then rises; test loss: rises to a peak at
    ``mem``, flat until ``drop_start``, falls log-linearly to ``final`` at ``drop_end``; weight
    norm: falls linearly from ``mem`` to ``settle`` and is flat afterwards.
    """
    e = EPOCHS.astype(float)
    excluded = np.where(e <= mem, 4.7 * np.exp(-5 * e / mem) + 0.03, 0.03 + 8 * (e - mem) / e[-1])
    log_test = np.where(e <= mem, np.log10(4.7) + (np.log10(25) - np.log10(4.7)) * e / mem, np.log10(25))
    frac = np.clip((e - drop_start) / (drop_end - drop_start), 0, 1)
    log_test = np.where(e > drop_start, np.log10(25) + frac * (np.log10(final) - np.log10(25)), log_test)
    weights = np.where(e <= mem, 1800 + 1700 * e / mem, 3500 - 2600 * np.clip((e - mem) / (settle - mem), 0, 1))
    df = pd.DataFrame({"epoch": EPOCHS, "test_loss": 10**log_test, "excluded_loss": excluded, "sum_sq_weights": weights})
    if rng is not None:
        df["test_loss"] *= np.exp(rng.normal(0, 0.05, len(df)))
    return df


def test_boundaries_sit_on_the_events():
    ph = detect_phases(synthetic())
    assert ph.memorization_end == 1500
    # 10% of the log-range below the peak is 10% of the way through the log-linear drop
    assert ph.circuit_formation_end == pytest.approx(9000 + 0.1 * 2000, abs=100)
    # test loss within 5% of its range from final at 95% of the drop; weight norm at 95% of its fall
    assert ph.cleanup_end == pytest.approx(1500 + 0.95 * (13_000 - 1500), abs=100)
    assert ph.notes == ()


@pytest.mark.parametrize("shift", [-4000, 0, 5000])
def test_boundaries_follow_the_events_when_they_move(shift):
    ph = detect_phases(synthetic(drop_start=9000 + shift, drop_end=11_000 + shift, settle=13_000 + shift))
    assert ph.memorization_end == 1500
    assert ph.circuit_formation_end == pytest.approx(9200 + shift, abs=100)
    assert ph.cleanup_end == pytest.approx(1500 + 0.95 * (11_500 + shift), abs=100)


def test_cleanup_waits_for_the_weight_norm():
    """Test loss settles at 11k, but the weight norm keeps falling until 17k."""
    ph = detect_phases(synthetic(settle=17_000))
    assert ph.cleanup_end == pytest.approx(1500 + 0.95 * 15_500, abs=100)


def test_noise_and_a_single_spike_do_not_move_boundaries():
    clean = detect_phases(synthetic())
    df = synthetic(rng=np.random.default_rng(0))
    df.loc[df.epoch == 5000, "excluded_loss"] = 1e-9  # one bad checkpoint
    noisy = detect_phases(df)
    assert noisy.memorization_end == clean.memorization_end
    assert abs(noisy.circuit_formation_end - clean.circuit_formation_end) <= 200
    assert abs(noisy.cleanup_end - clean.cleanup_end) <= 300


def test_a_run_that_has_not_grokked_has_no_later_boundaries():
    ph = detect_phases(synthetic(drop_start=30_000, drop_end=31_000, settle=30_000))
    assert ph.memorization_end == 1500
    assert ph.circuit_formation_end is None and ph.cleanup_end is None
    assert "not grokked" in ph.notes[0]
    assert ph.phase_of(800) == "memorization" and ph.phase_of(5000) == "not grokked"


def test_cleanup_still_running_at_the_end_is_flagged():
    ph = detect_phases(synthetic(settle=40_000))
    assert ph.cleanup_end >= 0.9 * EPOCHS[-1]
    assert any("still moving" in n for n in ph.notes)


def test_phase_of_and_tables():
    ph = detect_phases(synthetic())
    assert ph.phase_of(0) == "memorization"
    assert ph.phase_of(ph.memorization_end + 100) == "circuit formation"
    assert ph.phase_of(ph.circuit_formation_end + 100) == "cleanup"
    assert ph.phase_of(ph.cleanup_end + 100) == "after cleanup"
    table = ph.table()
    assert table.epoch.tolist() == list(ph.boundaries.values())
    assert table.boundary.tolist() == list(phases.BOUNDARY_NAMES)
    assert ph.to_dict()["rules"]["test_drop_fraction"] == 0.1


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="lacks columns"):
        detect_phases(synthetic().drop(columns="excluded_loss"))
    with pytest.raises(ValueError, match="test_drop_fraction"):
        PhaseRules(test_drop_fraction=1.5)
    with pytest.raises(ValueError, match="smooth"):
        PhaseRules(smooth=0)
    assert detect_phases(synthetic().head(2)).boundaries == dict.fromkeys(phases.BOUNDARY_NAMES)


def test_tiny_run_boundaries_are_ordered_and_on_the_curves():
    """A real (tiny, quickly grokking) run: boundaries in order, test loss low after cleanup."""
    prog = progress.load_progress(tiny_run())
    ph, t = prog.phases, prog.measures.set_index("epoch")
    assert ph.memorization_end is not None and ph.cleanup_end is not None
    assert ph.memorization_end <= ph.circuit_formation_end <= ph.cleanup_end
    assert t.excluded_loss[ph.memorization_end] == pytest.approx(t.excluded_loss.min(), rel=0.5)
    assert t.test_loss[ph.cleanup_end] < 1e-2 * t.test_loss.max()


# ----------------------------------------------------------------------------- p=113 seeds (slow)
def _p113_runs():
    root = Path(__file__).resolve().parents[1] / "runs" / "mainline"
    found = [root] + sorted((root / "seeds").glob("seed_*")) if (root / "config.json").exists() else []
    return [r for r in found if (r / "progress.csv").exists()]


@pytest.mark.slow
@pytest.mark.parametrize("run", _p113_runs() or [None], ids=lambda r: "none" if r is None else r.name)
def test_p113_seeds_follow_the_papers_story(run):
    """On each p=113 seed of `mechgrok reproduce --seeds N`: memorization ends within a few
    thousand epochs, restricted loss falls well before test loss, excluded loss rises during
    circuit formation, test loss drops during cleanup, and the boundaries sit on those events."""
    if run is None:
        pytest.skip("no runs/mainline with progress.csv; run `mechgrok reproduce --seeds 3` first")
    prog = progress.load_progress(run)
    ph, t = prog.phases, prog.measures.set_index("epoch")
    assert ph.memorization_end <= 3000
    assert ph.circuit_formation_end is not None, "the run did not grok"
    mem, circ, clean = ph.memorization_end, ph.circuit_formation_end, ph.cleanup_end
    # excluded loss rises during circuit formation
    assert t.excluded_loss[circ] > 3 * t.excluded_loss[mem]
    # restricted loss falls well before test loss: at the end of circuit formation it is already
    # 10x below its value at the end of memorization, while test loss has fallen less than that
    assert t.restricted_loss[circ] < 0.1 * t.restricted_loss[mem]
    assert t.test_loss[circ] > 0.1 * t.test_loss.loc[mem:circ].max()
    # test loss drops in cleanup, by orders of magnitude
    assert t.test_loss[clean] < 1e-3 * t.test_loss[circ]
    # the weight norm falls during circuit formation and cleanup
    assert t.sum_sq_weights[clean] < t.sum_sq_weights[circ] < t.sum_sq_weights[mem]
