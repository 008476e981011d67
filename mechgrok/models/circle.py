"""Pearce et al.'s constructed circle: a frozen circular embedding and two trained 2-wide projections.

::

    E      = (cos iω, sin iω), i = 0..p-1, ω = 2π/p, each column scaled to unit norm (frozen)
    pre    = E[a] W_in + E[b] W_in                     W_in  [2, neuron]  (the explorable's W_in-proj)
    logits = act(pre) W_out Eᵀ                         W_out [neuron, 2]  (W_out-proj)

``act`` is ReLU or x² (``cfg.act_fn``); with x² and evenly spaced neurons the construction is
exact (:mod:`mechgrok.analysis.constructions`). Only W_in and W_out are weights; E is a
buffer, saved with every checkpoint so a file holds the whole model. The hooks and sites are
those of :mod:`mechgrok.models.mlp`, so the same ablations and readouts apply.
Init: W_in and W_out truncated normal of std 1/√fan_in, from ``cfg.seed``.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from mechgrok.models.family import ModelFamily
from mechgrok.models.init import lecun_truncated
from mechgrok.models.lens import HookedRootModule, HookPoint
from mechgrok.models.mlp import MLP_HOOK_MEANINGS, MLP_HOOK_SHAPES, MLP_SITES, _Part, _pre_activations

__all__ = ["CircleMLP", "FAMILY", "circle_embedding"]

ACTIVATIONS = {"relu": torch.relu, "x2": torch.square}


def circle_embedding(p: int, dtype: torch.dtype = torch.float32) -> Float[Tensor, "p 2"]:
    """(cos iω, sin iω) for i = 0..p-1, each column scaled to unit norm."""
    angle = torch.arange(p, dtype=torch.float64) * (2 * math.pi / p)
    E = torch.stack([angle.cos(), angle.sin()], dim=1)
    return (E / E.norm(dim=0, keepdim=True)).to(dtype)


class CircleMLP(HookedRootModule):
    """The constructed circle model (module docstring)."""

    def __init__(self, cfg):
        super().__init__()
        n = cfg.d_mlp
        self.p, self.act_fn = cfg.p, cfg.act_fn
        g = torch.Generator().manual_seed(cfg.seed)
        self.embed, self.mlp, self.unembed = _Part(), _Part(), _Part()
        self.embed.register_buffer("W_E", circle_embedding(cfg.p))
        self.mlp.W_in = nn.Parameter(lecun_truncated((2, n), 2, g))
        self.mlp.W_out = nn.Parameter(lecun_truncated((n, 2), n, g))
        self.hook_embed = HookPoint()
        self.mlp.hook_pre, self.mlp.hook_post = HookPoint(), HookPoint()
        self.unembed.hook_out = HookPoint()
        self.setup()

    @property
    def W_E(self) -> Float[Tensor, "p 2"]:
        return self.embed.W_E

    @property
    def W_L(self) -> Float[Tensor, "neuron c"]:
        return self.mlp.W_out @ self.embed.W_E.T

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch 1 c"]:
        pre = self.mlp.hook_pre(_pre_activations(self, tokens, self.mlp.W_in))
        post = self.mlp.hook_post(ACTIVATIONS[self.act_fn](pre))
        return self.unembed.hook_out((post @ self.W_L)[:, None])


FAMILY = ModelFamily(
    name="circle",
    build=CircleMLP,
    hook_shapes=MLP_HOOK_SHAPES,
    hook_meanings={**MLP_HOOK_MEANINGS, "mlp.hook_post": "neuron activations after ReLU or x²; the neuron ablation site"},
    sites=MLP_SITES,
    parameter_names=("mlp.W_in", "mlp.W_out"),
    neuron_logit_map=lambda model: model.W_L,
    description="Pearce et al.'s constructed circle: frozen (cos, sin) embedding, trained 2-wide in and out projections",
)
