"""Phase changes: where a curve (a loss, a component's loss, a head's score) drops sharply.

The post calls a phase change "a reverse-S shaped curve": the loss plateaus or falls slowly,
then suddenly falls fast, then levels off. :func:`detect` turns that into a rule with three
numbers, each a keyword argument:

1. **Scale.** A loss is read as ln(loss) (``log=True``, the default), so a fall from 1e-1 to
   1e-3 counts the same as one from 1e-3 to 1e-5; a score (an induction score in [0, 1]) is
   read as it is (``log=False``), and ``rising=True`` looks for jumps up instead of drops.
   The curve is smoothed by a centred running median of ``smooth`` points, so one noisy
   evaluation neither makes nor hides a phase change.
2. **A sharp fall.** Over a window of ``window`` steps centred on step t, the smoothed curve
   falls by at least ``min_drop`` (default ln 2: the loss halves; scores: a rise of 0.15, set on
   the induction runs, whose heads share the induction attention and each end near 0.4).
3. **An acceleration, not a steady decline.** That fall is at least ``sharpness`` (default 2)
   times faster, per step, than the curve fell over the window just before it (up to one
   window long, at least a quarter), where the rate before is the median of the falls between
   consecutive logged steps (so a brief transient, such as the first steps from a random
   init, does not count as the plateau's pace; a rising curve counts as zero). A loss that
   falls steadily in ln(loss), or ever more slowly, never qualifies; a plateau followed by a
   fall does.

Steps t that pass 2 and 3 form runs; each run is one phase change, reported at the step of
its steepest smoothed descent, with the curve's values at the start and the end of the window
around it. Changes closer than one window are one change. ``window`` defaults to 10% of the
logged span of steps (at least 3 logged steps), which suits a run whose changes take a few
percent of its length; pass it explicitly when comparing runs of different lengths.

Everything here is a pure function of arrays; :func:`table` lays out a run's components.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

__all__ = ["PhaseChange", "detect", "largest", "table", "MIN_DROP_LOG", "MIN_RISE", "SHARPNESS", "WINDOW_FRACTION"]

MIN_DROP_LOG = float(np.log(2.0))  # a loss must at least halve within the window
MIN_RISE = 0.15  # a score in [0, 1] must rise at least this much within the window
SHARPNESS = 2.0  # ... and at least this many times faster than over the window before
WINDOW_FRACTION = 0.1  # default window: this share of the logged span of steps
_FLOOR = 1e-30  # losses at or below this are read as this (ln of 0 is -inf)


@dataclass(frozen=True)
class PhaseChange:
    """One detected phase change: the step of steepest change, and the window around it."""

    step: int  # the step of steepest smoothed change
    start: int  # the window around it
    end: int
    before: float  # the smoothed curve at ``start`` (loss or score, not its log)
    after: float  # ... and at ``end``
    sharpness: float  # how many times faster the curve fell (rose) here than in the window before

    def to_dict(self) -> dict:
        return asdict(self)


def _running_median(y: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return y
    return pd.Series(y).rolling(k, center=True, min_periods=1).median().to_numpy()


def detect(
    steps: Sequence[float],
    values: Sequence[float],
    *,
    log: bool = True,
    rising: bool = False,
    window: float | None = None,
    min_drop: float | None = None,
    sharpness: float = SHARPNESS,
    smooth: int = 3,
) -> list[PhaseChange]:
    """The phase changes of one curve (module docstring: the rule and its defaults).

    ``steps`` must increase strictly; ``values`` are losses (``log=True``: must be >= 0) or
    scores. Returns the changes in step order (empty if there are none).
    """
    t = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 1 or t.shape != v.shape:
        raise ValueError(f"steps and values must be 1-D and of one length; got shapes {t.shape} and {v.shape}")
    if len(t) < 4:
        return []
    if not np.all(np.diff(t) > 0):
        raise ValueError("steps must increase strictly (one value per logged step); sort the curve and drop repeats")
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite; drop the non-finite evaluations before looking for phase changes")
    if log:
        if (v < 0).any():
            raise ValueError("log=True reads losses, which are >= 0; pass log=False for a signed score")
        y = np.log(np.maximum(v, _FLOOR))
    else:
        y = v.copy()
    if rising:
        y = -y  # a rise of the score is a fall of -score
    if min_drop is None:
        min_drop = MIN_DROP_LOG if log else MIN_RISE
    if not min_drop > 0 or not sharpness > 1:
        raise ValueError(f"min_drop={min_drop} must be > 0 and sharpness={sharpness} > 1")
    span = t[-1] - t[0]
    if window is None:
        window = max(WINDOW_FRACTION * span, 3 * float(np.median(np.diff(t))))
    if not 0 < window < span:
        raise ValueError(f"window={window} must be in (0, {span:g}), the logged span of steps")
    ys = _running_median(y, smooth)
    f = lambda x: np.interp(x, t, ys)  # noqa: E731

    half = window / 2
    centres = t[(t - half >= t[0]) & (t + half <= t[-1])]
    passed, ratio = [], []
    for c in centres:
        fall = f(c - half) - f(c + half)
        if fall < min_drop:
            passed.append(False)
            ratio.append(0.0)
            continue
        a = max(t[0], c - half - window)
        lead = c - half - a
        if lead < window / 4:
            passed.append(False)
            ratio.append(0.0)
            continue
        inside = (t >= a) & (t <= c - half)
        grid = np.concatenate([[a], t[inside], [c - half]])
        falls = -np.diff(f(grid)) / np.maximum(np.diff(grid), 1e-12)
        before_rate = max(float(np.median(falls[np.diff(grid) > 0])), 0.0)
        rate = fall / window
        r = np.inf if before_rate == 0 else rate / before_rate
        passed.append(r >= sharpness)
        ratio.append(r)

    changes: list[PhaseChange] = []
    i = 0
    while i < len(centres):
        if not passed[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(centres) and passed[j + 1]:
            j += 1
        lo, hi = centres[i] - half, centres[j] + half
        inside = (t >= lo) & (t <= hi)
        idx = np.flatnonzero(inside)
        # steepest smoothed descent between consecutive logged steps inside the run
        slopes = -(np.diff(ys[idx]) / np.diff(t[idx])) if len(idx) > 1 else np.array([0.0])
        k = int(np.argmax(slopes)) if len(idx) > 1 else 0
        step = float((t[idx[k]] + t[idx[k + 1]]) / 2) if len(idx) > 1 else float(t[idx[0]])
        step = float(t[np.argmin(np.abs(t - step))])  # report a logged step
        start, end = max(t[0], step - half), min(t[-1], step + half)
        back = (lambda x: float(np.exp(-x if rising else x))) if log else (lambda x: float(-x if rising else x))
        change = PhaseChange(
            step=int(round(step)), start=int(round(start)), end=int(round(end)),
            before=back(f(start)), after=back(f(end)), sharpness=float(max(ratio[i : j + 1])),
        )
        if changes and change.step - changes[-1].step < window:
            if change.sharpness > changes[-1].sharpness:
                changes[-1] = change
        else:
            changes.append(change)
        i = j + 1
    return changes


def largest(changes: Sequence[PhaseChange]) -> PhaseChange | None:
    """The largest of a curve's phase changes (by how far the curve moved), or None."""
    if not changes:
        return None
    return max(changes, key=lambda c: abs(np.log(max(c.before, _FLOOR)) - np.log(max(c.after, _FLOOR))))


def table(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], **rule) -> pd.DataFrame:
    """One row per detected phase change of each named curve ``{name: (steps, values)}``:
    component, step, start, end, before, after, sharpness (``rule``: :func:`detect`'s keywords).
    A curve without a phase change gets one row with step NaN, so every component is listed."""
    rows = []
    for name, (steps, values) in curves.items():
        found = detect(steps, values, **rule)
        if not found:
            rows.append({"component": name, "step": np.nan, "start": np.nan, "end": np.nan, "before": np.nan,
                         "after": np.nan, "sharpness": np.nan})
        rows.extend({"component": name, **c.to_dict()} for c in found)
    return pd.DataFrame(rows, columns=["component", "step", "start", "end", "before", "after", "sharpness"])
