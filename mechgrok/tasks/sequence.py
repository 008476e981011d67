"""The Alignment Forum post's sequence tasks: digit addition, repeated subsequences, max of a list.

Each is a :class:`~mechgrok.tasks.base.SampledTask`: examples come from a seeded generator, as a
fixed train set or as fresh batches every step. Labels are ``[batch, len(loss_positions)]``
(the next token at each position the loss reads), with :data:`IGNORE` where an example's
position is not scored, so the loss is a masked mean. Each task also names its **components**
(:meth:`SequenceTask.components`), the parts of the loss that the post watches change phase
separately: one per answer digit, one per skip trigram.

=========  =================================================  ===================================
task       an input (the post's format)                        the loss reads
=========  =================================================  ===================================
addition   ``1 3 4 5 2 + 5 8 3 2 1 = 0 7 1 7 7`` (the last     the n_digits + 1 answer digits,
           answer digit, 3, is only a label)                   predicted from ``=`` onwards
induction  uniform random tokens in which one subsequence of   the repeat's tokens after its
           ``repeat_len`` tokens is repeated later on          first (those an induction head
                                                               can predict)
max_list   ``START 0 4 7 2 4 14 9 7 2 5 END``: ordinary        the one special entry, at END
           entries 0..n-1 and exactly one special entry
           n..2n-1
=========  =================================================  ===================================

Digits are written most significant first; the answer has ``n_digits + 1`` digits, the first
being the carry (0 or 1), so component ``d0`` is the carry digit and ``d{n}`` the units digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from mechgrok.tasks.base import SampledTask

__all__ = ["IGNORE", "SequenceTask", "AdditionTask", "InductionTask", "MaxListTask"]

IGNORE = -1  # the label of a position the loss does not read


def _check(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


class SequenceTask(SampledTask):
    """A sampled task whose loss is a masked mean over several positions, in named components."""

    @property
    def component_names(self) -> tuple[str, ...]:
        """The loss's components, in order."""
        return ("all",)

    def components(self, tokens: Int[Tensor, "batch pos"], labels: Int[Tensor, "batch loss_pos"]) -> Int[Tensor, "batch loss_pos"]:
        """Each scored label's component index into :attr:`component_names` (IGNORE where unscored)."""
        return torch.where(labels == IGNORE, IGNORE, 0)


@dataclass(frozen=True)
class AdditionTask(SequenceTask):
    """a + b for two ``n_digits``-digit numbers, written digit by digit (the post: 5 digits)."""

    n_digits: int = 5
    kind = "addition"
    PLUS, EQUALS = 10, 11

    def __post_init__(self) -> None:
        _check("n_digits", self.n_digits, 1)
        if self.n_digits > 18:
            raise ValueError(f"n_digits={self.n_digits}: the answer must fit in int64; pass n_digits <= 18")

    @property
    def d_vocab(self) -> int:
        return 12  # the digits, + and =

    @property
    def d_vocab_out(self) -> int:
        return 10

    @property
    def n_ctx(self) -> int:
        return 3 * self.n_digits + 2

    @property
    def loss_positions(self) -> tuple[int, ...]:
        start = 2 * self.n_digits + 1  # the = token predicts the first answer digit
        return tuple(range(start, start + self.n_digits + 1))

    @property
    def component_names(self) -> tuple[str, ...]:
        return tuple(f"d{i}" for i in range(self.n_digits + 1))

    def describe(self) -> str:
        return f"{self.n_digits}-digit addition a + b, the {self.n_digits + 1} answer digits predicted one by one"

    def answer_digits(self, a: Int[Tensor, "batch digit"], b: Int[Tensor, "batch digit"]) -> Int[Tensor, "batch answer"]:
        """The n_digits + 1 digits of a + b (most significant first) from the operands' digits."""
        out = torch.zeros(len(a), self.n_digits + 1, dtype=torch.long)
        carry = torch.zeros(len(a), dtype=torch.long)
        for i in range(self.n_digits - 1, -1, -1):
            s = a[:, i] + b[:, i] + carry
            out[:, i + 1] = s % 10
            carry = s // 10
        out[:, 0] = carry
        return out

    def sample(self, n: int, generator: torch.Generator) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch loss_pos"]]:
        a = torch.randint(0, 10, (n, self.n_digits), generator=generator)
        b = torch.randint(0, 10, (n, self.n_digits), generator=generator)
        answer = self.answer_digits(a, b)
        plus = torch.full((n, 1), self.PLUS)
        equals = torch.full((n, 1), self.EQUALS)
        tokens = torch.cat([a, plus, b, equals, answer[:, :-1]], dim=1)
        return tokens, answer

    def components(self, tokens, labels):
        index = torch.arange(self.n_digits + 1, device=labels.device).expand_as(labels)
        return torch.where(labels == IGNORE, IGNORE, index)


@dataclass(frozen=True)
class InductionTask(SequenceTask):
    """Uniform random tokens with one subsequence of ``repeat_len`` tokens repeated later on.

    The first occurrence starts uniformly at random, the repeat uniformly at random after it;
    the loss reads the repeat's tokens after its first, each predicted from the one before
    (an induction head's job: find the earlier copy, attend to the token after it)."""

    seq_len: int = 16
    n_symbols: int = 10
    repeat_len: int = 4
    kind = "induction"

    def __post_init__(self) -> None:
        _check("seq_len", self.seq_len, 4)
        _check("n_symbols", self.n_symbols, 2)
        if not 2 <= self.repeat_len <= self.seq_len // 2:
            raise ValueError(f"repeat_len={self.repeat_len} must be in [2, seq_len // 2 = {self.seq_len // 2}]")

    @property
    def d_vocab(self) -> int:
        return self.n_symbols

    @property
    def d_vocab_out(self) -> int:
        return self.n_symbols

    @property
    def n_ctx(self) -> int:
        return self.seq_len

    @property
    def loss_positions(self) -> tuple[int, ...]:
        return tuple(range(self.seq_len - 1))  # every position's next token; the labels mask all but the repeat

    @property
    def component_names(self) -> tuple[str, ...]:
        return ("repeated",)

    def describe(self) -> str:
        return (f"{self.seq_len} random tokens of {self.n_symbols}, one {self.repeat_len}-token subsequence repeated; "
                "predict the repeat")

    def sample(self, n: int, generator: torch.Generator) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch loss_pos"]]:
        L, T = self.repeat_len, self.seq_len
        tokens = torch.randint(0, self.n_symbols, (n, T), generator=generator)
        first = (torch.rand(n, generator=generator, dtype=torch.float64) * (T - 2 * L + 1)).long()
        room = T - L - (first + L) + 1  # where the repeat may start: first + L .. T - L
        second = first + L + (torch.rand(n, generator=generator, dtype=torch.float64) * room).long()
        offsets = torch.arange(L)
        rows = torch.arange(n)[:, None]
        tokens[rows, second[:, None] + offsets] = tokens[rows, first[:, None] + offsets]
        labels = torch.full((n, T - 1), IGNORE, dtype=torch.long)
        scored = second[:, None] + offsets[:-1]  # positions second .. second + L - 2 predict the repeat's next token
        labels[rows, scored] = tokens[rows, scored + 1]
        return tokens, labels

    def repeat_starts(self, labels: Int[Tensor, "batch loss_pos"]) -> Int[Tensor, "batch"]:
        """Where each example's repeat starts (its first scored position)."""
        return (labels != IGNORE).long().argmax(dim=1)


@dataclass(frozen=True)
class MaxListTask(SequenceTask):
    """START, ``seq_len`` entries of which exactly one is special, END; the answer is the special one.

    Ordinary entries are 0..n_symbols-1, special ones n_symbols..2·n_symbols-1, so the solution is
    n_symbols skip trigrams ``s .. END -> s``, one per special entry: the components."""

    seq_len: int = 10
    n_symbols: int = 10
    kind = "max_list"

    def __post_init__(self) -> None:
        _check("seq_len", self.seq_len, 2)
        _check("n_symbols", self.n_symbols, 1)

    @property
    def START(self) -> int:
        return 2 * self.n_symbols

    @property
    def END(self) -> int:
        return 2 * self.n_symbols + 1

    @property
    def d_vocab(self) -> int:
        return 2 * self.n_symbols + 2

    @property
    def d_vocab_out(self) -> int:
        return 2 * self.n_symbols + 2

    @property
    def n_ctx(self) -> int:
        return self.seq_len + 2

    @property
    def loss_positions(self) -> tuple[int, ...]:
        return (self.seq_len + 1,)  # the END token

    @property
    def component_names(self) -> tuple[str, ...]:
        return tuple(str(s) for s in range(self.n_symbols, 2 * self.n_symbols))

    def describe(self) -> str:
        return (f"a list of {self.seq_len} entries with one special entry among {self.n_symbols}..{2 * self.n_symbols - 1}; "
                "output it after END")

    def sample(self, n: int, generator: torch.Generator) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch loss_pos"]]:
        entries = torch.randint(0, self.n_symbols, (n, self.seq_len), generator=generator)
        special = torch.randint(self.n_symbols, 2 * self.n_symbols, (n,), generator=generator)
        where = torch.randint(0, self.seq_len, (n,), generator=generator)
        entries[torch.arange(n), where] = special
        tokens = torch.cat([torch.full((n, 1), self.START), entries, torch.full((n, 1), self.END)], dim=1)
        return tokens, special[:, None]

    def components(self, tokens, labels):
        return torch.where(labels == IGNORE, IGNORE, labels - self.n_symbols)
