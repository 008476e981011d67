import warnings

import torch

from mechgrok.config import Config
from mechgrok.models.transformer import FROZEN_BIASES, build_model
from mechgrok.runs import attached, run_info
from mechgrok.tasks.modular import make_split
import pytest


def test_paper_shape():
    model = build_model(Config())
    c = model.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp) == (1, 128, 4, 32, 512)
    assert (c.d_vocab, c.d_vocab_out, c.n_ctx, c.act_fn, c.normalization_type) == (114, 113, 3, "relu", None)


def test_paper_init_scale_and_frozen_biases():
    model = build_model(Config(p=113, seed=1))
    assert abs(model.W_E.std().item() - 128 ** -0.5) < 0.01
    assert abs(model.W_U.std().item() - 114 ** -0.5) < 0.01
    params = dict(model.named_parameters())
    for name in FROZEN_BIASES:
        assert not params[name].requires_grad and bool((params[name] == 0).all())
    assert params["blocks.0.mlp.b_in"].requires_grad and params["blocks.0.mlp.b_out"].requires_grad


def test_init_is_seeded_and_leaves_global_rng():
    state = torch.random.get_rng_state()
    for init in ("paper", "transformer_lens"):
        a, b = build_model(Config(p=7, init=init, seed=5)), build_model(Config(p=7, init=init, seed=5))
        c = build_model(Config(p=7, init=init, seed=6))
        assert torch.equal(a.W_in, b.W_in) and not torch.equal(a.W_in, c.W_in)
    assert torch.equal(state, torch.random.get_rng_state())


def test_no_deprecation_warning_escapes():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(Config(p=7))
    assert not [w for w in caught if "deprecated" in str(w.message)]


def test_attached_task_and_split():
    split = make_split(49, 0.5, 0)
    model = build_model(Config(p=7), split=split)
    assert attached(model).task.p == 7 and attached(model).split is split
    assert not hasattr(model, "mechgrok")  # nothing is patched onto the model
    with pytest.raises(ValueError, match="does not know what this model was trained on"):
        attached(build_model(Config(p=7)))


def test_run_info_is_a_deprecated_shim():
    split = make_split(49, 0.5, 0)
    model = build_model(Config(p=7), split=split)
    with pytest.warns(DeprecationWarning, match="attached"):
        assert run_info(model).split is split
