"""The modular-arithmetic task: all pairs (a, b), their tokens ``[a, b, =]``, labels and the split.

The ``=`` token's index is p by definition. Pairs are listed lexicographically, so the pair
(a, b) has flat index ``a * p + b`` whenever every b is allowed (every operation but ``div``,
which drops b = 0 and so lists p * (p - 1) pairs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Int
from torch import Tensor


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


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
# Operations that need every b != 0 to have an inverse mod p, i.e. p prime.
NEEDS_PRIME = frozenset({"div"})


def validate_task(p: int, op: str, frac_train: float | None = None) -> None:
    """Raise ``ValueError`` naming the bad value and the fix; return None when all is well."""
    if isinstance(p, bool) or not isinstance(p, int) or p < 3:
        raise ValueError(f"p={p!r} must be an integer >= 3; the paper uses p=113")
    if op not in OPERATIONS:
        raise ValueError(f"op={op!r} is not one of {sorted(OPERATIONS)}; pass e.g. op='add'")
    if op in NEEDS_PRIME and not _is_prime(p):
        raise ValueError(f"op={op!r} needs a prime p (every b != 0 must be invertible), but p={p}; pick a prime such as 113")
    if frac_train is not None and not (isinstance(frac_train, (int, float)) and 0 < frac_train < 1):
        raise ValueError(f"frac_train={frac_train!r} must be in (0, 1); the paper uses frac_train=0.3")


@dataclass(frozen=True)
class Task:
    """c = op(a, b) mod p over all allowed pairs."""

    p: int = 113
    op: str = "add"

    def __post_init__(self) -> None:
        validate_task(self.p, self.op)

    @property
    def equals_token(self) -> int:
        return self.p

    def pairs(self) -> Int[Tensor, "batch 2"]:
        """All allowed (a, b), lexicographically ordered."""
        a, b = torch.meshgrid(torch.arange(self.p), torch.arange(self.p), indexing="ij")
        pairs = torch.stack([a.flatten(), b.flatten()], dim=1)
        if self.op == "div":
            pairs = pairs[pairs[:, 1] != 0]
        return pairs

    @property
    def n_pairs(self) -> int:
        return self.p * (self.p - 1) if self.op == "div" else self.p * self.p

    def tokens(self) -> Int[Tensor, "batch 3"]:
        pairs = self.pairs()
        eq = torch.full((len(pairs), 1), self.equals_token, dtype=torch.long)
        return torch.cat([pairs, eq], dim=1)

    def labels(self) -> Int[Tensor, "batch"]:
        pairs = self.pairs()
        return OPERATIONS[self.op](pairs[:, 0], pairs[:, 1], self.p)


@dataclass(frozen=True)
class Split:
    """Indices into ``Task.pairs()`` of the train and test sets (disjoint, together all pairs)."""

    train: Int[Tensor, "n_train"]
    test: Int[Tensor, "n_test"]

    def __post_init__(self) -> None:
        if self.train.dtype != torch.long or self.test.dtype != torch.long:
            raise ValueError("split indices must be int64 tensors")


def make_split(n_pairs: int, frac_train: float, seed: int) -> Split:
    """A seeded random split: the first ``int(frac_train * n_pairs)`` of a permutation are train.

    Uses its own generator, so the global RNG is left alone.
    """
    validate_task(3, "add", frac_train)
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_pairs, generator=generator)
    n_train = int(frac_train * n_pairs)
    if n_train == 0 or n_train == n_pairs:
        raise ValueError(
            f"frac_train={frac_train} leaves {n_train} of {n_pairs} pairs for training; "
            "choose frac_train so both train and test sets are non-empty"
        )
    return Split(train=perm[:n_train], test=perm[n_train:])
