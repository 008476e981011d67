"""The sequence tasks' model: a TransformerLens ``HookedTransformer`` of any depth, with or without MLPs.

The Alignment Forum post trains a 1-layer transformer on digit addition, a 2-layer attention-only
one on repeated subsequences (induction) and a 1-layer attention-only one on max of a list.
``Config.n_layers`` and ``Config.attn_only`` pick the shape; there is no LayerNorm (as in the
mainline), learned positional embeddings, ReLU MLPs. The vocabulary and context come from the
task (``Config.d_vocab``, ``d_vocab_out``, ``n_ctx``).

Init: ``init='paper'`` draws every weight from N(0, 1/d_model) (W_U: N(0, 1/d_vocab)) and zeroes
the biases, as the mainline does; ``init='transformer_lens'`` is TransformerLens's own, seeded by
``cfg.seed``. Every parameter trains (unlike the mainline, whose non-MLP biases are frozen at 0).
The family trains with the general sequence trainer (:mod:`mechgrok.training.sequence`).
"""

from __future__ import annotations

from mechgrok import hooks
from mechgrok.config import Config
from mechgrok.models.family import ModelFamily
from mechgrok.models.lens import HookedTransformer, HookedTransformerConfig, new_hooked_transformer
from mechgrok.models.transformer import paper_init

import torch

__all__ = ["FAMILY", "build_model", "hooked_config"]


def hooked_config(cfg: Config) -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        n_heads=cfg.n_heads,
        d_mlp=None if cfg.attn_only else cfg.d_mlp,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab_out,
        n_ctx=cfg.n_ctx,
        act_fn="relu",
        attn_only=cfg.attn_only,
        normalization_type=None,
        positional_embedding_type="standard",
        seed=cfg.seed if cfg.init == "transformer_lens" else None,
        init_weights=cfg.init == "transformer_lens",
        device="cpu",
    )


def build_model(cfg: Config) -> HookedTransformer:
    """A ``HookedTransformer`` of the config's shape, initialised from ``cfg.seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):  # TransformerLens seeds the global RNG
        model = new_hooked_transformer(hooked_config(cfg))
    if cfg.init == "paper":
        paper_init(model, cfg)
    return model


# The hook points every shape of this family has (layer 0; deeper layers repeat them as blocks.<l>.*).
_SHAPES = {name: hooks.HOOK_SHAPES[name] for name in (
    hooks.EMBED, hooks.POS_EMBED, hooks.RESID_PRE, hooks.ATTN_SCORES, hooks.ATTN_PATTERN, hooks.ATTN_OUT, hooks.RESID_POST)}
_MEANINGS = {
    hooks.EMBED: "token embeddings W_E[token]",
    hooks.POS_EMBED: "positional embeddings W_pos[pos]",
    hooks.RESID_PRE: "residual stream entering block 0 (embed + pos_embed)",
    hooks.ATTN_SCORES: "block 0's attention scores before softmax (masked, scaled)",
    hooks.ATTN_PATTERN: "block 0's attention pattern [batch, head, query_pos, key_pos]",
    hooks.ATTN_OUT: "block 0's attention output added to the residual stream",
    hooks.RESID_POST: "residual stream after block 0",
}

FAMILY = ModelFamily(
    name="sequence_transformer",
    build=build_model,
    hook_shapes=_SHAPES,
    hook_meanings=_MEANINGS,
    sites={"embeddings": hooks.Site(hooks.EMBED), "attention": hooks.Site(hooks.ATTN_PATTERN)},
    parameter_names=(),
    trainer="sequence",
    description="a LayerNorm-free HookedTransformer of n_layers blocks (attn_only: no MLPs) on the sequence tasks",
)
