"""What a task is: its vocabulary, its inputs and labels, and the positions the loss reads.

Two kinds cover every task of the three source works:

* :class:`FiniteTask`: a fixed, enumerable set of examples (modular arithmetic's p² pairs).
  A run trains on a seeded :class:`Split` of them; analyses may use all of them at once.
* :class:`SampledTask`: examples drawn from a generator (bit strings, digit sequences), either
  a fixed train set drawn once or fresh batches every step ("infinite data").

Inputs are token sequences ``[batch, pos]``. ``loss_positions`` are the positions whose
next-token prediction the loss reads; labels are ``[batch]`` when there is one such position
and ``[batch, len(loss_positions)]`` otherwise. Analyses that only hold for some tasks ask the
task (for example :attr:`mechgrok.tasks.modular.ModularTask.fourier_combination`) and refuse
the others with a clear error.
"""

from __future__ import annotations

import abc
import array
import hashlib
import random
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = ["Task", "FiniteTask", "SampledTask", "Split", "make_split", "python_shuffle_split", "stream_seed", "stream_generator"]


class Task(abc.ABC):
    """A supervised sequence task: vocabulary sizes, context length and the loss positions."""

    #: the registry name of this kind of task (mechgrok.registry.TASKS)
    kind: str = ""

    @property
    @abc.abstractmethod
    def d_vocab(self) -> int:
        """Input vocabulary size."""

    @property
    @abc.abstractmethod
    def d_vocab_out(self) -> int:
        """Output (logit) vocabulary size."""

    @property
    @abc.abstractmethod
    def n_ctx(self) -> int:
        """Length of an input sequence."""

    @property
    @abc.abstractmethod
    def loss_positions(self) -> tuple[int, ...]:
        """The positions whose outputs the loss reads."""

    def describe(self) -> str:
        """One line for people: what the task computes."""
        return type(self).__name__


class FiniteTask(Task):
    """A task with a fixed, enumerable set of examples, listed in a fixed order."""

    @property
    @abc.abstractmethod
    def n_examples(self) -> int:
        """How many examples there are in all."""

    @abc.abstractmethod
    def inputs(self) -> Int[Tensor, "batch pos"]:
        """Every example's tokens, in the task's fixed order."""

    @abc.abstractmethod
    def labels(self) -> Int[Tensor, "batch *loss_pos"]:
        """Every example's label(s), in the same order."""


class SampledTask(Task):
    """A task whose examples are drawn from a seeded generator."""

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch *loss_pos"]]:
        """``n`` fresh examples (inputs, labels), drawn with ``generator`` only."""

    def fixed_set(self, n: int, seed: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch *loss_pos"]]:
        """A train set of ``n`` examples drawn once from ``seed`` (the same seed gives the same set)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be an integer >= 1 (the number of examples)")
        return self.sample(n, torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class Split:
    """Indices into a :class:`FiniteTask`'s examples of the train and test sets (disjoint)."""

    train: Int[Tensor, "n_train"]
    test: Int[Tensor, "n_test"]

    def __post_init__(self) -> None:
        if self.train.dtype != torch.long or self.test.dtype != torch.long:
            raise ValueError("split indices must be int64 tensors")


def make_split(n_examples: int, frac_train: float, seed: int) -> Split:
    """A seeded random split: the first ``int(frac_train * n_examples)`` of a permutation are train.

    Uses its own generator, so the global RNG is left alone.
    """
    n_train = _n_train(n_examples, frac_train)
    # a generator of its own: torch.manual_seed(seed); torch.randperm(n) gives this same permutation
    perm = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed))
    return Split(train=perm[:n_train], test=perm[n_train:])


def python_shuffle_split(n_examples: int, frac_train: float, seed: int) -> Split:
    """The original code's split: Python's ``random.seed(seed)``, then ``random.shuffle`` of the
    examples in the task's order; the first ``int(frac_train * n_examples)`` are train.

    A shuffle's permutation depends only on the list's length and the generator, so shuffling
    the indices 0..n-1 orders them as the examples would be; a local ``random.Random(seed)`` is
    seeded exactly as ``random.seed(seed)`` seeds the global one, which is left alone.
    """
    n_train = _n_train(n_examples, frac_train)
    order = array.array("q", range(n_examples))  # 8 bytes an index, where a list of ints takes ~36
    random.Random(seed).shuffle(order)
    indices = torch.frombuffer(order, dtype=torch.long).clone()
    return Split(train=indices[:n_train], test=indices[n_train:])


def _n_train(n_examples: int, frac_train: float) -> int:
    if isinstance(frac_train, bool) or not isinstance(frac_train, (int, float)) or not 0 < frac_train < 1:
        raise ValueError(f"frac_train={frac_train!r} must be in (0, 1); the paper uses frac_train=0.3")
    n_train = int(frac_train * n_examples)
    if n_train == 0 or n_train == n_examples:
        raise ValueError(
            f"frac_train={frac_train} leaves {n_train} of {n_examples} examples for training; "
            "choose frac_train so both train and test sets are non-empty"
        )
    return n_train


def stream_seed(stream: str, seed: int) -> int:
    """A 32-bit seed for the data stream ``stream`` of a run seeded ``seed`` (a hash, so the
    train stream, the test stream and every run's weight initialisation draw different numbers;
    torch's CPU generator keeps only the low 32 bits of a seed, so offsets such as
    ``seed + 2**40`` would collapse onto ``seed``)."""
    digest = hashlib.blake2b(f"mechgrok:{stream}:{seed}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def stream_generator(stream: str, seed: int) -> torch.Generator:
    """A CPU generator seeded for the data stream ``stream`` of a run seeded ``seed``."""
    return torch.Generator().manual_seed(stream_seed(stream, seed))
