"""A run's task and data, from its config: the examples, their labels and the train/test split.

``run_data(cfg)`` is what the trainers, the run folders and the analyses read, so every task
is turned into tensors in one place:

* modular arithmetic (``task='modular'``): all pairs of the task in grid order, split by
  :func:`modular_split` (``Config.split``: :func:`mechgrok.tasks.base.make_split`, or the
  original code's :func:`mechgrok.tasks.base.python_shuffle_split`, from ``Config.data_seed``),
  or, with ``pairs='unordered'``, a split of the pairs a <= b only (:func:`unordered_split`;
  the other half of the grid is in neither set);
* sparse parity (``task='parity'``): ``n_train`` strings from the seed's train stream, then
  ``n_test`` from its test stream; the split is the first ``n_train`` rows and the rest;
* the sequence tasks (``addition``, ``induction``, ``max_list``): the same, from the streams
  ``"<task>-train"`` and ``"<task>-test"``; with ``data='fresh'`` there is no train set (the
  split's train part is empty) and step t trains on :func:`fresh_batch` (cfg, t), drawn from
  the stream ``"<task>-batch-<t>"``, so a resumed run draws the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from mechgrok.tasks.base import Split, Task, make_split, python_shuffle_split, stream_generator
from mechgrok.tasks.modular import ModularTask
from mechgrok.tasks.parity import ParityTask, test_generator, train_generator
from mechgrok.tasks.sequence import AdditionTask, InductionTask, MaxListTask, SequenceTask

__all__ = ["RunData", "build_task", "run_data", "fresh_batch", "modular_split", "unordered_split", "n_examples"]


@dataclass(frozen=True)
class RunData:
    """Everything a run trains and tests on: ``tokens[split.train]`` is its train set."""

    task: Task
    tokens: Int[Tensor, "batch pos"]
    labels: Int[Tensor, "batch *loss_pos"]
    split: Split


def build_task(cfg) -> Task:
    """The task a config names (``cfg.task``)."""
    if cfg.task == "parity":
        return ParityTask(cfg.n_bits, cfg.parity_bits)
    if cfg.task == "addition":
        return AdditionTask(cfg.n_digits)
    if cfg.task == "induction":
        return InductionTask(cfg.seq_len, cfg.n_symbols, cfg.repeat_len)
    if cfg.task == "max_list":
        return MaxListTask(cfg.seq_len, cfg.n_symbols)
    return ModularTask(cfg.p, cfg.op)


def n_examples(cfg) -> int:
    """How many examples the split of a run of ``cfg`` indexes into."""
    if cfg.task == "modular":
        return ModularTask(cfg.p, cfg.op).n_pairs
    return (0 if cfg.data == "fresh" else cfg.n_train) + cfg.n_test


def fresh_batch(cfg, step: int) -> tuple[Tensor, Tensor]:
    """The ``batch_size`` new examples that step ``step`` of a ``data='fresh'`` run trains on."""
    if cfg.data != "fresh":
        raise ValueError(f"fresh_batch is for data='fresh' runs; this run has data={cfg.data!r} (a fixed train set)")
    return build_task(cfg).sample(cfg.batch_size, stream_generator(f"{cfg.task}-batch-{step}", cfg.seed))


def unordered_split(p: int, frac_train: float, seed: int) -> Split:
    """A seeded split of the p(p+1)/2 pairs a <= b, as grid indices a*p + b.

    ``int(frac_train * p(p+1)/2)`` of them are train, the rest test; the pairs a > b are in
    neither (a model symmetric in a and b gives them the same output as (b, a)).
    """
    a, b = torch.triu_indices(p, p)  # a <= b, lexicographic
    flat = a * p + b
    pairs = make_split(len(flat), frac_train, seed)
    return Split(train=flat[pairs.train], test=flat[pairs.test])


def modular_split(cfg) -> Split:
    """The train/test split of a modular run of ``cfg``, as grid indices a*p + b: ``cfg.split``'s
    generator seeded with ``cfg.data_seed`` (the unordered pairs: :func:`unordered_split`)."""
    if cfg.pairs == "unordered":
        return unordered_split(cfg.p, cfg.frac_train, cfg.data_seed)
    draw = python_shuffle_split if cfg.split == "python" else make_split
    return draw(cfg.p * cfg.p, cfg.frac_train, cfg.data_seed)


def run_data(cfg) -> RunData:
    """The examples, labels and split of a run of ``cfg`` (the same config gives the same tensors)."""
    task = build_task(cfg)
    if isinstance(task, ParityTask):
        train_x, train_y = task.sample(cfg.n_train, train_generator(cfg.seed))
        test_x, test_y = task.sample(cfg.n_test, test_generator(cfg.seed))
        n = cfg.n_train + cfg.n_test
        split = Split(train=torch.arange(cfg.n_train), test=torch.arange(cfg.n_train, n))
        return RunData(task, torch.cat([train_x, test_x]), torch.cat([train_y, test_y]), split)
    if isinstance(task, SequenceTask):
        test_x, test_y = task.sample(cfg.n_test, stream_generator(f"{cfg.task}-test", cfg.seed))
        n_train = 0 if cfg.data == "fresh" else cfg.n_train
        if n_train:
            train_x, train_y = task.sample(n_train, stream_generator(f"{cfg.task}-train", cfg.seed))
            test_x, test_y = torch.cat([train_x, test_x]), torch.cat([train_y, test_y])
        split = Split(train=torch.arange(n_train), test=torch.arange(n_train, n_train + cfg.n_test))
        return RunData(task, test_x, test_y, split)
    return RunData(task, task.tokens(), task.labels(), modular_split(cfg))
