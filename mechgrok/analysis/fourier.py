"""The Fourier basis over residues mod p, its 1D and 2D transforms, and projections.

Conventions (docs/concepts.md), for odd p and K = (p-1)/2 frequencies, w_k = 2πk/p:

* ``fourier_basis(p)`` is a p×p orthonormal matrix F whose rows are, in this order::

      row 0      "const"    1/sqrt(p)
      row 2k-1   "cos k"    cos(w_k x) / ||·||      for k = 1..K
      row 2k     "sin k"    sin(w_k x) / ||·||

  so cos comes before sin (``cos_component(k)``, ``sin_component(k)`` give the rows).
* The 1D transform of a tensor whose last axis is indexed by a residue is ``x @ F.T``.
* The 2D transform of an activation over the input grid (a, b) is ``F @ X @ F.T`` for each
  channel. Activations over all p² inputs come in grid order, index ``a*p + b`` (the order of
  ``ModularTask(p).pairs()``); ``to_grid`` and ``from_grid`` convert.
* Directions in input space R^{p×p} are flattened in grid order too. ``sum_directions`` gives
  the unit cos(w_k(a+sb)) and sin(w_k(a+sb)) for a sign s (``SIGNS``: +1 for a+b, the
  addition algorithm; -1 for a-b, subtraction's); ``frequency_directions_2d(..., terms="all")``
  gives the eight 2D basis terms made of frequency k and the constant, the same for both signs.
  The sign of a run comes from its task: ``mechgrok.tasks.modular.require_fourier(task, ...)``.

All functions are pure, work in float64 internally and return the input's dtype. The axis
names in the annotations are those of the glossary in ``mechgrok.hooks``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Literal

import einops
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "TERMS",
    "SIGNS",
    "check_sign",
    "check_p",
    "n_frequencies",
    "frequencies",
    "check_frequencies",
    "fourier_basis",
    "component_names",
    "component_names_2d",
    "cos_component",
    "sin_component",
    "fourier_1d",
    "inverse_fourier_1d",
    "to_grid",
    "from_grid",
    "fourier_2d",
    "inverse_fourier_2d",
    "component_norms",
    "frequency_norms",
    "sum_directions",
    "frequency_directions_1d",
    "frequency_directions_2d",
    "project_onto",
    "remove_span",
]

# Which 2D directions stand for "frequency k" (see frequency_directions_2d).
Terms = Literal["sum", "all"]
TERMS: tuple[str, ...] = ("sum", "all")
# The sign s of b in the directions cos/sin(w_k(a + s·b)): +1 for op='add', -1 for op='sub'.
SIGNS: tuple[int, ...] = (+1, -1)


# ----------------------------------------------------------------------------- frequencies
def check_p(p: int) -> int:
    """Return p if it is an odd integer >= 3 (the basis needs odd p), else raise ValueError."""
    if isinstance(p, bool) or not isinstance(p, int) or p < 3 or p % 2 == 0:
        raise ValueError(f"p={p!r} must be an odd integer >= 3 for the Fourier basis; the paper uses p=113")
    return p


def n_frequencies(p: int) -> int:
    """K = (p-1)/2, the number of non-constant frequencies."""
    return (check_p(p) - 1) // 2


def frequencies(p: int) -> list[int]:
    """All frequencies 1..K."""
    return list(range(1, n_frequencies(p) + 1))


def check_frequencies(ks: Iterable[int] | int, p: int) -> list[int]:
    """Validate frequencies for modulus p and return them sorted, without duplicates.

    >>> check_frequencies([14, 3, 14], p=113)
    [3, 14]
    """
    K = n_frequencies(p)
    if isinstance(ks, Tensor):
        ks = ks.flatten().tolist()
    elif not isinstance(ks, Iterable) or isinstance(ks, (str, bytes)):
        ks = [ks]
    out = set()
    for k in ks:
        try:
            if isinstance(k, bool):
                raise TypeError
            value = operator.index(k)  # ints, numpy and torch integer scalars; never floats
        except TypeError:
            raise ValueError(
                f"frequency {k!r} is not an integer; frequencies for p={p} are integers 1..{K}"
            ) from None
        if not 1 <= value <= K:
            raise ValueError(
                f"frequency {value} is out of range for p={p}; allowed frequencies are 1..{K} "
                "(k and p-k are the same frequency, so use k <= (p-1)/2)"
            )
        out.add(value)
    return sorted(out)


def check_sign(sign: int) -> int:
    """Return sign if it is +1 (directions of a+b) or -1 (a-b), else raise ValueError."""
    if isinstance(sign, bool) or sign not in SIGNS:
        raise ValueError(
            f"sign={sign!r} is not one of {SIGNS}: +1 for cos/sin(w(a+b)) (op='add'), -1 for cos/sin(w(a-b)) "
            "(op='sub'); take it from the run's task with mechgrok.tasks.modular.require_fourier(task, ...)"
        )
    return int(sign)


# ----------------------------------------------------------------------------- the basis
def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> Float[Tensor, "component p"]:
    """The p×p orthonormal Fourier basis, rows in the order const, cos 1, sin 1, ..., cos K, sin K.

    >>> F = fourier_basis(5); F.shape, torch.allclose(F @ F.T, torch.eye(5, dtype=F.dtype))
    (torch.Size([5, 5]), True)
    """
    K = n_frequencies(p)
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, K + 1):
        w = 2 * math.pi * k / p
        rows += [torch.cos(w * x), torch.sin(w * x)]
    F = torch.stack(rows)
    return (F / F.norm(dim=1, keepdim=True)).to(dtype)


def component_names(p: int) -> list[str]:
    """The name of each basis row: ["const", "cos 1", "sin 1", ..., "cos K", "sin K"]."""
    names = ["const"]
    for k in frequencies(p):
        names += [f"cos {k}", f"sin {k}"]
    return names


def component_names_2d(p: int) -> list[list[str]]:
    """``names[i][j]`` names the 2D component (row i over a, row j over b), e.g. "a: cos 3, b: sin 3"."""
    names = component_names(p)
    return [[f"a: {na}, b: {nb}" for nb in names] for na in names]


def cos_component(k: int) -> int:
    """The basis row of cos(w_k x)."""
    return 2 * k - 1


def sin_component(k: int) -> int:
    """The basis row of sin(w_k x)."""
    return 2 * k


# ----------------------------------------------------------------------------- transforms
def _basis_like(p: int, x: Tensor) -> Tensor:
    return fourier_basis(p).to(device=x.device)


def fourier_1d(x: Float[Tensor, "*rest p"]) -> Float[Tensor, "*rest component"]:
    """The 1D transform ``x @ F.T`` along the last axis, which must be indexed by a residue."""
    F = _basis_like(x.shape[-1], x)
    return (x.double() @ F.T).to(x.dtype)


def inverse_fourier_1d(x: Float[Tensor, "*rest component"]) -> Float[Tensor, "*rest p"]:
    """Undo ``fourier_1d``: ``x @ F`` (F is orthogonal)."""
    F = _basis_like(x.shape[-1], x)
    return (x.double() @ F).to(x.dtype)


def to_grid(x: Float[Tensor, "batch *channel"], p: int) -> Float[Tensor, "a b *channel"]:
    """Unflatten the input axis: row ``a*p + b`` of x becomes ``[a, b]``."""
    if x.shape[0] != p * p:
        raise ValueError(
            f"expected all p²={p * p} inputs in grid order (index a*p + b) on axis 0, got {x.shape[0]}; "
            "evaluate on ModularTask(p).tokens() for an operation other than 'div'"
        )
    return einops.rearrange(x, "(a b) ... -> a b ...", a=p, b=p)


def from_grid(x: Float[Tensor, "a b *channel"]) -> Float[Tensor, "batch *channel"]:
    """Flatten the (a, b) grid back to grid order ``a*p + b``."""
    return einops.rearrange(x, "a b ... -> (a b) ...")


def fourier_2d(x: Float[Tensor, "a b *channel"]) -> Float[Tensor, "component_a component_b *channel"]:
    """The 2D transform ``F @ X @ F.T`` of each channel of a grid-shaped activation."""
    if x.shape[0] != x.shape[1]:
        raise ValueError(f"a grid activation has shape [p, p, ...], got {tuple(x.shape)}; use to_grid first")
    F = _basis_like(x.shape[0], x)
    # two one-sided products: a three-operand einsum (without opt_einsum) builds F⊗F, p⁴ entries
    rows = torch.einsum("ia,ab...->ib...", F, x.double())
    return torch.einsum("jb,ib...->ij...", F, rows).to(x.dtype)


def inverse_fourier_2d(x: Float[Tensor, "component_a component_b *channel"]) -> Float[Tensor, "a b *channel"]:
    """Undo ``fourier_2d``: ``F.T @ X @ F`` per channel."""
    if x.shape[0] != x.shape[1]:
        raise ValueError(f"2D Fourier coefficients have shape [p, p, ...], got {tuple(x.shape)}")
    F = _basis_like(x.shape[0], x)
    rows = torch.einsum("ia,ij...->aj...", F, x.double())
    return torch.einsum("jb,aj...->ab...", F, rows).to(x.dtype)


def component_norms(coefficients: Float[Tensor, "component *channel"]) -> Float[Tensor, "component"]:
    """The L2 norm of each Fourier component, taken over all the other axes.

    For W_E: ``component_norms(fourier_1d(W_E[:p].T).T)``, i.e. transform the residue axis first.
    """
    return coefficients.double().flatten(1).norm(dim=1).to(coefficients.dtype)


def frequency_norms(coefficients: Float[Tensor, "component *channel"]) -> Float[Tensor, "freq"]:
    """For each k = 1..K, the L2 norm of the cos k and sin k components together (index k-1)."""
    norms = component_norms(coefficients)
    return torch.sqrt(norms[1::2] ** 2 + norms[2::2] ** 2)


# ----------------------------------------------------------------------------- directions
def sum_directions(p: int, k: int, sign: int = +1) -> Float[Tensor, "2 a b"]:
    """Unit cos(w_k(a + sign·b)) and sin(w_k(a + sign·b)) over the input grid (docs/concepts.md).

    ``sign=+1`` (addition): in the basis (cos_a cos_b - sin_a sin_b)/sqrt(2) and
    (sin_a cos_b + cos_a sin_b)/sqrt(2). ``sign=-1`` (subtraction): (cos_a cos_b + sin_a sin_b)/sqrt(2)
    and (sin_a cos_b - cos_a sin_b)/sqrt(2).
    """
    (k,) = check_frequencies([k], p)
    r = torch.arange(p)
    s = (r[:, None] + r[None, :] if check_sign(sign) == 1 else r[:, None] - r[None, :]).double()
    w = 2 * math.pi * k / p
    d = torch.stack([torch.cos(w * s), torch.sin(w * s)])
    return d / d.flatten(1).norm(dim=1)[:, None, None]


def frequency_directions_1d(p: int, ks: Iterable[int]) -> Float[Tensor, "direction p"]:
    """The basis rows cos k and sin k of each chosen frequency (orthonormal, 2 per k)."""
    ks = check_frequencies(ks, p)
    F = fourier_basis(p)
    rows = [r for k in ks for r in (cos_component(k), sin_component(k))]
    return F[rows]


def frequency_directions_2d(
    p: int, ks: Iterable[int], terms: Terms = "sum", sign: int = +1
) -> Float[Tensor, "direction batch"]:
    """Orthonormal directions in R^{p×p} (flattened in grid order) that stand for each frequency k.

    ``terms="sum"``: the 2 directions cos(w_k(a + sign·b)), sin(w_k(a + sign·b)), the ones the
    model's algorithm uses and that restricted/excluded loss project onto (``sign`` +1 for
    op='add', -1 for op='sub').
    ``terms="all"``: the 8 basis terms built from frequency k and the constant, as in the
    neuron clusters (docs/concepts.md): const⊗cos/sin k, cos/sin k⊗const and the 4 products
    cos/sin k ⊗ cos/sin k. They contain the two "sum" directions of both signs, so ``sign``
    does not change them. Cross-frequency products (cos j ⊗ cos k, j ≠ k) belong to no frequency.
    """
    ks = check_frequencies(ks, p)
    check_sign(sign)
    if terms == "sum":
        dirs = [sum_directions(p, k, sign) for k in ks]
        out = torch.cat(dirs) if dirs else torch.zeros(0, p, p, dtype=torch.float64)
        return einops.rearrange(out, "direction a b -> direction (a b)")
    if terms == "all":
        F = fourier_basis(p)
        out = []
        for k in ks:
            c, s = cos_component(k), sin_component(k)
            pairs = [(0, c), (0, s), (c, 0), (s, 0), (c, c), (c, s), (s, c), (s, s)]
            out += [torch.outer(F[i], F[j]).flatten() for i, j in pairs]
        return torch.stack(out) if out else torch.zeros(0, p * p, dtype=torch.float64)
    raise ValueError(f"terms={terms!r} is not one of {TERMS}; pass terms='sum' or terms='all'")


# ----------------------------------------------------------------------------- projections
def project_onto(
    x: Float[Tensor, "batch *channel"], directions: Float[Tensor, "direction batch"]
) -> Float[Tensor, "batch *channel"]:
    """The orthogonal projection of each channel of x (along axis 0) onto the span of ``directions``.

    The directions need not be orthonormal (they are orthonormalised first); an empty set gives 0.
    """
    if directions.shape[-1] != x.shape[0]:
        raise ValueError(
            f"directions live in R^{directions.shape[-1]} but x has {x.shape[0]} entries on axis 0; "
            "they must index the same inputs"
        )
    if directions.shape[0] == 0:
        return torch.zeros_like(x)
    Q, R = torch.linalg.qr(directions.double().to(x.device).T)  # Q: [batch, direction]
    keep = R.diagonal().abs() > 1e-10 * R.diagonal().abs().max()  # drop directions already spanned
    Q = Q[:, keep]
    flat = x.double().reshape(x.shape[0], -1)
    return (Q @ (Q.T @ flat)).reshape(x.shape).to(x.dtype)


def remove_span(
    x: Float[Tensor, "batch *channel"], directions: Float[Tensor, "direction batch"]
) -> Float[Tensor, "batch *channel"]:
    """x minus its projection onto the span of ``directions`` (along axis 0)."""
    return (x.double() - project_onto(x.double(), directions)).to(x.dtype)
