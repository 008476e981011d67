"""A sweep's results, one row per run, read from the run folders.

Because every number comes from the folders (``metrics.csv``), the table is the same whichever
executor trained the runs, and a sweep trained on many machines reads like one trained here.
Columns: the axis values, then ``run``, ``folder``, ``status``, ``epoch`` (trained),
``epochs`` (asked), the last logged row's ``train_loss``, ``train_acc``, ``test_loss``,
``test_acc``, and ``min_train_loss`` / ``min_test_loss`` over the logged rows (what the
regime rules of Pearce et al.'s sweep read: REFERENCE §7). A run not started has NaN numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mechgrok import runs
from mechgrok.sweeps.grid import Sweep
from mechgrok.sweeps.manifest import read_manifest
from mechgrok.sweeps.status import STATUS_COLUMNS, run_state

__all__ = ["RESULT_COLUMNS", "sweep_results"]

METRIC_RESULTS = ["train_loss", "train_acc", "test_loss", "test_acc", "min_train_loss", "min_test_loss"]
RESULT_COLUMNS = [c for c in STATUS_COLUMNS if c != "detail"] + METRIC_RESULTS


def sweep_results(out: str | Path, sweep: Sweep | None = None) -> pd.DataFrame:
    """One row per run of the sweep in ``out`` (its manifest's, unless ``sweep`` is given), in
    the sweep's order; see the module docstring for the columns."""
    out = Path(out)
    sweep = read_manifest(out) if sweep is None else sweep
    rows = []
    for run in sweep.runs:
        folder = out / run.name
        state = run_state(run.config, folder)
        row = {**dict(run.values), "run": run.name, "folder": str(folder), "status": state.status,
               "epoch": state.epoch, "epochs": run.config.epochs, **dict.fromkeys(METRIC_RESULTS, math.nan)}
        metrics = runs.read_metrics(folder) if state.status in ("finished", "partial") else None
        if metrics is not None:
            metrics = metrics[metrics["epoch"] <= state.epoch]  # rows a kill wrote past the resume file are redone
        if metrics is not None and len(metrics):
            last = metrics.iloc[-1]
            row.update({c: float(last[c]) for c in ("train_loss", "train_acc", "test_loss", "test_acc")})
            row["min_train_loss"] = float(metrics["train_loss"].min())
            row["min_test_loss"] = float(metrics["test_loss"].min())
        rows.append(row)
    return pd.DataFrame(rows, columns=[*sweep.axes, *RESULT_COLUMNS])
