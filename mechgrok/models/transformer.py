"""The modular-arithmetic model: a 1-layer TransformerLens ``HookedTransformer`` (Nanda et al.).

Everything else reads the model through its hook names and weight properties (``W_E``,
``W_U``, ``blocks[0].mlp.W_out``). TransformerLens itself is imported in
:mod:`mechgrok.models.lens` only.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager

import numpy as np
import torch

from mechgrok import hooks
from mechgrok.config import Config
from mechgrok.models import original
from mechgrok.models.family import ModelFamily
from mechgrok.models.lens import HookedTransformer, HookedTransformerConfig, new_hooked_transformer
from mechgrok.tasks.base import Split

__all__ = ["BUFFER_NAMES", "FAMILY", "FROZEN_BIASES", "HookedTransformer", "PARAMETER_NAMES", "build_model", "frozen_parameters",
           "hooked_config", "original_init", "paper_init"]

# The model's parameters, in build_model's (TransformerLens's) order.
PARAMETER_NAMES = (
    "embed.W_E",
    "pos_embed.W_pos",
    "blocks.0.attn.W_Q",
    "blocks.0.attn.W_O",
    "blocks.0.attn.b_Q",
    "blocks.0.attn.b_O",
    "blocks.0.attn.W_K",
    "blocks.0.attn.W_V",
    "blocks.0.attn.b_K",
    "blocks.0.attn.b_V",
    "blocks.0.mlp.W_in",
    "blocks.0.mlp.b_in",
    "blocks.0.mlp.W_out",
    "blocks.0.mlp.b_out",
    "unembed.W_U",
    "unembed.b_U",
)
# Buffers, not weights: the causal mask and its fill value. Their shapes vary across
# TransformerLens versions, so checkpoints leave them out and a model keeps its own.
BUFFER_NAMES = frozenset({"blocks.0.attn.mask", "blocks.0.attn.IGNORE"})

# The original model has MLP biases only; a HookedTransformer's other biases are held at zero.
FROZEN_BIASES = ("blocks.0.attn.b_Q", "blocks.0.attn.b_K", "blocks.0.attn.b_V", "blocks.0.attn.b_O", "unembed.b_U")
_ALL_BIASES = tuple(name for name in PARAMETER_NAMES if name.rsplit(".", 1)[-1].startswith("b_"))


def frozen_parameters(cfg: Config) -> tuple[str, ...]:
    """The parameters held at zero and never trained: the non-MLP biases (``frozen_biases='non_mlp'``),
    or every bias (``'all'``, the TransformerLens demo's ``requires_grad = False`` on each ``b_``)."""
    return _ALL_BIASES if cfg.frozen_biases == "all" else FROZEN_BIASES


def hooked_config(cfg: Config, d_vocab_out: int | None = None) -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=1,
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab_out if d_vocab_out is None else d_vocab_out,
        n_ctx=cfg.n_ctx,
        act_fn="relu",
        normalization_type=None,
        seed=cfg.init_seed if cfg.init == "transformer_lens" else None,
        init_weights=cfg.init == "transformer_lens",
        device="cpu",
    )


def build_model(
    cfg: Config,
    *,
    d_vocab_out: int | None = None,
    split: Split | None = None,
) -> HookedTransformer:
    """A ``HookedTransformer`` of the paper's shape (docs/training.md), initialised from ``cfg.init_seed``
    (``model_seed``, else ``seed``).

    ``cfg.init == "paper"``: every weight ~ N(0, 1/d_model), W_U ~ N(0, 1/d_vocab), biases 0.
    ``cfg.init == "transformer_lens"``: TransformerLens's own init, ``HookedTransformerConfig(seed=...)``.
    ``cfg.init == "original"``: the original code's module drawn in its order (:func:`original_init`).
    The global RNGs (torch's, Python's and numpy's, which TransformerLens seeds) are left as they
    were. The biases of :func:`frozen_parameters` are zero and frozen. The unembed is
    ``cfg.d_vocab_out`` wide (p + 1 with ``unembed_equals``); ``d_vocab_out`` overrides it (a
    checkpoint read as its file has it). With ``split``, the model is attached to its task and
    split (:func:`mechgrok.runs.attach`), so ``ablate_frequencies(model, ks)`` knows what it was
    trained on.
    """
    with _global_rngs_kept():  # TransformerLens seeds the global RNGs
        model = new_hooked_transformer(hooked_config(cfg, d_vocab_out))
    if cfg.init == "paper":
        paper_init(model, cfg)
    elif cfg.init == "original":
        original_init(model, cfg)
    frozen = frozen_parameters(cfg)
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
            param.data.zero_()
    if split is not None:
        from mechgrok.runs import attach

        attach(model, cfg, split)
    return model


@contextmanager
def _global_rngs_kept():
    python, numpy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


@torch.no_grad()
def paper_init(model: HookedTransformer, cfg: Config) -> None:
    generator = torch.Generator().manual_seed(cfg.init_seed)
    for name, param in model.named_parameters():
        if name.split(".")[-1].startswith("b_"):
            param.zero_()
            continue
        std = 1 / math.sqrt(cfg.d_vocab if name == "unembed.W_U" else cfg.d_model)
        param.copy_(torch.randn(param.shape, generator=generator) * std)


@torch.no_grad()
def original_init(model: HookedTransformer, cfg: Config) -> None:
    """The original code's init: its module's weights drawn as ``torch.manual_seed(init_seed)``
    and building the module would draw them (:func:`mechgrok.models.original.original_weights`),
    converted into this model's orientation. W_U is drawn p + 1 wide, as the original's; a model
    with a p-wide unembed keeps its first p columns (the ``=`` column is dropped)."""
    generator = torch.Generator().manual_seed(cfg.init_seed)
    weights = original.original_weights(cfg.n_heads, cfg.d_head, cfg.d_model, cfg.d_mlp, cfg.d_vocab, generator, cfg.n_ctx)
    hooked = original.to_hooked(weights, cfg.p)
    for name, param in model.named_parameters():
        value = hooked[name]
        if name in ("unembed.W_U", "unembed.b_U"):
            value = value[..., : param.shape[-1]]
        param.copy_(value)


FAMILY = ModelFamily(
    name="transformer",
    build=build_model,
    hook_shapes=hooks.HOOK_SHAPES,
    hook_meanings=hooks.HOOK_MEANINGS,
    sites={
        "embeddings": hooks.Site(hooks.EMBED),
        "neurons": hooks.Site(hooks.MLP_POST, hooks.EQUALS_POS),
        "logits": hooks.Site(hooks.LOGITS, hooks.EQUALS_POS),
    },
    parameter_names=PARAMETER_NAMES,
    buffer_names=BUFFER_NAMES,
    fast_step="mechgrok.models.fastpath:FastPath",
    stacked_step="mechgrok.models.stacked_fastpath:StackedFastPath",
    neuron_logit_map=lambda model: model.blocks[0].mlp.W_out @ model.W_U,
    description="Nanda et al.'s 1-layer ReLU transformer without LayerNorm, on [a, b, =]",
)
