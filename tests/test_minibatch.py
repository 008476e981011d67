"""Minibatch training of the mainline transformer (``Config.batch_size > 0``, mechgrok.training.loop)."""

import copy

import pytest
import torch

from mechgrok import runs
from mechgrok.config import Config
from mechgrok.models.fastpath import FastPath
from mechgrok.speed import fast_float32_matmul
from mechgrok.tasks.modular import ModularTask
from mechgrok.training.loop import minibatch_indices, train
from mechgrok.training.optim import lr_at, make_optimizer

# p=13, half the pairs: 84 train pairs, batches of 24
SMALL = Config(p=13, frac_train=0.5, epochs=50, eval_every=10, checkpoint_every=25, seed=1, batch_size=24)


def test_minibatch_indices_are_distinct_and_a_function_of_seed_and_step():
    a = minibatch_indices(seed=3, step=7, n_train=50, batch_size=20)
    assert a.shape == (20,) and len(set(a.tolist())) == 20 and int(a.min()) >= 0 and int(a.max()) < 50
    assert torch.equal(a, minibatch_indices(seed=3, step=7, n_train=50, batch_size=20))
    assert not torch.equal(a, minibatch_indices(seed=3, step=8, n_train=50, batch_size=20))
    assert not torch.equal(a, minibatch_indices(seed=4, step=7, n_train=50, batch_size=20))
    with pytest.raises(ValueError, match="batch_size=51"):
        minibatch_indices(seed=0, step=0, n_train=50, batch_size=51)


def test_resume_with_minibatches_is_bit_identical(tmp_path):
    straight = train(SMALL, tmp_path / "straight")
    train(SMALL.replace(epochs=23), tmp_path / "resumed")  # stops between logged rows and checkpoints
    resumed = train(SMALL, tmp_path / "resumed")
    assert resumed.resumed_from == 23
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
    cols = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
    assert straight.metrics[cols].equals(resumed.metrics[cols])


def test_minibatch_run_differs_from_full_batch_and_logs_the_whole_split(tmp_path):
    mini = train(SMALL, tmp_path / "mini")
    full = train(SMALL.replace(batch_size=0), tmp_path / "full")
    assert not torch.equal(mini.model.W_E, full.model.W_E)
    # the logged train loss is the whole train split's, computed from the saved model
    task = ModularTask(SMALL.p)
    train_rows = mini.split.train
    with fast_float32_matmul():
        loss, correct = FastPath(task.tokens()[train_rows], task.labels()[train_rows]).loss(mini.model)
    last = mini.metrics.iloc[-1]
    assert last.epoch == SMALL.epochs
    assert float(loss) == last.train_loss and int(correct) / len(train_rows) == last.train_acc


def test_a_step_is_adamw_on_the_minibatch_of_the_hooked_transformer(tmp_path):
    """Two steps of the trainer equal two plain steps: HookedTransformer forward, autograd
    cross-entropy on that step's minibatch, torch AdamW (float32 rounding apart)."""
    cfg = SMALL.replace(epochs=2, eval_every=1, checkpoint_every=1)
    trained = train(cfg, tmp_path / "run")
    start = runs.load_run(tmp_path / "run", epoch=0)
    model = copy.deepcopy(start.model)
    optimizer = make_optimizer(model, cfg)
    task = ModularTask(cfg.p)
    tokens, labels = task.tokens(), task.labels()
    for step in range(2):
        rows = start.split.train[minibatch_indices(cfg.seed, step, len(start.split.train), cfg.batch_size)]
        logits = model(tokens[rows])[:, -1]
        # the fast path on the minibatch is HookedTransformer's forward on it
        fast = FastPath(tokens[rows], labels[rows]).logits(model)
        assert torch.allclose(fast, logits, atol=1e-5)
        loss = torch.nn.functional.cross_entropy(logits.double(), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        optimizer.step()
    moved = False
    for (name, a), b in zip(model.named_parameters(), trained.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name
        moved |= not torch.equal(a, start.model.get_parameter(name))
    assert moved


def test_batch_larger_than_the_train_split_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size=85 exceeds the 84 train pairs.*batch_size <= 84"):
        train(SMALL.replace(batch_size=85), tmp_path / "run")
    assert not (tmp_path / "run").exists()
