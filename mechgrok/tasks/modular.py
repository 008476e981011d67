"""Modular arithmetic (Nanda et al.): c = op(a, b) mod p over all pairs, tokens ``[a, b, =]``.

The ``=`` token's index is p by definition, and the loss reads position 2. Pairs are listed
lexicographically, so the pair (a, b) has flat index ``a * p + b`` whenever every b is
allowed (every operation but ``div``, which drops b = 0 and so lists p * (p - 1) pairs).

Which Fourier analyses hold depends on the operation (:attr:`ModularTask.fourier_combination`):
the model's algorithm for ``add`` works on cos/sin(w(a+b)) and for ``sub`` on cos/sin(w(a-b));
no other operation has such directions, and the analyses refuse it
(:func:`require_fourier`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Int
from torch import Tensor

from mechgrok.config import NEEDS_PRIME, OPERATION_NAMES, validate_modular
from mechgrok.tasks.base import FiniteTask, Split, make_split

__all__ = ["OPERATIONS", "FOURIER_COMBINATIONS", "ModularTask", "Split", "make_split", "require_fourier", "NEEDS_PRIME"]


def _div(a: Tensor, b: Tensor, p: int) -> Tensor:
    # b^(p-2) is b's inverse mod a prime p (Fermat); int64 is exact for p < 3e9 via repeated squaring
    inv = torch.ones_like(b)
    base, e = b.clone(), p - 2
    while e:
        if e & 1:
            inv = inv * base % p
        base = base * base % p
        e >>= 1
    return a * inv % p


OPERATIONS: dict[str, Callable[[Tensor, Tensor, int], Tensor]] = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "div": _div,
    "x2xyy2": lambda a, b, p: (a * a + a * b + b * b) % p,
}
assert tuple(OPERATIONS) == OPERATION_NAMES

# op -> the sign s of b in the directions cos/sin(w_k(a + s·b)) that its Fourier algorithm uses.
FOURIER_COMBINATIONS: dict[str, int] = {"add": +1, "sub": -1}


@dataclass(frozen=True)
class ModularTask(FiniteTask):
    """c = op(a, b) mod p over all allowed pairs."""

    p: int = 113
    op: str = "add"
    kind = "modular"

    def __post_init__(self) -> None:
        validate_modular(self.p, self.op)

    # Task
    @property
    def d_vocab(self) -> int:
        return self.p + 1

    @property
    def d_vocab_out(self) -> int:
        return self.p

    @property
    def n_ctx(self) -> int:
        return 3

    @property
    def loss_positions(self) -> tuple[int, ...]:
        return (2,)

    def describe(self) -> str:
        return f"c = {self.op}(a, b) mod {self.p}"

    # FiniteTask
    @property
    def n_examples(self) -> int:
        return self.n_pairs

    def inputs(self) -> Int[Tensor, "batch 3"]:
        return self.tokens()

    # modular arithmetic
    @property
    def equals_token(self) -> int:
        return self.p

    @property
    def n_pairs(self) -> int:
        return self.p * (self.p - 1) if self.op == "div" else self.p * self.p

    @property
    def is_grid(self) -> bool:
        """Whether the pairs fill the whole p×p grid in grid order (every op but ``div``)."""
        return self.n_pairs == self.p * self.p

    @property
    def fourier_combination(self) -> int | None:
        """+1 for ``add`` (directions cos/sin(w(a+b))), -1 for ``sub`` (a-b), None for the rest."""
        return FOURIER_COMBINATIONS.get(self.op)

    def pairs(self) -> Int[Tensor, "batch 2"]:
        """All allowed (a, b), lexicographically ordered."""
        a, b = torch.meshgrid(torch.arange(self.p), torch.arange(self.p), indexing="ij")
        pairs = torch.stack([a.flatten(), b.flatten()], dim=1)
        if self.op == "div":
            pairs = pairs[pairs[:, 1] != 0]
        return pairs

    def tokens(self) -> Int[Tensor, "batch 3"]:
        pairs = self.pairs()
        eq = torch.full((len(pairs), 1), self.equals_token, dtype=torch.long)
        return torch.cat([pairs, eq], dim=1)

    def labels(self) -> Int[Tensor, "batch"]:
        pairs = self.pairs()
        return OPERATIONS[self.op](pairs[:, 0], pairs[:, 1], self.p)


def require_fourier(task: object, analysis: str) -> int:
    """The task's Fourier sign (+1 for a+b, -1 for a-b), or a ``ValueError`` naming what is supported.

    ``analysis`` names what is being computed, for the message.
    """
    if not isinstance(task, ModularTask):
        raise ValueError(f"{analysis} is defined for modular arithmetic only, not {type(task).__name__}")
    sign = task.fourier_combination
    if sign is None:
        raise ValueError(
            f"{analysis} is defined for op='add' (directions cos/sin(w(a+b))) and op='sub' (cos/sin(w(a-b))) "
            f"only, but this run's task is op={task.op!r}; the Fourier algorithm of Nanda et al. does not apply to it. "
            "Train with --op add or --op sub for it; the loss curves (fig2_loss_curves) work for every op"
        )
    return sign
