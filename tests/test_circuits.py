"""Readouts of a trained model (mechgrok/circuits.py): synthetic signals with known answers,
independent numpy re-implementations, and the small grokked model."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from _grokked import P, acts, grokked_model, key, model  # noqa: F401 (fixtures)
from mechgrok.analysis import ablations, circuits, fourier
from mechgrok import hooks
from mechgrok.tasks.modular import ModularTask

A = torch.arange(P).repeat_interleave(P).double()  # a of each grid-order input
B = torch.arange(P).repeat(P).double()


def wave(fn, k, x):
    return fn(2 * math.pi * k * x / P)




# ----------------------------------------------------------------------------- reference formulas
def ref_frequency_fractions(neurons):
    """Per neuron and k: R² of the least-squares fit of the centred activation by the 8 products
    f(a)·g(b), f, g in {1, cos, sin} at frequency k, not both 1. Built from scratch with numpy."""
    x = np.asarray(neurons, dtype=np.float64)
    x = x - x.mean(axis=0)
    a, b = A.numpy(), B.numpy()
    out = np.zeros((x.shape[1], (P - 1) // 2))
    for k in range(1, (P - 1) // 2 + 1):
        fa = [np.ones_like(a), np.cos(2 * np.pi * k * a / P), np.sin(2 * np.pi * k * a / P)]
        fb = [np.ones_like(b), np.cos(2 * np.pi * k * b / P), np.sin(2 * np.pi * k * b / P)]
        X = np.stack([f * g for i, f in enumerate(fa) for j, g in enumerate(fb) if i or j], axis=1)
        coef, *_ = np.linalg.lstsq(X, x, rcond=None)
        total = (x**2).sum(axis=0)
        out[:, k - 1] = np.where(total > 0, ((X @ coef) ** 2).sum(axis=0) / np.where(total > 0, total, 1), 0)
    return out


# ----------------------------------------------------------------------------- gathering
def test_gather_activations_matches_the_model(model, acts):
    tokens = ModularTask(P).tokens()
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    assert torch.equal(acts.logits, logits[:, -1])
    assert torch.equal(acts.neurons, cache[hooks.MLP_POST][:, -1])
    assert acts.attention.shape == (P * P, model.cfg.n_heads, 3)
    assert torch.allclose(acts.attention.sum(-1), torch.ones(P * P, model.cfg.n_heads))
    assert torch.allclose(acts.W_L, model.blocks[0].mlp.W_out @ model.W_U)
    assert torch.equal(acts.W_E, model.W_E[:P])
    assert torch.equal(acts.labels, ModularTask(P).labels())


# ----------------------------------------------------------------------------- embedding and W_L
def test_embedding_norms_find_the_frequency_and_ignore_equals():
    x = torch.arange(P).double()
    W_E = torch.zeros(P + 1, 4, dtype=torch.float64)
    W_E[:P, 0] = 3 * wave(torch.cos, 5, x + 0.7)
    W_E[:P, 2] = wave(torch.sin, 9, x)
    W_E[P] = 1e6  # the = row must not count
    norms = circuits.embedding_fourier_norms(W_E, P)
    assert (norms.frequency > 1e-9).nonzero().flatten().tolist() == [4, 8]
    assert norms.frequency[4].item() == pytest.approx(3 * math.sqrt(P / 2))
    assert norms.component[0].item() == pytest.approx(0, abs=1e-9)
    assert norms.table().component.tolist() == fourier.component_names(P)
    assert norms.frequency_table().fraction.sum() == pytest.approx(1)
    with pytest.raises(ValueError, match="W_E has 5 rows"):
        circuits.embedding_fourier_norms(W_E[:5], P)


def test_neuron_logit_fit_recovers_u_v_and_matches_lstsq():
    g = torch.Generator().manual_seed(0)
    c = torch.arange(P).double()
    u, v = torch.randn(2, 12, generator=g, dtype=torch.float64), torch.randn(2, 12, generator=g, dtype=torch.float64)
    ks = [4, 13]
    clean = sum(torch.outer(u[i], wave(torch.cos, k, c)) + torch.outer(v[i], wave(torch.sin, k, c)) for i, k in enumerate(ks))
    noise = 0.01 * torch.randn(12, P, generator=g, dtype=torch.float64)
    fit = circuits.neuron_logit_fit(clean + noise, ks)
    X = torch.stack([wave(fn, k, c) for k in ks for fn in (torch.cos, torch.sin)], dim=1)  # [c, 2K]
    coef = torch.linalg.lstsq(X, (clean + noise).T).solution  # [2K, neuron]
    assert torch.allclose(fit.u, coef[0::2], atol=1e-10) and torch.allclose(fit.v, coef[1::2], atol=1e-10)
    resid = (clean + noise - (X @ coef).T).norm() / (clean + noise).norm()
    assert fit.residual_fraction == pytest.approx(resid.item(), rel=1e-9)
    assert fit.residual_energy_fraction == pytest.approx(resid.item() ** 2, rel=1e-9)
    assert torch.allclose(fit.u, u, atol=0.02)
    assert fit.directions.shape == (4, 12) and torch.equal(fit.directions[1], fit.v[0])
    assert circuits.neuron_logit_fit(clean, ks).residual_fraction < 1e-12


def test_mlp_direction_fits_known_answer_and_reference(acts, key):
    # synthetic: neurons whose u-projection is exactly 2 cos(w_k(a+b)) + 1
    k = 3
    u = torch.zeros(1, 5, dtype=torch.float64)
    u[0, 0] = 1
    v = torch.zeros(1, 5, dtype=torch.float64)
    v[0, 1] = 1
    neurons = torch.zeros(P * P, 5, dtype=torch.float64)
    neurons[:, 0] = 2 * wave(torch.cos, k, A + B) + 1
    neurons[:, 1] = -0.5 * wave(torch.sin, k, A + B) + wave(torch.cos, 7, A)
    fit = circuits.NeuronLogitFit([k], u, v, torch.zeros(5, P), 0.0)
    table = circuits.mlp_direction_fits(neurons, fit).set_index("direction")
    assert table.loc["u", "coefficient"] == pytest.approx(2) and table.loc["u", "fve"] == pytest.approx(1)
    assert table.loc["v", "coefficient"] == pytest.approx(-0.5)
    assert table.loc["v", "fve"] == pytest.approx(0.125 / (0.125 + 0.5))  # variances (0.5²/2) and (1/2)
    assert set(table.term) == {"cos(w_k(a+b))", "sin(w_k(a+b))"}
    # op='sub' (sign=-1) fits the waves of a-b: the same neurons built on a-b come back exactly
    neurons[:, 0] = 2 * wave(torch.cos, k, A - B) + 1
    diff = circuits.mlp_direction_fits(neurons, fit, sign=-1).set_index("direction")
    assert diff.loc["u", "coefficient"] == pytest.approx(2) and diff.loc["u", "fve"] == pytest.approx(1)
    assert circuits.mlp_direction_fits(neurons, fit).set_index("direction").loc["u", "fve"] == pytest.approx(0, abs=1e-12)
    assert set(diff.term) == {"cos(w_k(a-b))", "sin(w_k(a-b))"}
    # the trained model, against a numpy regression
    wl = circuits.neuron_logit_fit(acts.W_L, key)
    table = circuits.mlp_direction_fits(acts.neurons, wl)
    row = table.iloc[0]
    y = acts.neurons.double().numpy() @ wl.u[0].numpy()
    X = np.stack([np.ones(P * P), np.cos(2 * np.pi * key[0] * (A + B).numpy() / P)], axis=1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    fve = 1 - ((y - X @ coef) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert row.coefficient == pytest.approx(coef[1], rel=1e-6) and row.fve == pytest.approx(fve, rel=1e-6)
    strong = circuits.key_frequencies(acts, "clusters")
    assert (table[table.frequency.isin(strong)].fve > 0.85).all()


# ----------------------------------------------------------------------------- neuron clusters
def test_frequency_fractions_synthetic_and_dead_neurons():
    neurons = torch.zeros(P * P, 5, dtype=torch.float64)
    neurons[:, 0] = wave(torch.cos, 3, A) * wave(torch.sin, 3, B) + wave(torch.cos, 3, A + B) + 2
    neurons[:, 1] = 0.0  # dead
    neurons[:, 2] = 4.2  # constant but alive
    neurons[:, 3] = torch.relu(wave(torch.cos, 6, A + B))  # ReLU leaks into harmonics 12, 18, ...
    neurons[:, 4] = torch.randn(P * P, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    frac = circuits.neuron_frequency_fractions(neurons)
    assert not frac.isnan().any()
    assert frac[0, 2].item() == pytest.approx(1) and frac[0].sum().item() == pytest.approx(1)
    assert frac[1].abs().max() == 0 and frac[2].abs().max() == 0
    assert frac[3].argmax().item() == 5 and frac[3, 5] < 1
    assert torch.allclose(frac, torch.from_numpy(ref_frequency_fractions(neurons)), atol=1e-10)
    table = circuits.neuron_clusters(neurons)
    assert list(table.columns) == ["neuron", "frequency", "fraction_explained", "cluster"]
    assert table.cluster.tolist()[:3] == [3, "other", "other"]
    assert table.frequency.tolist()[1:3] == [0, 0]
    assert table.cluster[4] == "other"


def test_clusters_match_reference_on_trained_model(acts):
    frac = circuits.neuron_frequency_fractions(acts.neurons)
    ref = ref_frequency_fractions(acts.neurons)
    assert np.allclose(frac.numpy(), ref, atol=1e-6)
    table = circuits.neuron_clusters(acts.neurons, threshold=0.85)
    best = ref.max(axis=1)
    assert np.allclose(table.fraction_explained, best, atol=1e-6)
    ok = best >= 0.85 + 1e-6
    assert (table.cluster[ok] == ref.argmax(axis=1)[ok] + 1).all()
    sizes = circuits.cluster_sizes(table)
    assert sizes.sum() == acts.neurons.shape[1] and sizes.index[-1] == circuits.OTHER_CLUSTER
    assert sizes[circuits.OTHER_CLUSTER] == (table.cluster == "other").sum()
    mapping = circuits.clustered_neurons(table)
    assert len(mapping) == sizes.drop(circuits.OTHER_CLUSTER).sum()
    assert all(table.cluster[n] == k for n, k in mapping.items())
    with pytest.raises(ValueError, match="threshold=1.5"):
        circuits.neuron_clusters(acts.neurons, threshold=1.5)


# ----------------------------------------------------------------------------- key frequencies
def test_key_frequency_rules(acts):
    assert circuits.key_frequencies_from_norms(torch.tensor([1.0, 10.0, 2.4, 2.6, 0.0])) == [2, 4]
    clusters = pd.DataFrame({"cluster": [3, 3, 5, "other", 7, 7, 7]})
    assert circuits.key_frequencies_from_clusters(clusters, min_cluster_size=2) == [3, 7]
    by_rule = {rule: circuits.key_frequencies(acts, rule) for rule in circuits.KEY_FREQUENCY_RULES}
    assert circuits.DEFAULT_KEY_FREQUENCY_RULE in by_rule
    assert circuits.key_frequencies(acts) == by_rule[circuits.DEFAULT_KEY_FREQUENCY_RULE]
    assert set(by_rule["clusters"]) <= set(by_rule["W_L"])  # every big cluster writes to the logits
    assert 2 <= len(by_rule["W_L"]) <= 6
    with pytest.raises(ValueError, match="rule='W_U'"):
        circuits.key_frequencies(acts, "W_U")
    with pytest.raises(ValueError, match="ratio=2"):
        circuits.key_frequencies(acts, ratio=2)


def test_the_original_rule_takes_every_neurons_best_frequency_below_the_last():
    K = (P - 1) // 2  # 15: the original's search stops at K - 1 = 14
    neurons = torch.zeros(P * P, 7, dtype=torch.float64)
    neurons[:, 0] = wave(torch.cos, 4, A + B)  # pure: frequency 4, fraction 1
    neurons[:, 1] = wave(torch.cos, 4, A + B) + wave(torch.sin, 4, A)  # frequency 4 again: counted once
    # a weak neuron: 9 has the largest share but well under 0.85, so no cluster takes it
    neurons[:, 2] = 1.0 * wave(torch.cos, 9, A) + 0.9 * wave(torch.cos, 2, B) + 0.8 * wave(torch.sin, 11, A)
    # mostly the last frequency, which the original never considers: its best below K is 1
    neurons[:, 3] = wave(torch.cos, K, A + B) + 0.1 * wave(torch.cos, 1, A)
    neurons[:, 4] = 0.0  # dead: no frequency
    neurons[:, 5] = 3.0  # constant: no variance, no frequency
    neurons[:, 6] = wave(torch.cos, 7, A) * wave(torch.cos, 7, B)  # a product term of 7
    assert circuits.key_frequencies_original(neurons) == [1, 4, 7, 9]
    clusters = circuits.neuron_clusters(neurons)
    assert clusters.loc[2, "cluster"] == circuits.OTHER_CLUSTER and clusters.loc[3, "frequency"] == K
    assert circuits.key_frequencies_from_clusters(clusters) == [4, 7, K]  # mechgrok's rule differs on both
    with pytest.raises(ValueError, match="empty for p=3"):
        circuits.key_frequencies_original(torch.randn(9, 2))


def test_the_original_rule_on_the_trained_model_matches_a_direct_count(acts):
    frac = ref_frequency_fractions(acts.neurons)[:, :-1]  # numpy, from scratch; k = 1..K-1
    best = {int(k) + 1 for k, f in zip(frac.argmax(1), frac.max(1)) if f > 0}
    assert circuits.key_frequencies(acts, "original") == sorted(best)
    # every neuron counts, so the rule's set holds the big clusters' frequencies
    assert set(circuits.key_frequencies(acts, "clusters")) - {(P - 1) // 2} <= best


# ----------------------------------------------------------------------------- logits
def test_logit_fourier_norms_of_a_pure_wave():
    c = torch.arange(P).double()
    logits = wave(torch.cos, 4, (A + B)[:, None] - c[None, :])
    norms = circuits.logit_fourier_norms(logits)
    big = {(int(i), int(j)) for i, j in (norms > 1e-9).nonzero()}
    cs, sn = fourier.cos_component(4), fourier.sin_component(4)
    assert big == {(cs, cs), (cs, sn), (sn, cs), (sn, sn)}
    top = circuits.top_logit_components(norms, n=4)
    assert set(top.a_component) == {"cos 4", "sin 4"} and top.fraction.sum() == pytest.approx(1)


def test_logit_cos_fit_known_answer():
    c = torch.arange(P).double()
    t = (A + B)[:, None] - c[None, :]
    per_input = torch.randn(P * P, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logits = 5 * wave(torch.cos, 2, t) + 3 * wave(torch.cos, 9, t) + per_input  # softmax ignores per_input
    labels = ModularTask(P).labels()
    fit = circuits.logit_cos_fit(logits, labels, [2, 9])
    assert fit.alpha.tolist() == pytest.approx([5, 3])
    assert fit.fve == pytest.approx(1)
    assert fit.loss == pytest.approx(fit.loss_model, rel=1e-9)
    assert fit.table().frequency.tolist() == [2, 9]


def test_logit_cos_fit_matches_reference_on_model(acts, key):
    fit = circuits.logit_cos_fit(acts.logits, acts.labels, key)
    L = acts.logits.double().numpy().reshape(P, P, P)
    L = L - L.mean(axis=2, keepdims=True)
    a, b, c = np.meshgrid(np.arange(P), np.arange(P), np.arange(P), indexing="ij")
    approx = np.zeros_like(L)
    for i, k in enumerate(key):
        w = np.cos(2 * np.pi * k * (a + b - c) / P)
        alpha = (L * w).sum() / (w * w).sum()
        assert fit.alpha[i].item() == pytest.approx(alpha, rel=1e-6)
        approx += alpha * w
    assert fit.fve == pytest.approx(1 - ((L - approx) ** 2).sum() / (L**2).sum(), rel=1e-6)
    flat = approx.reshape(P * P, P)
    labels = acts.labels.numpy()
    lse = np.log(np.exp(flat - flat.max(1, keepdims=True)).sum(1)) + flat.max(1)
    assert fit.loss == pytest.approx(np.mean(lse - flat[np.arange(P * P), labels]), rel=1e-6)
    assert fit.fve > 0.8
    assert fit.loss_model == pytest.approx(ablations.evaluate(grokked_model()).loss_all, rel=1e-6)


# ----------------------------------------------------------------------------- attention
def test_attention_readout_synthetic():
    to_a = 0.5 + 0.1 * wave(torch.cos, 4, A) - 0.1 * wave(torch.cos, 4, B)
    to_self = torch.full_like(A, 0.002)
    head0 = torch.stack([to_a - to_self / 2, 1 - to_a - to_self / 2, to_self], dim=-1)
    head1 = torch.stack([torch.full_like(A, 0.3), torch.full_like(A, 0.3), torch.full_like(A, 0.4)], dim=-1)
    readout = circuits.attention_readout(torch.stack([head0, head1], dim=1))
    row = readout.table.iloc[0]
    assert row.frequency == 4 and row.fve == pytest.approx(1)
    assert row.mean_to_a == pytest.approx(0.499) and row.mean_to_self == pytest.approx(0.002)
    assert not readout.table.isna().any().any()  # a constant head gives 0, not NaN
    assert readout.table.iloc[1].fve == 0 and readout.table.iloc[1].max_to_self == pytest.approx(0.4)
    assert readout.to_a.shape == (2, P, P) and readout.to_a[0, 2, 5].item() == pytest.approx(head0[2 * P + 5, 0].item())


def test_attention_readout_on_model(acts):
    table = circuits.attention_readout(acts.attention).table
    assert len(table) == 4
    assert ((table.mean_to_a + table.mean_to_b + table.mean_to_self) - 1).abs().max() < 1e-6
    assert set(table.frequency) <= set(range(1, (P - 1) // 2 + 1))


# ----------------------------------------------------------------------------- annotations
def test_annotations_hold_at_runtime(acts, key):
    from beartype import beartype
    from jaxtyping import TypeCheckError, jaxtyped

    def checked(fn):
        return jaxtyped(typechecker=beartype)(fn)

    checked(circuits.neuron_frequency_fractions)(acts.neurons)
    checked(circuits.logit_fourier_norms)(acts.logits)
    checked(circuits.embedding_fourier_norms)(acts.W_E, P)
    checked(circuits.attention_readout)(acts.attention)
    checked(ablations.restricted_logits)(acts.logits, key)
    checked(circuits.neuron_logit_map)(torch.randn(8, 4), torch.randn(4, P), P)
    with pytest.raises(TypeCheckError):  # W_out's d_model must match W_U's
        checked(circuits.neuron_logit_map)(torch.randn(8, 4), torch.randn(5, P), P)


# ----------------------------------------------------------------------------- p=113, slow
@pytest.mark.slow
def test_p113_readouts_match_paper_and_references():
    from _grokked import p113_run

    model, acts = p113_run()
    p = acts.p
    key = circuits.key_frequencies(acts)
    assert 3 <= len(key) <= 7
    # W_E is sparse: the key frequencies carry most of its (non-constant) norm
    emb = circuits.embedding_fourier_norms(acts.W_E, p).frequency_table().set_index("frequency")
    assert emb.fraction[key].sum() > 0.8
    assert emb.fraction.sort_values(ascending=False).iloc[:8].sum() > 0.9
    # most neurons are explained by one frequency, and only key frequencies form clusters
    clusters = circuits.neuron_clusters(acts.neurons)
    sizes = circuits.cluster_sizes(clusters)
    assert sizes[circuits.OTHER_CLUSTER] / len(clusters) < 0.3
    assert set(sizes.drop(circuits.OTHER_CLUSTER).index) <= set(key)
    # W_L is close to rank 2K, and the logits to Σ α_k cos(w_k(a+b-c))
    fit = circuits.neuron_logit_fit(acts.W_L, key)
    assert fit.residual_fraction < 0.1
    logit_fit = circuits.logit_cos_fit(acts.logits, acts.labels, key)
    assert logit_fit.fve > 0.85
    assert (circuits.mlp_direction_fits(acts.neurons, fit).fve > 0.85).all()
    # against the independent re-implementations, to 1e-6
    c = torch.arange(p).double()
    waves = [fn(2 * math.pi * k * c / p) for k in key for fn in (torch.cos, torch.sin)]
    coef = torch.linalg.lstsq(torch.stack(waves, 1), acts.W_L.double().T).solution
    assert torch.allclose(fit.u, coef[0::2], rtol=1e-6, atol=1e-8) and torch.allclose(fit.v, coef[1::2], rtol=1e-6, atol=1e-8)
    neurons = acts.neurons.double().numpy()
    a = np.repeat(np.arange(p), p)
    b = np.tile(np.arange(p), p)
    x = neurons - neurons.mean(axis=0)
    for k in key:
        fa = [np.ones(p * p), np.cos(2 * np.pi * k * a / p), np.sin(2 * np.pi * k * a / p)]
        fb = [np.ones(p * p), np.cos(2 * np.pi * k * b / p), np.sin(2 * np.pi * k * b / p)]
        X = np.stack([f * g for i, f in enumerate(fa) for j, g in enumerate(fb) if i or j], axis=1)
        sol, *_ = np.linalg.lstsq(X, x, rcond=None)
        total = (x**2).sum(axis=0)
        ref = np.where(total > 0, ((X @ sol) ** 2).sum(axis=0) / np.where(total > 0, total, 1), 0)
        ours = circuits.neuron_frequency_fractions(acts.neurons)[:, k - 1].numpy()
        assert np.allclose(ours, ref, atol=1e-6)
    L = acts.logits.double().numpy().reshape(p, p, p)
    L = L - L.mean(axis=2, keepdims=True)
    ga, gb, gc = np.meshgrid(np.arange(p), np.arange(p), np.arange(p), indexing="ij")
    for i, k in enumerate(key):
        w = np.cos(2 * np.pi * k * (ga + gb - gc) / p)
        assert logit_fit.alpha[i].item() == pytest.approx((L * w).sum() / (w * w).sum(), rel=1e-6)
