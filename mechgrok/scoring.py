"""Scoring: cross-entropy in a chosen precision, accuracy, the task's logits, and a result record.

The loss precision is a setting (``Config.loss_dtype``): float64 by default, because a float32
log-softmax floors near 1.2e-7, which is where the paper's late-training losses live; float32
reproduces what a plain float32 loop sees (the float32 "slingshots" of the Alignment Forum post).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["LOSS_DTYPES", "loss_dtype", "AblationResult", "p_of_logits", "task_logits", "cross_entropy", "accuracy", "score"]

LOSS_DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}


def loss_dtype(name: str | torch.dtype) -> torch.dtype:
    """The torch dtype of a loss precision name ("float64" or "float32")."""
    if isinstance(name, torch.dtype) and name in LOSS_DTYPES.values():
        return name
    if name not in LOSS_DTYPES:
        raise ValueError(f"loss_dtype={name!r} is not one of {list(LOSS_DTYPES)}; pass loss_dtype='float64'")
    return LOSS_DTYPES[name]


@dataclass(frozen=True)
class AblationResult:
    """Loss (cross-entropy) and accuracy of a model run on all p² inputs.

    ``train`` and ``test`` are the run's split; ``all`` is every input of the grid. For a split of
    the unordered pairs (``pairs='unordered'``) train and test hold pairs a <= b only, and ``all``
    also counts their mirrors (b, a), which a symmetric model answers alike.
    """

    loss_train: float
    loss_test: float
    loss_all: float
    accuracy_train: float
    accuracy_test: float
    accuracy_all: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def p_of_logits(logits: Tensor) -> int:
    """p from logits over the whole grid: [p², d_vocab_out] with d_vocab_out >= p."""
    n, width = logits.shape[0], logits.shape[-1]
    p = math.isqrt(n)
    if logits.ndim != 2 or p * p != n or width < p:
        raise ValueError(
            f"expected last-position logits over all p² inputs, shape [p², p] (or wider); got {tuple(logits.shape)}. "
            "Take model(ModularTask(p).tokens())[:, -1]"
        )
    return p


def task_logits(logits: Float[Tensor, "batch d_vocab_out"], p: int) -> Float[Tensor, "batch c"]:
    """The p task logits (the residues 0..p-1). A wider unembed has its extra logits dropped:
    old checkpoints have p+1 (the ``=`` token), and the original code's files always had 114,
    whatever p."""
    width = logits.shape[-1]
    if width < p:
        raise ValueError(f"logits are {width} wide but p={p}; a model for p={p} has at least {p} output logits")
    return logits if width == p else logits[..., :p]


def cross_entropy(
    logits: Float[Tensor, "batch c"], labels: Int[Tensor, "batch"], dtype: str | torch.dtype = "float64"
) -> Tensor:
    """Mean cross-entropy with the logits cast to ``dtype`` first (float64 by default)."""
    logp = torch.log_softmax(logits.to(loss_dtype(dtype)), dim=-1)
    return -logp.gather(-1, labels[:, None].to(logp.device)).mean()


def accuracy(logits: Float[Tensor, "batch c"], labels: Int[Tensor, "batch"]) -> Tensor:
    return (logits.argmax(-1) == labels.to(logits.device)).double().mean()


def score(
    logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"], split: Any, dtype: str | torch.dtype = "float64"
) -> AblationResult:
    """Loss and accuracy on ``split.train``, ``split.test`` and all inputs (logits over all pairs)."""
    p = p_of_logits(logits)
    logits = task_logits(logits, p)
    parts = {"train": split.train, "test": split.test, "all": slice(None)}
    out: dict[str, float] = {}
    for name, idx in parts.items():
        out[f"loss_{name}"] = cross_entropy(logits[idx], labels[idx], dtype).item()
        out[f"accuracy_{name}"] = accuracy(logits[idx], labels[idx]).item()
    return AblationResult(**out)
