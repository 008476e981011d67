"""Hook-based ablations, restricted/excluded loss and the §4.4 interventions (mechgrok/ablations.py).

Formulas are checked against straightforward re-implementations (explicit loops, numpy) that
share no code with mechgrok.analysis.fourier.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mechgrok.reproduce import nanda2023
from mechgrok.runs import attached

from _grokked import EPOCHS, P, acts, grokked_model, key, model, p113_run, write_run_folder  # noqa: F401 (fixtures)
from mechgrok.analysis import ablations, circuits, fourier
from mechgrok import hooks, registry
from mechgrok.config import Config
from mechgrok.models.transformer import build_model
from mechgrok.tasks.modular import ModularTask




# ----------------------------------------------------------------------------- reference formulas
def ref_sum_directions(p, ks):
    """Unit cos(w_k(a+b)), sin(w_k(a+b)) vectors over (a, b) in grid order, by explicit loops."""
    out = []
    for k in ks:
        for fn in (math.cos, math.sin):
            v = np.array([fn(2 * math.pi * k * (a + b) / p) for a in range(p) for b in range(p)])
            out.append(v / np.linalg.norm(v))
    return np.array(out).reshape(-1, p * p)


def ref_loss(logits, labels):
    logits = np.asarray(logits, dtype=np.float64)
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


def ref_restricted_loss(logits, labels, ks):
    p = logits.shape[1]
    D = ref_sum_directions(p, ks)
    new = np.empty_like(logits)
    for c in range(p):
        col = logits[:, c]
        new[:, c] = col.mean() + sum((d @ col) * d for d in D)
    return ref_loss(new, labels)


def ref_excluded_loss(logits, labels, ks, train):
    D = ref_sum_directions(logits.shape[1], ks)
    new = logits - D.T @ (D @ logits)
    return ref_loss(new[train], labels[train])


def no_hooks_left(model):
    return all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())


# ----------------------------------------------------------------------------- restricted / excluded
def test_restricted_and_excluded_loss_match_reference(acts, key):
    logits = acts.logits.double().numpy()
    labels = acts.labels.numpy()
    train = acts.split.train.numpy()
    ours_r = ablations.restricted_loss(acts.logits, acts.labels, key)
    ours_e = ablations.excluded_loss(acts.logits, acts.labels, key, acts.split.train)
    assert ours_r == pytest.approx(ref_restricted_loss(logits, labels, key), rel=1e-6, abs=1e-12)
    assert ours_e == pytest.approx(ref_excluded_loss(logits, labels, key, train), rel=1e-6, abs=1e-12)
    # and on logits with no structure at all, where every term matters
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(P * P, P, generator=g, dtype=torch.float64)
    assert ablations.restricted_loss(noise, acts.labels, [2, 7]) == pytest.approx(
        ref_restricted_loss(noise.numpy(), labels, [2, 7]), rel=1e-9
    )
    assert ablations.excluded_loss(noise, acts.labels, [2, 7], acts.split.train) == pytest.approx(
        ref_excluded_loss(noise.numpy(), labels, [2, 7], train), rel=1e-9
    )


def test_restricted_loss_is_the_logit_keep_hook(model, acts, key):
    hooked = ablations.ablate_frequencies(model, key, site="logits", mode="keep")
    assert hooked.loss_all == pytest.approx(ablations.restricted_loss(acts.logits, acts.labels, key), rel=1e-3)
    removed = ablations.ablate_frequencies(model, key, site="logits", mode="remove")
    assert removed.loss_train == pytest.approx(
        ablations.excluded_loss(acts.logits, acts.labels, key, acts.split.train), rel=1e-4
    )


def test_frequency_ablation_losses_match_hooks_and_reference(model, acts, key):
    table = ablations.frequency_ablation_losses(acts.logits, acts.labels, acts.split, key)
    assert list(table.frequency) == fourier.frequencies(P)
    assert set(table.frequency[table.key]) == set(key)
    logits, labels = acts.logits.double().numpy(), acts.labels.numpy()
    non_key = next(k for k in fourier.frequencies(P) if k not in key)
    for k in (key[0], non_key):
        row = table.set_index("frequency").loc[k]
        D = ref_sum_directions(P, [k])
        ablated = logits - D.T @ (D @ logits)
        assert row.loss_all == pytest.approx(ref_loss(ablated, labels), rel=1e-6)
        assert row.loss_train == pytest.approx(ref_loss(ablated[acts.split.train], labels[acts.split.train]), rel=1e-6)
        assert row.loss_all == pytest.approx(ablations.ablate_frequencies(model, [k]).loss_all, rel=1e-3)


# ----------------------------------------------------------------------------- qualitative, small model
def test_key_frequencies_carry_the_logits(model, acts, key):
    original = ablations.evaluate(model)
    assert original.accuracy_train == 1.0
    assert ablations.ablate_frequencies(model, key, mode="remove").loss_all > 1
    assert ablations.ablate_frequencies(model, key, mode="keep").loss_all < 3 * original.loss_all
    # The paper's "< 10% change" is checked on p=113 below; this small model's loss sits on a few
    # test inputs, so here we check the separation: strong key frequencies >> the rest (an order of
    # magnitude; how far past it depends on how far this short run has cleaned up).
    ratio = ablations.frequency_ablation_losses(acts.logits, acts.labels).set_index("frequency").loss_all / original.loss_all
    strong = circuits.key_frequencies(acts, "clusters")
    assert set(strong) <= set(key)
    assert (ratio[strong] > 10).all()
    assert (ratio.drop(key) < 2).all()


# ----------------------------------------------------------------------------- identities
@pytest.mark.parametrize("site", ablations.SITES)
def test_removing_nothing_changes_nothing(model, site):
    original = ablations.evaluate(model)
    result = ablations.ablate_frequencies(model, [], site=site, mode="remove")
    assert result.loss_all == pytest.approx(original.loss_all, rel=1e-4)
    assert result.accuracy_all == original.accuracy_all


def test_keeping_every_embedding_frequency_changes_nothing(model):
    original = ablations.evaluate(model)
    result = ablations.ablate_frequencies(model, fourier.frequencies(P), site="embeddings", mode="keep")
    assert result.loss_all == pytest.approx(original.loss_all, rel=1e-4)


def test_embedding_hook_equals_editing_W_E(model):
    """Removing k at the embeddings is the same as removing cos k / sin k from the rows of W_E."""
    ks = [3, 8]
    hooked = ablations.ablate_frequencies(model, ks, site="embeddings", mode="remove")
    edited = build_model(attached(model).config, split=attached(model).split)
    edited.load_state_dict(model.state_dict())
    with torch.no_grad():
        W = edited.embed.W_E[:P].double()
        x = torch.arange(P, dtype=torch.float64)
        for k in ks:  # subtract the least-squares cos/sin wave over residues from each column
            for wave in (torch.cos(2 * math.pi * k * x / P), torch.sin(2 * math.pi * k * x / P)):
                W -= torch.outer(wave, wave @ W) / (wave @ wave)
        edited.embed.W_E[:P] = W.float()
    assert hooked.loss_all == pytest.approx(ablations.evaluate(edited).loss_all, rel=1e-4)


def _synthetic_site(seed=0, channels=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(P * P, 3, channels, generator=g, dtype=torch.float64)


def test_2d_hook_all_terms_equals_zeroing_2d_coefficients():
    """terms='all': removing k zeroes its 8 2D coefficients; keeping k keeps them and the mean only."""
    x = _synthetic_site()
    k = 5
    c, s = fourier.cos_component(k), fourier.sin_component(k)
    mask = torch.zeros(P, P, dtype=torch.bool)
    for i, j in [(0, c), (0, s), (c, 0), (s, 0), (c, c), (c, s), (s, c), (s, s)]:
        mask[i, j] = True
    coeffs = fourier.fourier_2d(fourier.to_grid(x[:, 2], P))
    removed = fourier.from_grid(fourier.inverse_fourier_2d(coeffs * ~mask[..., None]))
    keep_mask = mask.clone()
    keep_mask[0, 0] = True
    kept = fourier.from_grid(fourier.inverse_fourier_2d(coeffs * keep_mask[..., None]))
    out_r = ablations.neuron_hook(P, [k], "remove", "all")(x, None)
    out_k = ablations.logit_hook(P, [k], "keep", "all")(x, None)
    assert torch.allclose(out_r[:, 2], removed, atol=1e-10)
    assert torch.allclose(out_k[:, 2], kept, atol=1e-10)
    assert torch.equal(out_r[:, :2], x[:, :2]) and torch.equal(out_k[:, :2], x[:, :2])  # only the = position


def test_2d_hook_sum_terms_match_reference_and_remove_plus_keep():
    x = _synthetic_site(1)
    ks = [2, 11]
    D = torch.from_numpy(ref_sum_directions(P, ks))
    last = x[:, 2]
    ref_removed = last - torch.einsum("dn,dc->nc", D, D @ last)
    out_r = ablations.neuron_hook(P, ks, "remove", "sum")(x, None)[:, 2]
    out_k = ablations.neuron_hook(P, ks, "keep", "sum")(x, None)[:, 2]
    assert torch.allclose(out_r, ref_removed, atol=1e-10)
    assert torch.allclose(out_r + out_k, last + last.mean(0), atol=1e-10)


def test_hooks_act_at_their_site():
    """The 2D hooks edit the Site they are given (the family's by default) and nothing else."""
    x = _synthetic_site(2)
    family = registry.family("transformer")
    default = ablations.neuron_hook(P, [3], "remove")(x, None)
    at_site = ablations.neuron_hook(P, [3], "remove", site=family.site("neurons"))(x, None)
    assert torch.equal(default, at_site)
    moved = ablations.logit_hook(P, [3], "remove", site=hooks.Site(hooks.LOGITS, 0))(x, None)
    assert torch.equal(moved[:, 1:], x[:, 1:])
    assert torch.allclose(moved[:, 0], fourier.remove_span(x[:, 0], fourier.frequency_directions_2d(P, [3])), atol=1e-12)
    names = [name for name, _ in ablations.frequency_hooks(P, [3], site="neurons", family="transformer", W_E=torch.zeros(P + 1, 4))]
    assert names == [hooks.EMBED, family.site("neurons").hook]
    # the §4.4 hooks too
    projected = ablations.neuron_projection_hook(torch.eye(3)[:1].double(), site=hooks.Site(hooks.MLP_POST, 1))(x, None)
    assert torch.equal(projected[:, [0, 2]], x[:, [0, 2]]) and (projected[:, 1, 1:] == 0).all()


def test_hooks_keep_dtype(model):
    x = _synthetic_site().float()
    assert ablations.neuron_hook(P, [1], "keep")(x, None).dtype == torch.float32


# ----------------------------------------------------------------------------- hygiene
def test_no_hooks_remain_after_runs_and_errors(model):
    assert no_hooks_left(model)
    ablations.ablate_frequencies(model, [1], site="neurons", mode="keep")
    assert no_hooks_left(model)

    def boom(activation, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ablations.evaluate(model, [(hooks.MLP_POST, boom)])
    assert no_hooks_left(model)
    with pytest.raises(ValueError):
        ablations.ablate_frequencies(model, [99])
    assert no_hooks_left(model)
    tokens = ModularTask(P).tokens()
    with pytest.raises(ValueError, match="grid order"):
        with model.hooks(fwd_hooks=ablations.frequency_hooks(P, [1], site="logits", W_E=model.W_E)):
            model(tokens[torch.randperm(len(tokens))])
    assert no_hooks_left(model)


def test_hooks_compose_with_user_hooks(model):
    """A user hook next to ours sees the ablated neuron activations."""
    seen = {}

    def record(activation, hook):
        seen["post"] = activation.detach().clone()
        return activation

    tokens = ModularTask(P).tokens()
    fwd = ablations.frequency_hooks(P, [1, 2], site="neurons", mode="keep", W_E=model.W_E) + [(hooks.MLP_POST, record)]
    with torch.no_grad(), model.hooks(fwd_hooks=fwd):
        model(tokens)
    last = seen["post"][:, 2].double()
    outside = fourier.remove_span(last - last.mean(0), fourier.frequency_directions_2d(P, [1, 2], "sum"))
    assert outside.abs().max() < 1e-4 * last.abs().max()
    assert no_hooks_left(model)


def test_grid_order_is_checked(model):
    tokens = ModularTask(P).tokens()
    swapped = tokens[:, [1, 0, 2]]  # (b, a): every a is constant along the wrong axis
    for bad, match in ((tokens[:-1], "p²=961"), (swapped, "grid order")):
        for site in ablations.SITES:
            with pytest.raises(ValueError, match=match), torch.no_grad():
                with model.hooks(fwd_hooks=ablations.frequency_hooks(P, [1], site=site, W_E=model.W_E)):
                    model(bad)
    with pytest.raises(ValueError, match="p²=961"):
        ablations.neuron_hook(P, [1])(torch.zeros(10, 3, 4), None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ks": [0]}, r"frequency 0 is out of range for p=31; allowed frequencies are 1\.\.15"),
        ({"ks": [16]}, r"frequency 16 is out of range .* 1\.\.15"),
        ({"ks": [2.5]}, r"frequency 2\.5 is not an integer.* 1\.\.15"),
        ({"ks": [1], "site": "mlp"}, r"site='mlp' is not one of \('embeddings', 'neurons', 'logits'\)"),
        ({"ks": [1], "mode": "drop"}, r"mode='drop' .* mode='remove' or mode='keep'"),
        ({"ks": [1], "site": "neurons", "terms": "cross"}, r"terms='cross' .* terms='sum' or terms='all'"),
    ],
)
def test_bad_arguments_raise_clear_errors(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ablations.ablate_frequencies(model, **kwargs)


def test_model_without_task_raises():
    bare = build_model(Config(p=P, d_model=16, n_heads=2, d_mlp=8))
    with pytest.raises(ValueError, match="build_model"):
        ablations.ablate_frequencies(bare, [1])


def test_ablate_frequencies_on_a_loaded_checkpoint(model, tmp_path):
    from mechgrok.runs import load_checkpoint

    run_dir = write_run_folder(model, tmp_path / "run", epoch=EPOCHS)
    loaded = load_checkpoint(run_dir).model
    for site in ablations.SITES:
        ours = ablations.ablate_frequencies(loaded, [1, 3], site=site, mode="keep")
        assert ours == ablations.ablate_frequencies(model, [1, 3], site=site, mode="keep")
    assert no_hooks_left(loaded)


def test_wide_unembed_drops_the_equals_logit(model):
    """Old checkpoints have a p+1 wide unembed; its last logit must not enter the loss."""
    info = attached(model)
    wide = build_model(info.config, split=info.split, d_vocab_out=P + 1)
    state = dict(model.state_dict())
    W_U = torch.cat([state["unembed.W_U"], 50 * torch.ones(state["unembed.W_U"].shape[0], 1)], dim=1)
    state["unembed.W_U"], state["unembed.b_U"] = W_U, torch.cat([state["unembed.b_U"], torch.tensor([100.0])])
    wide.load_state_dict(state)
    narrow = ablations.ablate_frequencies(model, [1], mode="keep")
    assert ablations.ablate_frequencies(wide, [1], mode="keep").loss_all == pytest.approx(narrow.loss_all, rel=1e-4)
    assert ablations.evaluate(wide).loss_all == pytest.approx(ablations.evaluate(model).loss_all, rel=1e-5)


# ----------------------------------------------------------------------------- §4.4
def test_cluster_approximation_hook_matches_reference():
    x = _synthetic_site(2, channels=4)
    mapping = {0: 3, 2: 7}  # neurons 1 and 3 are left alone
    out = ablations.cluster_approximation_hook(P, mapping)(x, None)
    for n in (1, 3):
        assert torch.equal(out[:, :, n], x[:, :, n])
    a = torch.arange(P).repeat_interleave(P).double()
    b = torch.arange(P).repeat(P).double()
    for n, k in mapping.items():
        w = 2 * math.pi * k / P
        ca, sa, cb, sb = torch.cos(w * a), torch.sin(w * a), torch.cos(w * b), torch.sin(w * b)
        X = torch.stack([torch.ones_like(a), ca, sa, cb, sb, ca * cb, ca * sb, sa * cb, sa * sb], dim=1)
        y = x[:, 2, n]
        fit = X @ torch.linalg.lstsq(X, y[:, None]).solution.flatten()
        assert torch.allclose(out[:, 2, n], fit, atol=1e-10)


def test_neuron_projection_hook_span_plus_null_is_identity():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, 20, generator=g, dtype=torch.float64)
    dirs = torch.randn(4, 20, generator=g, dtype=torch.float64)
    span = ablations.neuron_projection_hook(dirs, "span")(x, None)
    null = ablations.neuron_projection_hook(dirs, "null")(x, None)
    assert torch.allclose(span[:, 2] + null[:, 2], x[:, 2], atol=1e-12)
    assert (null[:, 2] @ dirs.T).abs().max() < 1e-10
    with pytest.raises(ValueError, match="onto='span' or onto='null'"):
        ablations.neuron_projection_hook(dirs, "both")


def test_section_4_4_table(model, acts, key):
    clustered = circuits.clustered_neurons(circuits.neuron_clusters(acts.neurons))
    fit = circuits.neuron_logit_fit(acts.W_L, key)
    table = ablations.section_4_4_table(model, key, clustered, fit.directions)
    assert list(table.intervention) == list(ablations.SECTION_4_4_INTERVENTIONS)
    loss = table.set_index("intervention").loss
    names = list(ablations.SECTION_4_4_INTERVENTIONS)
    assert loss[names[0]] == pytest.approx(ablations.evaluate(model).loss_all, rel=1e-6)
    assert loss[names[4]] > 1 > 10 * loss[names[3]]  # the null space holds nothing useful, the span everything
    assert loss[names[6]] == pytest.approx(ablations.restricted_loss(acts.logits, acts.labels, key), rel=1e-3)
    assert "paper_loss" not in table  # the analysis knows no published number
    assert nanda2023.with_published({"section_4_4": table})["section_4_4"].paper_loss.iloc[0] == 2.41e-7
    assert no_hooks_left(model)


# ----------------------------------------------------------------------------- the tables
def test_ablation_tables_are_written_with_the_papers_numbers(model, tmp_path):
    from mechgrok.cli import main

    run_dir = write_run_folder(model, tmp_path / "run", epoch=EPOCHS)
    assert main(["table", "--run", str(run_dir)]) == 0
    out = run_dir / "analysis"
    section = pd.read_csv(out / "section_4_4.csv")
    assert list(section.intervention) == list(ablations.SECTION_4_4_INTERVENTIONS)
    assert section.paper_loss.iloc[0] == 2.41e-7
    assert section.loss.iloc[0] == pytest.approx(ablations.evaluate(model).loss_all, rel=1e-6)
    freqs = pd.read_csv(out / "frequencies.csv")
    assert len(freqs) == (P - 1) // 2 + 1 and freqs.frequency.iloc[-1] == "all but key"
    for name in ("table_1", "clusters", "cluster_sizes", "key_frequencies", "headline"):
        assert len(pd.read_csv(out / f"{name}.csv")) > 0
    page = (out / "ablation_table.md").read_text()
    assert "## §4.4 ablations" in page and "| original |" in page
    assert main(["table", "--run", str(tmp_path / "missing")]) == 2


# ----------------------------------------------------------------------------- p=113, slow
@pytest.fixture(scope="module")
def p113():
    return p113_run()


@pytest.mark.slow
def test_p113_ablation_claims(p113):
    model, acts = p113
    key = circuits.key_frequencies(acts)
    original = ablations.evaluate(model)
    assert original.accuracy_all == 1.0, "the p=113 run has not grokked yet"
    assert ablations.ablate_frequencies(model, key, mode="remove").loss_all > 1
    assert ablations.ablate_frequencies(model, key, mode="keep").loss_all < 5 * original.loss_all
    table = ablations.frequency_ablation_losses(acts.logits, acts.labels, acts.split, key)
    change = (table.set_index("frequency").loss_all / original.loss_all - 1).abs()
    others = change[~table.set_index("frequency").key]
    # The "< 10% for every non-key frequency" nearly holds: on our seed-0 run k=42
    # (= 2×21, a ReLU harmonic of a key frequency) moves the loss by ~33% of 2e-7, so we pin
    # the typical change and bound the worst; the key frequencies move it by orders of magnitude.
    assert others.quantile(0.9) < 0.1
    assert others.max() < 0.5
    assert (change[key] > 1e3).all()
    logits, labels = acts.logits.double().numpy(), acts.labels.numpy()
    assert ablations.restricted_loss(acts.logits, acts.labels, key) == pytest.approx(
        ref_restricted_loss(logits, labels, key), rel=1e-6
    )
    assert ablations.excluded_loss(acts.logits, acts.labels, key, acts.split.train) == pytest.approx(
        ref_excluded_loss(logits, labels, key, acts.split.train.numpy()), rel=1e-6
    )
    assert no_hooks_left(model)
