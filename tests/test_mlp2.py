"""The Alignment Forum post's 2-layer MLP (mechgrok/models/mlp2.py), its weight clusters
(mechgrok/analysis/weight_clusters.py), its hand-written training step, its reproduction part
(mechgrok/reproduce/phase_changes/mlp.py) and its figure (mechgrok/report/phase_changes/mlp.py).

Seconds in all: p=11 and p=23 models, a few hundred steps. The claim itself (p=113 groks with one
cluster per frequency) is the slow test at the end.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from mechgrok import Config, registry
from mechgrok.analysis import ablations, circuits, weight_clusters
from mechgrok.models.mlp2 import one_hot_sum
from mechgrok.runs import attach, load_run
from mechgrok.tasks.data import run_data
from mechgrok.training import stack
from mechgrok.training.stack import train_stack

SMALL = Config(p=11, family="mlp2", d_mlp=6, frac_train=0.4, warmup_steps=0)
AXES = {"pos": 2, "out_pos": 1, "neuron": 6}


def built(cfg: Config = SMALL):
    model = registry.family("mlp2").build(cfg)
    attach(model, cfg, run_data(cfg).split)
    return model


def test_registered_symmetric_and_refuses_non_commutative_ops():
    assert registry.family("mlp2").name == "mlp2"
    assert "mlp2" in registry.SYMMETRIC_FAMILIES
    assert Config(p=11, family="mlp2", pairs="unordered").pairs == "unordered"
    with pytest.raises(ValueError, match="op='sub': the mlp2 family is symmetric in a and b"):
        Config(p=11, family="mlp2", op="sub")


def test_hooks_fire_with_declared_shapes_and_only_inside_model_hooks():
    fam = registry.family("mlp2")
    model = built()
    assert [n for n, _ in model.named_parameters()] == list(fam.parameter_names)
    assert {n: tuple(w.shape) for n, w in model.named_parameters()} == {
        "mlp.W_input": (11, 6), "mlp.b_in": (6,), "mlp.W_output": (6, 11), "mlp.b_out": (11,)}
    tokens = run_data(SMALL).tokens[:10]
    seen = {}

    def record(activation, hook):
        seen[hook.name] = tuple(activation.shape)

    with torch.no_grad(), model.hooks(fwd_hooks=[(name, record) for name in fam.hook_shapes]):
        out = model(tokens)
    sizes = {**AXES, "batch": 10, "d_vocab_out": 11}
    assert seen == {name: tuple(sizes[a] for a in shape.split()) for name, shape in fam.hook_shapes.items()}
    assert out.shape == (10, 1, 11)
    assert not any(point.fwd_hooks for point in model.hook_dict.values())
    assert set(fam.hook_meanings) == set(fam.hook_shapes)
    assert all(site.hook in model.hook_dict for site in fam.sites.values())


def test_forward_is_the_two_layer_mlp_on_the_sum_of_one_hot_vectors():
    model = built()
    with torch.no_grad():  # non-zero biases, so a forward that dropped them would differ
        model.mlp.b_in.normal_(generator=torch.Generator().manual_seed(1))
        model.mlp.b_out.normal_(generator=torch.Generator().manual_seed(2))
    tokens = run_data(SMALL).tokens
    x = one_hot_sum(tokens, 11)
    assert x.shape == (121, 11) and bool((x.sum(1) == 2).all())
    same = tokens[:, 0] == tokens[:, 1]
    assert bool((x[same].max(1).values == 2).all()) and bool((x[~same].max(1).values == 1).all())  # a single 2 when a = b
    W1, b1, W2, b2 = model.mlp.W_input, model.mlp.b_in, model.mlp.W_output, model.mlp.b_out
    expected = torch.relu(x @ W1 + b1) @ W2 + b2
    torch.testing.assert_close(model(tokens)[:, 0], expected)
    # an edit of the embedding rows reaches the neurons: zero b's row and only a's weights remain
    with model.hooks(fwd_hooks=[("hook_embed", lambda act, hook: torch.stack([act[:, 0], 0 * act[:, 1]], 1))]):
        edited = model(tokens)[:, 0]
    torch.testing.assert_close(edited, torch.relu(W1[tokens[:, 0]] + b1) @ W2 + b2)
    # seeded: the same seed builds the same weights, another seed others; the global RNG is untouched
    state = torch.random.get_rng_state()
    again, other = registry.family("mlp2").build(SMALL), registry.family("mlp2").build(SMALL.replace(seed=1))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(again.mlp.W_input, registry.family("mlp2").build(SMALL).mlp.W_input)
    assert not torch.equal(again.mlp.W_input, other.mlp.W_input)


def test_readouts_and_frequency_ablations_work_through_the_hooks():
    model = built()
    acts = circuits.gather_activations(model)
    assert acts.attention is None and acts.neurons.shape == (121, 6) and acts.W_L.shape == (6, 11)
    torch.testing.assert_close(acts.W_L, model.mlp.W_output.detach())
    torch.testing.assert_close(acts.W_E, model.mlp.W_input.detach())
    base = ablations.evaluate(model)
    # keeping every frequency of the 1D embedding basis (plus the mean), or removing none of the
    # 2D sites', leaves the loss as it was
    kept = ablations.ablate_frequencies(model, range(1, 6), site="embeddings", mode="keep")
    assert kept.loss_all == pytest.approx(base.loss_all, rel=1e-6)
    for site in ("neurons", "logits"):
        assert ablations.ablate_frequencies(model, [], site=site).loss_all == pytest.approx(base.loss_all, rel=1e-9)
    for site in ("neurons", "embeddings"):
        removed = ablations.ablate_frequencies(model, [1, 2, 3], site=site, mode="remove")
        assert removed.loss_all != pytest.approx(base.loss_all, rel=1e-4), site


# ----------------------------------------------------------------------------- the cluster rule
def _wave(p: int, k: int, phase: float) -> torch.Tensor:
    x = torch.arange(p, dtype=torch.float64)
    return torch.cos(2 * math.pi * k * x / p + phase)


def test_weight_clusters_find_planted_single_frequency_neurons():
    p = 13
    # neurons 0-2 on k=2, 3-4 on k=5, neuron 5 mixes k=1 and k=3 equally, neuron 6 is ~0 (dead)
    cols = [_wave(p, 2, 0.3 * i) for i in range(3)] + [_wave(p, 5, 1.0 + i) for i in range(2)]
    cols += [_wave(p, 1, 0.0) + _wave(p, 3, 0.5), 1e-6 * _wave(p, 4, 0.0)]
    W_in = torch.stack(cols, 1)
    W_in[:, :6] += 0.7  # a constant offset (a bias in disguise) is not a frequency
    W_L = torch.stack([_wave(p, k, 0.2 * i) for i, k in enumerate([2, 2, 2, 5, 5, 1, 4])]) - 0.3
    c = weight_clusters.weight_clusters(W_in, W_L)
    t = c.table.set_index("neuron")
    assert t.loc[[0, 1, 2, 3, 4], "in_share"].tolist() == pytest.approx([1.0] * 5)
    assert t.loc[[0, 1, 2, 3, 4], "out_share"].tolist() == pytest.approx([1.0] * 5)
    assert t.loc[5, "in_share"] == pytest.approx(0.5)
    assert t["live"].tolist() == [True] * 6 + [False]
    assert c.sizes == {1: 1, 2: 3, 5: 2}
    assert not c.every_live_neuron_sparse  # neuron 5 has two frequencies
    s = c.summary()
    assert (s["n_live"], s["n_sparse"], s["n_clusters"], s["n_frequencies"]) == (6, 5, 3, 6)
    json.dumps(s)
    pure = weight_clusters.weight_clusters(W_in[:, [0, 1, 2, 3, 4, 6]], W_L[[0, 1, 2, 3, 4, 6]])
    assert pure.every_live_neuron_sparse and pure.sizes == {2: 3, 5: 2}
    with pytest.raises(ValueError, match="do not fit"):
        weight_clusters.weight_clusters(W_in, W_L[:, :5])
    with pytest.raises(ValueError, match="sparse_share=0"):
        weight_clusters.weight_clusters(W_in, W_L, sparse_share=0)


# ----------------------------------------------------------------------------- training
def _chunk(cfgs, rows, kernel=None):
    fam = registry.family(cfgs[0].family)
    members = [stack._Member(i, c, Path("."), fam.build(c), run_data(c).split, 0, [], 0.0, None) for i, c in enumerate(cfgs)]
    return stack._Chunk(members, torch.device("cpu"), kernel=kernel, rows_padded=rows)


@pytest.mark.parametrize("loss_dtype, loss_scale", [("float32", "per_output"), ("float64", "mean")])
def test_the_hand_written_modular_step_with_biases_equals_autograd(loss_dtype, loss_scale):
    cfgs = [SMALL.replace(d_mlp=24, seed=s, frac_train=0.6 - 0.1 * s, lr=3e-3, loss_dtype=loss_dtype, loss_scale=loss_scale)
            for s in range(3)]
    rows = (max(len(run_data(c).split.train) for c in cfgs), max(len(run_data(c).split.test) for c in cfgs))
    hand, generic = _chunk(cfgs, rows), _chunk(cfgs, rows, kernel=stack._Generic)
    assert isinstance(hand.kernel, stack._Modular)
    for _ in range(3):
        grads_h, loss_h, correct_h = hand.loss_and_grad()
        grads_g, loss_g, correct_g = generic.loss_and_grad()
        torch.testing.assert_close(loss_h, loss_g, rtol=1e-5, atol=0)
        assert torch.equal(correct_h, correct_g)
        assert set(grads_h) == set(grads_g) == {"mlp.W_input", "mlp.b_in", "mlp.W_output", "mlp.b_out"}
        for k in grads_g:
            assert grads_g[k].abs().max() > 0, k  # the biases get a gradient
            torch.testing.assert_close(grads_h[k], grads_g[k], rtol=1e-4, atol=1e-7)
        hand.optimizer.update(grads_g, hand.optimizer.step)
        generic.optimizer.update(grads_g, generic.optimizer.step)
    test_h, test_g = hand.loss(hand.test), generic.loss(generic.test)
    torch.testing.assert_close(test_h[0], test_g[0], rtol=1e-5, atol=0)
    assert torch.equal(test_h[1], test_g[1])


def test_a_few_stacked_steps_lower_the_train_loss_and_write_a_loadable_run(tmp_path):
    cfg = SMALL.replace(d_mlp=32, lr=1e-2, epochs=40, eval_every=10, checkpoint_every=20)
    (result,) = train_stack([cfg], [tmp_path / "run"], threads=1, tune_process=False)
    losses = result.metrics["train_loss"].tolist()
    assert losses[-1] < 0.5 * losses[0]
    run = load_run(tmp_path / "run")
    assert run.config.family == "mlp2"
    torch.testing.assert_close(run.model(run_data(cfg).tokens), result.model(run_data(cfg).tokens))


# ----------------------------------------------------------------------------- a tiny trained sweep
TINY = Config(p=23, family="mlp2", d_mlp=48, frac_train=0.6, lr=1e-2, warmup_steps=0, epochs=400, eval_every=20,
              checkpoint_every=200)


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory) -> Path:
    """OUT/mlp2 of a two-seed tiny sweep (a few seconds), laid out as the reproduction writes it."""
    from mechgrok.sweeps import Sweep, run_sweep

    out = tmp_path_factory.mktemp("phase_changes")
    threads = torch.get_num_threads()
    try:
        run_sweep(Sweep(TINY, {"seed": (0, 1)}), out / "mlp2", executor="inline", threads=1)
    finally:
        torch.set_num_threads(threads)
    return out


def test_the_clusters_frequencies_carry_the_trained_models_loss(tiny_out):
    run = load_run(tiny_out / "mlp2" / "seed=0")
    c = weight_clusters.weight_clusters(run.model.W_E.detach(), run.model.W_L.detach())
    ks = sorted(c.sizes)
    assert ks and len(ks) <= 11
    kept = ablations.ablate_frequencies(run.model, ks, site="neurons", mode="keep")
    removed = ablations.ablate_frequencies(run.model, ks, site="neurons", mode="remove")
    base = ablations.evaluate(run.model)
    assert kept.accuracy_test >= base.accuracy_test and kept.accuracy_all > 0.9
    assert removed.loss_all > 3 * base.loss_all and removed.accuracy_all < 0.2


def test_plan_summarise_and_claims_read_the_run_folders(tiny_out):
    from mechgrok.reproduce.phase_changes import mlp as part

    plan = part.plan()
    assert list(plan) == ["mlp2"] and [r.config.seed for r in plan["mlp2"].runs] == [0, 1]
    assert [r.config.seed for r in part.plan(full=True)["mlp2"].runs] == [0, 1, 2]
    base = plan["mlp2"].base
    assert (base.family, base.d_mlp, base.lr, base.weight_decay, base.p, base.frac_train) == ("mlp2", 256, 1e-3, 1.0, 59, 0.6)
    full = part.plan(full=True)["mlp2"].base
    assert (full.p, full.frac_train, full.d_mlp) == (113, 0.3, 256)
    summary = part.summarise(tiny_out)
    json.dumps(summary)  # JSON-safe
    seeds = summary["mlp2"]["seeds"]
    assert sorted(seeds) == [0, 1] and summary["mlp2"]["p"] == 23
    run = load_run(tiny_out / "mlp2" / "seed=1")
    c = weight_clusters.weight_clusters(run.model.W_E.detach(), run.model.W_L.detach())
    assert seeds[1]["cluster_sizes"] == c.sizes and seeds[1]["n_sparse"] == int(c.live["sparse"].sum())
    assert seeds[1]["final_test_acc"] == pytest.approx(float(run.metrics["test_acc"].iloc[-1]))
    verdict = part.claims(summary)
    assert set(verdict) == {"mlp2_groks", "mlp2_one_cluster_per_frequency", "mlp2_every_live_neuron_sparse",
                            "mlp2_every_frequency_has_a_cluster", "mlp2_cluster_sizes_3_to_7",
                            "mlp2_cluster_frequencies_carry_the_loss"}
    # the rules follow the numbers: a tiny run that has not grokked fails the grokking claims
    assert verdict["mlp2_groks"] == all(s["final_test_acc"] >= 0.99 and s["test_acc_step"] is not None for s in seeds.values())
    edited = json.loads(json.dumps(summary))
    for s in edited["mlp2"]["seeds"].values():
        s.update(test_acc_step=100, final_test_acc=1.0, every_live_neuron_sparse=True, cluster_size_min=3, cluster_size_max=7,
                 n_clusters=s["n_frequencies"], n_sparse=s["n_live"])
    assert all(part.claims(edited).values()) == (min(s["kept_test_acc"] for s in seeds.values()) >= 0.99
                                                and max(s["removed_acc_all"] for s in seeds.values()) < 0.1)
    edited["mlp2"]["seeds"]["0"]["cluster_size_max"] = 8
    assert not part.claims(edited)["mlp2_cluster_sizes_3_to_7"]
    one = edited["mlp2"]["seeds"]["0"]
    one.update(n_live=100, n_sparse=90, every_live_neuron_sparse=False)  # 90% sparse: one cluster each, not every neuron
    assert part.claims(edited)["mlp2_one_cluster_per_frequency"] and not part.claims(edited)["mlp2_every_live_neuron_sparse"]
    one.update(n_sparse=89)
    assert not part.claims(edited)["mlp2_one_cluster_per_frequency"]
    with pytest.raises(ValueError, match="holds no mlp2 experiment"):
        part.summarise(tiny_out / "nowhere")


def test_the_figure_builds_with_a_caption_from_the_runs(tiny_out):
    from mechgrok.report.phase_changes.mlp import mlp2_clusters

    folders = [tiny_out / "mlp2" / "seed=0", tiny_out / "mlp2" / "seed=1"]
    f = mlp2_clusters(folders)
    assert f.name == "mlp2_clusters" and len(f.figure.data) > 0
    run = load_run(folders[0])
    c = weight_clusters.weight_clusters(run.model.W_E.detach(), run.model.W_L.detach())
    s = c.summary()
    assert f"{s['n_sparse']} of them" in f.caption and f"They form {s['n_clusters']} clusters over the 11 frequencies" in f.caption
    assert f"test accuracy {math.floor(run.metrics['test_acc'].iloc[-1] * 1000) / 1000:.3f}" in f.caption
    assert "The post (Nanda 2022, about its own run, not these)" in f.caption
    sizes = f.tables["cluster_sizes"]
    assert dict(zip(sizes[sizes.seed == 0].frequency, sizes[sizes.seed == 0].neurons)) == c.sizes
    spectra = f.tables["spectra"]
    shares = spectra.groupby(["side", "neuron"])["share"].sum()
    assert shares.to_numpy() == pytest.approx(1.0)  # each neuron's shares over the frequencies sum to 1
    with pytest.raises(ValueError, match="reads runs of the mlp2 family"):
        cfg = SMALL.replace(family="mlp_unfactored", pairs="unordered", d_model=8)
        train_stack([cfg.replace(epochs=2, checkpoint_every=1)], [tiny_out / "other"], threads=1, tune_process=False)
        mlp2_clusters([tiny_out / "other"])
    with pytest.raises(ValueError, match="list of run folders"):
        mlp2_clusters(folders[0])
    from mechgrok.report.phase_changes.mlp import figures

    (again,) = figures(tiny_out, {})
    assert again.name == "mlp2_clusters" and again.caption == f.caption
    with pytest.raises(ValueError, match="holds no mlp2 experiment"):
        figures(tiny_out / "nowhere", {})


@pytest.mark.skipif(__import__("shutil").which("chromium") is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_the_figure_draws_in_headless_chromium(tiny_out, tmp_path):
    from mechgrok.report.html import write_page
    from mechgrok.report.phase_changes.mlp import mlp2_clusters
    from test_report import assert_rendered_without_errors, render_in_chromium

    page = write_page(tmp_path / "page", "mlp2", "<p>the 2-layer MLP</p>", [mlp2_clusters([tiny_out / "mlp2" / "seed=0"])])
    dom, log = render_in_chromium(page, tmp_path / "profile")
    assert_rendered_without_errors(dom, log, ["mlp2_clusters"])


# ----------------------------------------------------------------------------- the claim (slow)
@pytest.mark.slow
def test_the_2_layer_mlp_groks_with_one_cluster_per_frequency(tmp_path):
    """The default plan (about 90 CPU-seconds): every seed groks, and at least 90% of the
    live neurons of every seed put >= 85% of their input and output weights' 1D Fourier energy on
    one frequency (module docstring of mechgrok.reproduce.phase_changes.mlp)."""
    from mechgrok.reproduce.phase_changes import mlp as part
    from mechgrok.sweeps import run_sweep

    for name, sweep in part.plan().items():
        run_sweep(sweep, tmp_path / name)
    summary = part.summarise(tmp_path)
    verdict = part.claims(summary)
    assert verdict["mlp2_groks"], summary
    assert verdict["mlp2_one_cluster_per_frequency"], {s: (v["n_sparse"], v["n_live"]) for s, v in summary["mlp2"]["seeds"].items()}
    assert verdict["mlp2_cluster_frequencies_carry_the_loss"]
