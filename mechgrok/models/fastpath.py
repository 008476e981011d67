"""The fast exact training step: the same function as ``HookedTransformer``, computed cheaply.

Only the last position feeds the loss, and the operands sit at fixed positions, so the
attention inputs take just 2p + 1 distinct values: ``W_E[a] + W_pos[0]``, ``W_E[b] + W_pos[1]``
and the constant ``W_E[=] + W_pos[2]``. We compute keys, values and scores once per distinct
residual ("per-token tables"), fold W_O and W_in into them, and run the MLP and unembed on the
last position only (:class:`FastPath`'s docstring; docs/training.md). The backward pass is
derived by hand on top of those tables; its sums back into the tables are taken row by row in a
fixed order, which (unlike an accumulating ``index_put_``) is deterministic, so a resumed run is
bit-identical to an uninterrupted one.

The step reads the ``HookedTransformer``'s own parameters and writes their ``.grad``, so the
trained object is the ``HookedTransformer`` itself. Equivalence with ``model(tokens)[:, -1]``
(logits, loss and gradients) is pinned in ``tests/test_fastpath.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from mechgrok import scoring
from mechgrok.models.transformer import PARAMETER_NAMES


def check_supported(model: torch.nn.Module) -> None:
    """The fast path computes a 1-layer, LayerNorm-free ReLU transformer on ``[a, b, =]``."""
    cfg = model.cfg
    problems = []
    if cfg.n_layers != 1:
        problems.append(f"n_layers={cfg.n_layers} (needs 1)")
    if cfg.normalization_type is not None:
        problems.append(f"normalization_type={cfg.normalization_type!r} (needs None)")
    if cfg.act_fn != "relu":
        problems.append(f"act_fn={cfg.act_fn!r} (needs 'relu')")
    if cfg.n_ctx != 3:
        problems.append(f"n_ctx={cfg.n_ctx} (needs 3)")
    if problems:
        raise ValueError(
            "the fast path only computes the paper's model; this one has " + ", ".join(problems)
            + ". Train it with a plain HookedTransformer loop instead."
        )


@dataclass
class _Forward:
    """What the backward pass needs from the forward pass."""

    E: Tensor  # [2p+1, d_model]: a rows, then b rows, then the `=` row
    q: Tensor  # [head, d_head]
    K: Tensor  # [2p+1, head, d_head]
    V: Tensor  # [2p+1, head, d_head]
    A: Tensor  # [batch, head, 3]
    weights: Tensor  # [batch · (2·head + 1)]: the bag slots' weights, from A
    Y: Tensor  # [2p+1, head, d_model]: each residual's value through W_O
    table: Tensor  # [(2p+1)·head + 1, d_mlp + d_model]: [T | Y] rows, then the constant row
    c_resid: Tensor  # [d_model]: b_O + the `=` residual
    post: Tensor  # [batch, d_mlp] (a view into the bag's output)
    resid_post: Tensor
    logits: Tensor


class _Bags:
    """The fixed index structure of a batch's weighted sums of table rows.

    Example n sums 2·head + 1 rows: for each head h, the row of its a (weight A[n, h, 0]) and of
    its b (weight A[n, h, 1]), then the constant row (weight 1): a "bag", summed by
    ``embedding_bag``. (`=`'s own rows have been folded into the others, see
    :meth:`FastPath._forward`.) The backward pass sums the other way, one bag per table row over
    the examples that use it; ``by_row`` orders the (example, slot) pairs by row so that this sum
    is an ``embedding_bag`` too, each row's sum taken in a fixed order (deterministic on any
    number of threads)."""

    def __init__(self, a: Tensor, b_row: Tensor, p: int, n_heads: int):
        n, H = len(a), n_heads
        heads = torch.arange(H, device=a.device)
        self.n_rows = 2 * p * H + 1  # a's rows, b's rows (r·head + h), the constant row
        rows = torch.cat([a[:, None] * H + heads, b_row[:, None] * H + heads,
                          torch.full((n, 1), self.n_rows - 1, device=a.device)], dim=1)  # [batch, 2·head + 1]
        self.slots = rows.shape[1]
        self.indices = rows.reshape(-1).contiguous()
        self.offsets = torch.arange(0, n * self.slots, self.slots, device=a.device)
        self.offset2bag = torch.arange(n, device=a.device).repeat_interleave(self.slots)
        self.by_row = torch.argsort(self.indices, stable=True)
        self.examples_by_row = (self.by_row // self.slots).contiguous()
        counts = torch.bincount(self.indices, minlength=self.n_rows)
        self.row_offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])

    def weights(self, A: Tensor) -> Tensor:
        """The slots' weights [batch · (2·head + 1)] from the attention pattern A [batch, head, 3]."""
        return torch.cat([A[..., :2].permute(0, 2, 1).reshape(len(A), -1), A.new_ones(len(A), 1)], dim=1).reshape(-1)

    def sum_rows(self, table: Tensor, weights: Tensor) -> Tensor:
        """[batch, width]: each example's weighted sum of its table rows."""
        return F.embedding_bag(self.indices, table, self.offsets, mode="sum", per_sample_weights=weights)

    def sum_examples(self, grad: Tensor, weights: Tensor) -> Tensor:
        """[rows, width]: each table row's sum of the gradients of the examples that use it, weighted alike."""
        return F.embedding_bag(self.examples_by_row, grad, self.row_offsets, mode="sum",
                               per_sample_weights=weights[self.by_row])

    def weight_grads(self, grad: Tensor, table: Tensor) -> Tensor:
        """[batch, head, 2]: d loss / d weight of the a and b slots, each the dot of the example's
        gradient with its row."""
        n, H = len(grad), (self.slots - 1) // 2
        flat = torch.ops.aten._embedding_bag_per_sample_weights_backward(
            grad, table, self.indices, self.offsets, self.offset2bag, 0, -1)
        return flat.view(n, self.slots)[:, :-1].view(n, 2, H).permute(0, 2, 1)


class FastPath:
    """Per-token-table forward and hand-derived backward for a fixed batch of ``[a, b, =]``.

    >>> step = FastPath(tokens, labels)            # e.g. the train split
    >>> loss, n_correct = step.loss_and_grad(model)  # writes param.grad

    With no LayerNorm, everything before the MLP's ReLU is linear in the value vectors, and the
    attention mixes only three residuals: the MLP pre-activation of an example is
    ``Σ_h Σ_j A[h, j] · T[row_j, h] + c`` with ``T[r, h] = V[r, h] W_O[h] W_in``, tabulated once
    per step over the 2p+1 distinct residuals (W_O and W_in folded into the tables), and the
    attention output ``Σ A · Y`` with ``Y[r, h] = V[r, h] W_O[h]`` the same way. The weights
    of each head sum to 1, so `=`'s rows fold into the others: ``A_= T_= = T_= − (A_a + A_b)
    T_=``. So the MLP's input GEMM becomes a weighted sum of 9 table rows per example
    (``torch.nn.functional.embedding_bag``), and the only GEMMs over the batch are W_out's and
    W_U's. The biases b_in, b_out and b_O ride in a constant table row of weight 1, so their
    gradients come out of the same sums.

    Internally the examples are taken in (a, b) order, so that consecutive examples read the
    same table rows; :meth:`logits` returns them in the order given.
    """

    def __init__(self, tokens: Int[Tensor, "batch 3"], labels: Int[Tensor, "batch"], loss_dtype: str | torch.dtype = "float64"):
        if tokens.ndim != 2 or tokens.shape[1] != 3 or len(tokens) != len(labels) or len(tokens) == 0:
            raise ValueError(f"expected tokens [batch, 3] and labels [batch]; got {tuple(tokens.shape)} and {tuple(labels.shape)}")
        equals = tokens[:, 2]
        if not bool((equals == equals[0]).all()):
            raise ValueError("the fast path needs the same `=` token at position 2 of every example")
        self.p = int(equals[0])
        if bool((tokens[:, :2] >= self.p).any()) or bool((tokens[:, :2] < 0).any()):
            raise ValueError(f"operands must lie in [0, p) with p = {self.p} (the `=` token)")
        # the examples in (a, b) order: neighbouring examples share their a's table rows
        self.order = torch.argsort(tokens[:, 0] * self.p + tokens[:, 1], stable=True)
        self.given_order = torch.argsort(self.order)
        self.a = tokens[self.order, 0].contiguous()
        self.b = tokens[self.order, 1].contiguous()
        self.b_row = self.b + self.p  # b's row in the table of 2p+1 residuals
        self.labels = labels[self.order].contiguous()
        self.n = len(tokens)
        self.loss_dtype = scoring.loss_dtype(loss_dtype)  # the precision of the log-softmax and the loss
        # One-hot scatter matrices [p, batch]: deterministic sums over examples sharing a or b.
        self.scatter_a = torch.nn.functional.one_hot(self.a, self.p).T.float().contiguous()
        self.scatter_b = torch.nn.functional.one_hot(self.b, self.p).T.float().contiguous()
        self._bags: dict[int, _Bags] = {}

    def _bags_for(self, n_heads: int) -> _Bags:
        if n_heads not in self._bags:
            self._bags[n_heads] = _Bags(self.a, self.b_row, self.p, n_heads)
        return self._bags[n_heads]

    # ------------------------------------------------------------------ forward
    def _forward(self, w: dict[str, Tensor]) -> _Forward:
        p = self.p
        W_E, W_pos = w["embed.W_E"], w["pos_embed.W_pos"]
        n_heads, d_model, d_head = w["blocks.0.attn.W_Q"].shape
        d_mlp = w["blocks.0.mlp.W_in"].shape[1]
        E = torch.cat([W_E[:p] + W_pos[0], W_E[:p] + W_pos[1], (W_E[p] + W_pos[2])[None]])
        e_eq = E[2 * p]
        q = torch.einsum("d,hde->he", e_eq, w["blocks.0.attn.W_Q"]) + w["blocks.0.attn.b_Q"]
        # keys and values of all 2p+1 distinct residuals in one matmul each
        K = (E @ w["blocks.0.attn.W_K"].permute(1, 0, 2).reshape(d_model, -1)).view(-1, n_heads, d_head)
        K = K + w["blocks.0.attn.b_K"]
        V = (E @ w["blocks.0.attn.W_V"].permute(1, 0, 2).reshape(d_model, -1)).view(-1, n_heads, d_head)
        V = V + w["blocks.0.attn.b_V"]
        S = torch.einsum("nhe,he->nh", K, q) / math.sqrt(d_head)  # [2p+1, head]
        scores = torch.stack([S[self.a], S[self.b_row], S[2 * p].expand(self.n, n_heads)], dim=-1)
        # softmax over the 3 keys, written out: torch.softmax is slow on a last axis of length 3
        A = (scores - scores.amax(-1, keepdim=True)).exp_()
        A = A.div_(A.sum(-1, keepdim=True))  # [batch, head, 3]

        # the tables: Y = V W_O per head, T = Y W_in, side by side; row r·head + h
        Y = torch.einsum("rhe,hed->rhd", V, w["blocks.0.attn.W_O"])  # [2p+1, head, d_model]
        c_resid = w["blocks.0.attn.b_O"] + e_eq
        W_in = w["blocks.0.mlp.W_in"]
        full = torch.cat([Y.reshape(-1, d_model) @ W_in, Y.reshape(-1, d_model)], dim=1)  # [(2p+1)·head, width]
        equals = full[2 * p * n_heads :]  # [head, width]: `=`'s rows
        # `=`'s rows folded into a's and b's (A_= = 1 - A_a - A_b) and into the constant row
        table = full.new_empty(2 * p * n_heads + 1, d_mlp + d_model)
        torch.sub(full[: 2 * p * n_heads].view(2 * p, n_heads, -1), equals, out=table[:-1].view(2 * p, n_heads, -1))
        table[-1, :d_mlp] = torch.addmv(w["blocks.0.mlp.b_in"], W_in.T, c_resid)
        table[-1, d_mlp:] = c_resid + w["blocks.0.mlp.b_out"]  # b_out rides here: resid_post = post W_out + this part
        table[-1] += equals.sum(0)

        bags = self._bags_for(n_heads)
        weights = bags.weights(A)
        out = bags.sum_rows(table, weights)  # [batch, d_mlp + d_model]
        # ReLU in place: the backward pass reads its mask off ``post`` (post > 0 iff pre > 0)
        post = out[:, :d_mlp].relu_()
        resid_post = torch.addmm(out[:, d_mlp:], post, w["blocks.0.mlp.W_out"])
        logits = torch.addmm(w["unembed.b_U"], resid_post, w["unembed.W_U"])
        return _Forward(E, q, K, V, A, weights, Y, table, c_resid, post, resid_post, logits)

    def logits(self, model: torch.nn.Module) -> Float[Tensor, "batch d_vocab_out"]:
        """``model(tokens)[:, -1]``, computed on the last position only."""
        with torch.no_grad():
            return self._forward(_weights(model)).logits[self.given_order]

    def loss(self, model: torch.nn.Module) -> tuple[Tensor, Tensor]:
        """(mean cross-entropy over every output logit, in ``loss_dtype``; number of correct argmax
        among the p residues), without gradients. The two differ only for a p+1 wide unembed."""
        with torch.no_grad():
            logits = self._forward(_weights(model)).logits  # in the internal order, like the labels
        logp = torch.log_softmax(logits.to(self.loss_dtype), dim=-1)
        correct = (logits[:, : self.p].argmax(-1) == self.labels).sum()
        return self._mean_loss(logp), correct

    def _mean_loss(self, logp: Tensor) -> Tensor:
        # the mean over the examples in the order given, so it is the float sum a plain loop takes
        return -logp.gather(1, self.labels[:, None])[self.given_order].mean()

    # ----------------------------------------------------------------- backward
    def loss_and_grad(self, model: torch.nn.Module, accuracy: bool = True) -> tuple[Tensor, Tensor | None]:
        """Forward and backward in one; sets ``.grad`` of every parameter that requires grad.

        Returns (mean cross-entropy in ``loss_dtype``, number of correct argmax predictions); the
        count is None with ``accuracy=False``, which saves the argmax on steps that log nothing.
        """
        w = _weights(model)
        with torch.no_grad():
            f = self._forward(w)
            logp = torch.log_softmax(f.logits.to(self.loss_dtype), dim=-1)
            loss = self._mean_loss(logp)
            correct = (f.logits[:, : self.p].argmax(-1) == self.labels).sum() if accuracy else None
            grads = self._backward(w, f, logp)
        params = dict(model.named_parameters())
        for name, grad in grads.items():
            param = params[name]
            if param.requires_grad:
                param.grad = grad
        return loss, correct

    def _backward(self, w: dict[str, Tensor], f: _Forward, logp: Tensor) -> dict[str, Tensor]:
        p, n = self.p, self.n
        n_heads, d_model, d_head = w["blocks.0.attn.W_Q"].shape
        d_mlp = w["blocks.0.mlp.W_in"].shape[1]
        bags = self._bags_for(n_heads)
        g: dict[str, Tensor] = {}

        # softmax cross-entropy in loss_dtype; the gradient goes back to float32 like autograd's cast
        probs = logp.exp()
        probs[torch.arange(n, device=probs.device), self.labels] -= 1
        d_logits = (probs / n).float()

        g["unembed.W_U"] = f.resid_post.T @ d_logits
        g["unembed.b_U"] = d_logits.sum(0)
        d_resid_post = d_logits @ w["unembed.W_U"].T
        g["blocks.0.mlp.W_out"] = f.post.T @ d_resid_post
        # d_out = [d pre | d resid_post]: the gradient of each example's bag sum
        d_out = d_logits.new_empty(n, d_mlp + d_model)
        torch.ops.aten.threshold_backward.grad_input(d_resid_post @ w["blocks.0.mlp.W_out"].T, f.post, 0,
                                                     grad_input=d_out[:, :d_mlp])
        d_out[:, d_mlp:] = d_resid_post

        # back into the table rows, and into the attention weights of the a and b slots
        d_table = bags.sum_examples(d_out, f.weights)  # [2p·head + 1, width]
        dA_ab = bags.weight_grads(d_out, f.table)  # [batch, head, 2]
        # `=`'s slot has no weight of its own: the softmax backward is the same for dA and dA - dA_=
        dA = torch.cat([dA_ab, dA_ab.new_zeros(n, n_heads, 1)], dim=-1)
        d_const = d_table[-1]
        d_full = torch.cat([d_table[:-1], d_const - d_table[:-1].view(2 * p, n_heads, -1).sum(0)])  # unfold `=`'s rows

        dT, dY_direct = d_full[:, :d_mlp], d_full[:, d_mlp:]
        d_const_pre, d_const_resid = d_const[:d_mlp], d_const[d_mlp:]
        W_in = w["blocks.0.mlp.W_in"]
        Y = f.Y.reshape(-1, d_model)
        g["blocks.0.mlp.b_in"] = d_const_pre.clone()
        g["blocks.0.mlp.b_out"] = d_const_resid.clone()
        g["blocks.0.mlp.W_in"] = torch.addr(Y.T @ dT, f.c_resid, d_const_pre)
        dY = torch.addmm(dY_direct, dT, W_in.T).view(2 * p + 1, n_heads, d_model)
        d_c_resid = torch.addmv(d_const_resid, W_in, d_const_pre)
        g["blocks.0.attn.b_O"] = d_c_resid
        g["blocks.0.attn.W_O"] = torch.einsum("rhe,rhd->hed", f.V, dY)
        dV = torch.einsum("rhd,hed->rhe", dY, w["blocks.0.attn.W_O"])  # [2p+1, head, d_head]

        # the softmax over the 3 keys
        d_scores = f.A * (dA - (f.A * dA).sum(-1, keepdim=True))
        dS = torch.cat([
            self.scatter_a @ d_scores[..., 0],
            self.scatter_b @ d_scores[..., 1],
            d_scores[..., 2].sum(0, keepdim=True),
        ])  # [2p+1, head]

        # through the score tables S = K·q / sqrt(d_head)
        scale = 1 / math.sqrt(d_head)
        dK = dS[..., None] * f.q * scale
        dq = torch.einsum("nh,nhe->he", dS, f.K) * scale

        W_K = w["blocks.0.attn.W_K"].permute(1, 0, 2).reshape(d_model, -1)
        W_V = w["blocks.0.attn.W_V"].permute(1, 0, 2).reshape(d_model, -1)
        dK_flat, dV_flat = dK.reshape(2 * p + 1, -1), dV.reshape(2 * p + 1, -1)
        g["blocks.0.attn.W_K"] = (f.E.T @ dK_flat).view(d_model, n_heads, d_head).permute(1, 0, 2)
        g["blocks.0.attn.W_V"] = (f.E.T @ dV_flat).view(d_model, n_heads, d_head).permute(1, 0, 2)
        g["blocks.0.attn.b_K"] = dK.sum(0)
        g["blocks.0.attn.b_V"] = dV.sum(0)
        e_eq = f.E[2 * p]
        g["blocks.0.attn.W_Q"] = torch.einsum("d,he->hde", e_eq, dq)
        g["blocks.0.attn.b_Q"] = dq
        dE = dK_flat @ W_K.T + dV_flat @ W_V.T  # [2p+1, d_model]
        d_eq = dE[2 * p] + d_c_resid + torch.einsum("he,hde->d", dq, w["blocks.0.attn.W_Q"])

        W_E = w["embed.W_E"]
        dW_E = torch.empty_like(W_E)
        dW_E[:p] = dE[:p] + dE[p : 2 * p]
        dW_E[p] = d_eq
        g["embed.W_E"] = dW_E
        g["pos_embed.W_pos"] = torch.stack([dE[:p].sum(0), dE[p : 2 * p].sum(0), d_eq])
        return {name: grad.contiguous() for name, grad in g.items()}


def _weights(model: torch.nn.Module) -> dict[str, Tensor]:
    params = dict(model.named_parameters())
    missing = [name for name in PARAMETER_NAMES if name not in params]
    if missing:
        raise ValueError(f"model lacks parameters {missing}; the fast path needs the paper's 1-layer HookedTransformer")
    return {name: params[name].detach() for name in PARAMETER_NAMES}
