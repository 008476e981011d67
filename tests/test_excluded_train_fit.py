"""The excluded loss fitted on the train inputs only, beside the paper's (fitted on all p² inputs)."""

import math

import pytest
import torch

from mechgrok.analysis import ablations, progress
from mechgrok.tasks.base import make_split
from mechgrok.tasks.modular import ModularTask

P = 13


def random_logits(seed: int = 0) -> torch.Tensor:
    return torch.randn(P * P, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_with_every_input_in_train_it_is_the_papers_excluded_loss():
    logits, labels = random_logits(), ModularTask(P).labels()
    everything = torch.arange(P * P)
    for ks in ([1], [2, 5], [1, 3, 6]):
        assert ablations.excluded_loss_train_fit(logits, labels, ks, everything) == pytest.approx(
            ablations.excluded_loss(logits, labels, ks, everything), rel=1e-10)


def test_it_reads_no_test_logit_while_the_papers_does():
    logits, labels = random_logits(1), ModularTask(P).labels()
    split = make_split(P * P, 0.3, seed=0)
    changed = logits.clone()
    changed[split.test] += 5 * random_logits(2)[split.test]
    ks = [2, 4]
    ours = [ablations.excluded_loss_train_fit(x, labels, ks, split.train) for x in (logits, changed)]
    paper = [ablations.excluded_loss(x, labels, ks, split.train) for x in (logits, changed)]
    assert ours[0] == ours[1]
    assert paper[0] != pytest.approx(paper[1], rel=1e-3)


def test_a_pure_key_frequency_signal_is_removed_exactly_by_both():
    """logits = 4 cos(w_k(a + b - c)): in the span of frequency k's directions on any inputs, so
    removing k leaves a constant per class, and the loss is log p, whichever fit."""
    a = torch.arange(P, dtype=torch.float64).repeat_interleave(P)
    b = torch.arange(P, dtype=torch.float64).repeat(P)
    c = torch.arange(P, dtype=torch.float64)
    k = 3
    logits = 4 * torch.cos(2 * math.pi * k / P * ((a + b)[:, None] - c[None, :]))
    labels = ModularTask(P).labels()
    split = make_split(P * P, 0.4, seed=3)
    assert ablations.excluded_loss_train_fit(logits, labels, [k], split.train) == pytest.approx(math.log(P), rel=1e-9)
    assert ablations.excluded_loss(logits, labels, [k], split.train) == pytest.approx(math.log(P), rel=1e-9)
    # another frequency's removal leaves the signal, which predicts the labels
    assert ablations.excluded_loss_train_fit(logits, labels, [k + 1], split.train) < 0.5 * math.log(P)


def test_progress_measures_hold_the_train_only_column():
    task = ModularTask(P)
    split = make_split(P * P, 0.5, seed=1)
    logits = random_logits(4).float()
    key = [1, 5]
    row = progress.LogitMeasurer(task, split, key)(logits)
    assert row["excluded_loss_train_fit"] == pytest.approx(
        ablations.excluded_loss_train_fit(logits, task.labels(), key, split.train), rel=1e-9)
    assert row["excluded_loss_train_fit"] != pytest.approx(row["excluded_loss"], rel=1e-6)
    assert progress.MEASURES_VERSION >= 4  # caches written before the column existed are recomputed
