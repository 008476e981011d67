"""Pearce et al.'s sparse-parity MLP: one hidden layer, one output logit, a constant-1 input as bias.

::

    x      = [bits, 1]                                 [batch, n_bits + 1] (the last column is the bias input)
    post   = ReLU(x W_in)                              W_in  [n_bits + 1, neuron]
    z      = post W_out                                W_out [neuron, 1], the single logit
    logits = [0, z]                                    [batch, 1, 2]

Cross-entropy over ``[0, z]`` is the logistic loss of z (softplus(-z) for label 1), and the
argmax is z > 0, so the task's two-class scoring reads this model as it is. Hook points:
``hook_input`` (``x``), ``mlp.hook_pre``, ``mlp.hook_post``, ``unembed.hook_out`` (the two
logits). Init: truncated normal of std 1/√fan_in, from ``cfg.seed``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from mechgrok import hooks
from mechgrok.models.family import ModelFamily
from mechgrok.models.init import lecun_truncated
from mechgrok.models.lens import HookedRootModule, HookPoint
from mechgrok.models.mlp import _Part

__all__ = ["ParityMLP", "FAMILY", "HOOK_SHAPES"]

HOOK_SHAPES = {
    "hook_input": "batch bit",
    "mlp.hook_pre": "batch neuron",
    "mlp.hook_post": "batch neuron",
    hooks.LOGITS: "batch out_pos d_vocab_out",
}


class ParityMLP(HookedRootModule):
    """The sparse-parity MLP (module docstring)."""

    def __init__(self, cfg):
        super().__init__()
        n_in, n = cfg.n_bits + 1, cfg.d_mlp
        g = torch.Generator().manual_seed(cfg.seed)
        self.mlp, self.unembed = _Part(), _Part()
        self.mlp.W_in = nn.Parameter(lecun_truncated((n_in, n), n_in, g))
        self.mlp.W_out = nn.Parameter(lecun_truncated((n, 1), n, g))
        self.hook_input = HookPoint()
        self.mlp.hook_pre, self.mlp.hook_post = HookPoint(), HookPoint()
        self.unembed.hook_out = HookPoint()
        self.setup()

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch 1 2"]:
        ones = torch.ones(tokens.shape[0], 1, dtype=self.mlp.W_in.dtype, device=tokens.device)
        x = self.hook_input(torch.cat([tokens.to(self.mlp.W_in.dtype), ones], dim=1))
        post = self.mlp.hook_post(torch.relu(self.mlp.hook_pre(x @ self.mlp.W_in)))
        z = post @ self.mlp.W_out  # [batch, 1]
        return self.unembed.hook_out(torch.cat([torch.zeros_like(z), z], dim=1)[:, None])


FAMILY = ModelFamily(
    name="parity_mlp",
    build=ParityMLP,
    hook_shapes=HOOK_SHAPES,
    hook_meanings={
        "hook_input": "the bits and the constant-1 bias input",
        "mlp.hook_pre": "neuron pre-activations",
        "mlp.hook_post": "neuron activations after ReLU; the neuron ablation site",
        hooks.LOGITS: "the logits [0, z], one output position",
    },
    sites={"neurons": hooks.Site("mlp.hook_post"), "logits": hooks.Site(hooks.LOGITS, -1)},
    parameter_names=("mlp.W_in", "mlp.W_out"),
    description="Pearce et al.'s sparse-parity MLP: ReLU([bits, 1] W_in) W_out, one logit",
)
