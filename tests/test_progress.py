"""Progress measures (mechgrok/progress.py) against straightforward implementations of docs/concepts.md.

The reference side runs the HookedTransformer itself in float64 on all p² inputs and evaluates
the paper's formulas with numpy and explicit cos/sin grids: no mechgrok.analysis.fourier, no FastPath.
"""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from _tiny_run import tiny_run
from mechgrok.analysis import ablations, circuits, progress
from mechgrok import runs
from mechgrok.tasks.modular import ModularTask, make_split


# ----------------------------------------------------------------------------- references
def ref_gini(c):
    c = np.sort(np.asarray(c, dtype=np.float64))
    n = len(c)
    return 1 - 2 * sum(c[i - 1] / c.sum() * (n - i + 0.5) / n for i in range(1, n + 1))


def ref_ce(logits, labels):
    logits = np.asarray(logits, dtype=np.float64)
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


def ref_basis(p):
    x = np.arange(p)
    rows = [np.ones(p)]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [np.cos(2 * math.pi * k * x / p), np.sin(2 * math.pi * k * x / p)]
    F = np.array(rows)
    return F / np.linalg.norm(F, axis=1, keepdims=True)


def ref_measures(model, split, key):
    """The paper's formulas, one loop per quantity, on the model's own float64 forward."""
    p = model.cfg.d_vocab - 1
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    labels = (a + b) % p
    tokens = torch.tensor(np.stack([a, b, np.full_like(a, p)], 1))
    with torch.no_grad():
        L = model.double()(tokens)[:, -1].numpy()
    train, test = split.train.numpy(), split.test.numpy()
    out = {
        "train_loss": ref_ce(L[train], labels[train]),
        "test_loss": ref_ce(L[test], labels[test]),
        "train_acc": float((L[train].argmax(1) == labels[train]).mean()),
        "test_acc": float((L[test].argmax(1) == labels[test]).mean()),
    }

    def directions(ks):
        ds = []
        for k in ks:
            for fn in (np.cos, np.sin):
                d = fn(2 * math.pi * k * (a + b) / p)
                ds.append(d / np.linalg.norm(d))
        return ds

    def project(ks):
        P = np.zeros_like(L)
        for d in directions(ks):
            P += np.outer(d, d @ L)
        return P

    P = project(key)
    out["restricted_loss"] = ref_ce(L.mean(0) + P, labels)
    out["excluded_loss"] = ref_ce((L - P)[train], labels[train])
    for k in key:
        out[f"excluded_loss[{k}]"] = ref_ce((L - project([k]))[train], labels[train])
    out["test_restricted_ratio"] = out["test_loss"] / out["restricted_loss"]
    c = np.arange(p)
    for k in key:
        wave = np.cos(2 * math.pi * k * ((a + b)[:, None] - c[None, :]) / p)
        Lc = L - L.mean(1, keepdims=True)
        out[f"cos_coefficient[{k}]"] = float((Lc * wave).sum() / (wave * wave).sum())
    F = ref_basis(p)
    W_E = model.W_E.detach().numpy()[:p]
    W_L = model.blocks[0].mlp.W_out.detach().numpy() @ model.W_U.detach().numpy()
    out["gini_W_E"] = ref_gini(np.linalg.norm(F @ W_E, axis=1)[1:])
    out["gini_W_L"] = ref_gini(np.linalg.norm(W_L @ F.T, axis=0)[1:])
    total = 0.0
    for name, t in model.named_parameters():
        out[f"sum_sq_weights[{name}]"] = float((t.detach().double().numpy() ** 2).sum())
        total += out[f"sum_sq_weights[{name}]"]
    out["sum_sq_weights"] = total
    return out


@pytest.fixture(scope="module")
def run_dir():
    return tiny_run()


@pytest.fixture(scope="module")
def key(run_dir):
    return progress.final_key_frequencies(run_dir)


# ----------------------------------------------------------------------------- gini
def test_gini_matches_the_formula_and_its_extremes():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(7, 40, generator=g, dtype=torch.float64)
    got = progress.gini(x)
    assert got.shape == (7,)
    for row, value in zip(x, got):
        assert value.item() == pytest.approx(ref_gini(row.numpy()), abs=1e-12)
    assert progress.gini(torch.ones(10)).item() == pytest.approx(0, abs=1e-12)
    assert progress.gini(torch.tensor([0.0] * 9 + [3.0])).item() == pytest.approx(0.9, abs=1e-12)
    # scale and order do not matter; concentration raises it
    assert progress.gini(5 * x[0]).item() == pytest.approx(got[0].item(), abs=1e-12)
    assert progress.gini(x[0].flip(0)).item() == pytest.approx(got[0].item(), abs=1e-12)
    sparse = x[0].clone()
    sparse[:30] *= 0.01
    assert progress.gini(sparse).item() > got[0].item()


def test_gini_rejects_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        progress.gini(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="at least one"):
        progress.gini(torch.zeros(0))


# ----------------------------------------------------------------------------- logit measures
def test_logit_measurer_equals_the_ablation_functions(run_dir, key):
    """The batched projections give exactly what ablations/circuits compute one at a time."""
    run = runs.load_run(run_dir)
    acts = circuits.gather_activations(run.model)
    m = progress.LogitMeasurer(run.task, run.split, key)(acts.logits)
    assert m["restricted_loss"] == pytest.approx(ablations.restricted_loss(acts.logits, acts.labels, key), rel=1e-9)
    assert m["excluded_loss"] == pytest.approx(
        ablations.excluded_loss(acts.logits, acts.labels, key, run.split.train), rel=1e-9
    )
    for k in key:
        assert m[f"excluded_loss[{k}]"] == pytest.approx(
            ablations.excluded_loss(acts.logits, acts.labels, [k], run.split.train), rel=1e-9
        )
    fit = circuits.logit_cos_fit(acts.logits, acts.labels, key)
    for k, alpha in zip(fit.frequencies, fit.alpha.tolist()):
        assert m[f"cos_coefficient[{k}]"] == pytest.approx(alpha, rel=1e-9)
    s = ablations.score(acts.logits, acts.labels, run.split)
    assert m["train_loss"] == pytest.approx(s.loss_train, rel=1e-12)
    assert m["test_acc"] == pytest.approx(s.accuracy_test, rel=1e-12)


def test_logit_measurer_on_a_pure_wave():
    """Logits = α cos(w_k(a+b-c)) exactly: the coefficient comes back and excluding k leaves nothing."""
    p, k, alpha = 23, 4, 3.5
    split = make_split(p * p, 0.5, 0)
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    c = torch.arange(p)
    logits = alpha * torch.cos(2 * math.pi * k * ((a + b)[:, None] - c[None, :]).double() / p)
    m = progress.LogitMeasurer(ModularTask(p), split, [k, 7])(logits)
    assert m[f"cos_coefficient[{k}]"] == pytest.approx(alpha, rel=1e-12)
    assert m["cos_coefficient[7]"] == pytest.approx(0, abs=1e-12)
    assert m[f"excluded_loss[{k}]"] == pytest.approx(math.log(p), rel=1e-9)  # all logits removed: uniform
    assert m["excluded_loss[7]"] == pytest.approx(ref_ce(logits[split.train], ((a + b) % p)[split.train]), rel=1e-9)
    assert m["restricted_loss"] == pytest.approx(ref_ce(logits, (a + b) % p), rel=1e-9)


def test_logit_measurer_rejects_bad_input():
    split = make_split(23 * 23, 0.5, 0)
    task = ModularTask(23)
    with pytest.raises(ValueError, match="key_freqs is empty"):
        progress.LogitMeasurer(task, split, [])
    with pytest.raises(ValueError, match="out of range"):
        progress.LogitMeasurer(task, split, [12])
    with pytest.raises(ValueError, match="split covers"):
        progress.LogitMeasurer(task, make_split(100, 0.5, 0), [3])
    with pytest.raises(ValueError, match="p²"):
        progress.LogitMeasurer(task, split, [3])(torch.zeros(10, 23))
    # the labels and directions come from the task, never from a bare p
    with pytest.raises(ValueError, match="not p=23.*ModularTask"):
        progress.LogitMeasurer(23, split, [3])
    with pytest.raises(ValueError, match="op='add'.*op='sub'.*op='mul'"):
        progress.LogitMeasurer(ModularTask(23, "mul"), split, [3])


# ----------------------------------------------------------------------------- over a run
def test_measures_match_an_independent_implementation(run_dir, key):
    """At sampled checkpoints, float64 measures equal the paper's formulas to 1e-6 (relative)."""
    epochs = runs.checkpoint_epochs(run_dir)
    sample = [epochs[0], epochs[len(epochs) // 3], epochs[-1]]
    table, used = progress.compute_measures(run_dir, key, epochs=sample, dtype=torch.float64)
    assert used == key and table["epoch"].tolist() == sample
    for epoch, row in zip(sample, table.to_dict("records")):
        run = runs.load_run(run_dir, epoch=epoch)
        ref = ref_measures(run.model, run.split, key)
        assert set(ref) <= set(row)
        for name, value in ref.items():
            assert row[name] == pytest.approx(value, rel=1e-6, abs=1e-12), (epoch, name)
        # the one-checkpoint entry point gives the same row
        model = run.model.double()
        logits = model(ModularTask(run.config.p).tokens())[:, -1].detach()
        single = progress.measure_checkpoint(logits, runs.state_tensors(model), run.task, run.split, key)
        for name, value in single.items():
            assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (epoch, name)


def test_float32_measures_agree_with_float64(run_dir, key):
    """The default float32 forward differs from float64 by rounding only."""
    epochs = runs.checkpoint_epochs(run_dir)[::5]
    t32, _ = progress.compute_measures(run_dir, key, epochs=epochs)
    t64, _ = progress.compute_measures(run_dir, key, epochs=epochs, dtype=torch.float64)
    for col in ("train_loss", "test_loss", "restricted_loss", "excluded_loss", "gini_W_E", "sum_sq_weights"):
        np.testing.assert_allclose(t32[col], t64[col], rtol=2e-3, err_msg=col)
    assert torch.get_float32_matmul_precision() == "highest"  # the scoped oneDNN setting was restored


def test_key_frequencies_come_from_the_final_checkpoint(run_dir, key):
    final = runs.load_run(run_dir)
    assert key == circuits.key_frequencies(circuits.gather_activations(final.model))
    table, used = progress.compute_measures(run_dir, epochs=runs.checkpoint_epochs(run_dir)[:2])
    assert used == key
    assert sorted(progress.frequency_columns(table, "excluded_loss")) == key
    assert sorted(progress.frequency_columns(table, "cos_coefficient")) == key


def test_the_measures_tell_the_grokking_story(run_dir):
    """On the tiny grokked run: train loss falls first, restricted loss ends far below its start,
    and removing the key frequencies ends far worse than keeping them."""
    t = progress.load_progress(run_dir).measures
    first, last = t.iloc[0], t.iloc[-1]
    assert last.train_loss < 1e-3 < first.train_loss
    assert last.restricted_loss < 0.01 * first.restricted_loss
    assert last.excluded_loss > 10 * last.restricted_loss
    assert last.sum_sq_weights < t.sum_sq_weights.max()


def test_per_parameter_sums_add_up(run_dir):
    t = progress.load_progress(run_dir).measures
    cols = progress.parameter_columns(t)
    assert "embed.W_E" in cols and "blocks.0.mlp.W_in" in cols
    np.testing.assert_allclose(t[list(cols.values())].sum(axis=1), t["sum_sq_weights"], rtol=1e-12)


def test_long_form(run_dir):
    t = progress.load_progress(run_dir).measures
    long = progress.to_long(t)
    assert len(long) == t.shape[0] * (t.shape[1] - 1)
    k = progress.final_key_frequencies(run_dir)[0]
    rows = long[(long.measure == "excluded_loss") & (long.key == str(k))]
    np.testing.assert_array_equal(rows.value.to_numpy(), t[f"excluded_loss[{k}]"].to_numpy())


# ----------------------------------------------------------------------------- caching
def test_cache_is_written_reused_and_refreshed(tmp_path):
    run_dir = tiny_run(tmp_path)
    first = progress.load_progress(run_dir)
    assert first.recomputed and (run_dir / progress.MEASURES_FILE).exists()
    meta = json.loads((run_dir / progress.META_FILE).read_text())
    assert meta["key_frequencies"] == first.key_frequencies
    assert len(first.measures) == len(runs.checkpoint_epochs(run_dir))

    again = progress.load_progress(run_dir)
    assert not again.recomputed
    pd.testing.assert_frame_equal(again.measures, first.measures, check_exact=False, rtol=1e-15)
    assert again.phases == first.phases

    # a rewritten checkpoint makes the table stale
    ckpt = runs.checkpoint_path(run_dir, runs.checkpoint_epochs(run_dir)[3])
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert progress.is_stale(run_dir)
    assert progress.load_progress(run_dir).recomputed

    # a removed checkpoint too; so does another key-frequency rule
    ckpt.unlink()
    refreshed = progress.load_progress(run_dir)
    assert refreshed.recomputed and len(refreshed.measures) == len(first.measures) - 1
    assert progress.is_stale(run_dir, rule="W_E") and not progress.is_stale(run_dir)

    # a damaged sidecar is recomputed, not trusted
    (run_dir / progress.META_FILE).write_text("{not json")
    assert progress.load_progress(run_dir).recomputed


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="not a mechgrok run folder"):
        progress.compute_measures(tmp_path)
    run_dir = tiny_run(tmp_path)
    with pytest.raises(ValueError, match="no checkpoint at epochs"):
        progress.compute_measures(run_dir, [1], epochs=[7])
    with pytest.raises(ValueError, match="rule="):
        progress.load_progress(run_dir, rule="nope")
    for f in (run_dir / runs.CHECKPOINT_DIR).iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="no checkpoints"):
        progress.compute_measures(run_dir)


def test_measures_print_nothing(run_dir, key, capfd):
    # library code prints nothing (TransformerLens's HookedTransformer.to would say "Moving model to device")
    progress.compute_measures(run_dir, key, epochs=[runs.checkpoint_epochs(run_dir)[-1]])
    out, err = capfd.readouterr()
    assert out == "" and "Moving model" not in err
