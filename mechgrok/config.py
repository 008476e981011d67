"""The run configuration: one frozen dataclass that names every knob of a run.

Fields come in groups (``FIELD_GROUPS``: task, model, optimiser, schedule), which the CLI
shows as flag groups and the docs as tables. ``family`` names the model family in
:mod:`mechgrok.registry` that builds the model. Derived quantities (``d_vocab``, ``d_head``)
are properties, so they can never disagree with the fields they come from. Every field is
validated on construction; a bad value raises ``ValueError`` naming the field, the value,
what is allowed and the fix.

Serialised configs carry a schema version (``SCHEMA_VERSION``). Version 2 must name every
field; version 1 (written before ``family`` and ``loss_dtype`` existed) is read with those
two set to the only values version 1 had.

This module imports no torch, so the command line starts fast.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from mechgrok.registry import FAMILIES

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)

INITS = ("paper", "transformer_lens")
LOSS_DTYPES = ("float64", "float32")

# Modular-arithmetic operations (their formulas live in mechgrok.tasks.modular).
OPERATION_NAMES = ("add", "sub", "mul", "div", "x2xyy2")
# Operations that need every b != 0 to have an inverse mod p, i.e. p prime.
NEEDS_PRIME = frozenset({"div"})

# Fields added by schema version 2, with the value every version-1 run had.
_V1_DEFAULTS = {"family": "transformer", "loss_dtype": "float64"}


def _group(name: str, default: Any) -> Any:
    return field(default=default, metadata={"group": name})


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run (defaults: the paper's mainline, docs/training.md)."""

    # task
    p: int = _group("task", 113)
    op: str = _group("task", "add")
    frac_train: float = _group("task", 0.3)
    seed: int = _group("task", 0)
    # model
    family: str = _group("model", "transformer")
    d_model: int = _group("model", 128)
    n_heads: int = _group("model", 4)
    d_mlp: int = _group("model", 512)
    init: str = _group("model", "paper")
    # optimiser
    lr: float = _group("optimiser", 1e-3)
    weight_decay: float = _group("optimiser", 1.0)
    beta1: float = _group("optimiser", 0.9)
    beta2: float = _group("optimiser", 0.98)
    warmup_steps: int = _group("optimiser", 10)
    loss_dtype: str = _group("optimiser", "float64")
    # schedule
    epochs: int = _group("schedule", 20_000)
    eval_every: int = _group("schedule", 10)
    checkpoint_every: int = _group("schedule", 100)

    def __post_init__(self) -> None:
        validate_modular(self.p, self.op, self.frac_train)
        if self.p % 2 == 0:
            raise ValueError(
                f"p={self.p} is even; the Fourier analyses need an odd modulus (a prime is best); "
                "pick an odd p such as 113"
            )
        _check_int(self, "seed", minimum=0)
        _check_choice(self, "family", tuple(FAMILIES))
        _check_int(self, "d_model", minimum=1)
        _check_int(self, "n_heads", minimum=1)
        _check_int(self, "d_mlp", minimum=1)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "choose n_heads that divides d_model (the paper: d_model=128, n_heads=4)"
            )
        _check_choice(self, "init", INITS)
        _check_number(self, "lr")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0; the paper uses lr=1e-3")
        _check_number(self, "weight_decay")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0; the paper uses weight_decay=1.0")
        for name in ("beta1", "beta2"):
            _check_number(self, name)
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value} must be in [0, 1); the paper uses betas (0.9, 0.98)")
        _check_int(self, "warmup_steps", minimum=0)
        _check_choice(self, "loss_dtype", LOSS_DTYPES)
        _check_int(self, "epochs", minimum=0)
        _check_int(self, "eval_every", minimum=1)
        _check_int(self, "checkpoint_every", minimum=1)

    # derived fields
    @property
    def d_vocab(self) -> int:
        """Input vocabulary: the p residues plus the ``=`` token, whose index is p."""
        return self.p + 1

    @property
    def d_vocab_out(self) -> int:
        return self.p

    @property
    def n_ctx(self) -> int:
        return 3

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    # serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], schema_version: int = SCHEMA_VERSION) -> Config:
        """A config from its serialised fields; every field of ``schema_version`` must be there."""
        if schema_version not in READABLE_SCHEMAS:
            raise ValueError(
                f"config schema version {schema_version!r} is not one this mechgrok reads {READABLE_SCHEMAS}; "
                "use the mechgrok release that wrote it"
            )
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a JSON object of fields, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown config field(s) {unknown}; allowed fields are {sorted(known)}. "
                "Was this config written by a newer mechgrok?"
            )
        if schema_version == 1:
            data = {**_V1_DEFAULTS, **data}
        missing = sorted(known - set(data))
        if missing:
            raise ValueError(
                f"the config lacks field(s) {missing}; a saved config must name every field, so none is "
                "guessed. Restore the file from the run's checkpoints (their metadata holds the config)"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def field_group(name: str) -> str:
    """The group (task, model, optimiser, schedule) of a config field."""
    return {f.name: f.metadata["group"] for f in dataclasses.fields(Config)}[name]


FIELD_GROUPS: dict[str, tuple[str, ...]] = {}
for _f in dataclasses.fields(Config):
    FIELD_GROUPS.setdefault(_f.metadata["group"], ())
    FIELD_GROUPS[_f.metadata["group"]] += (_f.name,)


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def validate_modular(p: int, op: str, frac_train: float | None = None) -> None:
    """Raise ``ValueError`` naming the bad value and the fix; return None when all is well."""
    if isinstance(p, bool) or not isinstance(p, int) or p < 3:
        raise ValueError(f"p={p!r} must be an integer >= 3; the paper uses p=113")
    if op not in OPERATION_NAMES:
        raise ValueError(f"op={op!r} is not one of {list(OPERATION_NAMES)}; pass e.g. op='add'")
    if op in NEEDS_PRIME and not _is_prime(p):
        raise ValueError(f"op={op!r} needs a prime p (every b != 0 must be invertible), but p={p}; pick a prime such as 113")
    if frac_train is not None and (
        isinstance(frac_train, bool) or not isinstance(frac_train, (int, float)) or not 0 < frac_train < 1
    ):
        raise ValueError(f"frac_train={frac_train!r} must be in (0, 1); the paper uses frac_train=0.3")


def _check_int(cfg: Config, name: str, minimum: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}; pass e.g. {name}={max(minimum, 1)}")


def _check_number(cfg: Config, name: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{name}={value!r} must be a number; pass e.g. {name}={getattr(Config, name)!r}")


def _check_choice(cfg: Config, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {list(allowed)}; pass e.g. {name}={allowed[0]!r}")
