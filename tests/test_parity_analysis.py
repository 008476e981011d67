"""Sparse-parity readouts (mechgrok/analysis/parity.py): weight shares on hand-made first layers and
the train-loss rise before the test-loss drop on synthetic curves."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mechgrok.analysis import parity

N_BITS, HIDDEN = 30, 8


def first_layer(parity_value=1.0, distractor_value=0.0, bias_value=0.0):
    W = torch.full((N_BITS + 1, HIDDEN), distractor_value, dtype=torch.float64)
    W[:3] = parity_value
    W[-1] = bias_value
    return W


# ----------------------------------------------------------------------------- weights
def test_share_is_one_when_only_parity_bits_carry_weight():
    assert parity.parity_weight_share(first_layer(2.0, 0.0, bias_value=50.0)) == 1.0


def test_share_of_evenly_spread_weight_is_the_bit_fraction():
    W = first_layer(1.0, 1.0, bias_value=9.0)
    assert parity.parity_weight_share(W) == pytest.approx(3 / 30)
    assert parity.parity_weight_share(W, parity_bits=5) == pytest.approx(5 / 30)
    W[:3] *= -3.0  # signs do not matter, squares do
    assert parity.parity_weight_share(W) == pytest.approx(27 / (27 + 27))


def test_share_ignores_the_bias_row_and_is_nan_without_bit_weights():
    W = torch.randn(N_BITS + 1, HIDDEN, dtype=torch.float64)
    W2 = W.clone()
    W2[-1] = 1e6
    assert parity.parity_weight_share(W) == parity.parity_weight_share(W2)
    assert math.isnan(parity.parity_weight_share(first_layer(0.0, 0.0, bias_value=1.0)))


def test_distractor_weight_means():
    W = first_layer(0.5, -0.01, bias_value=3.0)
    W[0, 0] = -1.5  # |w| counts
    bits = parity.distractor_weight(W)
    assert bits.parity == pytest.approx((0.5 * (3 * HIDDEN - 1) + 1.5) / (3 * HIDDEN))
    assert bits.distractor == pytest.approx(0.01)
    assert bits.ratio == pytest.approx(0.01 / bits.parity)
    assert list(bits.table().columns) == ["parity", "distractor", "ratio"]
    assert math.isnan(parity.distractor_weight(first_layer(0.0, 1.0)).ratio)


def test_bad_parity_bits_and_shapes_are_refused():
    W = first_layer()
    with pytest.raises(ValueError, match=r"parity_bits=0 must be an integer in 1..30"):
        parity.parity_weight_share(W, parity_bits=0)
    with pytest.raises(ValueError, match=r"parity_bits=30 must be an integer in 1..29.*at least one distractor"):
        parity.distractor_weight(W, parity_bits=30)
    assert parity.parity_weight_share(W, parity_bits=30) == 1.0  # every bit is a parity bit
    with pytest.raises(ValueError, match="parity_bits=True"):
        parity.parity_weight_share(W, parity_bits=True)
    with pytest.raises(ValueError, match=r"expected \[n_bits \+ 1, neuron\]"):
        parity.parity_weight_share(torch.zeros(31))


# ----------------------------------------------------------------------------- loss rise
STEPS = np.arange(0, 2000, 10)


def curves(rise=0.02):
    """Train loss falls to 0.01 by step 300, rises by ``rise`` between 500 and 800, then falls after 900;
    test loss climbs while memorising and drops at step 900."""
    s = STEPS.astype(float)
    train = np.where(s < 300, 0.7 - (0.69 * s / 300), 0.01)
    train = train + np.where((s >= 500) & (s <= 800), rise * (s - 500) / 300, 0.0)
    train = np.where(s > 800, np.maximum(0.01 + rise - (s - 800) * 1e-4, 1e-4), train)
    test = np.where(s < 900, 0.7 + s / 900, 0.01)
    return pd.Series(train, index=STEPS), pd.Series(test, index=STEPS)


def test_rise_before_the_drop_is_found():
    train, test = curves()
    r = parity.loss_rise_before_drop(train, test)
    assert r is not None
    assert (r.rise_step, r.peak_step, r.drop_step) == (300, 800, 900)  # rise starts at the first running minimum
    assert r.train_at_rise == pytest.approx(0.01) and r.train_at_peak == pytest.approx(0.03)
    assert r.relative_rise == pytest.approx(2.0)
    assert r.table().loc[0, "peak_step"] == 800


def test_tensor_input_with_steps_agrees_with_series():
    train, test = curves()
    a = parity.loss_rise_before_drop(train, test)
    b = parity.loss_rise_before_drop(torch.tensor(train.to_numpy()), test.to_numpy(), steps=STEPS)
    assert a == b
    c = parity.loss_rise_before_drop(train.to_numpy(), test.to_numpy())  # steps 0, 1, 2, ...
    assert (c.peak_step, c.drop_step) == (80, 90)


def test_window_limits_where_the_rise_may_start():
    train, test = curves()
    r = parity.loss_rise_before_drop(train, test, window=200)
    assert r.rise_step == 700 and r.peak_step == 800
    assert r.relative_rise == pytest.approx(0.02 * 100 / 300 / (0.01 + 0.02 * 200 / 300))
    assert parity.loss_rise_before_drop(train, test, window=50) is None  # only the fall after 800 is left


def test_no_drop_no_rise_or_too_small_a_rise_gives_none():
    train, test = curves()
    assert parity.loss_rise_before_drop(train, pd.Series(np.full(len(STEPS), 0.7), index=STEPS)) is None
    flat_train, _ = curves(rise=0.0)
    assert parity.loss_rise_before_drop(flat_train, test) is None
    assert parity.loss_rise_before_drop(train, test, min_relative_rise=2.5) is None
    assert parity.loss_rise_before_drop(train, test, min_relative_rise=1.5) is not None


def test_drop_fraction_sets_the_drop():
    train, _ = curves()
    s = STEPS.astype(float)
    test = pd.Series(np.where(s < 600, 1.0, np.where(s < 900, 0.6, 0.01)), index=STEPS)
    assert parity.loss_rise_before_drop(train, test).drop_step == 900
    assert parity.loss_rise_before_drop(train, test, drop_fraction=0.7).drop_step == 600


def test_bad_curves_are_refused():
    train, test = curves()
    with pytest.raises(ValueError, match="must be logged at the same steps"):
        parity.loss_rise_before_drop(train, test.iloc[:-1])
    with pytest.raises(ValueError, match="non-finite losses at positions"):
        parity.loss_rise_before_drop(train.replace(0.01, np.nan), test)
    with pytest.raises(ValueError, match="non-empty 1D curve"):
        parity.loss_rise_before_drop([], [])
    with pytest.raises(ValueError, match="must increase strictly"):
        parity.loss_rise_before_drop(train.iloc[::-1], test.iloc[::-1])
    with pytest.raises(ValueError, match="drop_fraction=1.5"):
        parity.loss_rise_before_drop(train, test, drop_fraction=1.5)
    with pytest.raises(ValueError, match="is a Series, whose index is its steps"):
        parity.loss_rise_before_drop(train, test, steps=STEPS)
