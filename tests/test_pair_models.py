"""Pearce et al.'s model families (mechgrok/models/{mlp,circle,parity}.py), their tasks and data.

Each family's hooks fire with the shapes it declares and only inside ``model.hooks``; the
Fourier readouts and ablations of the transformer work on the MLPs through those hooks.
"""

import json

import pytest
import torch

from mechgrok import Config, registry
from mechgrok.analysis import ablations, circuits
from mechgrok.config import SCHEMA_VERSION
from mechgrok.models.circle import circle_embedding
from mechgrok.runs import attach, load_run, read_config, save_checkpoint, write_config, write_split
from mechgrok.tasks.data import run_data, unordered_split
from mechgrok.tasks.parity import ParityTask

MODULAR = ("mlp", "mlp_unfactored", "mlp_collapsed_in", "mlp_collapsed_out", "circle")


def config(family: str, **changes) -> Config:
    base = dict(p=11, family=family, d_model=2 if family == "circle" else 16, d_mlp=6, pairs="unordered",
                frac_train=0.4, warmup_steps=0)
    if family == "parity_mlp":
        base = dict(task="parity", family=family, n_bits=8, parity_bits=3, n_train=50, n_test=40, d_mlp=6)
    return Config(**{**base, **changes})


AXES = {"batch": None, "pos": 2, "out_pos": 1, "neuron": 6, "bit": 9}


@pytest.mark.parametrize("family", MODULAR + ("parity_mlp",))
def test_hooks_fire_with_declared_shapes(family):
    cfg = config(family)
    fam = registry.family(family)
    model = fam.build(cfg)
    assert [n for n, _ in model.named_parameters()] == list(fam.parameter_names)
    data = run_data(cfg)
    tokens = data.tokens[:10]
    seen = {}

    def record(activation, hook):
        seen[hook.name] = tuple(activation.shape)

    with torch.no_grad(), model.hooks(fwd_hooks=[(name, record) for name in fam.hook_shapes]):
        out = model(tokens)
    sizes = {**AXES, "batch": 10, "d_model": cfg.d_model, "d_vocab_out": cfg.d_vocab_out}
    expected = {name: tuple(sizes[axis] for axis in shape.split()) for name, shape in fam.hook_shapes.items()}
    assert seen == expected
    assert out.shape == (10, 1, cfg.d_vocab_out)
    assert not any(point.fwd_hooks for point in model.hook_dict.values())
    assert set(fam.hook_meanings) == set(fam.hook_shapes)
    for site in fam.sites.values():
        assert site.hook in model.hook_dict


def test_tied_mlp_computes_the_explorables_formula():
    cfg = config("mlp")
    model = registry.family("mlp").build(cfg)
    tokens = run_data(cfg).tokens
    E, W_in, W_out = model.embed.W_E, model.mlp.W_in, model.mlp.W_out
    a, b = tokens[:, 0], tokens[:, 1]
    expected = torch.relu(E[a] @ W_in + E[b] @ W_in) @ W_out @ E.T
    torch.testing.assert_close(model(tokens)[:, 0], expected)


@pytest.mark.parametrize("family", ["mlp_unfactored", "mlp_collapsed_in", "mlp_collapsed_out"])
def test_variants_have_the_matrices_their_name_says(family):
    model = registry.family(family).build(config(family))
    names = {n for n, _ in model.named_parameters()}
    assert ("mlp.W_input" in names) == (family in ("mlp_unfactored", "mlp_collapsed_in"))
    assert ("mlp.W_output" in names) == (family in ("mlp_unfactored", "mlp_collapsed_out"))
    assert ("embed.W_E" in names) == (family != "mlp_unfactored")


def test_circle_embedding_is_frozen_unit_columns_and_saved(tmp_path):
    cfg = config("circle", act_fn="x2")
    model = registry.family("circle").build(cfg)
    E = circle_embedding(11)
    torch.testing.assert_close(E.norm(dim=0), torch.ones(2))
    assert torch.equal(model.W_E, E)
    assert "embed.W_E" not in dict(model.named_parameters())  # a buffer: never trained
    data = run_data(cfg)
    write_config(tmp_path, cfg)
    write_split(tmp_path, data.split)
    save_checkpoint(tmp_path / "checkpoints" / "epoch_000000.safetensors", model, cfg, data.split, 0)
    run = load_run(tmp_path)
    assert torch.equal(run.model.W_E, E)
    assert torch.equal(run.model.mlp.W_in, model.mlp.W_in)
    pre = (E[data.tokens[:, 0]] + E[data.tokens[:, 1]]) @ model.mlp.W_in
    torch.testing.assert_close(run.model(data.tokens)[:, 0], pre.square() @ model.W_L)


def test_act_fn_is_refused_where_the_family_lacks_it():
    with pytest.raises(ValueError, match="act_fn='x2' is not one the mlp family offers"):
        config("mlp", act_fn="x2")


def test_unordered_split_covers_pairs_a_le_b_once():
    split = unordered_split(11, 0.4, 0)
    both = torch.cat([split.train, split.test])
    a, b = both // 11, both % 11
    assert bool((a <= b).all()) and len(both.unique()) == len(both) == 11 * 12 // 2
    assert len(split.train) == int(0.4 * 66)
    assert torch.equal(unordered_split(11, 0.4, 0).train, split.train)
    assert not torch.equal(unordered_split(11, 0.4, 1).train, split.train)


def test_symmetric_families_need_a_commutative_op_and_only_they_take_unordered_pairs():
    with pytest.raises(ValueError, match="op='sub': the mlp family is symmetric in a and b"):
        Config(p=11, family="mlp", op="sub")
    with pytest.raises(ValueError, match="pairs='unordered' .* not family='transformer'"):
        Config(p=11, pairs="unordered")
    with pytest.raises(ValueError, match="the circle family's embedding is \\(cos, sin\\), 2 wide"):
        Config(p=11, family="circle", d_model=3)
    assert Config(p=11, family="mlp", op="mul", pairs="unordered").op == "mul"
    assert Config(task="parity", family="parity_mlp", op="sub").op == "sub"  # the modular fields are ignored


def test_parity_data_train_sets_are_prefixes_and_the_test_set_is_shared():
    small, large = run_data(config("parity_mlp", n_train=20)), run_data(config("parity_mlp", n_train=50))
    assert torch.equal(small.tokens[:20], large.tokens[:20])
    assert torch.equal(small.tokens[small.split.test], large.tokens[large.split.test])
    task = ParityTask(8, 3)
    assert torch.equal(large.labels, task.label(large.tokens))
    assert torch.equal(large.labels, large.tokens[:, :3].sum(1) % 2)
    other_seed = run_data(config("parity_mlp", seed=1))
    assert not torch.equal(other_seed.tokens, large.tokens)
    # the train and test streams differ from each other (and the strings are not repeated)
    wide = run_data(config("parity_mlp", n_bits=30, n_train=200, n_test=200))
    train, test = wide.tokens[wide.split.train], wide.tokens[wide.split.test]
    codes = lambda bits: (bits * (2 ** torch.arange(bits.shape[1]))).sum(1)  # noqa: E731
    assert not set(codes(train).tolist()) & set(codes(test).tolist())  # 2^30 strings: a repeat is a ~4e-5 chance


def test_parity_model_is_a_logistic_unit_on_bits_plus_bias():
    cfg = config("parity_mlp")
    model = registry.family("parity_mlp").build(cfg)
    bits = run_data(cfg).tokens[:7]
    x = torch.cat([bits.float(), torch.ones(7, 1)], dim=1)
    z = torch.relu(x @ model.mlp.W_in) @ model.mlp.W_out
    logits = model(bits)[:, 0]
    assert torch.equal(logits[:, 0], torch.zeros(7))
    torch.testing.assert_close(logits[:, 1], z[:, 0])
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0], labels.float())
    torch.testing.assert_close(torch.nn.functional.cross_entropy(logits, labels), bce)


def test_parity_family_needs_the_parity_task():
    with pytest.raises(ValueError, match="family='mlp' trains on task 'modular', not task='parity'"):
        Config(task="parity", family="mlp")


V4_FIELDS = ("n_digits", "seq_len", "n_symbols", "repeat_len", "data", "n_layers", "attn_only", "batch_size")
V5_FIELDS = ("split", "split_seed", "model_seed", "unembed_equals", "frozen_biases")


def test_versions_2_to_4_configs_read_with_the_fields_later_versions_added(tmp_path):
    cfg = Config(p=11)
    v4 = {k: v for k, v in cfg.to_dict().items() if k not in V5_FIELDS}
    v3 = {k: v for k, v in v4.items() if k not in V4_FIELDS}
    (tmp_path / "config.json").write_text(json.dumps({"format": "mechgrok", "schema_version": 4, "config": v4}))
    assert read_config(tmp_path) == cfg
    (tmp_path / "config.json").write_text(json.dumps({"format": "mechgrok", "schema_version": 3, "config": v3}))
    assert read_config(tmp_path) == cfg
    fields = {k: v for k, v in v3.items()
              if k not in ("task", "pairs", "n_bits", "parity_bits", "n_train", "n_test", "act_fn", "decay", "loss_scale")}
    (tmp_path / "config.json").write_text(json.dumps({"format": "mechgrok", "schema_version": 2, "config": fields}))
    assert read_config(tmp_path) == cfg
    assert SCHEMA_VERSION == 5
    (tmp_path / "config.json").write_text(json.dumps({"format": "mechgrok", "schema_version": 5, "config": v4}))
    with pytest.raises(ValueError, match="lacks field"):
        read_config(tmp_path)  # a version-5 config must name the fields version 5 added
    (tmp_path / "config.json").write_text(json.dumps({"format": "mechgrok", "schema_version": 4, "config": v3}))
    with pytest.raises(ValueError, match="lacks field"):
        read_config(tmp_path)  # a version-4 config must name the fields version 4 added
    fields.pop("loss_dtype")
    (tmp_path / "config.json").write_text(json.dumps({"format": "mechgrok", "schema_version": 2, "config": fields}))
    with pytest.raises(ValueError, match="lacks field"):
        read_config(tmp_path)


@pytest.mark.parametrize("family", MODULAR)
def test_fourier_readouts_and_ablations_read_the_mlps_through_their_hooks(family):
    cfg = config(family)
    model = registry.family(family).build(cfg)
    attach(model, cfg, run_data(cfg).split)
    acts = circuits.gather_activations(model)
    assert acts.attention is None
    assert acts.neurons.shape == (121, 6) and acts.W_L.shape == (6, 11)
    torch.testing.assert_close(acts.W_L, model.W_L.detach())
    torch.testing.assert_close(acts.logits, model(run_data(cfg).tokens)[:, 0].detach())
    # keeping every embedding frequency, or removing none, leaves the loss as it was
    base = ablations.evaluate(model)
    kept = ablations.ablate_frequencies(model, range(1, 6), site="embeddings", mode="keep")
    assert kept.loss_all == pytest.approx(base.loss_all, rel=1e-6)
    for site in ("neurons", "logits"):
        assert ablations.ablate_frequencies(model, [], site=site).loss_all == pytest.approx(base.loss_all, rel=1e-9)
    # removing frequencies of the neurons or embeddings changes it
    for site in ("neurons", "embeddings"):
        removed = ablations.ablate_frequencies(model, [1, 2, 3], site=site, mode="remove")
        assert removed.loss_all != pytest.approx(base.loss_all, rel=1e-4)
    with pytest.raises(ValueError, match="no attention"):
        circuits.attention_readout(acts.attention)


def test_the_transformer_analyses_refuse_the_parity_task_and_the_mlp_runs_by_name(tmp_path):
    from mechgrok.analysis.progress import compute_measures

    cfg = config("parity_mlp")
    model = registry.family("parity_mlp").build(cfg)
    attach(model, cfg, run_data(cfg).split)
    with pytest.raises(ValueError, match="defined for modular arithmetic only, not parity of the first 3 of 8 random bits"):
        circuits.gather_activations(model)
    mlp = config("mlp")
    write_config(tmp_path, mlp)
    with pytest.raises(ValueError, match="progress measures are computed for the transformer family"):
        compute_measures(tmp_path)


def test_reproduce_pair_refuses_a_missing_device_before_writing(tmp_path, capsys):
    from mechgrok.cli import main

    assert main(["reproduce", "pair2023", "--out", str(tmp_path / "pair"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "pair").exists()
