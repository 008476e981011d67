"""Slingshots: sudden spikes of the train loss late in training, and the rule that finds them.

The Alignment Forum post (Nanda 2022) explains the "slingshot" spikes of Thilak et al. as a
float32 artefact: once the train loss nears float32's resolution (docs/training.md, "Loss
precision and slingshots"), the loss of a well-fitted example rounds to exactly 0 and so does the
gradient pushing its correct logit up, and the run jumps out of its minimum. With the loss taken
from float64 logits the same run falls smoothly.

**The rule** (:func:`detect_spikes`), on a logged loss curve (steps, values):

* the *baseline* at step t is the minimum of the loss over the trailing window (t - ``window``,
  t], but never below ``floor``;
* a spike *starts* at the first step t where the loss is at least ``factor`` × the baseline, and
  the baseline is at most ``low`` (the train set has been fitted: a rise early in training is
  learning, not a slingshot);
* the spike *ends* at the first later step where the loss is back below ``factor`` × the
  baseline it started from; its peak is the largest loss in between. A spike still up at the
  end of the curve has ``end_step=None``. The next spike can only start after this one ends, so
  a double-humped spike counts once.

**The constants, and why.**

* ``factor`` = :data:`SPIKE_FACTOR` = 10: a float64 full-batch curve late in training falls
  monotonically up to rounding (ratios of successive logged values within a few percent), and
  the float32 floor itself wobbles by at most a factor of about 2 (examples rounding to 0 or to
  one quantum); the smallest slingshot in the prototype (p=31) rose 80-fold, the others 1,000-
  to 10,000-fold. A tenfold rise is far above the noise and below every spike seen.
* ``window`` = :data:`SPIKE_WINDOW` = 100 steps: the rise of a slingshot takes a few tens of
  steps, its decay back to the floor hundreds; a window longer than the rise and shorter than
  the decay sees each rise from its true low point and never re-measures a decaying spike from
  its own tail.
* ``floor`` = :data:`FLOAT32_RESOLUTION` = 2⁻²³ ≈ 1.19e-7: below it a float32 loss cannot
  resolve an example's loss (it is 0 or one quantum), so "ten times the minimum" of a loss at
  0 would make every quantum a spike. The same floor applies to float64 curves, so both are
  judged by the same rule: float64 wiggles far below 1.19e-7 are not spikes.
* ``low`` = :data:`SPIKE_LOW` = 1e-4: only rises from a fitted state count, long after the
  train set was memorised (slingshots start from ~1e-7). A looser 1e-2 let a bump during
  memorisation count: a float64 run at lr 3e-3 (p=31, 70%) rose from 4e-4 to 5e-3 at step 120.

Pure functions of arrays and DataFrames; nothing here reads files or trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

__all__ = [
    "FLOAT32_RESOLUTION",
    "SPIKE_FACTOR",
    "SPIKE_WINDOW",
    "SPIKE_LOW",
    "SPIKE_COLUMNS",
    "Spike",
    "float32_loss_quantum",
    "detect_spikes",
    "count_spikes",
    "spike_table",
]

# float32's machine epsilon: the gap between 1 and the next float32, 2^-23. A softmax whose
# wrong-class mass x is below about half of it sums to exactly 1.0 in float32.
FLOAT32_RESOLUTION = 2.0**-23
SPIKE_FACTOR = 10.0
SPIKE_WINDOW = 100
SPIKE_LOW = 1e-4
SPIKE_COLUMNS = ["start_step", "peak_step", "end_step", "baseline", "peak_loss", "rise"]


@dataclass(frozen=True)
class Spike:
    """One detected spike: where it started, peaked and ended, and how far it rose."""

    start_step: int
    peak_step: int
    end_step: int | None  # None: still above the trigger level at the last logged step
    baseline: float  # the trailing-window minimum (floored) it rose from
    peak_loss: float

    @property
    def rise(self) -> float:
        """peak_loss / baseline."""
        return self.peak_loss / self.baseline

    def to_dict(self) -> dict:
        return {**asdict(self), "rise": self.rise}


def float32_loss_quantum() -> float:
    """The smallest non-zero cross-entropy a float32 log-softmax gives an example whose correct
    class holds the largest logit: -log_softmax = log(Σ exp(x_j - x_max)), and that sum is 1.0
    or at least 1 + 2^-23 in float32, so the loss is 0 or at least log1p(2^-23) ≈ 1.19e-7."""
    return float(np.log1p(np.float64(FLOAT32_RESOLUTION)))


def detect_spikes(
    steps: Sequence[int] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    factor: float = SPIKE_FACTOR,
    window: int = SPIKE_WINDOW,
    floor: float = FLOAT32_RESOLUTION,
    low: float = SPIKE_LOW,
) -> list[Spike]:
    """The spikes of a loss curve by the module's rule (its docstring gives the rule and constants).

    ``steps`` ascending (the metrics' "epoch" column: one optimizer step each), ``losses`` the
    logged values at those steps.

    >>> steps = np.arange(0, 1000, 10); loss = np.full(100, 1e-7); loss[50:55] = 1e-4
    >>> [(s.start_step, s.end_step) for s in detect_spikes(steps, loss)]
    [(500, 550)]
    """
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(losses, dtype=np.float64)
    if steps.ndim != 1 or steps.shape != values.shape:
        raise ValueError(f"steps and losses must be 1-D and of one length; got shapes {steps.shape} and {values.shape}")
    if len(steps) > 1 and not bool((np.diff(steps) > 0).all()):
        raise ValueError("steps must be strictly ascending (one logged value per step); sort the metrics by epoch first")
    if not factor > 1:
        raise ValueError(f"factor={factor} must be > 1 (how many times the baseline a spike reaches); pass e.g. factor=10")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window={window!r} must be a positive number of steps; pass e.g. window=100")
    if not floor > 0:
        raise ValueError(f"floor={floor} must be > 0 (the loss's resolution); pass e.g. floor={FLOAT32_RESOLUTION:.3g}")
    if not bool(np.isfinite(values).all()):
        raise ValueError("losses hold NaN or infinity; a diverged run has no spikes to count, only a failure")
    spikes: list[Spike] = []
    in_spike: tuple[int, float, int, float] | None = None  # (start index, baseline, peak index, peak)
    left = 0  # first index inside the trailing window
    for i, (step, value) in enumerate(zip(steps, values)):
        while steps[left] <= step - window:
            left += 1
        if in_spike is not None:
            start, base, peak_i, peak = in_spike
            if value > peak:
                in_spike = (start, base, i, value)
            elif value < factor * base:
                spikes.append(Spike(int(steps[start]), int(steps[peak_i]), int(step), base, peak))
                in_spike = None
                left = i  # the next baseline is measured from here, not from before this spike
            continue
        base = max(float(values[left:i + 1].min()), floor)
        if base <= low and value >= factor * base:
            in_spike = (i, base, i, value)
    if in_spike is not None:
        start, base, peak_i, peak = in_spike
        spikes.append(Spike(int(steps[start]), int(steps[peak_i]), None, base, peak))
    return spikes


def count_spikes(steps: Sequence[int] | np.ndarray, losses: Sequence[float] | np.ndarray, **rule) -> int:
    """How many spikes :func:`detect_spikes` finds (``rule``: its keyword arguments)."""
    return len(detect_spikes(steps, losses, **rule))


def spike_table(metrics: pd.DataFrame, column: str = "train_loss", **rule) -> pd.DataFrame:
    """The spikes of a metrics table's ``column`` (``runs.read_metrics``: an "epoch" column), one
    row each, columns :data:`SPIKE_COLUMNS`; ``end_step`` is NaN for a spike still up at the end."""
    if metrics is None or metrics.empty:
        raise ValueError("the metrics table is empty; train the run first")
    for name in ("epoch", column):
        if name not in metrics.columns:
            raise ValueError(f"the metrics table has no column {name!r}; its columns are {list(metrics.columns)}")
    m = metrics.sort_values("epoch")
    spikes = detect_spikes(m["epoch"].to_numpy(), m[column].to_numpy(), **rule)
    rows = [{**s.to_dict(), "end_step": math.nan if s.end_step is None else s.end_step} for s in spikes]
    return pd.DataFrame(rows, columns=SPIKE_COLUMNS)
