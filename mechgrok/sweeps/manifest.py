"""A sweep folder's manifest, ``sweep.json``: which grid the folder holds, so it never mixes two.

::

    runs/parity/
        sweep.json                               {"format": "mechgrok-sweep", "schema_version": 1,
                                                  "config_schema_version": 3, "base": {...}, "axes": {...}}
        n_train=750/d_mlp=16/weight_decay=0.01/seed=0/   an ordinary run folder (mechgrok.runs)
        ...

:func:`open_sweep` writes the manifest of a new sweep folder, and checks a folder that has one
against the sweep asked for. A folder may only **grow**:

* the axes must be the same fields in the same order (the folder names are made of them);
* each axis may gain values (new runs, new folders), never lose one;
* the base config may differ only in the fields a run may change when it continues
  (``mechgrok.training.loop.RESUMABLE_CHANGES``: ``epochs``, ``eval_every``, ``checkpoint_every``),
  so a larger ``epochs`` extends every run;

anything else is refused with an error naming what differs, and nothing is written. The
manifest is written atomically (:func:`mechgrok.runs.atomic_write_text`).
"""

from __future__ import annotations

import json
from pathlib import Path

from mechgrok.config import READABLE_SCHEMAS, SCHEMA_VERSION
from mechgrok.sweeps.grid import Sweep, format_value

__all__ = ["MANIFEST_FILE", "MANIFEST_SCHEMA", "open_sweep", "read_manifest", "experiment_runs"]

MANIFEST_FILE = "sweep.json"
MANIFEST_FORMAT = "mechgrok-sweep"
MANIFEST_SCHEMA = 1
# What a sweep folder may hold beside its manifest and run folders (its driver lock, mechgrok.sweeps.execute).
LOCK_FILE = ".lock"


def experiment_runs(out: str | Path, name: str) -> tuple[Sweep, list[Path]]:
    """The sweep a reproduction trained into ``OUT/<name>`` and its run folders, in sweep order,
    or a ``ValueError`` saying what to train first."""
    folder = Path(out) / name
    if not (folder / MANIFEST_FILE).exists():
        raise ValueError(f"{folder} holds no {name} experiment yet; train it first (its sweep, with "
                         f"mechgrok.sweeps.run_sweep(sweep, {str(folder)!r}), or the reproduction that plans it)")
    sweep = read_manifest(folder)
    return sweep, [folder / run.name for run in sweep.runs]


def read_manifest(out: str | Path) -> Sweep:
    """The sweep recorded in ``out/sweep.json``."""
    path = Path(out) / MANIFEST_FILE
    if not path.exists():
        raise ValueError(f"{Path(out)} is not a sweep folder (no {MANIFEST_FILE}); start one with run_sweep(sweep, {str(out)!r})")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it from a copy, or start the sweep in a new folder") from None
    if not isinstance(payload, dict) or payload.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a mechgrok sweep manifest (no 'format: {MANIFEST_FORMAT}')")
    if payload.get("schema_version") != MANIFEST_SCHEMA or payload.get("config_schema_version") not in READABLE_SCHEMAS:
        raise ValueError(
            f"{path} has manifest schema {payload.get('schema_version')!r} / config schema "
            f"{payload.get('config_schema_version')!r}; this mechgrok reads {MANIFEST_SCHEMA} / {READABLE_SCHEMAS}. "
            "Use the mechgrok release that wrote it"
        )
    try:
        return Sweep.from_dict(payload, payload["config_schema_version"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} lacks {err}; the manifest is damaged") from None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def write_manifest(out: str | Path, sweep: Sweep) -> None:
    from mechgrok.runs import atomic_write_text

    payload = {"format": MANIFEST_FORMAT, "schema_version": MANIFEST_SCHEMA, "config_schema_version": SCHEMA_VERSION,
               **sweep.to_dict()}
    atomic_write_text(Path(out) / MANIFEST_FILE, json.dumps(payload, indent=2) + "\n")


def open_sweep(out: str | Path, sweep: Sweep) -> Sweep:
    """Make ``out`` the folder of ``sweep``: write its manifest, or check (and grow) the one there.

    Returns the sweep the folder now records (``sweep`` itself). Raises ``ValueError`` naming
    what differs when ``out`` holds another sweep, or files that are not a sweep's.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder; pass a new or empty folder for the sweep")
    if not (out / MANIFEST_FILE).exists():
        others = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise ValueError(
                f"{out} holds {shown} but no {MANIFEST_FILE}, so it is not a sweep folder; nothing was touched. "
                "Pass a new or empty folder"
            )
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out, sweep)
        return sweep
    saved = read_manifest(out)
    problems = _differences(saved, sweep)
    if problems:
        raise ValueError(
            f"{out} holds another sweep ({'; '.join(problems)}). A sweep folder may only grow: the same axes in the "
            "same order, each keeping its values, and a base config that differs only in epochs, eval_every or "
            "checkpoint_every. Pass the saved settings, or another folder"
        )
    if saved.to_dict() != sweep.to_dict():
        write_manifest(out, sweep)  # grown: more values, or a longer schedule
    return sweep


def _differences(saved: Sweep, asked: Sweep) -> list[str]:
    problems = []
    if list(saved.axes) != list(asked.axes):
        problems.append(f"axes: saved {list(saved.axes)}, asked {list(asked.axes)}")
    else:
        for name, values in saved.axes.items():
            asked_names = {format_value(v) for v in asked.axes[name]}
            dropped = [v for v in values if format_value(v) not in asked_names]
            if dropped:
                problems.append(f"axis {name} drops saved value(s) {dropped}")
    base_changes = {f: (old, new) for f, (old, new) in _changed_fields(saved, asked).items() if f not in asked.axes}
    if base_changes:
        problems.append("base " + ", ".join(f"{f}: saved {old!r}, asked {new!r}" for f, (old, new) in base_changes.items()))
    return problems


def _changed_fields(saved: Sweep, asked: Sweep) -> dict[str, tuple]:
    old, new = saved.base.to_dict(), asked.base.to_dict()
    if old == new:
        return {}
    from mechgrok.training.loop import config_clash  # the trainer's rule; imported only when something differs

    return config_clash(saved.base, new)
