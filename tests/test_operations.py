"""Analyses say which operations they hold for: a+b and a-b get their own directions, others a ValueError.

The op='sub' run is trained once for this module with mechgrok's trainer (p=31, 80% train data,
lr 6e-3, 600 epochs: test accuracy 1.0 from epoch 400; about 4 s on one thread). The op='mul'
and op='div' models are built untrained: the refusals must come before any number is computed.
"""

from __future__ import annotations

import math

import pytest
import torch

from _grokked import write_run_folder
from mechgrok import runs
from mechgrok.analysis import ablations, circuits, fourier, progress, tables
from mechgrok.config import Config
from mechgrok.models.transformer import build_model
from mechgrok.tasks.modular import ModularTask, make_split
from mechgrok.training.loop import train

SUB = Config(p=31, op="sub", frac_train=0.8, d_model=64, d_mlp=256, lr=6e-3, epochs=600, eval_every=100,
             checkpoint_every=100)


@pytest.fixture(scope="module")
def sub_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sub") / "run"
    result = train(SUB, out, tune_process=False)
    acts = circuits.gather_activations(result.model)
    return result, out, acts, circuits.key_frequencies(acts)


# ----------------------------------------------------------------------------- op='sub', trained
def test_sub_run_groks_and_carries_its_own_labels(sub_run):
    result, _, acts, key = sub_run
    final = result.metrics.iloc[-1]
    assert final.train_acc == 1.0 and final.test_acc == 1.0 and final.test_loss < 1e-2
    assert torch.equal(acts.labels, ModularTask(31, "sub").labels())
    assert acts.task.op == "sub" and len(key) >= 2


@pytest.mark.parametrize("site", ["logits", "neurons"])
def test_keeping_the_key_frequencies_keeps_the_sub_model(sub_run, site):
    result, _, acts, key = sub_run
    own = ablations.evaluate(result.model).loss_all
    keep = ablations.ablate_frequencies(result.model, key, site=site, mode="keep")
    remove = ablations.ablate_frequencies(result.model, key, site=site, mode="remove")
    assert keep.loss_all < own + 1e-2 and keep.accuracy_all == 1.0
    assert remove.loss_all > 1


def test_restricted_loss_and_logit_fit_use_a_minus_b(sub_run):
    result, _, acts, key = sub_run
    own = ablations.score(acts.logits, acts.labels, acts.split).loss_all
    restricted = ablations.restricted_loss(acts.logits, acts.labels, key, sign=-1)
    assert restricted < own + 1e-2
    # the a+b directions (what an addition default gave) miss the algorithm entirely
    assert ablations.restricted_loss(acts.logits, acts.labels, key, sign=+1) > 1
    assert ablations.excluded_loss(acts.logits, acts.labels, key, acts.split.train, sign=-1) > 1
    # the hook at the family's logit site gives the same number as the pure function
    hooked = ablations.ablate_frequencies(result.model, key, site="logits", mode="keep")
    assert hooked.loss_all == pytest.approx(restricted, rel=1e-3)
    fit = circuits.logit_cos_fit(acts.logits, acts.labels, key, sign=-1)
    assert fit.fve > 0.5 and fit.loss < own
    assert circuits.logit_cos_fit(acts.logits, acts.labels, key, sign=+1).fve < 0.01


def test_progress_measures_agree_with_the_trainer_on_sub(sub_run):
    result, out, acts, key = sub_run
    table, used = progress.compute_measures(out, key)
    assert used == key
    trainer = result.metrics.set_index("epoch").loc[table.epoch]
    for col in ("train_loss", "test_loss", "train_acc", "test_acc"):
        assert table[col].to_numpy() == pytest.approx(trainer[col].to_numpy(), rel=1e-5), col
    last = table.iloc[-1]
    assert last.restricted_loss == pytest.approx(ablations.restricted_loss(acts.logits, acts.labels, key, sign=-1), rel=1e-4)
    assert last.excluded_loss > 1
    fit = circuits.logit_cos_fit(acts.logits, acts.labels, key, sign=-1)
    for k, alpha in zip(fit.frequencies, fit.alpha.tolist()):
        assert last[f"cos_coefficient[{k}]"] == pytest.approx(alpha, rel=1e-4, abs=1e-6)
    # the one-checkpoint entry point takes the run's task, so its labels are a-b
    state = runs.state_tensors(result.model)
    single = progress.measure_checkpoint(acts.logits, state, acts.task, acts.split, key)
    assert single["train_loss"] == pytest.approx(last.train_loss, rel=1e-5)


def test_sub_tables_name_a_minus_b(sub_run):
    result, _, acts, key = sub_run
    out = tables.ablation_tables(result.model)
    section = out["section_4_4"].set_index("intervention").loss
    names = ablations.section_4_4_interventions(-1)
    assert list(section.index) == list(names)
    assert all("(a+b)" not in n for n in names) and sum("(a-b)" in n for n in names) == 3
    assert section[names[6]] == pytest.approx(ablations.restricted_loss(acts.logits, acts.labels, key, sign=-1), rel=1e-3)
    assert section[names[2]] < 1e-2 and section[names[7]] > 1
    assert set(out["table_1"].term) == {"cos(w_k(a-b))", "sin(w_k(a-b))"}
    assert "logit fit Σ α_k cos(w_k(a-b-c)): FVE" in set(out["headline"].quantity)
    # the addition names are unchanged
    assert ablations.section_4_4_interventions(+1) == ablations.SECTION_4_4_INTERVENTIONS


# ----------------------------------------------------------------------------- other operations
def _untrained(op: str):
    cfg = SUB.replace(op=op)
    task = ModularTask(cfg.p, op)
    return build_model(cfg, split=make_split(task.n_pairs, cfg.frac_train, cfg.seed)), task


@pytest.mark.parametrize("op", ["mul", "x2xyy2", "div"])
def test_every_fourier_entry_point_refuses_other_operations(op, tmp_path):
    model, task = _untrained(op)
    info = runs.attached(model)
    message = f"op='{op}'"
    calls = {
        **{f"ablate_frequencies[{s}]": (lambda s=s: ablations.ablate_frequencies(model, [1], site=s)) for s in ablations.SITES},
        "section_4_4_table": lambda: ablations.section_4_4_table(model, [1], {}, torch.zeros(2, 256)),
        "ablation_tables": lambda: tables.ablation_tables(model),
        "LogitMeasurer": lambda: progress.LogitMeasurer(task, info.split, [1]),
        "measure_checkpoint": lambda: progress.measure_checkpoint(
            torch.zeros(task.n_pairs, task.p), runs.state_tensors(model), task, info.split, [1]),
        "compute_measures": lambda: progress.compute_measures(write_run_folder(model, tmp_path / "run"), [1]),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=message) as err:
            call()
        assert "op='add'" in str(err.value) and "op='sub'" in str(err.value), name


def test_readouts_that_hold_for_any_grid_operation_still_run_on_mul():
    model, task = _untrained("mul")
    acts = circuits.gather_activations(model)
    assert acts.task.op == "mul" and torch.equal(acts.labels, task.labels())


@pytest.mark.parametrize("bad", [0, 2, True, 1.0j])
def test_tensor_functions_refuse_a_bad_sign(bad):
    p = 11
    logits, labels = torch.zeros(p * p, p), ModularTask(p, "sub").labels()
    with pytest.raises(ValueError, match="sign="):
        ablations.restricted_loss(logits, labels, [1], sign=bad)
    with pytest.raises(ValueError, match="sign="):
        ablations.frequency_hooks(p, [1], sign=bad)
    with pytest.raises(ValueError, match="sign="):
        circuits.logit_cos_fit(logits, labels, [1], sign=bad)
    with pytest.raises(ValueError, match="sign="):
        ablations.section_4_4_interventions(bad)


# ----------------------------------------------------------------------------- a pure a-b wave
def test_a_pure_difference_wave_comes_back_at_its_frequency_with_the_a_minus_b_fit():
    p, k, alpha = 23, 4, 3.5
    task = ModularTask(p, "sub")
    a, b = task.pairs().T
    c = torch.arange(p)
    logits = alpha * torch.cos(2 * math.pi * k * ((a - b)[:, None] - c[None, :]).double() / p)
    labels = task.labels()
    every = fourier.frequencies(p)

    fit = circuits.logit_cos_fit(logits, labels, every, sign=-1)
    expected = torch.zeros(len(every), dtype=torch.float64)
    expected[k - 1] = alpha
    assert torch.allclose(fit.alpha, expected, atol=1e-12) and fit.fve == pytest.approx(1, abs=1e-12)
    wrong = circuits.logit_cos_fit(logits, labels, every, sign=+1)
    assert wrong.alpha.abs().max() < 1e-12 and wrong.fve == pytest.approx(0, abs=1e-12)

    own = ablations.cross_entropy(logits, labels).item()
    assert ablations.restricted_loss(logits, labels, [k], sign=-1) == pytest.approx(own, rel=1e-9)
    assert ablations.restricted_loss(logits, labels, [k], sign=+1) == pytest.approx(math.log(p), rel=1e-9)
    losses = ablations.frequency_ablation_losses(logits, labels, sign=-1).set_index("frequency").loss_all
    assert losses[k] == pytest.approx(math.log(p), rel=1e-9)
    assert losses.drop(k).to_numpy() == pytest.approx(own, rel=1e-9)

    split = make_split(p * p, 0.5, 0)
    m = progress.LogitMeasurer(task, split, [k, 7])(logits)
    assert m[f"cos_coefficient[{k}]"] == pytest.approx(alpha, rel=1e-12)
    assert m["cos_coefficient[7]"] == pytest.approx(0, abs=1e-12)
    assert m[f"excluded_loss[{k}]"] == pytest.approx(math.log(p), rel=1e-9)
    assert m["restricted_loss"] == pytest.approx(own, rel=1e-9)

    # the logit hook at the = position keeps it whole and removes it completely
    x = torch.zeros(p * p, 3, p, dtype=torch.float64)
    x[:, 2] = logits
    kept = ablations.logit_hook(p, [k], "keep", sign=-1)(x, None)
    removed = ablations.logit_hook(p, [k], "remove", sign=-1)(x, None)
    assert torch.allclose(kept, x, atol=1e-12) and removed[:, 2].abs().max() < 1e-12
    assert torch.equal(removed[:, :2], x[:, :2])
