"""The plain 2-layer MLP that groks a+b mod p (Nanda's Alignment Forum post, after Liu et al.).

The input is the sum of the one-hot vectors of a and b, x = onehot(a) + onehot(b) in R^p (a
single 2 when a = b); two linear layers with biases and a ReLU between them::

    pre    = x W_input + b_in = W_input[a] + W_input[b] + b_in      [batch, neuron]
    logits = ReLU(pre) W_output + b_out                            [batch, c]

W_input [p, neuron] and W_output [neuron, c] are Pearce et al.'s unfactored MLP's matrices
(family ``mlp_unfactored`` in :mod:`mechgrok.models.mlp`); this family adds the two biases a
plain MLP has, ``mlp.b_in`` [neuron] and ``mlp.b_out`` [c]. The post: width 256, AdamW lr 1e-3,
weight decay 1.

Hook points are the MLP families' (docs/hooks.md), so the Fourier readouts and the frequency
ablations read it unchanged: ``hook_embed`` holds the a and b rows ``onehot(a) W_input`` and
``onehot(b) W_input`` ([batch, 2, neuron]: their sum is x W_input, the embedding ablation
site), ``mlp.hook_pre`` and ``mlp.hook_post`` ([batch, neuron]), ``unembed.hook_out`` the
logits ([batch, 1, c]). ``model.W_E`` is W_input (the input weights over the residues) and
``model.W_L`` is W_output (the neuron-to-logit map).

Init: W_input and W_output truncated normal of std 1/√fan_in (fan-in p and d_mlp), as the
sibling MLP families; the biases start at 0 (TransformerLens's choice). All draws from ``cfg.seed``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from mechgrok import hooks
from mechgrok.models.family import ModelFamily
from mechgrok.models.init import lecun_truncated
from mechgrok.models.lens import HookedRootModule, HookPoint
from mechgrok.models.mlp import MLP_HOOK_MEANINGS, MLP_HOOK_SHAPES, MLP_SITES, _Part, _pre_activations

__all__ = ["TwoLayerMLP", "FAMILY", "one_hot_sum"]


def one_hot_sum(tokens: Int[Tensor, "batch pos"], p: int) -> Float[Tensor, "batch p"]:
    """The post's input vector onehot(a) + onehot(b) (a single 2 where a = b); the ``=`` token is ignored."""
    return nn.functional.one_hot(tokens[:, 0], p).float() + nn.functional.one_hot(tokens[:, 1], p).float()


class TwoLayerMLP(HookedRootModule):
    """ReLU(x W_input + b_in) W_output + b_out on x = onehot(a) + onehot(b) (module docstring)."""

    def __init__(self, cfg):
        super().__init__()
        p, n = cfg.p, cfg.d_mlp
        self.p = p
        g = torch.Generator().manual_seed(cfg.seed)
        self.embed, self.mlp, self.unembed = _Part(), _Part(), _Part()
        self.mlp.W_input = nn.Parameter(lecun_truncated((p, n), p, g))
        self.mlp.b_in = nn.Parameter(torch.zeros(n))
        self.mlp.W_output = nn.Parameter(lecun_truncated((n, p), n, g))
        self.mlp.b_out = nn.Parameter(torch.zeros(p))
        self.hook_embed = HookPoint()
        self.mlp.hook_pre, self.mlp.hook_post = HookPoint(), HookPoint()
        self.unembed.hook_out = HookPoint()
        self.setup()

    @property
    def W_E(self) -> Float[Tensor, "p neuron"]:
        """The input weights over the residues, W_input [p, neuron] (row a is onehot(a) W_input)."""
        return self.mlp.W_input

    @property
    def W_L(self) -> Float[Tensor, "neuron c"]:
        """The neuron-to-logit map, W_output (the logits add b_out to it)."""
        return self.mlp.W_output

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch 1 c"]:
        # W_input[a] + W_input[b] is x W_input without forming the one-hot rows
        pre = self.mlp.hook_pre(_pre_activations(self, tokens, None) + self.mlp.b_in)
        post = self.mlp.hook_post(torch.relu(pre))
        return self.unembed.hook_out((post @ self.W_L + self.mlp.b_out)[:, None])  # [batch, 1, c]


FAMILY = ModelFamily(
    name="mlp2",
    build=TwoLayerMLP,
    hook_shapes={**MLP_HOOK_SHAPES, hooks.EMBED: "batch pos neuron"},  # the input side embeds straight into neurons
    hook_meanings={
        **MLP_HOOK_MEANINGS,
        hooks.EMBED: "onehot(a) W_input and onehot(b) W_input, the a and b rows (their sum is x W_input); "
                     "the embedding ablation site",
        "mlp.hook_pre": "neuron pre-activations, x W_input + b_in",
        hooks.LOGITS: "logits ReLU(pre) W_output + b_out, one output position; the logit ablation site",
    },
    sites=MLP_SITES,
    parameter_names=("mlp.W_input", "mlp.b_in", "mlp.W_output", "mlp.b_out"),
    neuron_logit_map=lambda model: model.W_L,
    description="the post's plain 2-layer MLP: ReLU(x W_input + b_in) W_output + b_out on x = onehot(a) + onehot(b)",
)
