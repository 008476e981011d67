"""Many transformers at once (mechgrok.models.stacked_fastpath in mechgrok.training.stack): the
single-model fast path's numbers model by model, its runs, bit-identical resume."""

from pathlib import Path

import pytest
import torch

import mechgrok
from mechgrok import registry, runs
from mechgrok.config import Config
from mechgrok.models.fastpath import FastPath
from mechgrok.models.stacked_fastpath import StackedFastPath
from mechgrok.models.transformer import FROZEN_BIASES
from mechgrok.tasks.data import run_data
from mechgrok.training import stack
from mechgrok.training.stack import train_stack
from test_stack import check_interrupted_and_extended_stacks

CFG = Config(p=23, frac_train=0.5, d_model=32, n_heads=4, d_mlp=64, lr=3e-3, epochs=40, eval_every=5,
             checkpoint_every=20)


def _chunk(cfgs):
    family = registry.family(cfgs[0].family)
    members = [stack._Member(i, c, Path("."), family.build(c), run_data(c).split, 0, [], 0.0, None) for i, c in enumerate(cfgs)]
    return stack._Chunk(members, torch.device("cpu"))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.mark.parametrize("loss_dtype", ["float64", "float32"])
def test_each_models_logits_loss_and_gradients_are_the_fast_paths(loss_dtype):
    # seeds with different train sizes: the smaller splits are padded, and the padding must not count
    cfgs = [CFG.replace(seed=s, frac_train=0.5 - 0.1 * s, loss_dtype=loss_dtype) for s in range(3)]
    chunk = _chunk(cfgs)
    assert isinstance(chunk.kernel, StackedFastPath)
    assert not set(FROZEN_BIASES) & set(chunk.params)  # the frozen biases are not trained
    assert len({len(m.split.train) for m in chunk.members}) == 3  # really padded
    grads, loss, correct = chunk.loss_and_grad()
    assert set(grads) == set(chunk.params)
    logits = chunk.kernel.logits({**chunk.buffers, **chunk.params}, chunk.train)
    data = run_data(cfgs[0])
    for i, m in enumerate(chunk.members):
        n = len(m.split.train)
        step = FastPath(data.tokens[m.split.train], data.labels[m.split.train], loss_dtype=loss_dtype)
        torch.testing.assert_close(logits[i, :n], step.logits(m.model), rtol=1e-5, atol=1e-5)
        m.model.zero_grad(set_to_none=True)
        ref_loss, ref_correct = step.loss_and_grad(m.model)
        assert loss.dtype == ref_loss.dtype == getattr(torch, loss_dtype)
        assert float(loss[i]) == pytest.approx(float(ref_loss), rel=1e-6)
        assert int(correct[i]) == int(ref_correct)
        for name, g in grads.items():
            ref = m.model.get_parameter(name).grad
            assert _rel(g[i], ref) < 1e-4, f"model {i}: {name} differs by {_rel(g[i], ref):.2e}"
        assert all(m.model.get_parameter(name).grad is None for name in FROZEN_BIASES)


def test_a_few_stacked_steps_equal_mechgrok_train_on_each_config(tmp_path):
    cfgs = [CFG.replace(seed=s, epochs=6, eval_every=1, checkpoint_every=6) for s in (0, 1, 2)]
    together = train_stack(cfgs, [tmp_path / f"stack{s}" for s in range(3)], chunk_size=3)
    assert [r.stack_size for r in together] == [3, 3, 3]
    for cfg, result in zip(cfgs, together):
        alone = mechgrok.train(cfg, tmp_path / f"alone{cfg.seed}")
        assert torch.equal(alone.split.train, result.split.train)  # each seed its own split
        for name, w in alone.model.named_parameters():
            assert _rel(result.model.get_parameter(name).detach(), w.detach()) < 1e-5, f"seed {cfg.seed}: {name}"
        for name in FROZEN_BIASES:  # zero at init, never updated
            assert not bool(result.model.get_parameter(name).any())
        a, b = alone.metrics.set_index("epoch"), result.metrics.set_index("epoch")
        assert list(a.index) == list(b.index) == list(range(7))
        for col in ("train_loss", "test_loss"):
            assert (a[col] - b[col]).abs().max() <= 1e-5 * a[col].abs().max()
        assert (a.train_acc - b.train_acc).abs().max() <= 2 / len(alone.split.train)


def test_a_stacked_seed_is_an_ordinary_run_folder(tmp_path):
    cfgs = [CFG.replace(seed=s, epochs=20) for s in (3, 4)]
    results = train_stack(cfgs, [tmp_path / "a", tmp_path / "b"])
    run = mechgrok.load_run(tmp_path / "b")
    assert run.config == cfgs[1] and run.epoch == 20
    assert runs.checkpoint_epochs(tmp_path / "b") == [0, 20]
    data = run_data(cfgs[1])
    tokens = data.tokens[run.split.test]
    with torch.no_grad():
        torch.testing.assert_close(run.model(tokens)[:, -1], results[1].model(tokens)[:, -1])
    assert len(run.metrics) == 5 and run.metrics.epoch.tolist() == [0, 5, 10, 15, 20]


def test_an_interrupted_and_an_extended_stack_of_transformers_end_bit_identical(tmp_path):
    cfgs = [CFG.replace(seed=5), CFG.replace(seed=6, frac_train=0.4, weight_decay=0.5)]
    check_interrupted_and_extended_stacks(cfgs, tmp_path, extend_at=20, interrupt_at=15)


def test_the_transformer_trains_alone_on_its_fast_step_and_in_a_stack_on_request():
    family = registry.family("transformer")
    assert family.training == "fast" and family.stackable
    assert stack.kernel_of("transformer") is StackedFastPath
    assert not registry.family("sequence_transformer").stackable


def test_a_family_with_neither_a_stack_trainer_nor_a_stacked_step_is_refused(tmp_path):
    cfg = Config(task="addition", family="sequence_transformer", n_digits=2, d_model=16, n_heads=2, d_mlp=32,
                 n_train=20, n_test=20, epochs=2)
    with pytest.raises(ValueError, match="declares no stacked step; train it with mechgrok.train"):
        train_stack([cfg], [tmp_path / "run"])
    assert not (tmp_path / "run").exists()
