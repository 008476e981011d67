"""The run configuration: one frozen dataclass that names every knob of a run.

Derived quantities (``d_vocab``, ``d_head``, ``n_train``) are properties, so they can never
disagree with the fields they come from. Every field is validated on construction; a bad
value raises ``ValueError`` naming the field, the value, what is allowed and the fix.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from mechgrok.task import validate_task

INITS = ("paper", "transformer_lens")


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run (defaults: the paper's mainline, docs/training.md)."""

    # task
    p: int = 113
    op: str = "add"
    frac_train: float = 0.3
    seed: int = 0
    # model
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    init: str = "paper"
    # optimiser
    lr: float = 1e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 10
    # schedule
    epochs: int = 20_000
    eval_every: int = 10
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        validate_task(self.p, self.op, self.frac_train)
        _check_int(self, "seed", minimum=0)
        _check_int(self, "d_model", minimum=1)
        _check_int(self, "n_heads", minimum=1)
        _check_int(self, "d_mlp", minimum=1)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "choose n_heads that divides d_model (the paper: d_model=128, n_heads=4)"
            )
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r} is not one of {INITS}; pass init='paper' or 'transformer_lens'")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0; the paper uses lr=1e-3")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0; the paper uses weight_decay=1.0")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value} must be in [0, 1); the paper uses betas (0.9, 0.98)")
        _check_int(self, "warmup_steps", minimum=0)
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
    def from_dict(cls, data: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown config field(s) {unknown}; allowed fields are {sorted(known)}. "
                "Was this config written by a newer mechgrok?"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _check_int(cfg: Config, name: str, minimum: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}; pass e.g. {name}={max(minimum, 1)}")
