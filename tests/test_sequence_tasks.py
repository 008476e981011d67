"""The Alignment Forum post's sequence tasks, their model family and the sequence trainer."""

import pytest
import torch
import torch.nn.functional as F

from mechgrok import registry
from mechgrok.config import Config
from mechgrok.runs import load_run
from mechgrok.tasks.base import stream_generator
from mechgrok.tasks.data import fresh_batch, run_data
from mechgrok.tasks.sequence import IGNORE, AdditionTask, InductionTask, MaxListTask
from mechgrok.training.loop import train
from mechgrok.training.sequence import read_components, sequence_loss

SEQ = dict(family="sequence_transformer", d_model=16, n_heads=2, d_mlp=32, n_test=40)
CONFIGS = {
    "addition": Config(task="addition", n_digits=3, n_train=60, **SEQ),
    "induction": Config(task="induction", seq_len=12, n_symbols=6, repeat_len=3, n_layers=2, attn_only=True, n_train=60, **SEQ),
    "max_list": Config(task="max_list", seq_len=6, n_symbols=4, attn_only=True, n_train=60, **SEQ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_task_agrees_with_its_config_and_its_model(name):
    cfg = CONFIGS[name]
    data = run_data(cfg)
    task = data.task
    assert (task.d_vocab, task.d_vocab_out, task.n_ctx) == (cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx)
    assert data.tokens.shape == (cfg.n_train + cfg.n_test, cfg.n_ctx)
    assert data.labels.shape == (len(data.tokens), len(task.loss_positions))
    assert int(data.tokens.max()) < cfg.d_vocab and int(data.labels.max()) < cfg.d_vocab_out
    model = registry.family(cfg.family).build(cfg)
    assert model(data.tokens[:3]).shape == (3, cfg.n_ctx, cfg.d_vocab_out)
    comps = task.components(data.tokens, data.labels)
    assert ((comps == IGNORE) == (data.labels == IGNORE)).all()
    assert set(comps[comps != IGNORE].tolist()) <= set(range(len(task.component_names)))


def test_addition_labels_are_the_sum_digit_by_digit_and_the_inputs_hold_all_but_the_last():
    task = AdditionTask(4)
    tokens, labels = task.sample(200, torch.Generator().manual_seed(1))
    value = lambda digits: sum(int(d) * 10 ** (len(digits) - 1 - i) for i, d in enumerate(digits))  # noqa: E731
    for x, y in zip(tokens.tolist(), labels.tolist()):
        assert value(x[:4]) + value(x[5:9]) == value(y)
        assert x[4] == task.PLUS and x[9] == task.EQUALS and x[10:] == y[:-1]
    assert task.component_names == ("d0", "d1", "d2", "d3", "d4") and set(labels[:, 0].tolist()) == {0, 1}


def test_induction_sequences_repeat_one_subsequence_and_score_only_the_predictable_part():
    task = InductionTask(seq_len=14, n_symbols=8, repeat_len=4)
    tokens, labels = task.sample(300, torch.Generator().manual_seed(2))
    scored = labels != IGNORE
    assert (scored.sum(1) == 3).all()  # repeat_len - 1 predictable tokens
    rows, cols = scored.nonzero(as_tuple=True)
    assert (labels[rows, cols] == tokens[rows, cols + 1]).all()
    from mechgrok.analysis.induction import earlier_copy

    second = task.repeat_starts(labels)
    first = earlier_copy(tokens, second, 4)
    assert (first + 4 <= second).all()
    for b in range(20):
        assert tokens[b, first[b] : first[b] + 4].tolist() == tokens[b, second[b] : second[b] + 4].tolist()


def test_max_list_has_exactly_one_special_entry_and_its_label_is_that_entry():
    task = MaxListTask(seq_len=8, n_symbols=5)
    tokens, labels = task.sample(300, torch.Generator().manual_seed(3))
    entries = tokens[:, 1:-1]
    assert (tokens[:, 0] == task.START).all() and (tokens[:, -1] == task.END).all()
    assert ((entries >= 5).sum(1) == 1).all()
    assert (entries.max(1).values == labels[:, 0]).all()
    assert task.components(tokens, labels).max() < 5


def test_fresh_batches_are_a_function_of_the_step_and_the_seed():
    cfg = CONFIGS["addition"].replace(data="fresh", batch_size=16)
    a, _ = fresh_batch(cfg, 5)
    assert torch.equal(a, fresh_batch(cfg, 5)[0])
    assert not torch.equal(a, fresh_batch(cfg, 6)[0]) and not torch.equal(a, fresh_batch(cfg.replace(seed=1), 5)[0])
    assert len(run_data(cfg).split.train) == 0
    with pytest.raises(ValueError, match="fresh_batch is for data='fresh'"):
        fresh_batch(CONFIGS["addition"], 0)
    g = stream_generator("addition-test", 0)
    assert isinstance(g, torch.Generator)


def test_the_loss_is_cross_entropy_at_the_scored_positions_only():
    cfg = CONFIGS["induction"]
    data = run_data(cfg)
    model = registry.family(cfg.family).build(cfg)
    logits = model(data.tokens)[:, list(data.task.loss_positions)]
    loss, correct, n = sequence_loss(logits, data.labels)
    expected = F.cross_entropy(logits.double().flatten(0, 1), data.labels.flatten(), ignore_index=IGNORE)
    assert torch.allclose(loss, expected) and int(n) == int((data.labels != IGNORE).sum())
    assert 0 <= int(correct) <= int(n)


@pytest.mark.parametrize("name,changes", [("addition", dict(data="fresh", batch_size=16)), ("induction", dict(batch_size=20)),
                                          ("max_list", {})])
def test_a_resumed_sequence_run_is_bit_identical_and_logs_every_component(tmp_path, name, changes):
    cfg = CONFIGS[name].replace(epochs=12, eval_every=3, checkpoint_every=6, **changes)
    whole = train(cfg, tmp_path / "whole", threads=1, tune_process=False)
    train(cfg.replace(epochs=6), tmp_path / "part", threads=1, tune_process=False)
    resumed = train(cfg, tmp_path / "part", threads=1, tune_process=False)
    assert resumed.resumed_from == 6 and resumed.epoch == 12
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert whole.metrics.drop(columns="elapsed_s").equals(resumed.metrics.drop(columns="elapsed_s"))
    parts = read_components(tmp_path / "part")
    assert list(parts.epoch.unique()) == [0, 3, 6, 9, 12]
    assert set(parts.component) == set(run_data(cfg).task.component_names)
    assert whole.metrics.train_loss.iloc[-1] < whole.metrics.train_loss.iloc[0]
    run = load_run(tmp_path / "part")
    assert run.config == cfg and run.epoch == 12


def test_sequence_settings_that_do_not_fit_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="data='fresh' draws new examples every step"):
        Config(data="fresh", batch_size=8)
    with pytest.raises(ValueError, match="needs batch_size > 0"):
        CONFIGS["addition"].replace(data="fresh")
    with pytest.raises(ValueError, match="only family='sequence_transformer'"):
        Config(n_layers=2)
    with pytest.raises(ValueError, match="repeat_len=7"):
        CONFIGS["induction"].replace(repeat_len=7)
    with pytest.raises(ValueError, match="family='transformer' trains on task 'modular'"):
        Config(task="addition")
    with pytest.raises(ValueError, match="batch_size=100 exceeds the train set"):
        train(CONFIGS["max_list"].replace(batch_size=100, epochs=1), tmp_path / "x")
    with pytest.raises(ValueError, match="decay='l1'"):
        train(CONFIGS["max_list"].replace(decay="l1", epochs=1), tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_stacked_trainer_refuses_minibatches(tmp_path):
    from mechgrok.training.stack import train_stack

    cfg = Config(p=11, family="mlp", d_model=8, d_mlp=4, pairs="unordered", frac_train=0.5, batch_size=8, epochs=1)
    with pytest.raises(ValueError, match="batch_size=8: the stacked trainer"):
        train_stack([cfg], [tmp_path / "run"])
    assert not (tmp_path / "run").exists()
