"""The sweep's regime rules (mechgrok/analysis/regimes.py): synthetic loss curves for each regime and
each boundary, the float32 floor, input validation, and the regime diagram's counts."""

import numpy as np
import pandas as pd
import pytest
import torch

from mechgrok.analysis import regimes

STEPS = 200  # logged every 100 steps over 20k, as in the sweep
T = np.arange(STEPS)


def falling(start, end, until):
    """log-linear from ``start`` to ``end`` over the first ``until`` logs, then flat."""
    x = np.clip(T / until, 0, 1)
    return np.exp(np.log(start) + x * (np.log(end) - np.log(start)))


def grokking_curves():
    train = falling(0.7, 1.19e-7, 20)  # fits the train set early
    test = np.where(T < 120, 1.5, 1e-4)  # the test loss falls long after
    test = np.where(T >= 150, 1e-6, test)
    return train, test


# ----------------------------------------------------------------------------- each regime
def test_fail_when_train_loss_never_gets_below_the_threshold():
    train = falling(0.7, 2e-5, 100)
    assert regimes.classify_regime(train, falling(0.7, 1e-3, 100)) == "fail"
    assert regimes.classify_regime(train, np.full(STEPS, 1e-8)) == "fail"  # checked first, whatever the test loss


def test_memorize_when_test_loss_never_gets_below_the_threshold():
    assert regimes.classify_regime(falling(0.7, 1.19e-7, 30), np.full(STEPS, 2.0)) == "memorize"


def test_generalize_when_test_follows_train_closely():
    train = falling(0.7, 1.19e-7, 50)
    assert regimes.classify_regime(train, 10 * train) == "generalize"
    assert regimes.classify_regime(train, 100 * train) == "memorize"  # 100 × 1.19e-7 is above 1e-5


def test_grok_when_test_falls_long_after_train():
    train, test = grokking_curves()
    ev = regimes.regime_evidence(train, test)
    assert ev.regime == "grok"
    assert ev.min_train_loss == pytest.approx(regimes.LOSS_FLOOR)  # 1.19e-7 in the curves, clamped at the floor
    assert ev.min_test_loss == pytest.approx(1e-6)
    assert ev.max_ratio == pytest.approx(1.5 / regimes.LOSS_FLOOR)


# ----------------------------------------------------------------------------- each boundary
def test_fail_boundary_is_strict():
    test = np.full(STEPS, 1e-6)
    assert regimes.classify_regime(np.full(STEPS, 1e-5), test) != "fail"
    assert regimes.classify_regime(np.full(STEPS, 1e-5 * (1 + 1e-9)), test) == "fail"


def test_memorize_boundary_is_strict():
    train = np.full(STEPS, 1e-7)
    assert regimes.classify_regime(train, np.full(STEPS, 1e-5)) != "memorize"
    assert regimes.classify_regime(train, np.full(STEPS, 1e-5 * (1 + 1e-9))) == "memorize"


def test_generalize_boundary_is_strict():
    train = np.full(STEPS, 1e-6)
    test = np.full(STEPS, 1e-6)
    test[50] = 5e4 * 1e-6 * (1 - 1e-9)  # just under the ratio at one step
    assert regimes.classify_regime(train, test) == "generalize"
    test[50] = 5e4 * 1e-6  # exactly at it
    assert regimes.classify_regime(train, test) == "grok"


def test_ratio_is_the_maximum_over_logged_steps():
    train = np.full(STEPS, 1e-7)
    test = np.full(STEPS, 1e-7)
    assert regimes.classify_regime(train, test) == "generalize"
    test[3] = 1e-1  # one step with a large gap is enough
    assert regimes.classify_regime(train, test) == "grok"


def test_zero_train_loss():
    """torch's float32 log-softmax reaches exactly 0; the floor keeps test/train finite, as in the explorable."""
    train = np.full(STEPS, 1e-7)
    train[10] = 0.0
    test = np.full(STEPS, 1e-6)
    assert regimes.regime_evidence(train, test).max_ratio == pytest.approx(1e-6 / regimes.LOSS_FLOOR)
    assert regimes.regime_evidence(train, test, loss_floor=0).max_ratio == np.inf
    test[10] = 0.0
    assert regimes.regime_evidence(train, test, loss_floor=0).max_ratio == 1e-6 / 1e-7
    train[:], test[:] = 0.0, 0.0
    assert regimes.regime_evidence(train, test, loss_floor=0).max_ratio == 1.0
    with pytest.raises(ValueError, match="loss_floor=0.1 must be a number in"):
        regimes.regime_evidence(train, test, loss_floor=0.1)


def test_thresholds_can_be_changed():
    train, test = grokking_curves()
    assert regimes.classify_regime(train, test, generalize_ratio=1e8) == "generalize"
    assert regimes.classify_regime(train, test, memorize_test_loss=1e-7) == "memorize"
    assert regimes.classify_regime(train, test, fail_train_loss=1e-8) == "fail"


def test_float32_floor_and_float64():
    """The docstring's floor: the explorable's train loss floors at ~1.19e-7; a loss that keeps falling
    below it (float64, or torch's float32 reaching 0) is clamped there, so the ratio means the same."""
    test = falling(0.7, 1e-6, 60)
    train32 = np.maximum(test / 1e3, 1.19e-7)  # test/train stays under 1e4
    assert regimes.classify_regime(train32, test) == "generalize"
    train64 = test / 1e3 * np.exp(-T / 10)  # what the floor hid
    assert regimes.classify_regime(train64, test) == "generalize"
    assert regimes.classify_regime(train64, test, loss_floor=0) == "grok"


# ----------------------------------------------------------------------------- inputs
def test_inputs_of_every_kind_agree():
    train, test = grokking_curves()
    want = regimes.classify_regime(train, test)
    assert regimes.classify_regime(torch.tensor(train, dtype=torch.float32), torch.tensor(test)) == want
    assert regimes.classify_regime(list(train), pd.Series(test)) == want


@pytest.mark.parametrize(
    "train, test, message",
    [
        ([1e-3, 1e-4], [1e-3], "train_loss has 2 values but test_loss 1"),
        ([], [], "train_loss has shape \\(0,\\); expected a non-empty 1D curve"),
        ([1e-3, float("nan")], [1e-3, 1e-3], "train_loss is not finite at positions \\[1\\]"),
        ([1e-3, 1e-3], [1e-3, float("inf")], "test_loss is not finite at positions \\[1\\]"),
        ([1e-3, -1e-3], [1e-3, 1e-3], "negative values"),
        ([[1e-3]], [[1e-3]], "expected a non-empty 1D curve"),
    ],
)
def test_bad_curves_are_refused(train, test, message):
    with pytest.raises(ValueError, match=message):
        regimes.classify_regime(train, test)


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="generalize_ratio=0 must be a finite number > 0"):
        regimes.classify_regime([1.0], [1.0], generalize_ratio=0)
    with pytest.raises(ValueError, match="fail_train_loss=nan"):
        regimes.classify_regime([1.0], [1.0], fail_train_loss=float("nan"))


# ----------------------------------------------------------------------------- the regime diagram
def sweep_history():
    """A tiny sweep: hidden × train_size × seed, each run's regime decided by its cell and seed."""
    rows = []
    plan = {(16, 750): ["memorize", "memorize", "grok"], (16, 1500): ["generalize", "grok", "grok"],
            (32, 750): ["fail", "fail", "fail"], (32, 1500): ["grok", "generalize", "memorize"]}
    train_g, test_g = grokking_curves()
    shapes = {
        "fail": (falling(0.7, 1e-3, 50), falling(0.7, 1e-3, 50)),
        "memorize": (train_g, np.full(STEPS, 2.0)),
        "generalize": (falling(0.7, 1.19e-7, 50), 10 * falling(0.7, 1.19e-7, 50)),
        "grok": (train_g, test_g),
    }
    for (hidden, size), seeds in plan.items():
        for seed, regime in enumerate(seeds):
            train, test = shapes[regime]
            for step, (a, b) in enumerate(zip(train, test)):
                rows.append({"hidden": hidden, "train_size": size, "seed": seed, "step": 100 * step,
                             "train_loss": a, "test_loss": b})
    return pd.DataFrame(rows), plan


def test_classify_runs_gives_one_regime_per_run():
    history, plan = sweep_history()
    shuffled = history.sample(frac=1.0, random_state=0)  # rows in any order: each run is sorted by step
    runs = regimes.classify_runs(shuffled, by=["hidden", "train_size", "seed"])
    assert len(runs) == 12
    assert list(runs.columns) == ["hidden", "train_size", "seed", "min_train_loss", "min_test_loss", "max_ratio", "regime"]
    for (hidden, size), seeds in plan.items():
        got = runs[(runs.hidden == hidden) & (runs.train_size == size)].sort_values("seed").regime.tolist()
        assert got == seeds


def test_regime_table_counts_each_cell():
    history, plan = sweep_history()
    runs = regimes.classify_runs(history, by=["hidden", "train_size", "seed"])
    table = regimes.regime_table(runs)  # default axes: hidden, train_size (seed and evidence left out)
    assert list(table.columns) == ["hidden", "train_size", *regimes.REGIMES, "n", "dominant"]
    assert len(table) == len(plan)
    for _, row in table.iterrows():
        seeds = plan[(row.hidden, row.train_size)]
        assert [row[r] for r in regimes.REGIMES] == [seeds.count(r) for r in regimes.REGIMES]
        assert row.n == 3
    dominant = dict(zip(zip(table.hidden, table.train_size), table.dominant))
    assert dominant == {(16, 750): "memorize", (16, 1500): "grok", (32, 750): "fail", (32, 1500): "memorize"}
    # (32, 1500) is a three-way tie: the earliest in REGIMES wins
    by_hidden = regimes.regime_table(runs, axes=["hidden"])
    assert by_hidden.set_index("hidden").loc[32, "fail"] == 3 and by_hidden.n.sum() == 12


def test_regime_table_refuses_bad_rows():
    rows = pd.DataFrame({"hidden": [16, 16], "regime": ["grok", "slingshot"]})
    with pytest.raises(ValueError, match=r"values \['slingshot'\] outside"):
        regimes.regime_table(rows)
    with pytest.raises(ValueError, match=r"rows lacks columns \['weight_decay'\]"):
        regimes.regime_table(rows, axes=["weight_decay"])
    with pytest.raises(ValueError, match="rows is empty"):
        regimes.regime_table(rows.iloc[:0])
    with pytest.raises(ValueError, match=r"history lacks columns \['step', 'train_loss', 'test_loss'\]"):
        regimes.classify_runs(rows, by=["hidden"])


def test_every_regime_is_reachable():
    assert regimes.REGIMES == ("fail", "memorize", "generalize", "grok")
    history, _ = sweep_history()
    runs = regimes.classify_runs(history, by=["hidden", "train_size", "seed"])
    assert set(runs.regime) == set(regimes.REGIMES)
