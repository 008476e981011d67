"""The fast path for many transformers at once: per-token tables over stacked weights.

:mod:`mechgrok.models.fastpath` computes one model's last-position logits from per-token tables
(the keys, values and scores of the 2p + 1 distinct residuals ``W_E[a] + W_pos[0]``,
``W_E[b] + W_pos[1]`` and ``W_E[=] + W_pos[2]``). :class:`StackedFastPath` is the same forward
with a leading ``model`` axis on every weight, so S seeds of one shape take one batched step:
every matmul is a ``bmm`` over the models, and each example's table rows are gathered with
one-hot matmuls (``onehot(a) @ table``), whose backward is a matmul too. Nothing accumulates
through an index (``index_put_``, atomics on a GPU), so the step is deterministic on either
device and a resumed stack is bit-identical. The backward is torch's autograd over this batched
forward; the frozen biases (b_Q, b_K, b_V, b_O, b_U) are read as constants and get no gradient.

It is the transformer family's ``stacked_step``: :func:`mechgrok.training.stack.train_stack`
runs it, with its masks (each model its own train split), its loss precision and its AdamW.
``tests/test_stacked_fastpath.py`` pins its logits and gradients to :class:`FastPath`'s, model by
model, and a few trained steps to :func:`mechgrok.train`'s weights.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechgrok.models.fastpath import check_supported

__all__ = ["StackedFastPath"]


class StackedFastPath:
    """Loss and gradients of S models of the paper's transformer at once (weights ``[model, ...]``).

    The interface of the stacked trainer's steps: ``inputs(tokens)`` turns the stacked examples
    ``[model, batch, 3]`` into what the step reads; ``loss_and_grad(params, buffers, rows)``
    returns (gradients of ``params``, loss per model, correct per model); ``loss(...)`` the last
    two without gradients. ``rows`` carries ``inputs``, ``labels [model, batch]``, ``mask``
    (1 for a real row, 0 for padding, in the loss dtype), ``count`` (real rows per model) and a
    ``cache`` dict for per-rows constants (the one-hot matrices, made once).

    >>> step = StackedFastPath(model, torch.float64, scale=1)   # model: one of the stack, for its shape
    >>> grads, loss, correct = step.loss_and_grad(params, buffers, rows)
    """

    def __init__(self, base: torch.nn.Module, dtype: torch.dtype, scale: int):
        check_supported(base)
        self.p = base.cfg.d_vocab - 1  # the `=` token is p: tokens are 0..p
        self.dtype, self.scale = dtype, scale

    def inputs(self, tokens: Int[Tensor, "model batch pos"]) -> Int[Tensor, "model batch pos"]:
        if tokens.ndim != 3 or tokens.shape[-1] != 3:
            raise ValueError(f"expected stacked tokens [model, batch, 3]; got {tuple(tokens.shape)}")
        if bool((tokens[..., 2] != self.p).any()) or bool((tokens[..., :2] >= self.p).any()) or bool((tokens < 0).any()):
            raise ValueError(f"expected examples [a, b, =] with a, b in [0, p) and `=` the token p = {self.p}")
        return tokens

    def _onehots(self, rows, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """onehot(a), onehot(b): [model, batch, p], in the weights' dtype, made once per set of rows."""
        if "onehot_a" not in rows.cache:
            tokens = rows.inputs
            rows.cache["onehot_a"] = torch.nn.functional.one_hot(tokens[..., 0], self.p).to(dtype)
            rows.cache["onehot_b"] = torch.nn.functional.one_hot(tokens[..., 1], self.p).to(dtype)
        return rows.cache["onehot_a"], rows.cache["onehot_b"]

    def logits(self, w: dict[str, Tensor], rows) -> Float[Tensor, "model batch d_vocab_out"]:
        """Every model's last-position logits on its rows (``model(tokens)[:, -1]``, model by model)."""
        p = self.p
        W_E, W_pos = w["embed.W_E"], w["pos_embed.W_pos"]  # [model, p+1, d_model], [model, 3, d_model]
        W_Q = w["blocks.0.attn.W_Q"]  # [model, head, d_model, d_head]
        M, n_heads, d_model, d_head = W_Q.shape
        onehot_a, onehot_b = self._onehots(rows, W_E.dtype)
        n = onehot_a.shape[1]
        e_eq = W_E[:, p] + W_pos[:, 2]  # [model, d_model]: the residual at `=`, the same for every example
        E = torch.cat([W_E[:, :p] + W_pos[:, 0:1], W_E[:, :p] + W_pos[:, 1:2], e_eq[:, None]], dim=1)  # [model, 2p+1, d_model]
        q = torch.einsum("md,mhde->mhe", e_eq, W_Q) + w["blocks.0.attn.b_Q"]  # [model, head, d_head]

        def table(W: Tensor, b: Tensor) -> Tensor:  # keys or values of the 2p+1 residuals: one bmm
            flat = W.permute(0, 2, 1, 3).reshape(M, d_model, n_heads * d_head)
            return torch.bmm(E, flat).view(M, 2 * p + 1, n_heads, d_head) + b[:, None]

        K = table(w["blocks.0.attn.W_K"], w["blocks.0.attn.b_K"])
        V = table(w["blocks.0.attn.W_V"], w["blocks.0.attn.b_V"])
        S = torch.einsum("mnhe,mhe->mnh", K, q) / math.sqrt(d_head)  # [model, 2p+1, head]
        # an example's rows of the score and value tables, gathered by one-hot matmuls: [S | V] of a, of b
        rows_a = torch.cat([S[:, :p], V[:, :p].reshape(M, p, -1)], dim=-1)  # [model, p, head + head*d_head]
        rows_b = torch.cat([S[:, p:2 * p], V[:, p:2 * p].reshape(M, p, -1)], dim=-1)
        at_a, at_b = torch.bmm(onehot_a, rows_a), torch.bmm(onehot_b, rows_b)  # [model, batch, head + head*d_head]
        s_eq = S[:, 2 * p][:, None].expand(M, n, n_heads)
        scores = torch.stack([at_a[..., :n_heads], at_b[..., :n_heads], s_eq], dim=-1)  # [model, batch, head, 3]
        # softmax over the 3 keys, written out (torch.softmax is slow on a last axis of length 3)
        A = (scores - scores.amax(-1, keepdim=True)).exp()
        A = A / A.sum(-1, keepdim=True)
        Va = at_a[..., n_heads:].view(M, n, n_heads, d_head)
        Vb = at_b[..., n_heads:].view(M, n, n_heads, d_head)
        z = A[..., 0:1] * Va + A[..., 1:2] * Vb + A[..., 2:3] * V[:, 2 * p][:, None]  # [model, batch, head, d_head]
        W_O = w["blocks.0.attn.W_O"].reshape(M, n_heads * d_head, d_model)
        resid_mid = torch.baddbmm((w["blocks.0.attn.b_O"] + e_eq)[:, None], z.reshape(M, n, -1), W_O)
        post = torch.baddbmm(w["blocks.0.mlp.b_in"][:, None], resid_mid, w["blocks.0.mlp.W_in"]).relu()
        resid_post = torch.baddbmm(w["blocks.0.mlp.b_out"][:, None], post, w["blocks.0.mlp.W_out"]) + resid_mid
        return torch.baddbmm(w["unembed.b_U"][:, None], resid_post, w["unembed.W_U"])  # [model, batch, d_vocab_out]

    def _score(self, logits: Tensor, rows) -> tuple[Tensor, Tensor]:
        """(loss, correct) per model: the masked mean cross-entropy over every output logit in the
        loss dtype (/ scale), and the correct argmax among the p residues (FastPath's)."""
        logp = torch.log_softmax(logits.to(self.dtype), dim=-1)
        ce = -logp.gather(-1, rows.labels[..., None])[..., 0]  # one index per row: its backward adds nothing up
        loss = (ce * rows.mask).sum(-1) / rows.count
        if self.scale != 1:
            loss = loss / self.scale
        correct = ((logits[..., : self.p].argmax(-1) == rows.labels).to(self.dtype) * rows.mask).sum(-1)
        return loss, correct.detach()

    def loss_and_grad(self, params: dict[str, Tensor], buffers: dict[str, Tensor], rows) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        leaves = {name: t.detach().requires_grad_() for name, t in params.items()}  # views of the stack's weights
        with torch.enable_grad():
            loss, correct = self._score(self.logits({**buffers, **leaves}, rows), rows)
            # the models share no weight, so the gradient of the sum is each model's own
            grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
        return dict(zip(leaves, grads)), loss.detach(), correct

    @torch.no_grad()
    def loss(self, params: dict[str, Tensor], buffers: dict[str, Tensor], rows) -> tuple[Tensor, Tensor]:
        return self._score(self.logits({**buffers, **params}, rows), rows)
