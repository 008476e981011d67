"""Slingshots: the spike rule on curves with known answers, and the float32 loss the trainer really takes."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mechgrok import Config, registry
from mechgrok.analysis import slingshots as S
from mechgrok.models.fastpath import FastPath
from mechgrok.scoring import cross_entropy
from mechgrok.tasks.modular import ModularTask

STEPS = np.arange(0, 3000, 10)


def floor_curve(seed: int = 0) -> np.ndarray:
    """A fitted float32 train loss: a fall from 3.5 to the floor, then wobbling 0.5-2 quanta."""
    rng = np.random.default_rng(seed)
    fall = 3.5 * np.exp(-STEPS / 60.0)
    return np.maximum(fall, S.FLOAT32_RESOLUTION * rng.uniform(0.5, 2.0, len(STEPS)))


def with_spike(curve: np.ndarray, at: int, peak: float, decay: float = 80.0) -> np.ndarray:
    """A sudden rise at step ``at`` to ``peak``, decaying back exponentially (a slingshot)."""
    out = curve.copy()
    after = STEPS >= at
    out[after] = np.maximum(out[after], peak * np.exp(-(STEPS[after] - at) / decay))
    return out


def test_a_smooth_fall_and_the_float32_floor_have_no_spike():
    assert S.detect_spikes(STEPS, floor_curve()) == []
    smooth64 = 3.5 * np.exp(-STEPS / 60.0) + 1e-12  # float64 falls far below the float32 floor
    assert S.count_spikes(STEPS, smooth64) == 0
    zeros = floor_curve()
    zeros[200::7] = 0.0  # a float32 mean loss can be exactly 0: its quanta are not spikes
    assert S.count_spikes(STEPS, zeros) == 0


def test_each_slingshot_is_found_once_with_its_steps():
    curve = with_spike(with_spike(floor_curve(), 1200, 3e-4), 2300, 2e-5)
    spikes = S.detect_spikes(STEPS, curve)
    assert [(s.start_step, s.peak_step) for s in spikes] == [(1200, 1200), (2300, 2300)]
    first = spikes[0]
    assert first.baseline == S.FLOAT32_RESOLUTION and first.peak_loss == pytest.approx(3e-4)
    # it ends when the loss is back under 10x its baseline: 3e-4 exp(-t/80) < 1.19e-6 at t > 80 ln(252) = 442
    assert first.end_step == 1200 + 450
    assert first.rise == pytest.approx(3e-4 / S.FLOAT32_RESOLUTION)


def test_a_double_humped_spike_counts_once_and_a_late_one_stays_open():
    curve = with_spike(floor_curve(), 1000, 1e-3)
    curve[(STEPS >= 1050) & (STEPS < 1080)] = 2e-3  # a second hump before it came down
    late = with_spike(curve, 2950, 1e-2, decay=1e4)
    spikes = S.detect_spikes(STEPS, late)
    assert len(spikes) == 2 and spikes[0].peak_step == 1050 and spikes[1].end_step is None
    table = S.spike_table(pd.DataFrame({"epoch": STEPS, "train_loss": late}))
    assert list(table.columns) == S.SPIKE_COLUMNS and math.isnan(table["end_step"].iloc[1])


def test_rises_before_the_train_set_is_fitted_are_learning_not_spikes():
    early = np.full(len(STEPS), 2.0)
    early[20:40] = 30.0  # a loss blowing up from 2 is not a slingshot out of a fitted minimum
    assert S.count_spikes(STEPS, early) == 0
    assert S.count_spikes(STEPS, early, low=5.0) == 1  # the rule's keywords change what counts


def test_the_rule_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="ascending"):
        S.detect_spikes([0, 20, 10], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        S.detect_spikes([0, 10], [1.0, math.nan])
    with pytest.raises(ValueError, match="factor"):
        S.detect_spikes([0, 10], [1.0, 1.0], factor=1.0)
    with pytest.raises(ValueError, match="no column 'loss'"):
        S.spike_table(pd.DataFrame({"epoch": [0], "train_loss": [1.0]}), column="loss")


def test_float32_loss_quantum_is_what_torch_computes():
    q = S.float32_loss_quantum()
    assert q == pytest.approx(1.1920928e-7, rel=1e-6)
    margin16 = cross_entropy(torch.tensor([[16.0, 0.0]]), torch.tensor([0]), "float32").item()
    margin17 = cross_entropy(torch.tensor([[17.0, 0.0]]), torch.tensor([0]), "float32").item()
    assert margin16 == pytest.approx(q, rel=1e-6) and margin17 == 0.0
    assert cross_entropy(torch.tensor([[17.0, 0.0]]), torch.tensor([0]), "float64").item() > 0


def test_float32_fast_path_is_a_float32_training_loop_at_the_floor():
    """With every example's correct logit 20-80 ahead, a float32 loss is exactly 0 and so is the
    correct logit's gradient; the fast path's float32 gradients are a plain float32 loop's
    (HookedTransformer logits, float32 log-softmax, autograd), and differ from float64's."""
    cfg = Config(p=11, d_model=32, d_mlp=64, frac_train=0.5)
    model = registry.family("transformer").build(cfg)
    task = ModularTask(cfg.p)
    tokens = task.tokens()
    with torch.no_grad():
        logits = model(tokens)[:, -1]
        top2 = logits.topk(2, dim=-1).values
        margin = (top2[:, 0] - top2[:, 1]).median()
        model.W_U.mul_(40.0 / margin)  # margins now around 40
        logits = model(tokens)[:, -1]
    top2 = logits.topk(2, dim=-1).values
    rows = ((top2[:, 0] - top2[:, 1]) > 20) & ((top2[:, 0] - top2[:, 1]) < 80)
    assert rows.sum() > 20
    tokens, labels = tokens[rows], logits[rows].argmax(-1)  # every label is the argmax, far ahead

    def fast(dtype):
        model.zero_grad()
        loss, _ = FastPath(tokens, labels, loss_dtype=dtype).loss_and_grad(model)
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    loss32, grad32 = fast("float32")
    loss64, grad64 = fast("float64")
    assert loss32 == 0.0 and loss64 > 0
    model.zero_grad()
    plain = torch.nn.functional.cross_entropy(model(tokens)[:, -1].float(), labels)  # a float32 loop's loss
    plain.backward()
    assert plain.item() == 0.0
    for name, g in grad32.items():
        ref = dict(model.named_parameters())[name].grad
        scale = ref.abs().max().clamp_min(1e-30)
        assert ((g - ref).abs().max() / scale) < 1e-3, name
    W_U32, W_U64 = grad32["unembed.W_U"], grad64["unembed.W_U"]
    assert ((W_U32 - W_U64).norm() / W_U64.norm()) > 0.5  # the float32 gradient is lopsided, not a rounding
