"""A sweep's grid: a base Config and named axes, expanded into runs with stable folder names.

::

    sweep = Sweep(Config(task="parity", family="parity_mlp", lr=3e-3, beta1=0.99, epochs=20_000),
                  {"n_train": [750, 1000], "d_mlp": [16, 32], "weight_decay": [0.01, 0.1], "seed": range(9)})
    len(sweep)              # 72 = 2 * 2 * 2 * 9
    sweep.runs[0].name      # "n_train=750/d_mlp=16/weight_decay=0.01/seed=0"
    sweep.runs[0].config    # the base with those four fields replaced

* **Order.** The runs are the cartesian product of the axes in the order given, the last axis
  fastest, as nested ``for`` loops written in that order would visit them.
* **Folder names.** One path segment ``field=value`` per axis, in the axes' order (the
  hive-style layout pandas and pyarrow read as partitions), so a name says what its run is and
  ``glob("*/d_mlp=16/*/*")`` picks a slice. Ints are written as they are, floats by ``repr``
  (``0.01``, ``1e-05``, ``1.0``), strings as they are; an int given for a float field is taken
  as that float (``weight_decay=1`` is ``weight_decay=1.0``), so one value has one name.
* **Validation.** Every config is built when the sweep is, so a bad axis name or value raises
  ``ValueError`` at once, naming the field (and the run) and the fix, before anything trains.

This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from mechgrok.config import Config

__all__ = ["Sweep", "SweepRun", "format_value"]

# characters a value may have in a folder name (every Config string choice fits)
_SAFE = re.compile(r"[A-Za-z0-9._+-]+")
_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its folder name (relative to the sweep folder), config and axis values."""

    name: str
    config: Config
    values: tuple[tuple[str, Any], ...]  # (axis, value) in the axes' order


@dataclass(frozen=True)
class Sweep:
    """A base config and axes ``{field: values}``; see the module docstring for order and names."""

    base: Config
    axes: Mapping[str, tuple]

    def __post_init__(self) -> None:
        if not isinstance(self.base, Config):
            raise ValueError(f"base={self.base!r} must be a mechgrok Config; pass e.g. Sweep(Config(...), {{'seed': [0, 1]}})")
        if not isinstance(self.axes, Mapping) or not self.axes:
            raise ValueError(f"axes={self.axes!r} must be a non-empty dict {{field: [values]}}; pass e.g. axes={{'seed': [0, 1, 2]}}")
        object.__setattr__(self, "axes", {name: _axis_values(name, values) for name, values in self.axes.items()})
        self.runs  # noqa: B018 -- build every config now, so a bad value is reported before anything trains

    @cached_property
    def runs(self) -> tuple[SweepRun, ...]:
        """Every run, in the documented order."""
        out = []
        for combo in itertools.product(*self.axes.values()):
            values = tuple(zip(self.axes, combo))
            name = "/".join(f"{axis}={format_value(value)}" for axis, value in values)
            try:
                cfg = self.base.replace(**dict(values))
            except ValueError as err:
                raise ValueError(f"sweep run {name}: {err}") from None
            out.append(SweepRun(name, cfg, values))
        return tuple(out)

    @property
    def configs(self) -> list[Config]:
        return [run.config for run in self.runs]

    def __len__(self) -> int:
        return len(self.runs)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the sweep (the manifest's ``base`` and ``axes``)."""
        return {"base": self.base.to_dict(), "axes": {name: list(values) for name, values in self.axes.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], config_schema_version: int) -> Sweep:
        return cls(Config.from_dict(dict(data["base"]), schema_version=config_schema_version), dict(data["axes"]))


def format_value(value: Any) -> str:
    """A value as it appears in a run's folder name (ints and strings as they are, floats by repr)."""
    return repr(value) if isinstance(value, float) else str(value)


def _axis_values(name: Any, values: Any) -> tuple:
    if name not in _FIELDS:
        close = difflib.get_close_matches(name, list(_FIELDS), n=1) if isinstance(name, str) else []
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"axis {name!r} is not a Config field; {hint}sweepable fields are {sorted(_FIELDS)}")
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"axis {name}={values!r} must be a list of values; pass e.g. {name}=[{values!r}]")
    values = tuple(_normalise(name, v) for v in values)
    if not values:
        raise ValueError(f"axis {name} has no values; give it at least one, or drop it and set {name} in the base config")
    seen: set = set()
    for v in values:
        text = format_value(v)
        if not _SAFE.fullmatch(text):
            raise ValueError(
                f"axis {name} value {v!r} cannot be part of a folder name (allowed: letters, digits and . _ + -); "
                f"pass values whose text is of those characters"
            )
        if text in seen:
            raise ValueError(f"axis {name} lists {text} twice; each value names a run folder, so list it once")
        seen.add(text)
    return values


def _normalise(name: str, value: Any) -> Any:
    """An int for a float field becomes that float (Config compares them equal; names must agree too)."""
    if _FIELDS[name].type == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars from np.logspace & co.
        return _normalise(name, value.item())
    return value
