"""The original code's transformer layout: its parameters' names, shapes and order, its init, and
the conversion into ``HookedTransformer`` orientation (docs/formats.md, docs/fidelity.md).

The original module (Nanda et al.'s released code) registers its parameters in this order:
``embed.W_E`` [d_model, d_vocab], ``pos_embed.W_pos`` [n_ctx, d_model], then per block
``attn.W_K``, ``attn.W_Q``, ``attn.W_V`` [head, d_head, d_model], ``attn.W_O``
[d_model, (head d_head)], ``mlp.W_in`` [d_mlp, d_model], ``mlp.b_in``, ``mlp.W_out``
[d_model, d_mlp], ``mlp.b_out``, and last ``unembed.W_U`` [d_model, d_vocab]. Each weight is
``randn(shape) / sqrt(d_model)`` except W_U's ``/ sqrt(d_vocab)``; the biases are zeros. It has
no attention, embed or unembed biases.

:func:`original_weights` draws that module's weights from one generator in that order, which is
what ``torch.manual_seed(seed)`` and building the module draw; :func:`to_hooked` converts them
(and the weights of a saved original run, :mod:`mechgrok.formats`) into the 16 parameters of
mechgrok's ``HookedTransformer``.
"""

from __future__ import annotations

import math

import einops
import torch
from torch import Tensor

__all__ = ["ORIGINAL_PARAMETERS", "original_shapes", "original_weights", "to_hooked"]


def original_shapes(n_heads: int, d_head: int, d_model: int, d_mlp: int, d_vocab: int,
                    n_ctx: int = 3) -> dict[str, tuple[int, ...]]:
    """The original module's parameters and their shapes, in the order it registers them."""
    return {
        "embed.W_E": (d_model, d_vocab),
        "pos_embed.W_pos": (n_ctx, d_model),
        "blocks.0.attn.W_K": (n_heads, d_head, d_model),
        "blocks.0.attn.W_Q": (n_heads, d_head, d_model),
        "blocks.0.attn.W_V": (n_heads, d_head, d_model),
        "blocks.0.attn.W_O": (d_model, n_heads * d_head),
        "blocks.0.mlp.W_in": (d_mlp, d_model),
        "blocks.0.mlp.b_in": (d_mlp,),
        "blocks.0.mlp.W_out": (d_model, d_mlp),
        "blocks.0.mlp.b_out": (d_model,),
        "unembed.W_U": (d_model, d_vocab),
    }


ORIGINAL_PARAMETERS = tuple(original_shapes(1, 1, 1, 1, 1))


def original_weights(n_heads: int, d_head: int, d_model: int, d_mlp: int, d_vocab: int,
                     generator: torch.Generator, n_ctx: int = 3) -> dict[str, Tensor]:
    """The original module's freshly initialised weights, drawn from ``generator`` in its order.

    A bias is ``zeros`` and draws nothing; W_U is scaled by 1/sqrt(d_vocab), every other weight
    by 1/sqrt(d_model).
    """
    out = {}
    for name, shape in original_shapes(n_heads, d_head, d_model, d_mlp, d_vocab, n_ctx).items():
        if name.rsplit(".", 1)[-1].startswith("b_"):
            out[name] = torch.zeros(shape)
            continue
        fan = d_vocab if name == "unembed.W_U" else d_model
        out[name] = torch.randn(shape, generator=generator) / math.sqrt(fan)
    return out


def to_hooked(sd: dict[str, Tensor], p: int) -> dict[str, Tensor]:
    """Original layout -> the ``HookedTransformer``'s 16 parameters; the biases the original lacks are zeros.

    W_E, W_Q/W_K/W_V, W_in and W_out are transposed into TransformerLens orientation, W_O is
    split into heads, W_pos and W_U are kept. W_E's columns past p belong to tokens that never
    occur (the original fixed d_vocab at 114 whatever p was); mechgrok's model embeds exactly the
    p + 1 tokens 0..p. W_U keeps its width.
    """
    n_heads, d_head, d_model = sd["blocks.0.attn.W_Q"].shape
    d_vocab = sd["unembed.W_U"].shape[1]
    out = {
        "embed.W_E": sd["embed.W_E"].T[: p + 1],
        "pos_embed.W_pos": sd["pos_embed.W_pos"],
        "blocks.0.mlp.W_in": sd["blocks.0.mlp.W_in"].T,
        "blocks.0.mlp.b_in": sd["blocks.0.mlp.b_in"],
        "blocks.0.mlp.W_out": sd["blocks.0.mlp.W_out"].T,
        "blocks.0.mlp.b_out": sd["blocks.0.mlp.b_out"],
        "unembed.W_U": sd["unembed.W_U"],
        # The original concatenates head outputs head-major, z_flat = "(head d_head)", before W_O.
        "blocks.0.attn.W_O": einops.rearrange(
            sd["blocks.0.attn.W_O"], "d_model (head d_head) -> head d_head d_model", head=n_heads, d_head=d_head
        ),
        "blocks.0.attn.b_O": torch.zeros(d_model),
        "unembed.b_U": torch.zeros(d_vocab),
    }
    for x in "QKV":
        out[f"blocks.0.attn.W_{x}"] = einops.rearrange(sd[f"blocks.0.attn.W_{x}"], "head d_head d_model -> head d_model d_head")
        out[f"blocks.0.attn.b_{x}"] = torch.zeros(n_heads, d_head)
    return {name: tensor.contiguous() for name, tensor in out.items()}
