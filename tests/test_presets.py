"""The presets build each anchor's documented setup: split, unembed, schedule, frozen parameters, init.

Each anchor's pieces are re-implemented here independently, the way its own code does them
(Python's random.shuffle of the (a, b, p) triples; torch.manual_seed then torch.randperm; the
original module's parameters drawn by nn.Parameter(torch.randn(...)) in its registration
order), and compared with what mechgrok builds.
"""

from __future__ import annotations

import json
import math
import random
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mechgrok import runs
from mechgrok.cli import _asked_config, _config, build_parser, main
from mechgrok.config import Config
from mechgrok.models.lens import HookedTransformer, HookedTransformerConfig
from mechgrok.models.transformer import build_model
from mechgrok.presets import PRESETS, preset_config, preset_fields
from mechgrok.tasks.data import modular_split
from mechgrok.training.loop import train
from mechgrok.training.optim import lr_at, make_optimizer

SMALL = {"p": 13, "d_model": 16, "n_heads": 2, "d_mlp": 32, "frac_train": 0.5}
BIASES = ("blocks.0.attn.b_Q", "blocks.0.attn.b_O", "blocks.0.attn.b_K", "blocks.0.attn.b_V", "blocks.0.mlp.b_in",
          "blocks.0.mlp.b_out", "unembed.b_U")


# ----------------------------------------------------------------------------- independent anchors
def original_code_split(p: int, frac: float, seed: int) -> tuple[list[int], list[int]]:
    """The original code's split, as it does it: shuffle the triples, cut at int(frac * p²)."""
    pairs = [(i, j, p) for i in range(p) for j in range(p)]
    state = random.getstate()
    random.seed(seed)
    random.shuffle(pairs)
    random.setstate(state)
    div = int(frac * len(pairs))
    flat = [a * p + b for a, b, _ in pairs]
    return flat[:div], flat[div:]


def demo_split(p: int, frac: float, data_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The TransformerLens demo's split: torch.manual_seed(DATA_SEED); torch.randperm(p*p)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(data_seed)
        indices = torch.randperm(p * p)
    cutoff = int(p * p * frac)
    return indices[:cutoff], indices[cutoff:]


class _Embed(nn.Module):
    def __init__(self, d_vocab, d_model):
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(d_model, d_vocab) / np.sqrt(d_model))


class _PosEmbed(nn.Module):
    def __init__(self, n_ctx, d_model):
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model) / np.sqrt(d_model))


class _Attention(nn.Module):
    def __init__(self, d_model, n_heads, d_head):
        super().__init__()
        self.W_K = nn.Parameter(torch.randn(n_heads, d_head, d_model) / np.sqrt(d_model))
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_head, d_model) / np.sqrt(d_model))
        self.W_V = nn.Parameter(torch.randn(n_heads, d_head, d_model) / np.sqrt(d_model))
        self.W_O = nn.Parameter(torch.randn(d_model, d_head * n_heads) / np.sqrt(d_model))


class _MLP(nn.Module):
    def __init__(self, d_model, d_mlp):
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(d_mlp, d_model) / np.sqrt(d_model))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_model, d_mlp) / np.sqrt(d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))


class _Block(nn.Module):
    def __init__(self, d_model, d_mlp, n_heads, d_head):
        super().__init__()
        self.attn = _Attention(d_model, n_heads, d_head)
        self.mlp = _MLP(d_model, d_mlp)


class _Unembed(nn.Module):
    def __init__(self, d_vocab, d_model):
        super().__init__()
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab) / np.sqrt(d_vocab))


class OriginalModule(nn.Module):
    """The original code's module tree, in its order (embed, pos_embed, blocks, unembed)."""

    def __init__(self, d_vocab, d_model, d_mlp, n_heads, n_ctx=3):
        super().__init__()
        self.embed = _Embed(d_vocab, d_model)
        self.pos_embed = _PosEmbed(n_ctx, d_model)
        self.blocks = nn.ModuleList([_Block(d_model, d_mlp, n_heads, d_model // n_heads)])
        self.unembed = _Unembed(d_vocab, d_model)


def original_module_as_hooked(seed: int, p: int, d_model: int, d_mlp: int, n_heads: int) -> dict[str, torch.Tensor]:
    """torch.manual_seed(seed), the original module, then REFERENCE §9's conversion, written out."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = OriginalModule(p + 1, d_model, d_mlp, n_heads)
    d_head = d_model // n_heads
    attn, mlp = m.blocks[0].attn, m.blocks[0].mlp
    out = {
        "embed.W_E": m.embed.W_E.T,
        "pos_embed.W_pos": m.pos_embed.W_pos,
        "blocks.0.attn.W_O": m.blocks[0].attn.W_O.T.reshape(n_heads, d_head, d_model),
        "blocks.0.mlp.W_in": mlp.W_in.T,
        "blocks.0.mlp.b_in": mlp.b_in,
        "blocks.0.mlp.W_out": mlp.W_out.T,
        "blocks.0.mlp.b_out": mlp.b_out,
        "unembed.W_U": m.unembed.W_U,
    }
    for x in "QKV":
        out[f"blocks.0.attn.W_{x}"] = getattr(attn, f"W_{x}").transpose(1, 2)
    return {k: v.detach() for k, v in out.items()}


# ----------------------------------------------------------------------------- splits
def test_original_preset_splits_as_the_original_code():
    for cfg in (preset_config("original"), preset_config("original", seed=7, p=13, frac_train=0.4)):
        train_ref, test_ref = original_code_split(cfg.p, cfg.frac_train, cfg.seed)
        split = modular_split(cfg)
        assert split.train.tolist() == train_ref and split.test.tolist() == test_ref
    assert len(modular_split(preset_config("original")).train) == 3830


def test_tl_demo_preset_splits_as_the_demo():
    cfg = preset_config("tl-demo")
    assert (cfg.split, cfg.data_seed) == ("torch", 598)
    train_ref, test_ref = demo_split(113, 0.3, 598)
    split = modular_split(cfg)
    assert torch.equal(split.train, train_ref) and torch.equal(split.test, test_ref)
    # the paper preset's split is mechgrok's own, from the run's seed, and differs from both
    assert not torch.equal(modular_split(preset_config("paper")).train, split.train)


# ----------------------------------------------------------------------------- unembed, schedule, frozen
@pytest.mark.parametrize("name, width", [("paper", 113), ("original", 114), ("tl-demo", 113)])
def test_unembed_width(name, width):
    cfg = preset_config(name)
    model = build_model(cfg)
    assert cfg.d_vocab_out == width and tuple(model.W_U.shape) == (128, width) and model.cfg.d_vocab_out == width


def test_schedules():
    original, demo, paper = preset_config("original"), preset_config("tl-demo"), preset_config("paper")
    steps = (0, 1, 5, 10, 11)
    # the original's LambdaLR(lambda step: min(step / 10, 1)), stepped once after each optimizer step
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(step / 10, 1))
    lambda_lr = []
    for step in range(12):
        lambda_lr.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [lr_at(original, s) for s in steps] == pytest.approx([lambda_lr[s] for s in steps], abs=0)
    assert [lr_at(original, s) for s in steps] == pytest.approx([0.0, 1e-4, 5e-4, 1e-3, 1e-3])
    assert lr_at(original, 0) == 0.0
    assert [lr_at(demo, s) for s in steps] == [1e-3] * 5
    assert [lr_at(paper, s) for s in steps] == [lr_at(original, s) for s in steps]
    assert (original.epochs, original.eval_every, original.checkpoint_every) == (50_000, 10, 100)
    assert (demo.epochs, demo.eval_every, demo.checkpoint_every) == (25_000, 1, 100)
    for cfg in (original, demo):
        assert (cfg.lr, cfg.weight_decay, cfg.betas, cfg.frac_train, cfg.batch_size, cfg.loss_dtype) == (
            1e-3, 1.0, (0.9, 0.98), 0.3, 0, "float64")
    assert original.seed == 0 and (demo.init_seed, demo.data_seed) == (999, 598)


def test_frozen_parameters():
    frozen = {name: {n for n, p in build_model(preset_config(name, **SMALL)).named_parameters() if not p.requires_grad}
              for name in PRESETS}
    non_mlp = set(BIASES) - {"blocks.0.mlp.b_in", "blocks.0.mlp.b_out"}
    assert frozen == {"paper": non_mlp, "original": non_mlp, "tl-demo": set(BIASES)}
    model = build_model(preset_config("tl-demo", **SMALL))
    optimised = {id(p) for group in make_optimizer(model, preset_config("tl-demo", **SMALL)).param_groups for p in group["params"]}
    assert all((id(p) in optimised) == p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------- inits
@pytest.mark.parametrize("overrides", [{}, {"seed": 3, **SMALL}, {"seed": 2, "unembed_equals": False, **SMALL}])
def test_original_init_is_the_original_module_drawn_under_manual_seed(overrides):
    cfg = preset_config("original", **overrides)
    expected = original_module_as_hooked(cfg.seed, cfg.p, cfg.d_model, cfg.d_mlp, cfg.n_heads)
    params = dict(build_model(cfg).named_parameters())
    for name, value in expected.items():
        if name == "unembed.W_U":
            value = value[:, : cfg.d_vocab_out]  # a p-wide unembed keeps the residues' columns
        assert torch.equal(params[name].detach(), value), name
    assert all(not params[b].any() for b in BIASES)
    # the W_U scale is 1/sqrt(d_vocab): its std sits near that, far from 1/sqrt(d_model)'s
    full = preset_config("original")
    std = float(build_model(full).W_U.detach().std())
    assert abs(std - 1 / math.sqrt(114)) < abs(std - 1 / math.sqrt(128)) and abs(std * math.sqrt(114) - 1) < 0.05


def test_tl_demo_init_is_transformer_lens_with_seed_999():
    cfg = preset_config("tl-demo")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TransformerLens 3.x: HookedTransformer goes in 4.0
        demo = HookedTransformer(HookedTransformerConfig(
            n_layers=1, n_heads=4, d_model=128, d_head=32, d_mlp=512, act_fn="relu", normalization_type=None,
            d_vocab=114, d_vocab_out=113, n_ctx=3, init_weights=True, device="cpu", seed=999))
    ours = dict(build_model(cfg).named_parameters())
    theirs = dict(demo.named_parameters())
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[n].detach(), theirs[n].detach()) for n in theirs)
    # the init seed is separate from the run's seed and from the split's
    assert not torch.equal(build_model(cfg.replace(model_seed=998)).W_E, ours["embed.W_E"])
    assert torch.equal(build_model(cfg.replace(split_seed=1)).W_E, ours["embed.W_E"])


def test_building_a_model_leaves_the_global_rngs_alone():
    torch_state, python_state, numpy_state = torch.random.get_rng_state(), random.getstate(), np.random.get_state()
    for name in PRESETS:
        build_model(preset_config(name, **SMALL))
    assert torch.equal(torch.random.get_rng_state(), torch_state) and random.getstate() == python_state
    numpy_now = np.random.get_state()
    assert np.array_equal(numpy_now[1], numpy_state[1]) and numpy_now[2] == numpy_state[2]


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_fast_path_trains_every_preset(name, tmp_path):
    cfg = preset_config(name, **SMALL, epochs=6, checkpoint_every=3)
    result = train(cfg, tmp_path / "run", tune_process=False, threads=1)
    assert result.epoch == 6 and result.metrics["train_loss"].notna().all()
    assert list(result.metrics["epoch"]) == [e for e in range(7) if e % cfg.eval_every == 0 or e == 6]
    init = build_model(cfg)
    trained = dict(result.model.named_parameters())
    for n, p in init.named_parameters():
        moved = not torch.equal(p.detach(), trained[n].detach())
        # epoch 0 has lr 0 under a warm-up, so 6 steps still move every trainable weight; frozen ones stay 0
        assert moved == p.requires_grad, n
    assert torch.equal(runs.load_run(tmp_path / "run").split.train, modular_split(cfg).train)
    assert runs.read_config(tmp_path / "run") == cfg
    assert result.model.W_U.shape[1] == cfg.d_vocab_out


def test_a_preset_run_resumes_exactly(tmp_path):
    cfg = preset_config("tl-demo", **SMALL, epochs=6, checkpoint_every=2)
    straight = train(cfg, tmp_path / "a", tune_process=False, threads=1)
    train(cfg.replace(epochs=3), tmp_path / "b", tune_process=False, threads=1)
    resumed = train(cfg, tmp_path / "b", tune_process=False, threads=1)
    assert resumed.resumed_from == 3
    assert all(torch.equal(p, q) for p, q in zip(straight.model.parameters(), resumed.model.parameters()))


# ----------------------------------------------------------------------------- names, seeds, CLI
def test_a_bad_preset_name_lists_the_presets():
    with pytest.raises(ValueError, match=r"preset='orignal' is not one of \['original', 'paper', 'tl-demo'\]"):
        preset_config("orignal")


def test_paper_is_the_default_config_and_presets_name_real_fields():
    assert preset_config("paper") == Config() and preset_fields("paper") == {}
    for name in PRESETS:
        assert set(PRESETS[name]) <= set(Config.__dataclass_fields__)


def test_seeds_of_a_preset_move_its_pinned_seeds():
    demo = preset_config("tl-demo")
    assert demo.reseeded(0) == demo
    assert (demo.reseeded(3).init_seed, demo.reseeded(3).data_seed) == (1002, 601)
    assert preset_config("tl-demo", seed=3) == demo.reseeded(3)
    assert preset_config("tl-demo", seed=3, split_seed=598).data_seed == 598  # an explicit seed wins
    assert preset_config("original", seed=4).reseeded(1) == preset_config("original", seed=1)


def test_cli_preset_with_an_overriding_flag():
    parser = build_parser()
    for command in ("train", "reproduce"):
        args = parser.parse_args([command, "--preset", "original", "--epochs", "7", "--lr", "0.002"])
        assert _config(**_asked_config(args)) == preset_config("original", epochs=7, lr=0.002)
    args = parser.parse_args(["train", "--preset", "tl-demo", "--seed", "2", "--split-seed", "5", "--frozen-biases", "non_mlp"])
    cfg = _config(**_asked_config(args))
    assert (cfg.seed, cfg.data_seed, cfg.init_seed, cfg.frozen_biases) == (2, 5, 1001, "non_mlp")
    assert cfg.replace(frozen_biases="all", split_seed=600) == preset_config("tl-demo", seed=2)


def test_cli_refuses_an_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--preset", "demo"])
    err = capsys.readouterr().err
    assert "invalid choice: 'demo'" in err and "'original'" in err and "'tl-demo'" in err


def test_cli_trains_a_preset_into_its_own_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    small = ["--p", "13", "--d-model", "16", "--n-heads", "2", "--d-mlp", "32", "--frac-train", "0.5"]
    assert main(["train", "--preset", "original", *small, "--epochs", "4", "--no-progress"]) == 0
    out = tmp_path / "runs" / "original-add-p13-frac0.5-seed0"
    assert runs.read_config(out) == preset_config("original", p=13, d_model=16, n_heads=2, d_mlp=32, frac_train=0.5, epochs=4)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "split by random.shuffle, seed 0" in text and "d_vocab_out 14, init original (seed 0)" in text
    # on the same folder, a flag that contradicts the preset's saved settings is refused with the fix
    assert main(["train", "--preset", "tl-demo", *small, "--epochs", "4", "--out", str(out), "--no-progress"]) == 2
    assert "holds a run with other settings" in capsys.readouterr().err


@pytest.mark.parametrize("fields, message", [
    ({"split": "numpy"}, r"split='numpy' is not one of \['torch', 'python'\]"),
    ({"frozen_biases": "mlp"}, r"frozen_biases='mlp' is not one of"),
    ({"split_seed": -1}, r"split_seed=-1 must be an integer >= 0"),
    ({"model_seed": 1.5}, r"model_seed=1.5 must be an integer"),
    ({"unembed_equals": "yes"}, r"unembed_equals='yes' must be true or false"),
    ({"family": "mlp", "model_seed": 3}, r"model_seed=3 applies to family='transformer' only"),
    ({"family": "mlp", "init": "original"}, r"init='original' draws the original code's module"),
    ({"family": "mlp", "unembed_equals": True}, r"unembed_equals=True applies to family='transformer' only"),
    ({"task": "parity", "family": "parity_mlp", "split_seed": 3}, r"split_seed=3 applies to task='modular' only"),
    ({"family": "mlp", "pairs": "unordered", "split": "python"}, r"split='python' shuffles every ordered pair"),
])
def test_new_fields_are_validated_with_the_fix(fields, message):
    with pytest.raises(ValueError, match=message):
        Config(**fields)


def test_reproduce_preset_original_over_five_seeds_draws_fig2_over_them(tmp_path, capsys):
    out = tmp_path / "rep"
    small = {"p": 17, "d_model": 32, "n_heads": 2, "d_mlp": 64, "frac_train": 0.6, "lr": 3e-3, "epochs": 200,
             "checkpoint_every": 100}
    argv = [a for k, v in small.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    assert main(["reproduce", "--preset", "original", *argv, "--seeds", "5", "--out", str(out), "--no-progress",
                 "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2, 3, 4]
    for seed in range(5):
        folder = out if seed == 0 else out / "seeds" / f"seed_{seed}"
        assert runs.read_config(folder) == preset_config("original", seed=seed, **small)
    curves = pd.read_csv(out / "figures" / "fig2_loss_curves.csv")
    assert sorted(curves["seed"].unique()) == [0, 1, 2, 3, 4]
    assert set(curves["epoch"]) == set(range(0, 201, 10))  # the original's test loss every 10 epochs
    report = (out / "report.html").read_text()
    assert "of 5 seeds: median line, min-max band" in report and "over all 18 logits" in report


def test_fig2_caption_over_seeds_is_computed_from_the_curves():
    from mechgrok.report.figures import _over_seeds

    def frame(accs, losses):
        return pd.DataFrame({"epoch": [0, 10, 20, 30], "test_acc": accs, "test_loss": losses})

    frames = [frame([0.1, 0.5, 0.995, 1.0], [4.0, 9.0, 1.0, 0.1]),
              frame([0.1, 0.99, 1.0, 1.0], [4.0, 7.5, 0.2, 0.1]),
              frame([0.1, 0.2, 0.3, 0.4], [4.0, 5.0, 6.0, 3.0])]
    text = _over_seeds(frames)
    assert text == ("2 of 3 seeds reached test accuracy 0.99, at epochs 10–20 (median 15); the test loss peaks at "
                    "6–9, at epochs 10–20.")
    assert _over_seeds([frames[2], frames[2]]).startswith("Over the 2 seeds, none reached test accuracy 0.99")
