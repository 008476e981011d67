"""Sparse parity (Pearce et al.'s "1s and 0s"): the parity of the first k bits of an n-bit string.

A string of ``n_bits`` random bits is the input ``[batch, pos]`` (tokens 0 and 1); the label is
the parity of its first ``parity_bits`` bits; the other bits are distractors. The explorable
uses n_bits=30, parity_bits=3, a fixed train set of 1,200 strings and a test set of 5,000.

Train and test strings come from two separate seeded streams (:func:`train_generator`,
:func:`test_generator`), so a run's train set of n strings is the first n strings of the
stream for its seed: train size is a prefix, and the test set is the same for every train size
of a seed. Each stream's generator is seeded with a 32-bit hash of (stream, seed)
(:func:`stream_seed`): torch's CPU generator keeps only the low 32 bits of a seed, so offsets
such as ``seed + 2**40`` would all collapse onto the weight initialisation's own ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from mechgrok.tasks.base import SampledTask, stream_seed

__all__ = ["ParityTask", "stream_seed", "train_generator", "test_generator"]


def train_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed("parity-train", seed))


def test_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed("parity-test", seed))


@dataclass(frozen=True)
class ParityTask(SampledTask):
    """label = (x_0 + ... + x_{k-1}) mod 2 for a string x of ``n_bits`` random bits, k = ``parity_bits``."""

    n_bits: int = 30
    parity_bits: int = 3
    kind = "parity"

    def __post_init__(self) -> None:
        for name in ("n_bits", "parity_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1; the explorable uses n_bits=30, parity_bits=3")
        if self.parity_bits > self.n_bits:
            raise ValueError(f"parity_bits={self.parity_bits} exceeds n_bits={self.n_bits}; pass parity_bits <= n_bits")

    @property
    def d_vocab(self) -> int:
        return 2

    @property
    def d_vocab_out(self) -> int:
        return 2

    @property
    def n_ctx(self) -> int:
        return self.n_bits

    @property
    def loss_positions(self) -> tuple[int, ...]:
        return (self.n_bits - 1,)

    def describe(self) -> str:
        return f"parity of the first {self.parity_bits} of {self.n_bits} random bits"

    def label(self, bits: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch"]:
        return bits[:, : self.parity_bits].sum(-1) % 2

    def sample(self, n: int, generator: torch.Generator) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch"]]:
        bits = torch.randint(0, 2, (n, self.n_bits), generator=generator)
        return bits, self.label(bits)
