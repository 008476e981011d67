"""Memorise, grok or generalise: a run's regime from its accuracies, and the crossover data size.

The post: "With enough data the model generalises easily, and with sufficiently little data the
model memorises. But there is a crossover point, and we identify grokking when training with
slightly more data than the crossover point." It found that point (700 examples for 5-digit
addition) "by binary searching by hand". These rules let a search find it
(:func:`mechgrok.reproduce.phase_changes.tasks.crossover_search`):

1. **fail**       train accuracy never reaches ``level`` (0.99): the run did not even memorise;
2. **memorise**   train accuracy reaches it, test accuracy never does (within the run);
3. **grok**       test accuracy reaches it at least ``delay`` (2) times as many steps after the
                  start as train accuracy did, and at least ``min_gap`` steps later: it
                  generalised long after it memorised;
4. **generalise** otherwise: test accuracy reached the level soon after train accuracy did.

Accuracy is the run's logged one (per scored token for the sequence tasks). A search brackets
the crossover when a grokking size lies between a memorising size below it and a generalising
size above it (:func:`bracket`).
"""

from __future__ import annotations

import pandas as pd

__all__ = ["REGIMES", "LEVEL", "DELAY", "classify", "regime_row", "bracket"]

REGIMES = ("fail", "memorise", "grok", "generalise")
LEVEL = 0.99  # the accuracy that counts as reached
DELAY = 2.0  # grok: test accuracy reaches LEVEL at least this many times later than train accuracy


def _first(metrics: pd.DataFrame, column: str, level: float) -> int | None:
    hit = metrics.loc[metrics[column] >= level, "epoch"]
    return None if hit.empty else int(hit.iloc[0])


def regime_row(metrics: pd.DataFrame, *, level: float = LEVEL, delay: float = DELAY, min_gap: int = 0) -> dict:
    """{regime, train_step, test_step, final_train_acc, final_test_acc} of one run's metrics."""
    for column in ("epoch", "train_acc", "test_acc"):
        if column not in metrics.columns:
            raise ValueError(f"metrics lack the column {column!r}; pass a run's metrics.csv (mechgrok.runs.read_metrics)")
    if metrics.empty:
        raise ValueError("the metrics are empty; train the run first")
    if not delay >= 1:
        raise ValueError(f"delay={delay} must be >= 1 (test accuracy cannot be reached before train accuracy counts)")
    m = metrics.sort_values("epoch")
    train_step, test_step = _first(m, "train_acc", level), _first(m, "test_acc", level)
    if train_step is None:
        regime = "fail"
    elif test_step is None:
        regime = "memorise"
    elif test_step >= delay * max(train_step, 1) and test_step - train_step >= min_gap:
        regime = "grok"
    else:
        regime = "generalise"
    last = m.iloc[-1]
    return {"regime": regime, "train_step": train_step, "test_step": test_step,
            "final_train_acc": float(last["train_acc"]), "final_test_acc": float(last["test_acc"]), "steps": int(last["epoch"])}


def classify(metrics: pd.DataFrame, **rule) -> str:
    """The run's regime (module docstring; ``rule``: :func:`regime_row`'s keywords)."""
    return regime_row(metrics, **rule)["regime"]


def bracket(table: pd.DataFrame, size: str = "n_train") -> dict:
    """Where the crossover lies in a table of runs (columns ``size`` and ``regime``).

    Returns {memorise_below: the largest memorising size below the smallest grokking one,
    grok: the grokking sizes, generalise_above: the smallest generalising size above the
    largest grokking one, bracketed: whether all three exist}. Sizes are plain ints (None where
    there is none)."""
    if table.empty or not {size, "regime"} <= set(table.columns):
        raise ValueError(f"the table needs the columns {size!r} and 'regime', one row per run")
    unknown = set(table["regime"]) - set(REGIMES)
    if unknown:
        raise ValueError(f"unknown regime(s) {sorted(unknown)}; the regimes are {list(REGIMES)}")
    rows = table.sort_values(size)
    grok = sorted(int(n) for n in rows.loc[rows.regime == "grok", size])
    below = [int(n) for n in rows.loc[rows.regime == "memorise", size] if not grok or n < grok[0]]
    above = [int(n) for n in rows.loc[rows.regime == "generalise", size] if not grok or n > grok[-1]]
    result = {"memorise_below": max(below) if below else None, "grok": grok,
              "generalise_above": min(above) if above else None}
    result["bracketed"] = bool(grok) and result["memorise_below"] is not None and result["generalise_above"] is not None
    return result
