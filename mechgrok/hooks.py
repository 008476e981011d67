"""Hook-point names, their shapes, the axis-name glossary, ``Site`` and ``HookFn``.

Every module that reads or edits activations names its hook point through a constant here
(or through a model family's ``sites``), so a TransformerLens rename changes this file only.
A :class:`Site` is a hook point plus an optional position: the place an ablation acts on. ``docs/hooks.md`` renders the same table;
``tests/test_hooks.py`` checks that each hook fires with the shape written in ``HOOK_SHAPES``.

Axis names (the glossary used by every jaxtyping annotation in mechgrok):

=============  ==========================================================================
name           meaning
=============  ==========================================================================
batch          one input ``[a, b, =]``; "grid order" means all p² pairs, index ``a*p + b``
pos            token position: 0 is a, 1 is b, 2 is ``=`` (the output is read at pos 2)
a, b           the two operands' residues, 0..p-1, as the two axes of the input grid
c              the answer's residue, 0..p-1 (the logit axis with ``=`` dropped)
p              any axis indexed by a residue, before a Fourier transform
component      a row of the Fourier basis: const, cos 1, sin 1, ..., cos K, sin K (p rows)
freq           a frequency k = 1..K with K = (p-1)/2, stored at index k-1
direction      one vector of a set of directions that spans a subspace
head           an attention head (n_heads)
key_pos        the attended-to position of an attention pattern (query_pos likewise)
neuron         an MLP neuron (d_mlp)
model          the stacked models of mechgrok.training.stack (one slice per model)
out_pos        the output positions of a model that reads out once (Pearce et al.'s MLPs: 1)
bit            one input of the sparse-parity MLP: the n_bits bits, then the constant-1 bias input
d_model        the residual stream
d_vocab        input tokens: p residues and ``=`` (p + 1)
d_vocab_out    output logits: p, or p + 1 with ``=`` included (``Config.unembed_equals``, the original code's)
=============  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "HookFn",
    "Site",
    "EMBED",
    "POS_EMBED",
    "RESID_PRE",
    "ATTN_SCORES",
    "ATTN_PATTERN",
    "ATTN_OUT",
    "RESID_MID",
    "MLP_PRE",
    "MLP_POST",
    "MLP_OUT",
    "RESID_POST",
    "LOGITS",
    "HOOK_SHAPES",
    "HOOK_MEANINGS",
    "EQUALS_POS",
]

# The position whose output is the answer (the ``=`` token).
EQUALS_POS = 2

EMBED = "hook_embed"
POS_EMBED = "hook_pos_embed"
RESID_PRE = "blocks.0.hook_resid_pre"
ATTN_SCORES = "blocks.0.attn.hook_attn_scores"
ATTN_PATTERN = "blocks.0.attn.hook_pattern"
ATTN_OUT = "blocks.0.hook_attn_out"
RESID_MID = "blocks.0.hook_resid_mid"
MLP_PRE = "blocks.0.mlp.hook_pre"
MLP_POST = "blocks.0.mlp.hook_post"
MLP_OUT = "blocks.0.hook_mlp_out"
RESID_POST = "blocks.0.hook_resid_post"
LOGITS = "unembed.hook_out"

# Shapes in the glossary's axis names, exactly as each hook sees its activation.
HOOK_SHAPES: dict[str, str] = {
    EMBED: "batch pos d_model",
    POS_EMBED: "batch pos d_model",
    RESID_PRE: "batch pos d_model",
    ATTN_SCORES: "batch head query_pos key_pos",
    ATTN_PATTERN: "batch head query_pos key_pos",
    ATTN_OUT: "batch pos d_model",
    RESID_MID: "batch pos d_model",
    MLP_PRE: "batch pos neuron",
    MLP_POST: "batch pos neuron",
    MLP_OUT: "batch pos d_model",
    RESID_POST: "batch pos d_model",
    LOGITS: "batch pos d_vocab_out",
}

HOOK_MEANINGS: dict[str, str] = {
    EMBED: "token embeddings W_E[token]; the a and b rows are the embedding ablation site",
    POS_EMBED: "positional embeddings W_pos[pos]",
    RESID_PRE: "residual stream entering the block (embed + pos_embed)",
    ATTN_SCORES: "attention scores before softmax (masked, scaled)",
    ATTN_PATTERN: "attention pattern; [:, :, 2, :] is attention from = to a, b and =",
    ATTN_OUT: "attention output added to the residual stream",
    RESID_MID: "residual stream after attention, the MLP's input",
    MLP_PRE: "neuron pre-activations",
    MLP_POST: "neuron activations after ReLU; the neuron ablation site (at pos 2)",
    MLP_OUT: "MLP output W_out-mapped into the residual stream",
    RESID_POST: "residual stream after the block, the unembed's input",
    LOGITS: "logits; the logit ablation site (at pos 2)",
}


# A TransformerLens forward hook: ``fn(activation, hook) -> activation`` (or None to leave it).
HookFn = Callable[["Tensor", Any], "Tensor"]


@dataclass(frozen=True)
class Site:
    """Where an intervention acts: a hook point and, optionally, one position of it.

    ``pos=None`` means the whole activation. With a position, :meth:`apply` edits only
    ``activation[:, pos]`` (axis 1 is ``pos`` at every sequence hook in the glossary).
    """

    hook: str
    pos: int | None = None

    def select(self, activation: Tensor) -> Tensor:
        """The part of the activation this site names."""
        return activation if self.pos is None else activation[:, self.pos]

    def apply(self, activation: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """A copy of ``activation`` with the site's part replaced by ``fn(part)``."""
        if self.pos is None:
            return fn(activation)
        out = activation.clone()
        out[:, self.pos] = fn(activation[:, self.pos])
        return out

    def describe(self) -> str:
        return self.hook if self.pos is None else f"{self.hook} at pos {self.pos}"
