"""Where each run of a sweep stands, read cheaply from its folder (no weights are loaded).

A run is

* ``finished``: trained to its ``epochs``: its resume file is at that epoch, and the final
  metrics row and the final checkpoint are there (what the trainer itself checks before
  skipping a run, so a finished run is never trained again);
* ``partial``: a resume file at an earlier epoch; training resumes from it;
* ``not_started``: no folder, an empty one, or one a kill left before the run's first resume
  file (``detail`` says which; :func:`clear_debris` tidies it, and the run starts from scratch,
  which writes the same files again, as the init is seeded);
* ``conflict``: a folder the trainer would refuse (a different config, a folder that is not a
  run's, a run trained past ``epochs``); ``detail`` says what and the fix.

Only file names, the last line of ``metrics.csv`` and the safetensors header of
``resume.safetensors`` are read, so a status of a thousand runs takes well under a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mechgrok import runs
from mechgrok.config import Config
from mechgrok.sweeps.grid import Sweep
from mechgrok.sweeps.manifest import read_manifest

__all__ = ["STATUSES", "RunState", "run_state", "sweep_status", "clear_debris"]

STATUSES = ("finished", "partial", "not_started", "conflict")
STATUS_COLUMNS = ["run", "folder", "status", "epoch", "epochs", "detail"]


@dataclass(frozen=True)
class RunState:
    status: str  # one of STATUSES
    epoch: int  # epochs trained (the resume file's epoch; 0 when not started)
    detail: str = ""


def run_state(cfg: Config, folder: str | Path) -> RunState:
    """The state of the run of ``cfg`` in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not entries:
        return RunState("not_started", 0)
    if runs.CONFIG_FILE not in entries:
        if all(_is_debris(name) for name in entries):
            return RunState("not_started", 0, "a kill left an unfinished write; it is cleared before training")
        return RunState("conflict", 0, f"{folder} holds {', '.join(entries[:3])} but is not a mechgrok run folder; "
                                       "move those files away")
    clash = _config_clash(cfg, folder)
    if clash:
        return RunState("conflict", 0, clash)
    resume = folder / runs.RESUME_FILE
    if not resume.exists():
        epochs = runs.checkpoint_epochs(folder)
        if epochs in ([], [0]):
            return RunState("not_started", 0, "" if not epochs else "a kill came before its first resume file; it restarts")
        return RunState("conflict", 0, f"{folder} has checkpoints but no {runs.RESUME_FILE}, so it cannot be resumed "
                                       "exactly; move the folder away to train the run again")
    epoch = _header_epoch(resume)
    if epoch is None:
        return RunState("conflict", 0, f"{resume} is not a readable checkpoint; move the folder away to train the run again")
    if epoch > cfg.epochs:
        return RunState("conflict", epoch, f"trained to epoch {epoch}, past epochs={cfg.epochs}; pass epochs >= {epoch}")
    if epoch == cfg.epochs and _last_metrics_epoch(folder) == epoch and runs.checkpoint_path(folder, epoch).exists():
        return RunState("finished", epoch)
    return RunState("partial", epoch)


def sweep_status(out: str | Path, sweep: Sweep | None = None) -> pd.DataFrame:
    """One row per run of the sweep in ``out`` (its manifest's, unless ``sweep`` is given), in
    the sweep's order: the axis values, ``run`` (the folder name), ``folder``, ``status``,
    ``epoch`` (trained so far), ``epochs`` (asked) and ``detail``."""
    out = Path(out)
    sweep = read_manifest(out) if sweep is None else sweep
    rows = []
    for run in sweep.runs:
        state = run_state(run.config, out / run.name)
        rows.append({**dict(run.values), "run": run.name, "folder": str(out / run.name), "status": state.status,
                     "epoch": state.epoch, "epochs": run.config.epochs, "detail": state.detail})
    return pd.DataFrame(rows, columns=[*sweep.axes, *STATUS_COLUMNS])


def clear_debris(folder: str | Path) -> None:
    """Remove what a kill can leave that would stop the trainer starting a run afresh: unfinished
    atomic writes in a folder without ``config.json``, and an epoch-0 checkpoint without a resume
    file. Nothing else is touched (the run starts from scratch and writes those files again)."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / runs.RESUME_FILE).exists():
        return
    if not (folder / runs.CONFIG_FILE).exists():
        entries = list(folder.iterdir())
        if all(_is_debris(p.name) for p in entries):
            for p in entries:
                p.unlink()
        return
    if runs.checkpoint_epochs(folder) == [0]:
        runs.checkpoint_path(folder, 0).unlink()


def _is_debris(name: str) -> bool:
    # the temporary name of an unfinished mechgrok.runs.atomic_write_bytes: ".<file>.<random>.tmp"
    return name.startswith(".") and name.endswith(".tmp")


def _config_clash(cfg: Config, folder: Path) -> str:
    try:
        saved = runs.read_config(folder)
    except ValueError as err:
        return f"{err}"
    if saved == cfg:
        return ""
    from mechgrok.training.loop import config_clash  # the trainer's rule; imported only when something differs

    differs = config_clash(saved, cfg.to_dict())
    if not differs:
        return ""
    detail = ", ".join(f"{f}: saved {old!r}, asked {new!r}" for f, (old, new) in differs.items())
    return f"{folder} holds a run with another config ({detail}); move it away, or sweep into another folder"


def _header_epoch(path: Path) -> int | None:
    """The ``epoch`` in a safetensors file's metadata, read from its header alone."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                return None
            return int(json.loads(f.read(n))["__metadata__"]["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _last_metrics_epoch(folder: Path) -> int | None:
    path = folder / runs.METRICS_FILE
    if not path.exists():
        return None
    lines = path.read_text().strip().splitlines()
    if len(lines) < 2:
        return None
    try:
        return int(float(lines[-1].split(",")[0]))
    except ValueError:
        return None
