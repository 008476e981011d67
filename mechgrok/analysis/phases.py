"""Automatic phase boundaries of grokking (Nanda et al. §5.2), from the progress measures.

The paper drew its lines by eye at 1.4k, 9.4k and 14k epochs. Here each boundary is a rule on
the measures table of :mod:`mechgrok.analysis.progress` (one row per checkpoint). Losses are read on a
log10 scale, smoothed by a centred rolling median over ``smooth`` checkpoints (so one noisy
checkpoint cannot move a boundary):

1. **End of memorization** = the checkpoint where the excluded loss is smallest. While the
   model memorizes, train loss and excluded loss fall together (the memorized lookup table
   does not use the key frequencies); once the Fourier circuit forms, removing the key
   frequencies hurts more and more, so the excluded loss turns and rises.
2. **End of circuit formation** = the first checkpoint after (1) at which the test loss has
   fallen by ``test_drop_fraction`` (10%) of its log-range, i.e. log10 test loss
   <= peak - 0.1 · (peak - final), with the peak taken after (1). During circuit formation the
   restricted loss falls while test loss stays near its peak; this is where test loss starts
   its fall. (On our runs it is also where test accuracy crosses ~50%, the paper's 9.4k mark.)
3. **End of cleanup** = the first checkpoint after (2) at which both test loss and the total
   sum of squared weights have levelled off: each is within ``settle_fraction`` (5%) of its
   range from its final value (test loss on a log10 scale from its peak, the weight norm on a
   linear scale from its maximum after (1)), and both stay so up to the last checkpoint.

Boundaries (2) and (3) are ``None`` when the run has not grokked: when test loss falls by
less than ``min_drop_decades`` (1 decade) from its peak. Every boundary is a saved epoch, so
it is only as fine as the checkpoints (every 100 epochs by default), and (3) is measured
against the last checkpoint, so a run stopped mid-cleanup gets too early a cleanup end; a note
says so when either curve still moves by more than ``settle_fraction`` over the last tenth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

__all__ = ["PhaseRules", "Phases", "detect_phases", "BOUNDARY_NAMES", "PHASE_NAMES", "REQUIRED_COLUMNS"]

PHASE_NAMES = ("memorization", "circuit formation", "cleanup")
# The three boundaries, in order.
BOUNDARY_NAMES = ("memorization_end", "circuit_formation_end", "cleanup_end")
REQUIRED_COLUMNS = ("epoch", "test_loss", "excluded_loss", "sum_sq_weights")


@dataclass(frozen=True)
class PhaseRules:
    """The knobs of the boundary rules (module docstring); the defaults are the documented ones."""

    smooth: int = 3
    test_drop_fraction: float = 0.1
    settle_fraction: float = 0.05
    min_drop_decades: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.smooth, int) or self.smooth < 1:
            raise ValueError(f"smooth={self.smooth!r} must be an integer >= 1 (checkpoints in the rolling median); default 3")
        for name in ("test_drop_fraction", "settle_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name}={value} must be in (0, 1); defaults are test_drop_fraction=0.1, settle_fraction=0.05")
        if not self.min_drop_decades > 0:
            raise ValueError(f"min_drop_decades={self.min_drop_decades} must be > 0; default 1.0")


@dataclass(frozen=True)
class Phases:
    """Detected phase boundaries (epochs; ``None`` when the run never got there)."""

    memorization_end: int | None
    circuit_formation_end: int | None
    cleanup_end: int | None
    rules: PhaseRules = field(default_factory=PhaseRules)
    notes: tuple[str, ...] = ()

    @property
    def boundaries(self) -> dict[str, int | None]:
        return {
            "memorization_end": self.memorization_end,
            "circuit_formation_end": self.circuit_formation_end,
            "cleanup_end": self.cleanup_end,
        }

    def phase_of(self, epoch: int) -> str:
        """The phase an epoch lies in: one of ``PHASE_NAMES``, "after cleanup", or "not grokked"."""
        for name, end in zip(PHASE_NAMES, self.boundaries.values()):
            if end is None:
                return "not grokked"
            if epoch <= end:
                return name
        return "after cleanup"

    def table(self) -> pd.DataFrame:
        """One row per boundary: boundary, epoch."""
        return pd.DataFrame([{"boundary": k, "epoch": v} for k, v in self.boundaries.items()])

    def to_dict(self) -> dict:
        return {**self.boundaries, "rules": asdict(self.rules), "notes": list(self.notes)}


def _smoothed_log(values: pd.Series, window: int) -> np.ndarray:
    logs = np.log10(np.clip(values.to_numpy(dtype=float), 1e-300, None))
    return pd.Series(logs).rolling(window, center=True, min_periods=1).median().to_numpy()


def _smoothed(values: pd.Series, window: int) -> np.ndarray:
    return values.astype(float).rolling(window, center=True, min_periods=1).median().to_numpy()


def detect_phases(measures: pd.DataFrame, rules: PhaseRules | None = None) -> Phases:
    """Phase boundaries of a run from its measures table (``progress.load_progress(run).measures``).

    Needs the columns ``epoch``, ``test_loss``, ``excluded_loss`` and ``sum_sq_weights``, one
    row per checkpoint. See the module docstring for the rules.

    >>> detect_phases(load_progress("runs/mainline").measures).boundaries
    {'memorization_end': 600, 'circuit_formation_end': 3700, 'cleanup_end': 6000}
    """
    rules = rules or PhaseRules()
    missing = [c for c in REQUIRED_COLUMNS if c not in measures.columns]
    if missing:
        raise ValueError(f"the measures table lacks columns {missing}; compute it with mechgrok.analysis.progress.load_progress(run)")
    df = measures.sort_values("epoch").reset_index(drop=True)
    if len(df) < 3:
        return Phases(None, None, None, rules, (f"only {len(df)} checkpoints: too few to place phase boundaries",))
    epochs = df["epoch"].to_numpy()
    notes: list[str] = []

    excluded = _smoothed_log(df["excluded_loss"], rules.smooth)
    i_mem = int(np.nanargmin(excluded))
    memorization_end = int(epochs[i_mem])

    test = _smoothed_log(df["test_loss"], rules.smooth)
    after = test[i_mem:]
    i_peak = i_mem + int(np.nanargmax(after))
    peak, final = test[i_peak], test[-1]
    drop = peak - final
    if not drop >= rules.min_drop_decades:
        notes.append(f"test loss fell {drop:.2f} decades from its peak (< {rules.min_drop_decades}): the run has not grokked")
        return Phases(memorization_end, None, None, rules, tuple(notes))
    threshold = peak - rules.test_drop_fraction * drop
    i_circ = i_peak + int(np.argmax(test[i_peak:] <= threshold))
    circuit_formation_end = int(epochs[i_circ])

    test_settled = np.abs(test - final) <= rules.settle_fraction * drop
    weights = _smoothed(df["sum_sq_weights"], rules.smooth)
    w_max, w_final = np.nanmax(weights[i_mem:]), weights[-1]
    w_range = w_max - w_final
    weights_settled = np.abs(weights - w_final) <= rules.settle_fraction * w_range if w_range > 0 else np.ones_like(weights, bool)
    # "levelled off" must hold from that checkpoint on, not just touch once
    settled = test_settled & weights_settled
    stays = np.flip(np.logical_and.accumulate(np.flip(settled)))
    candidates = np.nonzero(stays[i_circ:])[0]
    i_clean = i_circ + int(candidates[0]) if len(candidates) else len(df) - 1
    # Closeness to the final value cannot tell "settled" from "still falling at the end": look at
    # the last tenth of the run too.
    i_tail = int(np.searchsorted(epochs, epochs[0] + 0.9 * (epochs[-1] - epochs[0])))
    if i_tail < len(df) - 1 and (
        abs(weights[i_tail] - w_final) > rules.settle_fraction * w_range or abs(test[i_tail] - final) > rules.settle_fraction * drop
    ):
        notes.append("test loss or weight norm still moving over the last tenth of the run: train longer for a reliable cleanup end")
    cleanup_end = int(epochs[i_clean])
    return Phases(memorization_end, circuit_formation_end, cleanup_end, rules, tuple(notes))

