"""Readouts of the sparse-parity MLP ("1s and 0s", Pearce et al.'s explorable).

The task: bit strings of length n_bits (30 in the explorable), label = parity of the first
``parity_bits`` (3); the other bits are distractors. The model is a one-layer MLP whose first
layer ``W_in`` is [n_bits + 1, hidden]: row i < n_bits is the weight of input bit i, and the
LAST row is the weight of a constant-1 input, the neurons' bias (the explorable fixes the last
input to 1 for that). A generalising model puts its first-layer weight on the parity bits and
lets the distractors' weights decay to ~0; a memorising one spreads weight over every bit.

This module owns, as pure functions of tensors and loss curves:

* ``parity_weight_share``: the parity bits' share of the first layer's squared weight norm;
* ``distractor_weight``: mean |w| on the distractor bits and on the parity bits;
* ``loss_rise_before_drop``: the small rise of train loss before the test loss falls (the
  explorable: "train loss actually slightly increases before the model generalizes").

Axis names follow the glossary in ``mechgrok.hooks`` (``neuron`` is a hidden unit), plus one of this
module's own: ``bit``, the n_bits + 1 inputs of the first layer (the bits, then the bias input).

Both weight readouts leave the bias row out: it is no bit, and the parity circuit needs it
(ReLU thresholds on the number of 1s), so it stays large in a generalising model too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

__all__ = ["parity_weight_share", "BitWeights", "distractor_weight", "LossRise", "loss_rise_before_drop"]


def _bit_rows(W_in: Tensor, parity_bits: int, need_distractors: bool) -> tuple[Tensor, Tensor]:
    """(parity rows, distractor rows) of W_in in float64, the bias row dropped."""
    if W_in.ndim != 2 or W_in.shape[0] < 2:
        raise ValueError(
            f"W_in has shape {tuple(W_in.shape)}; expected [n_bits + 1, neuron] with the constant-1 bias input as "
            "the last row (transpose a [neuron, n_bits + 1] weight)"
        )
    n_bits = W_in.shape[0] - 1
    top = n_bits - 1 if need_distractors else n_bits
    if isinstance(parity_bits, bool) or not isinstance(parity_bits, int) or not 1 <= parity_bits <= top:
        raise ValueError(
            f"parity_bits={parity_bits!r} must be an integer in 1..{top} for W_in with {n_bits} bits (+ the bias row)"
            + ("; distractor_weight needs at least one distractor bit" if need_distractors else "")
            + "; the explorable uses 3"
        )
    W = W_in.double()
    return W[:parity_bits], W[parity_bits:n_bits]


def parity_weight_share(W_in: Float[Tensor, "bit neuron"], parity_bits: int = 3) -> float:
    """Σ w² over the parity-bit rows / Σ w² over all bit rows (Frobenius², the bias row excluded).

    1 when only the parity bits carry weight; parity_bits / n_bits for weights spread evenly.
    nan when every bit weight is 0.
    """
    parity, distractors = _bit_rows(W_in, parity_bits, need_distractors=False)
    on_parity = (parity**2).sum()
    total = on_parity + (distractors**2).sum()
    return (on_parity / total).item() if total > 0 else math.nan


@dataclass(frozen=True)
class BitWeights:
    """Mean |w| of the first layer on the parity bits and on the distractor bits (bias row excluded)."""

    parity: float
    distractor: float

    @property
    def ratio(self) -> float:
        """distractor / parity: ~1 while memorising, ~0 once generalised (nan if parity is 0)."""
        return self.distractor / self.parity if self.parity > 0 else math.nan

    def table(self) -> pd.DataFrame:
        """One row: parity, distractor, ratio."""
        return pd.DataFrame([{"parity": self.parity, "distractor": self.distractor, "ratio": self.ratio}])


def distractor_weight(W_in: Float[Tensor, "bit neuron"], parity_bits: int = 3) -> BitWeights:
    """Mean |w| over rows parity_bits..n_bits−1 (distractors) and over rows 0..parity_bits−1 (parity bits)."""
    parity, distractors = _bit_rows(W_in, parity_bits, need_distractors=True)
    return BitWeights(parity=parity.abs().mean().item(), distractor=distractors.abs().mean().item())


# ----------------------------------------------------------------------------- loss curves
@dataclass(frozen=True)
class LossRise:
    """The largest rise of train loss before the test loss drops (``loss_rise_before_drop``).

    Train loss goes from ``train_at_rise`` at step ``rise_step`` up to ``train_at_peak`` at
    ``peak_step`` (``rise_step`` < ``peak_step`` <= ``drop_step``); ``relative_rise`` =
    (peak − rise) / rise (inf when the train loss at the rise start is 0).
    """

    rise_step: int
    peak_step: int
    train_at_rise: float
    train_at_peak: float
    relative_rise: float
    drop_step: int

    def table(self) -> pd.DataFrame:
        """One row of the fields."""
        return pd.DataFrame([vars(self)])


def _curve(x, steps, name: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(x, pd.Series):
        if steps is not None:
            raise ValueError(f"{name} is a Series, whose index is its steps; pass steps=None")
        s, v = np.asarray(x.index, dtype=np.float64), x.to_numpy(dtype=np.float64)
    else:
        v = (x.detach().double().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64))
        s = np.arange(len(v), dtype=np.float64) if steps is None else np.asarray(steps, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"{name} has shape {v.shape}; expected a non-empty 1D curve, one loss per logged step")
    if s.shape != v.shape:
        raise ValueError(f"{name} has {len(v)} losses but {len(s)} steps; pass one step per loss")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} has non-finite losses at positions {np.flatnonzero(~np.isfinite(v))[:5].tolist()}")
    if len(s) > 1 and not (np.diff(s) > 0).all():
        raise ValueError(f"the steps of {name} must increase strictly; sort the curve by step")
    return s, v


def loss_rise_before_drop(
    train_loss,
    test_loss,
    *,
    steps=None,
    drop_fraction: float = 0.5,
    window: int | None = None,
    min_relative_rise: float = 0.0,
) -> LossRise | None:
    """The largest rise of train loss in a window before the test loss drops, or None.

    ``train_loss`` and ``test_loss`` are 1D (a pandas Series indexed by step, or a tensor/array
    with ``steps``, default 0, 1, 2, ...), logged at the same steps. The rule:

    1. **The drop**: ``drop_step`` is the first logged step at which the test loss is below
       ``drop_fraction`` (0.5) × the highest test loss logged up to then. None if it never is.
    2. **The window**: the logged steps s with drop_step − ``window`` <= s <= drop_step (all
       steps up to the drop when ``window`` is None).
    3. **The rise**: the largest train[j] − train[i] over i < j in the window (an absolute rise,
       so the float32 noise of a train loss near its floor cannot outweigh a visible rise); the
       rise starts at i and peaks at j. None if no rise is positive, or if its relative size
       (train[j] − train[i]) / train[i] is at most ``min_relative_rise``.
    """
    s, train = _curve(train_loss, steps, "train_loss")
    s_test, test = _curve(test_loss, steps, "test_loss")
    if len(s_test) != len(s) or not np.array_equal(s, s_test):
        raise ValueError(
            f"train_loss ({len(s)} points) and test_loss ({len(s_test)} points) must be logged at the same steps"
        )
    if not 0 < drop_fraction < 1:
        raise ValueError(f"drop_fraction={drop_fraction!r} must be in (0, 1); the default is 0.5 (half the peak)")
    if window is not None and not window >= 0:
        raise ValueError(f"window={window!r} must be >= 0 steps, or None for every step before the drop")
    below = np.flatnonzero(test < drop_fraction * np.maximum.accumulate(test))
    if len(below) == 0:
        return None
    drop = below[0]
    first = 0 if window is None else int(np.searchsorted(s, s[drop] - window, side="left"))
    seg = train[first : drop + 1]
    if len(seg) < 2:
        return None
    running_min = np.minimum.accumulate(seg)
    running_argmin = np.zeros(len(seg), dtype=int)
    for j in range(1, len(seg)):  # position of the running minimum (the first one)
        running_argmin[j] = j if seg[j] < running_min[j - 1] else running_argmin[j - 1]
    rises = seg[1:] - running_min[:-1]  # best rise ending at j = 1.. with i < j
    j = int(np.argmax(rises)) + 1
    i = int(running_argmin[j - 1])
    rise = seg[j] - seg[i]
    if not rise > 0:
        return None
    relative = rise / seg[i] if seg[i] > 0 else math.inf
    if relative <= min_relative_rise:
        return None
    return LossRise(
        rise_step=int(s[first + i]),
        peak_step=int(s[first + j]),
        train_at_rise=float(seg[i]),
        train_at_peak=float(seg[j]),
        relative_rise=float(relative),
        drop_step=int(s[drop]),
    )
