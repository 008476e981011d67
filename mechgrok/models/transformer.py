"""The modular-arithmetic model: a 1-layer TransformerLens ``HookedTransformer`` (Nanda et al.).

Everything else reads the model through its hook names and weight properties (``W_E``,
``W_U``, ``blocks[0].mlp.W_out``). TransformerLens itself is imported in
:mod:`mechgrok.models.lens` only.
"""

from __future__ import annotations

import math

import torch

from mechgrok import hooks
from mechgrok.config import Config
from mechgrok.models.family import ModelFamily
from mechgrok.models.lens import HookedTransformer, HookedTransformerConfig, new_hooked_transformer
from mechgrok.tasks.base import Split

__all__ = ["BUFFER_NAMES", "FAMILY", "FROZEN_BIASES", "HookedTransformer", "PARAMETER_NAMES", "build_model", "hooked_config"]

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
        seed=cfg.seed if cfg.init == "transformer_lens" else None,
        init_weights=cfg.init == "transformer_lens",
        device="cpu",
    )


def build_model(
    cfg: Config,
    *,
    d_vocab_out: int | None = None,
    split: Split | None = None,
) -> HookedTransformer:
    """A ``HookedTransformer`` of the paper's shape (docs/training.md), initialised from ``cfg.seed``.

    ``cfg.init == "paper"``: every weight ~ N(0, 1/d_model), W_U ~ N(0, 1/d_vocab), biases 0.
    ``cfg.init == "transformer_lens"``: TransformerLens's own init with ``seed=cfg.seed``.
    The global RNG is left as it was either way. The non-MLP biases are zero and frozen.
    ``d_vocab_out`` overrides the unembed width (the original code trained a p+1 wide one).
    With ``split``, the model is attached to its task and split (:func:`mechgrok.runs.attach`),
    so ``ablate_frequencies(model, ks)`` knows what it was trained on.
    """
    with torch.random.fork_rng(devices=[]):  # TransformerLens seeds the global RNG
        model = new_hooked_transformer(hooked_config(cfg, d_vocab_out))
    if cfg.init == "paper":
        paper_init(model, cfg)
    for name, param in model.named_parameters():
        if name in FROZEN_BIASES:
            param.requires_grad_(False)
            if cfg.init == "paper":
                param.data.zero_()
    if split is not None:
        from mechgrok.runs import attach

        attach(model, cfg, split)
    return model


@torch.no_grad()
def paper_init(model: HookedTransformer, cfg: Config) -> None:
    generator = torch.Generator().manual_seed(cfg.seed)
    for name, param in model.named_parameters():
        if name.split(".")[-1].startswith("b_"):
            param.zero_()
            continue
        std = 1 / math.sqrt(cfg.d_vocab if name == "unembed.W_U" else cfg.d_model)
        param.copy_(torch.randn(param.shape, generator=generator) * std)


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
