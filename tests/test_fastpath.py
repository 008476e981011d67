"""The fast path computes exactly HookedTransformer's function: logits, loss and gradients."""

import pytest
import torch

from mechgrok.config import Config
from mechgrok.models.fastpath import FastPath, check_supported
from mechgrok.models.transformer import build_model
from mechgrok.tasks.modular import ModularTask, make_split


def random_model(p: int, seed: int, d_vocab_out: int | None = None):
    """Paper-scale random weights, biases included, all trainable."""
    model = build_model(Config(p=p, seed=seed), d_vocab_out=d_vocab_out)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
            param.requires_grad_(True)
    return model


def reference(model, tokens, labels):
    model.zero_grad(set_to_none=True)
    logits = model(tokens)[:, -1]
    loss = torch.nn.functional.cross_entropy(logits.double(), labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return logits.detach(), loss.detach(), grads


@pytest.mark.parametrize("p, d_vocab_out", [(113, None), (7, None), (13, 14)])
def test_matches_hooked_transformer(p, d_vocab_out):
    task = ModularTask(p)
    split = make_split(task.n_pairs, 0.3 if p > 50 else 0.6, 0)
    tokens, labels = task.tokens()[split.train], task.labels()[split.train]
    model = random_model(p, seed=p, d_vocab_out=d_vocab_out)
    ref_logits, ref_loss, ref_grads = reference(model, tokens, labels)

    fast = FastPath(tokens, labels)
    logits = fast.logits(model)
    assert logits.shape == ref_logits.shape
    assert (logits - ref_logits).abs().max() < 1e-5
    loss, correct = fast.loss_and_grad(model)
    assert abs(loss.item() - ref_loss.item()) < 1e-6 * max(1.0, ref_loss.item())
    assert correct == (ref_logits[:, :p].argmax(-1) == labels).sum()
    scale = max(g.norm() for g in ref_grads.values())
    for name, param in model.named_parameters():
        ref = ref_grads[name]
        err = (param.grad - ref).norm()
        if name.endswith("b_K"):  # exactly zero in theory: only rounding noise on both sides
            assert ref.norm() < 1e-5 * scale and param.grad.norm() < 1e-5 * scale
        else:
            assert err <= 1e-4 * ref.norm(), f"{name}: relative error {err / ref.norm():.2e}"


def test_frozen_parameters_get_no_grad():
    task = ModularTask(7)
    model = build_model(Config(p=7))
    FastPath(task.tokens(), task.labels()).loss_and_grad(model)
    for name, param in model.named_parameters():
        assert (param.grad is None) == (not param.requires_grad), name


def test_step_is_deterministic():
    task = ModularTask(31)
    fast = FastPath(task.tokens(), task.labels())
    model = random_model(31, seed=0)
    fast.loss_and_grad(model)
    first = {n: p.grad.clone() for n, p in model.named_parameters()}
    fast.loss_and_grad(model)
    assert all(torch.equal(first[n], p.grad) for n, p in model.named_parameters())


def test_rejects_unsupported_input():
    task = ModularTask(7)
    tokens = task.tokens()
    with pytest.raises(ValueError, match="same `=` token"):
        FastPath(torch.cat([tokens[:1], tokens[1:2] * 0]), task.labels()[:2])
    with pytest.raises(ValueError, match="tokens \\[batch, 3\\]"):
        FastPath(tokens[:, :2], task.labels())
    model = build_model(Config(p=7))
    model.cfg.n_layers = 2
    with pytest.raises(ValueError, match="n_layers=2"):
        check_supported(model)
