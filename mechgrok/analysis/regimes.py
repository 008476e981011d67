"""The training regimes of Pearce et al.'s sweep (fail, memorize, generalize, grok), from logged losses.

The explorable trained 1,125 sparse-parity MLPs and labelled each from its logged train and test
losses, by these rules checked in this order (thresholds from its code):

1. **fail**       if min train loss > 1e-5 (it never fits the train set);
2. **memorize**   if min test loss > 1e-5 (it fits the train set but never the test set);
3. **generalize** if max over the logged steps of test loss / train loss < 5e4 (the test loss
   never lags far behind: both fall together);
4. **grok**       otherwise (the test loss falls, but long after the train loss).

This module owns those rules (``classify_regime``, ``regime_evidence``, the names in
``REGIMES``) and the counting behind the regime diagram, train size × weight decay for each
hidden size with each regime's count over seeds (``classify_runs``, ``regime_table``).

Loss floor. In the explorable's sweep data the minimum train loss of most runs sits at
≈1.19e-7 (float32's machine epsilon), never lower: its losses evidently clip each probability
at 1e-7 (as Keras does; 1 − 1e-7 rounds to 1 − 1.19e-7 in float32). Torch's float32
log-softmax instead reaches exactly 0 once an answer is confident enough, and a 0 train loss
makes test/train infinite, turning "generalize" into "grok". So both losses are clamped at
``LOSS_FLOOR`` = 1.19e-7 before the rules read them (``loss_floor=0`` turns that off; the
clamp acts on the logged mean loss, which for a run at the floor is what the per-example
clip gives). In float64 a fitted train loss keeps falling far below the floor; the clamp
makes those runs comparable too.

Losses are mean cross-entropies: finite and >= 0. With the clamp off, at a logged step where
the train loss is 0 the ratio is inf if the test loss is above 0, and 1 if both are 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import Tensor

__all__ = [
    "REGIMES",
    "FAIL_TRAIN_LOSS",
    "LOSS_FLOOR",
    "MEMORIZE_TEST_LOSS",
    "GENERALIZE_RATIO",
    "RegimeEvidence",
    "regime_evidence",
    "classify_regime",
    "classify_runs",
    "regime_table",
]

REGIMES: tuple[str, ...] = ("fail", "memorize", "generalize", "grok")
FAIL_TRAIN_LOSS = 1e-5  # fail if the minimum train loss is above this
MEMORIZE_TEST_LOSS = 1e-5  # memorize if the minimum test loss is above this
GENERALIZE_RATIO = 5e4  # generalize if test/train stays below this at every logged step
LOSS_FLOOR = float(np.finfo(np.float32).eps)  # 1.19e-7: the explorable's losses never go lower (module docstring)


def _losses(x, name: str) -> np.ndarray:
    if isinstance(x, pd.Series):
        v = x.to_numpy(dtype=np.float64)
    elif isinstance(x, Tensor):
        v = x.detach().double().cpu().numpy()
    else:
        v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"{name} has shape {v.shape}; expected a non-empty 1D curve, one loss per logged step")
    bad = np.flatnonzero(~np.isfinite(v))
    if len(bad):
        raise ValueError(f"{name} is not finite at positions {bad[:5].tolist()} (e.g. {v[bad[0]]}); drop or fix those steps")
    if (v < 0).any():
        raise ValueError(f"{name} has negative values (min {v.min()}); cross-entropy losses are >= 0")
    return v


def _threshold(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} must be a finite number > 0")
    return float(value)


@dataclass(frozen=True)
class RegimeEvidence:
    """The three statistics the rules read, and the regime they give."""

    min_train_loss: float
    min_test_loss: float
    max_ratio: float  # max over logged steps of test_loss / train_loss
    regime: str


def regime_evidence(
    train_loss,
    test_loss,
    *,
    fail_train_loss: float = FAIL_TRAIN_LOSS,
    memorize_test_loss: float = MEMORIZE_TEST_LOSS,
    generalize_ratio: float = GENERALIZE_RATIO,
    loss_floor: float | None = None,
) -> RegimeEvidence:
    """The regime of one run and the statistics behind it (module docstring for the rules).

    ``train_loss`` and ``test_loss``: 1D (tensor, array, list or Series), one value per logged
    step, the same steps for both (Series are compared by position, not index). Both are
    clamped at ``loss_floor`` (default :data:`LOSS_FLOOR`) first.
    """
    train, test = _losses(train_loss, "train_loss"), _losses(test_loss, "test_loss")
    floor = LOSS_FLOOR if loss_floor is None else loss_floor
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor < 1e-5:
        raise ValueError(f"loss_floor={floor!r} must be a number in [0, 1e-5); pass loss_floor=1.19e-7 or 0 to turn it off")
    train, test = np.maximum(train, floor), np.maximum(test, floor)
    if len(train) != len(test):
        raise ValueError(
            f"train_loss has {len(train)} values but test_loss {len(test)}; pass both at the same logged steps"
        )
    fail = _threshold("fail_train_loss", fail_train_loss)
    memorize = _threshold("memorize_test_loss", memorize_test_loss)
    ratio_max = _threshold("generalize_ratio", generalize_ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(train > 0, test / np.where(train > 0, train, 1.0), np.where(test > 0, np.inf, 1.0))
    ev = dict(min_train_loss=float(train.min()), min_test_loss=float(test.min()), max_ratio=float(ratio.max()))
    if ev["min_train_loss"] > fail:
        regime = "fail"
    elif ev["min_test_loss"] > memorize:
        regime = "memorize"
    elif ev["max_ratio"] < ratio_max:
        regime = "generalize"
    else:
        regime = "grok"
    return RegimeEvidence(**ev, regime=regime)


def classify_regime(
    train_loss,
    test_loss,
    *,
    fail_train_loss: float = FAIL_TRAIN_LOSS,
    memorize_test_loss: float = MEMORIZE_TEST_LOSS,
    generalize_ratio: float = GENERALIZE_RATIO,
    loss_floor: float | None = None,
) -> str:
    """One of ``REGIMES`` for a run's logged losses: fail, memorize, generalize or grok (module docstring)."""
    return regime_evidence(
        train_loss,
        test_loss,
        fail_train_loss=fail_train_loss,
        memorize_test_loss=memorize_test_loss,
        generalize_ratio=generalize_ratio,
        loss_floor=loss_floor,
    ).regime


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; it has {list(frame.columns)}")


def classify_runs(
    history: pd.DataFrame,
    by: Sequence[str],
    *,
    step: str = "step",
    train: str = "train_loss",
    test: str = "test_loss",
    **thresholds: float,
) -> pd.DataFrame:
    """The regime of every run in a long table of logged losses.

    ``history`` has one row per (run, logged step); the columns ``by`` (e.g. hidden, train_size,
    weight_decay, seed) name a run. Each run's rows are sorted by ``step`` and classified with
    ``regime_evidence`` (``thresholds`` are its keywords). One row per run: the ``by`` columns,
    min_train_loss, min_test_loss, max_ratio, regime.
    """
    by = list(by)
    if not by:
        raise ValueError("by is empty; name the columns that identify a run, e.g. ['hidden', 'train_size', 'seed']")
    _require_columns(history, [*by, step, train, test], "history")
    rows = []
    for key, run in history.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        run = run.sort_values(step)
        ev = regime_evidence(run[train], run[test], **thresholds)
        rows.append({**dict(zip(by, key)), **vars(ev)})
    return pd.DataFrame(rows, columns=[*by, "min_train_loss", "min_test_loss", "max_ratio", "regime"])


def regime_table(rows: pd.DataFrame, axes: Sequence[str] | None = None, *, regime: str = "regime") -> pd.DataFrame:
    """Counts of each regime per cell of the sweep, for the regime diagram.

    ``rows``: one row per run with the sweep's axis columns and a ``regime`` column (e.g.
    ``classify_runs``). ``axes``: the columns that make a cell (e.g. hidden, train_size,
    weight_decay); by default every column except the regime, ``seed`` and the evidence columns.
    One row per cell, sorted by the axes: the axes, one count column per regime in ``REGIMES``
    order (zeros included), ``n`` (runs in the cell) and ``dominant`` (the most common regime;
    a tie goes to the one earliest in ``REGIMES``).
    """
    _require_columns(rows, [regime], "rows")
    if rows.empty:
        raise ValueError("rows is empty; pass one row per run (e.g. classify_runs(history, by=[...]))")
    if axes is None:
        skip = {regime, "seed", "min_train_loss", "min_test_loss", "max_ratio"}
        axes = [c for c in rows.columns if c not in skip]
    axes = list(axes)
    if not axes:
        raise ValueError("no axis columns to group by; pass axes=[...], e.g. ['hidden', 'train_size', 'weight_decay']")
    _require_columns(rows, axes, "rows")
    unknown = sorted(set(rows[regime]) - set(REGIMES), key=str)
    if unknown:
        raise ValueError(f"rows[{regime!r}] has values {unknown} outside {REGIMES}")
    counts = rows.groupby(axes, sort=True)[regime].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=list(REGIMES), fill_value=0)
    counts.columns = list(REGIMES)
    out = counts.reset_index()
    out["n"] = out[list(REGIMES)].sum(axis=1)
    out["dominant"] = out[list(REGIMES)].idxmax(axis=1)  # the first maximum: REGIMES order
    return out.sort_values(axes, ignore_index=True)
