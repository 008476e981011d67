"""Pearce et al.'s one-hidden-layer MLPs on a+b mod p, and their factorings (four families).

The explorable's model, with a tied embedding E [p, d_model] and no biases::

    pre    = E[a] W_in + E[b] W_in                      [batch, neuron]
    logits = ReLU(pre) W_out Eᵀ                          [batch, c]

Its variants, each its own family (the weights' names say which matrices exist):

==================  ==============================  ===================================
family              input side                      output side
==================  ==============================  ===================================
mlp                 E W_in (``embed.W_E``,           W_out Eᵀ (``mlp.W_out``, the same E)
                    ``mlp.W_in``)
mlp_unfactored      W_input [p, neuron]              W_output [neuron, c]
mlp_collapsed_in    W_input = E W_in collapsed       W_out Eᵀ, factored
mlp_collapsed_out   E W_in, factored                 W_output = W_out Eᵀ collapsed
==================  ==============================  ===================================

The input is the modular task's tokens ``[a, b, =]``; the ``=`` token is ignored. The model
returns ``[batch, 1, c]`` logits (one output position). Hook points, in TransformerLens's
vocabulary (docs/hooks.md): ``hook_embed`` (the a and b input rows, ``[batch, 2, d]``),
``mlp.hook_pre`` and ``mlp.hook_post`` (``[batch, neuron]``), ``unembed.hook_out``
(``[batch, 1, c]``). ``model.W_E`` is the input embedding of the residues (``W_input`` when
the input side is collapsed) and ``model.W_L`` the neuron-to-logit map [neuron, c], so the
Fourier readouts of :mod:`mechgrok.analysis.circuits` read every variant alike.

Init (the explorable's code): the embedding is variance scaling (scale 2, fan-in p), every
other matrix a truncated normal of std 1/√fan_in; a collapsed matrix is initialised as one
matrix of its own shape. All draws come from ``cfg.seed``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from mechgrok import hooks
from mechgrok.models.family import ModelFamily
from mechgrok.models.init import lecun_truncated, variance_scaling
from mechgrok.models.lens import HookedRootModule, HookPoint

__all__ = ["ModularMLP", "VARIANTS", "TIED", "UNFACTORED", "COLLAPSED_IN", "COLLAPSED_OUT", "MLP_HOOK_SHAPES", "MLP_HOOK_MEANINGS"]

# variant -> (input side factored through E, output side factored through E)
VARIANTS: dict[str, tuple[bool, bool]] = {
    "tied": (True, True),
    "unfactored": (False, False),
    "collapsed_in": (False, True),
    "collapsed_out": (True, False),
}

MLP_HOOK_SHAPES: dict[str, str] = {
    hooks.EMBED: "batch pos d_model",
    "mlp.hook_pre": "batch neuron",
    "mlp.hook_post": "batch neuron",
    hooks.LOGITS: "batch out_pos d_vocab_out",
}
MLP_HOOK_MEANINGS: dict[str, str] = {
    hooks.EMBED: "the a and b rows of the input embedding (E, or W_input when collapsed); the embedding ablation site",
    "mlp.hook_pre": "neuron pre-activations, E[a] W_in + E[b] W_in",
    "mlp.hook_post": "neuron activations after ReLU; the neuron ablation site",
    hooks.LOGITS: "logits, one output position; the logit ablation site",
}
MLP_SITES = {
    "embeddings": hooks.Site(hooks.EMBED),
    "neurons": hooks.Site("mlp.hook_post"),
    "logits": hooks.Site(hooks.LOGITS, -1),
}


class _Part(nn.Module):
    """A named container, so weights and hooks read ``mlp.W_in``, ``mlp.hook_post`` as in TransformerLens."""


class ModularMLP(HookedRootModule):
    """One of Pearce et al.'s a+b mod p MLPs (``variant``: a key of :data:`VARIANTS`)."""

    def __init__(self, cfg, variant: str = "tied"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r} is not one of {list(VARIANTS)}")
        p, d, n = cfg.p, cfg.d_model, cfg.d_mlp
        self.variant, self.p = variant, p
        factored_in, factored_out = VARIANTS[variant]
        g = torch.Generator().manual_seed(cfg.seed)
        self.embed, self.mlp, self.unembed = _Part(), _Part(), _Part()
        if factored_in or factored_out:
            self.embed.W_E = nn.Parameter(variance_scaling((p, d), p, 2.0, g))
        if factored_in:
            self.mlp.W_in = nn.Parameter(lecun_truncated((d, n), d, g))
        else:
            self.mlp.W_input = nn.Parameter(lecun_truncated((p, n), p, g))
        if factored_out:
            self.mlp.W_out = nn.Parameter(lecun_truncated((n, d), n, g))
        else:
            self.mlp.W_output = nn.Parameter(lecun_truncated((n, p), n, g))
        self.hook_embed = HookPoint()
        self.mlp.hook_pre, self.mlp.hook_post = HookPoint(), HookPoint()
        self.unembed.hook_out = HookPoint()
        self.setup()

    @property
    def W_E(self) -> Float[Tensor, "p d_model"]:
        """The input embedding of the residues: E, or W_input [p, neuron] when the input side is collapsed."""
        return self.embed.W_E if VARIANTS[self.variant][0] else self.mlp.W_input

    @property
    def W_L(self) -> Float[Tensor, "neuron c"]:
        """The neuron-to-logit map: W_out Eᵀ, or W_output when the output side is collapsed."""
        return self.mlp.W_out @ self.embed.W_E.T if VARIANTS[self.variant][1] else self.mlp.W_output

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch 1 c"]:
        pre = self.mlp.hook_pre(_pre_activations(self, tokens, self.mlp.W_in if VARIANTS[self.variant][0] else None))
        post = self.mlp.hook_post(torch.relu(pre))
        return self.unembed.hook_out((post @ self.W_L)[:, None])  # [batch, 1, c]


def _pre_activations(model, tokens: Int[Tensor, "batch pos"], W_in: Tensor | None) -> Float[Tensor, "batch neuron"]:
    """E[a] W_in + E[b] W_in (W_in None: E[a] + E[b], an input side collapsed to W_input).

    With a hook on ``hook_embed`` the a and b rows go through it and then W_in, so an edit of
    the embeddings reaches the neurons. Without one (training), the same sum is read from the
    table E W_in [p, neuron], computed once: p rows instead of one row per example, about
    batch/p times fewer multiply-adds. The two orders round differently, by about 1e-7 relative.
    """
    a, b = tokens[:, 0], tokens[:, 1]
    if model.hook_embed.fwd_hooks or W_in is None:
        rows = model.hook_embed(model.W_E[tokens[:, :2]])  # [batch, 2 (a, b), d_model]
        return (rows[:, 0] + rows[:, 1]) if W_in is None else rows[:, 0] @ W_in + rows[:, 1] @ W_in
    table = model.W_E @ W_in  # [p, neuron]
    return table[a] + table[b]


def _family(variant: str, name: str, description: str) -> ModelFamily:
    factored_in, factored_out = VARIANTS[variant]
    names = (("embed.W_E",) if factored_in or factored_out else ()) + (
        ("mlp.W_in",) if factored_in else ("mlp.W_input",)) + (("mlp.W_out",) if factored_out else ("mlp.W_output",))
    return ModelFamily(
        name=name,
        build=lambda cfg: ModularMLP(cfg, variant),
        # a collapsed input side embeds straight into neuron space
        hook_shapes=MLP_HOOK_SHAPES if factored_in else {**MLP_HOOK_SHAPES, hooks.EMBED: "batch pos neuron"},
        hook_meanings=MLP_HOOK_MEANINGS,
        sites=MLP_SITES,
        parameter_names=names,
        neuron_logit_map=lambda model: model.W_L,
        description=description,
    )


TIED = _family("tied", "mlp", "Pearce et al.'s 1-hidden-layer MLP with a tied embedding: ReLU(E[a]W_in + E[b]W_in) W_out Eᵀ")
UNFACTORED = _family("unfactored", "mlp_unfactored", "the same MLP with W_input and W_output unfactored, no embedding")
COLLAPSED_IN = _family("collapsed_in", "mlp_collapsed_in", "the MLP with E W_in collapsed into W_input; W_out Eᵀ factored")
COLLAPSED_OUT = _family("collapsed_out", "mlp_collapsed_out", "the MLP with W_out Eᵀ collapsed into W_output; E W_in factored")
