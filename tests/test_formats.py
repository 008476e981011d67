"""Foreign checkpoint formats, read safely (mechgrok/formats.py, docs/formats.md).

The files are written here by each format's own recipe: a real TransformerLens model saved the
way the Grokking demo saves it, and a small independent implementation of the original model's
forward in its own weight layout.
"""

import copy
import math
import os
import random
import sys
import types
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from mechgrok import runs
from mechgrok.runs import attached

from mechgrok import Config, ModularTask, build_model
from mechgrok.formats import FORMATS, HOOKED_PARAMETERS, read_foreign
from mechgrok.models.transformer import HookedTransformer, HookedTransformerConfig

BUFFERS = {"blocks.0.attn.mask", "blocks.0.attn.IGNORE"}


# ---------------------------------------------------------------------------------------------
# The TransformerLens Grokking demo's file


def demo_model(p: int, seed: int = 999) -> HookedTransformer:
    """The demo's model (docs/formats.md), at any p."""
    cfg = HookedTransformerConfig(
        n_layers=1,
        n_heads=4,
        d_model=128,
        d_head=32,
        d_mlp=512,
        act_fn="relu",
        normalization_type=None,
        d_vocab=p + 1,
        d_vocab_out=p,
        n_ctx=3,
        init_weights=True,
        device="cpu",
        seed=seed,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*", category=DeprecationWarning)
        return HookedTransformer(cfg)


def write_demo(path, p: int, n_epochs: int = 300, checkpoint_every: int = 100, **overrides):
    """Save a dict with exactly the demo's keys, made as the demo makes them."""
    model = demo_model(p)
    generator = torch.Generator().manual_seed(598)  # the demo's DATA_SEED
    indices = torch.randperm(p * p, generator=generator)
    cutoff = int(p * p * 0.3)
    checkpoints, checkpoint_epochs = [], []
    for epoch in range(n_epochs):
        if (epoch + 1) % checkpoint_every == 0:
            with torch.no_grad():  # stand-in for training: every checkpoint differs
                for param in model.parameters():
                    param.add_(0.01 * torch.randn(param.shape, generator=generator))
            checkpoint_epochs.append(epoch)
            checkpoints.append(copy.deepcopy(model.state_dict()))
    losses = torch.rand(2, n_epochs, generator=generator, dtype=torch.float64)
    data = {
        "model": model.state_dict(),
        "config": model.cfg,
        "checkpoints": checkpoints,
        "checkpoint_epochs": checkpoint_epochs,
        "test_losses": losses[1].tolist(),
        "train_losses": losses[0].tolist(),
        "train_indices": indices[:cutoff],
        "test_indices": indices[cutoff:],
    }
    data.update(overrides)
    torch.save(data, path)
    return model, data


def load_into_mechgrok(run):
    model = build_model(run.config, d_vocab_out=run.d_vocab_out)
    result = model.load_state_dict(run.state_dict, strict=False)
    assert set(result.missing_keys) == BUFFERS and not result.unexpected_keys
    return model


@pytest.mark.parametrize("p", [113, 31])
def test_demo_file_reads_back(tmp_path, p):
    path = tmp_path / "grokking_demo.pth"
    model, data = write_demo(path, p)
    # The file really holds a pickled TransformerLens config with numpy scalars inside, so the
    # stand-ins are what is exercised, not a plain dict.
    referenced = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    assert "transformer_lens.config.hooked_transformer_config.HookedTransformerConfig" in referenced
    assert any(name.endswith("multiarray.scalar") for name in referenced)

    allowlist = set(torch.serialization.get_safe_globals())
    run = read_foreign(path)
    assert set(torch.serialization.get_safe_globals()) == allowlist  # the stand-ins were allowed only while loading

    assert run.format == "transformer_lens_demo" and run.format in FORMATS
    assert run.d_vocab_out == p
    cfg = run.config
    assert (cfg.p, cfg.op, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp) == (p, "add", 128, 4, 32, 512)
    assert (cfg.seed, cfg.init, cfg.epochs, cfg.checkpoint_every, cfg.eval_every) == (999, "transformer_lens", 300, 100, 1)
    assert cfg.frac_train == 0.3  # recovered from the split's size
    assert int(cfg.frac_train * (p * p)) == len(data["train_indices"])
    # weights: the 16 parameters, unchanged
    assert list(run.state_dict) == list(HOOKED_PARAMETERS)
    for name, param in model.named_parameters():
        assert torch.equal(run.state_dict[name], param.detach()), name
    # checkpoints
    assert [epoch for epoch, _ in run.checkpoints] == [99, 199, 299]
    for (_, sd), saved in zip(run.checkpoints, data["checkpoints"]):
        assert set(sd) == set(HOOKED_PARAMETERS)
        for name in HOOKED_PARAMETERS:
            assert torch.equal(sd[name], saved[name]), name
    assert not torch.equal(run.checkpoints[0][1]["embed.W_E"], run.checkpoints[1][1]["embed.W_E"])
    # split
    assert torch.equal(run.split.train, data["train_indices"]) and run.split.train.dtype == torch.long
    assert torch.equal(run.split.test, data["test_indices"])
    # losses
    assert list(run.metrics.columns) == ["epoch", "train_loss", "test_loss"]
    assert run.metrics["epoch"].tolist() == list(range(300))
    assert run.metrics["train_loss"].tolist() == data["train_losses"]
    assert run.metrics["test_loss"].tolist() == data["test_losses"]
    # and mechgrok's own model computes the demo model's function
    tokens = ModularTask(p).tokens()
    with torch.no_grad():
        assert torch.allclose(load_into_mechgrok(run)(tokens), model(tokens), atol=1e-6)


def test_demo_parameter_names_are_build_models(tmp_path):
    """HOOKED_PARAMETERS is exactly the parameter list of mechgrok's model."""
    model = build_model(Config(p=31), d_vocab_out=31)
    assert [name for name, _ in model.named_parameters()] == list(HOOKED_PARAMETERS)


def test_demo_config_from_older_transformer_lens(tmp_path, monkeypatch):
    """TransformerLens 1.x-2.x kept the class in transformer_lens.HookedTransformerConfig."""
    module = types.ModuleType("transformer_lens.HookedTransformerConfig")

    class OldConfig:  # pickles like a dataclass: NEWOBJ, then its __dict__
        pass

    OldConfig.__module__ = module.__name__
    OldConfig.__qualname__ = OldConfig.__name__ = "HookedTransformerConfig"
    module.HookedTransformerConfig = OldConfig
    monkeypatch.setitem(sys.modules, module.__name__, module)
    old = OldConfig()
    old.__dict__.update(vars(demo_model(31).cfg))
    path = tmp_path / "old.pth"
    model, _ = write_demo(path, 31, config=old)
    referenced = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert "transformer_lens.HookedTransformerConfig.HookedTransformerConfig" in referenced

    run = read_foreign(path)
    assert run.config.p == 31 and run.config.seed == 999
    assert torch.equal(run.state_dict["blocks.0.attn.W_Q"], model.W_Q[0].detach())


# ---------------------------------------------------------------------------------------------
# The original paper's full_run_data.pth


def original_weights(p_vocab: int, d_model=128, n_heads=4, d_mlp=512, seed=0):
    """Random weights in the original code's layout (docs/formats.md), with nonzero MLP biases."""
    g = torch.Generator().manual_seed(seed)
    d_head = d_model // n_heads

    def randn(*shape, scale):
        return torch.randn(shape, generator=g) * scale

    return {
        "embed.W_E": randn(d_model, p_vocab, scale=d_model**-0.5),
        "pos_embed.W_pos": randn(3, d_model, scale=d_model**-0.5),
        "blocks.0.attn.W_K": randn(n_heads, d_head, d_model, scale=d_model**-0.5),
        "blocks.0.attn.W_Q": randn(n_heads, d_head, d_model, scale=d_model**-0.5),
        "blocks.0.attn.W_V": randn(n_heads, d_head, d_model, scale=d_model**-0.5),
        "blocks.0.attn.W_O": randn(d_model, n_heads * d_head, scale=d_model**-0.5),
        "blocks.0.attn.mask": torch.tril(torch.ones(3, 3)),
        "blocks.0.mlp.W_in": randn(d_mlp, d_model, scale=d_model**-0.5),
        "blocks.0.mlp.b_in": randn(d_mlp, scale=0.1),
        "blocks.0.mlp.W_out": randn(d_model, d_mlp, scale=d_model**-0.5),
        "blocks.0.mlp.b_out": randn(d_model, scale=0.1),
        "unembed.W_U": randn(d_model, p_vocab, scale=p_vocab**-0.5),
    }


def original_forward(sd, tokens):
    """The original model's forward, written from its description in its own layout, in float64."""
    w = {name: t.double() for name, t in sd.items()}
    n_heads, d_head, _ = w["blocks.0.attn.W_Q"].shape
    resid = w["embed.W_E"].T[tokens] + w["pos_embed.W_pos"]  # batch pos d_model
    q, k, v = (torch.einsum("nhm,bsm->bnsh", w[f"blocks.0.attn.W_{x}"], resid) for x in "QKV")
    scores = torch.einsum("bnqh,bnkh->bnqk", q, k)
    mask = w["blocks.0.attn.mask"]
    scores = torch.tril(scores) - 1e10 * (1 - mask)  # masked before the scaling, as the original does
    pattern = torch.softmax(scores / math.sqrt(d_head), dim=-1)
    z = torch.einsum("bnqk,bnkh->bqnh", pattern, v)
    z_concat = z.reshape(*z.shape[:2], n_heads * d_head)  # heads side by side: index head*d_head + h
    resid = resid + z_concat @ w["blocks.0.attn.W_O"].T
    hidden = torch.relu(resid @ w["blocks.0.mlp.W_in"].T + w["blocks.0.mlp.b_in"])
    resid = resid + hidden @ w["blocks.0.mlp.W_out"].T + w["blocks.0.mlp.b_out"]
    return resid @ w["unembed.W_U"]  # batch pos d_vocab


def original_split(p, frac_train, seed):
    """The original's gen_train_test, as docs/formats.md states it, as flat indices a*p + b."""
    pairs = [(i, j, p) for i in range(p) for j in range(p)]
    rng = random.Random()
    rng.seed(seed)
    rng.shuffle(pairs)
    div = int(frac_train * len(pairs))
    return [a * p + b for a, b, _ in pairs[:div]], [a * p + b for a, b, _ in pairs[div:]]


def original_config(p, **changes):
    cfg = {
        "lr": 1e-3,
        "p": p,
        "d_model": 128,
        "fn_name": "add",
        "frac_train": 0.3,
        "num_epochs": 250,
        "save_models": True,
        "save_every": 100,
        "stopping_thresh": -1,
        "seed": 3,
        "weight_decay": 1.0,
    }
    cfg.update(changes)
    return cfg


def write_original(path, p, p_vocab, n_epochs=250, **overrides):
    checkpoints = [original_weights(p_vocab, seed=s) for s in (1, 2, 3)]
    g = torch.Generator().manual_seed(4)
    data = {
        "train_losses": torch.rand(n_epochs, generator=g, dtype=torch.float64).tolist(),
        "test_losses": torch.rand(len(range(0, n_epochs, 10)), generator=g, dtype=torch.float64).tolist(),
        "epochs": [0, 100, 200],
        "state_dicts": checkpoints,
        "model": original_weights(p_vocab, seed=0),
        "config": original_config(p),
    }
    data.update(overrides)
    torch.save(data, path)
    return data


@pytest.mark.parametrize(
    "p, p_vocab",
    [
        (113, 114),
        # The original fixed d_vocab = 114 when its Config class was defined, so a p=31 run still
        # has 114-wide embed and unembed.
        (31, 114),
        (31, 32),
    ],
)
def test_original_file_matches_its_own_forward(tmp_path, p, p_vocab):
    path = tmp_path / "full_run_data.pth"
    data = write_original(path, p, p_vocab)
    global_state = random.getstate()

    run = read_foreign(path)

    assert random.getstate() == global_state
    assert run.format == "original"
    assert run.d_vocab_out == p_vocab
    cfg = run.config
    assert (cfg.p, cfg.op, cfg.frac_train, cfg.seed) == (p, "add", 0.3, 3)
    assert (cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.init) == (128, 4, 512, "paper")
    assert (cfg.lr, cfg.weight_decay, cfg.epochs, cfg.checkpoint_every, cfg.warmup_steps) == (1e-3, 1.0, 250, 100, 10)
    assert list(run.state_dict) == list(HOOKED_PARAMETERS)
    for name in ("attn.b_Q", "attn.b_K", "attn.b_V", "attn.b_O"):
        assert torch.count_nonzero(run.state_dict[f"blocks.0.{name}"]) == 0
    assert torch.count_nonzero(run.state_dict["unembed.b_U"]) == 0

    tokens = ModularTask(p).tokens()
    model = load_into_mechgrok(run)
    with torch.no_grad():
        ours = model(tokens)[:, -1]
    assert ours.shape == (p * p, p_vocab)
    torch.testing.assert_close(ours.double(), original_forward(data["model"], tokens)[:, -1], atol=1e-5, rtol=0)

    assert [epoch for epoch, _ in run.checkpoints] == [0, 100, 200]
    some = tokens[torch.randperm(len(tokens), generator=torch.Generator().manual_seed(0))[:300]]
    for (_, sd), saved in zip(run.checkpoints, data["state_dicts"]):
        model.load_state_dict(sd, strict=False)
        with torch.no_grad():
            torch.testing.assert_close(model(some)[:, -1].double(), original_forward(saved, some)[:, -1], atol=1e-5, rtol=0)

    train, test = original_split(p, 0.3, 3)
    assert run.split.train.tolist() == train
    assert run.split.test.tolist() == test

    metrics = run.metrics
    assert metrics["epoch"].tolist() == list(range(250))
    assert metrics["train_loss"].tolist() == data["train_losses"]
    assert metrics["test_loss"][metrics["epoch"] % 10 == 0].tolist() == data["test_losses"]
    assert metrics["test_loss"][metrics["epoch"] % 10 != 0].isna().all()


def test_original_w_o_head_order_matters(tmp_path):
    """Guards the forward above: swapping the head/d_head order of W_O changes the logits, so
    the equality in the previous test pins the conversion's order."""
    sd = original_weights(32, seed=5)
    tokens = ModularTask(31).tokens()[:50]
    swapped = dict(sd)
    n_heads, d_head = 4, 32
    swapped["blocks.0.attn.W_O"] = sd["blocks.0.attn.W_O"].reshape(128, n_heads, d_head).transpose(1, 2).reshape(128, -1)
    assert not torch.allclose(original_forward(sd, tokens), original_forward(swapped, tokens), atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Refusing to run pickled code


def _run_command(command):
    return os.system(command)


class Payload:
    """Unpickling this runs a shell command, when anything lets it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalPayload(Payload):
    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("payload_class, name", [(Payload, "system"), (EvalPayload, "eval")])
@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_is_refused(tmp_path, payload_class, name, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "config": payload_class(marker)}, path, _use_new_zipfile_serialization=zip_format)
    allowlist = set(torch.serialization.get_safe_globals())
    with pytest.raises(ValueError, match=rf"disallowed object \([\w.]*{name}\).*refuses to unpickle"):
        read_foreign(path)
    assert not marker.exists()
    assert set(torch.serialization.get_safe_globals()) == allowlist


def test_payload_inside_the_demo_config_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    model = demo_model(31)
    cfg = copy.copy(model.cfg)
    cfg.tokenizer_name = Payload(marker)
    path = tmp_path / "evil.pth"
    write_demo(path, 31, config=cfg)
    with pytest.raises(ValueError, match=r"disallowed object \(posix\.system\)"):
        read_foreign(path)
    assert not marker.exists()


def test_numpy_array_in_the_config_is_refused(tmp_path):
    """Only plain numpy scalars are rebuilt; an array needs numpy's own reconstructor."""
    cfg = copy.copy(demo_model(31).cfg)
    cfg.attn_scale = np.array([1.0, 2.0])
    path = tmp_path / "array.pth"
    write_demo(path, 31, config=cfg)
    with pytest.raises(ValueError, match=r"disallowed object \(.*_reconstruct.*\)"):
        read_foreign(path)


def test_allowlisted_name_cannot_be_called_with_arguments(tmp_path, monkeypatch):
    """A pickle may reuse an allowed name as a function to call; the stand-in refuses, and
    does nothing either way."""
    marker = tmp_path / "pwned"
    module = types.ModuleType("transformer_lens.HookedTransformerConfig")

    class HookedTransformerConfig:
        def __init__(self, command):
            _run_command(command)

    HookedTransformerConfig.__module__, HookedTransformerConfig.__qualname__ = module.__name__, "HookedTransformerConfig"
    module.HookedTransformerConfig = HookedTransformerConfig
    monkeypatch.setitem(sys.modules, module.__name__, module)

    class Disguised:
        def __reduce__(self):
            return (HookedTransformerConfig, (f"touch {marker}",))

    path = tmp_path / "disguised.pth"
    write_demo(path, 31, config=Disguised())
    with pytest.raises(ValueError, match="called with arguments"):
        read_foreign(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Broken, foreign and mismatched files


@pytest.mark.parametrize("zip_format", [True, False])
def test_truncated_file(tmp_path, zip_format):
    whole = tmp_path / "whole.pth"
    torch.save({"model": original_weights(32), "config": original_config(31)}, whole, _use_new_zipfile_serialization=zip_format)
    blob = whole.read_bytes()
    half = tmp_path / "half.pth"
    half.write_bytes(blob[: len(blob) // 2])
    assert read_foreign(whole).config.p == 31  # the whole file is fine
    with pytest.raises(ValueError, match=r"half\.pth.*(truncated|corrupt)"):
        read_foreign(half)


def test_not_a_torch_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text('{"p": 113}\n')
    with pytest.raises(ValueError, match=r"notes\.pth: not a torch checkpoint"):
        read_foreign(path)


def test_checkpoint_that_is_not_a_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match="holding a Tensor, not a dict"):
        read_foreign(path)


def test_dict_of_neither_format(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, path)
    with pytest.raises(ValueError, match=r"neither format.*\['epoch', 'state_dict'\]"):
        read_foreign(path)


def test_demo_file_missing_keys(tmp_path):
    path = tmp_path / "partial.pth"
    torch.save({"model": demo_model(31).state_dict(), "config": demo_model(31).cfg}, path)
    with pytest.raises(ValueError, match=r"Grokking demo's file but lacks \['train_indices', 'test_indices'\]"):
        read_foreign(path)


def test_demo_weights_from_another_p(tmp_path):
    path = tmp_path / "mixed.pth"
    write_demo(path, 31, model=demo_model(37).state_dict())
    expected = r"model does not match its config \(p=31\): embed\.W_E is \(38, 128\), expected \(32, 128\).*another p"
    with pytest.raises(ValueError, match=expected):
        read_foreign(path)


def test_demo_indices_from_another_p(tmp_path):
    path = tmp_path / "mixed.pth"
    indices = torch.randperm(37 * 37)
    write_demo(path, 31, train_indices=indices[:400], test_indices=indices[400:])
    with pytest.raises(ValueError, match=r"do not split the p²=961 pairs of p=31.*another p"):
        read_foreign(path)


def test_demo_with_layernorm_is_refused(tmp_path):
    path = tmp_path / "ln.pth"
    model = demo_model(31)
    sd = dict(model.state_dict(), **{"ln_final.w": torch.ones(128)})
    write_demo(path, 31, model=sd)
    with pytest.raises(ValueError, match=r"unexpected \['ln_final\.w'\]"):
        read_foreign(path)


def test_original_weights_from_another_p(tmp_path):
    path = tmp_path / "mixed.pth"
    write_original(path, 113, 32)
    with pytest.raises(ValueError, match=r"unembed\.W_U is 32 wide, but config\.p=113 needs at least p\+1=114.*another p"):
        read_foreign(path)


def test_original_checkpoint_with_wrong_shape(tmp_path):
    bad = original_weights(114)
    bad["blocks.0.mlp.W_out"] = bad["blocks.0.mlp.W_out"][:, :256]
    path = tmp_path / "bad.pth"
    write_original(path, 113, 114, state_dicts=[original_weights(114), bad, original_weights(114)])
    expected = r"state_dicts\[1\] does not match.*blocks\.0\.mlp\.W_out is \(128, 256\), expected \(128, 512\)"
    with pytest.raises(ValueError, match=expected):
        read_foreign(path)


def test_original_unknown_function(tmp_path):
    path = tmp_path / "rand.pth"
    write_original(path, 31, 114, config=original_config(31, fn_name="rand"))
    with pytest.raises(ValueError, match=r"fn_name='rand'"):
        read_foreign(path)


def test_original_subtract_maps_to_sub(tmp_path):
    path = tmp_path / "sub.pth"
    write_original(path, 31, 114, config=original_config(31, fn_name="subtract"))
    assert read_foreign(path).config.op == "sub"


# ---------------------------------------------------------------------------------------------
# Through the public entry points: load_checkpoint, ablate_frequencies, `mechgrok info`


def test_load_checkpoint_reads_the_demo_file(tmp_path):
    path = tmp_path / "grokking_demo.pth"
    demo, _ = write_demo(path, 31)
    from mechgrok import ablate_frequencies, load_checkpoint

    run = load_checkpoint(path, p=31)
    assert run.source_format == "transformer_lens_demo"
    tokens = ModularTask(31).tokens()
    with torch.no_grad():
        assert torch.equal(run.model(tokens), demo(tokens))
    assert attached(run.model).split is run.split
    # a loaded foreign model works with the analyses as it is
    result = ablate_frequencies(run.model, [1, 2], site="logits", mode="remove")
    assert math.isfinite(result.loss_all)
    with pytest.raises(ValueError, match="p=31, not p=113"):
        load_checkpoint(path, p=113)


def test_load_checkpoint_reads_the_original_file(tmp_path, capsys):
    path = tmp_path / "full_run_data.pth"
    data = write_original(path, 31, 114)
    from mechgrok import load_checkpoint
    from mechgrok.cli import main

    run = load_checkpoint(path)
    assert run.source_format == "original" and run.model.cfg.d_vocab_out == 114
    tokens = ModularTask(31).tokens()
    with torch.no_grad():
        torch.testing.assert_close(run.model(tokens)[:, -1].double(), original_forward(data["model"], tokens)[:, -1],
                                   atol=1e-5, rtol=0)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[original]" in out and "mod 31" in out and "d_vocab_out 114" in out


# ---------------------------------------------------------------------------------------------
# Foreign runs as ordinary runs: load_epoch, iter_checkpoints, `mechgrok import`


def _snapshot(folder):
    """Every file under ``folder`` with its bytes and mtime, to show nothing changed."""
    return {str(f.relative_to(folder)): (f.read_bytes(), f.stat().st_mtime_ns) for f in sorted(folder.rglob("*")) if f.is_file()}


def _assert_weights_equal(model, state, names=HOOKED_PARAMETERS):
    params = dict(model.named_parameters())
    for name in names:
        assert torch.equal(params[name].detach(), state[name]), name


def test_demo_run_load_epoch_and_iter_checkpoints(tmp_path, monkeypatch):
    path = tmp_path / "grokking_demo.pth"
    _, data = write_demo(path, 31)
    from mechgrok import formats, load_checkpoint

    run = load_checkpoint(path)
    # the final weights are the epoch-299 checkpoint: the demo numbers a checkpoint by the step just taken
    assert run.checkpoint_epochs == [99, 199, 299] and run.epoch == 299
    for epoch, saved in zip([99, 199, 299], data["checkpoints"]):
        model = run.load_epoch(epoch)
        _assert_weights_equal(model, saved)
        assert attached(model).split is run.split and model is not run.model
    _assert_weights_equal(run.load_epoch(run.epoch), data["model"])
    with pytest.raises(ValueError, match=r"epoch 100 was not saved in .*grokking_demo\.pth; saved epochs are 99, 199, 299"):
        run.load_epoch(100)

    # iter_checkpoints reads the file once and converts one checkpoint per step
    converted = []
    at = formats._Checkpoints.at
    monkeypatch.setattr(formats._Checkpoints, "at", lambda self, i: converted.append(i) or at(self, i))
    loads = []
    safe_load = formats._safe_load
    monkeypatch.setattr(formats, "_safe_load", lambda p: loads.append(p) or safe_load(p))
    walk = run.iter_checkpoints()
    first_epoch, first = next(walk)
    assert first_epoch == 99 and converted == [0]
    _assert_weights_equal(first, data["checkpoints"][0])
    rest = list(walk)
    assert [epoch for epoch, _ in rest] == [199, 299] and converted == [0, 1, 2] and len(loads) == 1
    for (_, model), saved in zip(rest, data["checkpoints"][1:]):
        _assert_weights_equal(model, saved)


def test_original_run_load_epoch_and_import(tmp_path):
    path = tmp_path / "full_run_data.pth"
    data = write_original(path, 31, 114)  # 114-wide embed and unembed, as the original's p=31 runs have
    from mechgrok import load_checkpoint
    from mechgrok.cli import main

    run = load_checkpoint(path)
    # checkpoints at 0, 100, 200, and the final weights after the 250 steps the loss history records
    assert run.checkpoint_epochs == [0, 100, 200, 249] and run.epoch == 249
    tokens = ModularTask(31).tokens()
    some = tokens[torch.randperm(len(tokens), generator=torch.Generator().manual_seed(1))[:200]]
    weights = {**dict(zip([0, 100, 200], data["state_dicts"])), 249: data["model"]}
    iterated = dict(run.iter_checkpoints())
    assert list(iterated) == [0, 100, 200, 249]
    for epoch, original in weights.items():
        model = run.load_epoch(epoch)
        assert model.cfg.d_vocab_out == 114  # as load_checkpoint keeps it
        with torch.no_grad():
            want = original_forward(original, some)[:, -1]
            torch.testing.assert_close(model(some)[:, -1].double(), want, atol=1e-5, rtol=0)
            torch.testing.assert_close(iterated[epoch](some)[:, -1].double(), want, atol=1e-5, rtol=0)

    out = tmp_path / "imported"
    assert main(["import", str(path), "--out", str(out)]) == 0
    assert runs.checkpoint_epochs(out) == [0, 100, 200, 249]
    cfg = runs.read_config(out)
    assert (cfg.p, cfg.epochs, cfg.checkpoint_every, cfg.seed, cfg.init) == (31, 249, 100, 3, "paper")
    assert runs.imported_from(out)["source_d_vocab_out"] == 114
    for epoch in runs.checkpoint_epochs(out):
        loaded = runs.load_run(out, epoch=epoch)
        assert loaded.model.cfg.d_vocab_out == 31  # narrowed to the p residues' logits
        reference = run.load_epoch(epoch)
        for name, param in reference.named_parameters():
            want = param.detach()[..., :31] if name.startswith("unembed.") else param.detach()
            assert torch.equal(dict(loaded.model.named_parameters())[name].detach(), want), (epoch, name)
        with torch.no_grad():  # the p task logits are the original model's, untouched
            torch.testing.assert_close(loaded.model(some)[:, -1].double(),
                                       original_forward(weights[epoch], some)[:, -1, :31], atol=1e-5, rtol=0)


def _grokked_demo_file(path):
    """A demo-format file, saved as the demo saves it, holding three checkpoints of a tiny run that
    groks (mechgrok's own trainer): TransformerLens state_dicts and a real HookedTransformerConfig."""
    from _tiny_run import tiny_run
    from mechgrok.models.transformer import hooked_config

    src = tiny_run()
    epochs = [200, 600, 1000]
    states = [runs.load_run(src, epoch=e).model.state_dict() for e in epochs]
    cfg = runs.read_config(src)
    split = runs.read_split(src)
    losses = torch.rand(2, 1001, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    hooked = hooked_config(cfg.replace(init="transformer_lens"))
    assert type(hooked).__module__.startswith("transformer_lens")
    _, data = write_demo(path, cfg.p, model=states[-1], config=hooked, checkpoints=states, checkpoint_epochs=epochs,
                         train_indices=split.train, test_indices=split.test,
                         train_losses=losses[0].tolist(), test_losses=losses[1].tolist())
    return data


def test_import_demo_run_then_analyse_it(tmp_path, capsys):
    from mechgrok.analysis.progress import load_progress
    from mechgrok.cli import main
    from mechgrok.reproduce.pipeline import reproduce
    from mechgrok.training.loop import train

    path = tmp_path / "grokking_demo.pth"
    data = _grokked_demo_file(path)
    out = tmp_path / "RUN"
    assert main(["import", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "[transformer_lens_demo]" in text and "p=31" in text and "3 checkpoints, epochs 200..1000" in text

    names = {f.name for f in out.iterdir()}
    assert names == {"config.json", "split.safetensors", "metrics.csv", "checkpoints", "imported.json", "source_losses.csv"}
    assert not (out / runs.RESUME_FILE).exists()
    cfg = runs.read_config(out)
    assert (cfg.p, cfg.d_model, cfg.d_mlp, cfg.epochs, cfg.checkpoint_every, cfg.frac_train) == (31, 64, 256, 1000, 400, 0.7)
    split = runs.read_split(out)
    assert torch.equal(split.train, data["train_indices"]) and torch.equal(split.test, data["test_indices"])
    for epoch, saved in zip([200, 600, 1000], data["checkpoints"]):
        _assert_weights_equal(runs.load_run(out, epoch=epoch).model, saved)

    # metrics.csv: loss and accuracy of each checkpoint, checked against TransformerLens's own forward
    metrics = runs.read_metrics(out)
    assert metrics["epoch"].tolist() == [200, 600, 1000]
    tokens, labels = ModularTask(31).tokens(), ModularTask(31).labels()
    for row in metrics.itertuples():
        model = runs.load_run(out, epoch=row.epoch).model
        with torch.no_grad():
            logits = model(tokens)[:, -1].double()
        for name, idx in (("train", split.train), ("test", split.test)):
            loss = torch.nn.functional.cross_entropy(logits[idx], labels[idx]).item()
            acc = (logits[idx].argmax(-1) == labels[idx]).double().mean().item()
            assert getattr(row, f"{name}_loss") == pytest.approx(loss, rel=1e-4, abs=1e-7)
            assert getattr(row, f"{name}_acc") == pytest.approx(acc, abs=1e-12)
    assert metrics["test_acc"].iloc[-1] > 0.99  # the tiny run grokked, and the import kept it so
    source = pd.read_csv(out / runs.SOURCE_LOSSES_FILE)
    assert source["train_loss"].tolist() == data["train_losses"] and source["epoch"].tolist() == list(range(1001))

    prog = load_progress(out)
    assert prog.measures["epoch"].tolist() == [200, 600, 1000]
    assert prog.measures["test_acc"].tolist() == pytest.approx(metrics["test_acc"].tolist(), abs=1e-12)

    before = _snapshot(out / runs.CHECKPOINT_DIR)
    # reproduce(RUN) does not yet take the saved config by itself, so it is passed
    result = reproduce(out, epochs=cfg.epochs, config=cfg)
    assert result.report.exists() and result.report == out / "report.html"
    assert result.summary["reused_seeds"] == [cfg.seed]
    assert _snapshot(out / runs.CHECKPOINT_DIR) == before and not (out / runs.RESUME_FILE).exists()

    # training on cannot be exact without the optimizer state: refused, and nothing is touched
    before = _snapshot(out)
    with pytest.raises(ValueError, match="was imported from .*grokking_demo.pth.*cannot be trained further"):
        train(cfg.replace(epochs=2000), out, tune_process=False)
    assert main(["train", "--out", str(out), "--epochs", "2000", "--no-progress"]) == 2
    assert "cannot be trained further" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_import_refuses_a_non_empty_folder(tmp_path, capsys):
    from mechgrok.cli import main
    from mechgrok.formats import import_run

    path = tmp_path / "grokking_demo.pth"
    write_demo(path, 31)
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    before = _snapshot(out)
    with pytest.raises(ValueError, match=r"busy is not empty \(it holds notes\.txt\).*nothing in it was touched"):
        import_run(path, out)
    assert main(["import", str(path), "--out", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert _snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["busy", "grokking_demo.pth"]

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        import_run(path, a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert import_run(path, empty) == empty and runs.checkpoint_epochs(empty) == [99, 199, 299]


def test_interrupted_import_leaves_nothing(tmp_path, monkeypatch):
    from mechgrok.formats import import_run

    path = tmp_path / "grokking_demo.pth"
    write_demo(path, 31)
    save = runs.save_checkpoint
    calls = []

    def killed_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        save(*args, **kwargs)

    monkeypatch.setattr(runs, "save_checkpoint", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        import_run(path, tmp_path / "RUN")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grokking_demo.pth"]  # no run, no temporary folder


@pytest.mark.parametrize("zip_format", [True, False])
def test_import_refuses_a_malicious_pickle(tmp_path, capsys, zip_format):
    from mechgrok.cli import main

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "config": Payload(marker)}, path, _use_new_zipfile_serialization=zip_format)
    assert main(["import", str(path), "--out", str(tmp_path / "RUN")]) == 2
    assert "disallowed object" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "RUN").exists()
