"""The constructed circle of Pearce et al.'s explorable (Appendix A): modular addition with N neurons, no training.

The model is, for residues a, b, c mod M and N neurons::

    activations = act(E[a] W_in + E[b] W_in)        # [neuron]
    logits[c]   = activations W_out E[c]^T

with ω = 2π/M, θ = 2π/N and (``construction_weights``)::

    E[i]        = (cos iω, sin iω)                  # [M, 2], the circle embedding
    W_in[:, i]  = (cos iθ, sin iθ)                  # [2, N], neurons evenly spaced on the circle
    W_out[i]    = (cos 2iθ, sin 2iθ)                # [N, 2], rotating twice as fast

This module owns that construction and its readouts, as pure functions of integers and tensors:

* ``circle_embedding``, ``construction_weights``, ``construction_logits`` (ReLU or x²),
  ``x2_closed_form``: the construction and the closed form of its x² logits;
* ``construction_accuracy``: argmax accuracy with ties counted apart, and the smallest top-2 gap;
* ``relu_accuracy_grid``: the explorable's "wrinkles" chart, ReLU accuracy over neurons × modulus;
* ``circle_geometry``: the same readouts on a *trained* circle model's W_in and W_out (norms,
  even spacing, the doubled rotation, collapsed neurons).

Why x² is exact for N = 3 and N ≥ 5 (and not for N = 2 or 4). Since
E[a] W_in[:, i] = cos(aω − iθ) and W_out[i] E[c]^T = cos(cω − 2iθ),

    logits[c] = Σ_i [cos(aω − iθ) + cos(bω − iθ)]² cos(cω − 2iθ)
              = Σ_i 4 cos²((a−b)ω/2) cos²((a+b)ω/2 − iθ) cos(cω − 2iθ)
              = cos²((a−b)ω/2) Σ_i [2 cos(cω − 2iθ) + cos((a+b−c)ω) + cos((a+b+c)ω − 4iθ)],

using cos x + cos y = 2 cos((x−y)/2) cos((x+y)/2) and cos²x cos y = ¼[2 cos y + cos(2x−y) + cos(2x+y)].
A sum Σ_{n<N} cos(γ − m·nθ) = Re(e^{iγ} Σ_n e^{−2πi·mn/N}) is a geometric sum: 0 unless N divides m,
and N cos γ when it does (every term is then cos γ). The first sum (m = 2) vanishes unless N | 2,
i.e. for N > 2; the third (m = 4) unless N | 4, i.e. for N = 3 and N > 4. Then

    logits[c] = N cos²((a−b)ω/2) cos((a+b−c)ω)                   (``x2_closed_form``)

whose argmax over c is a+b mod M, as cos²((a−b)ω/2) ≥ 0 does not depend on c. For N = 2 the
first sum adds 2N cos²(·) cos(cω) (cos(cω − 2iθ) = cos(cω) for every i), and for N = 2 or 4 the
third adds N cos²(·) cos((a+b+c)ω): the identity fails. The appendix writes the conditions as
"N > 2" and "N > 4"; N = 3 passes both because 3 divides neither 2 nor 4. (The appendix also drops the
factor N, which does not move the argmax.)

Ties. For even M the cells with a − b ≡ M/2 have cos²((a−b)ω/2) = 0: there E[a] + E[b] = 0, so
every neuron's input is 0 and all M logits are 0, for ReLU and x² alike. ``construction_accuracy``
counts such cells as ties: wrong in its ``accuracy``, left out of its ``accuracy_excluding_ties``.

Precision. The top-2 logit gaps are small (M = 67: ~1e-5 for x² and for ReLU with N = 5, 2.4e-7
for ReLU with N = 8), so logits are built in float64 by default and the argmax is always taken
in float64.

Axis names follow the glossary in ``mechgrok.hooks`` (here ``p`` is M, the modulus).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "ACTIVATIONS",
    "circle_embedding",
    "construction_weights",
    "construction_logits",
    "x2_closed_form",
    "ConstructionAccuracy",
    "construction_accuracy",
    "relu_accuracy_grid",
    "CircleGeometry",
    "circle_geometry",
]

Activation = Literal["relu", "x2"]
ACTIVATIONS: tuple[str, ...] = ("relu", "x2")


# ----------------------------------------------------------------------------- checks
def _check_int(name: str, value: int, minimum: int, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum} ({why})")
    return value


def _check_M(M: int) -> int:
    return _check_int("M", M, 3, "the modulus; the explorable uses M=67")


def _check_N(N: int) -> int:
    return _check_int("N", N, 1, "the number of neurons; the explorable's construction uses N=5")


# ----------------------------------------------------------------------------- the construction
def _circle(n: int, steps: float, turns: int = 1) -> Float[Tensor, "n 2"]:
    """Rows (cos(turns·i·2π/steps), sin(...)) for i = 0..n-1, in float64."""
    angle = turns * torch.arange(n, dtype=torch.float64) * (2 * math.pi / steps)
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def circle_embedding(M: int, normalise: bool = True) -> Float[Tensor, "p 2"]:
    """The circle embedding E, rows (cos iω, sin iω) for i = 0..M-1, ω = 2π/M, in float64.

    ``normalise=True`` scales each column to unit norm (both norms are sqrt(M/2) for M >= 3), as the
    explorable's constructed model does; ``normalise=False`` is Appendix A's E.

    >>> E = circle_embedding(67); E.shape, torch.allclose(E.norm(dim=0), torch.ones(2, dtype=E.dtype))
    (torch.Size([67, 2]), True)
    """
    E = _circle(_check_M(M), M)
    return E / E.norm(dim=0, keepdim=True) if normalise else E


def construction_weights(
    M: int, N: int
) -> tuple[Float[Tensor, "p 2"], Float[Tensor, "2 neuron"], Float[Tensor, "neuron 2"]]:
    """Appendix A's (E, W_in, W_out) for modulus M and N neurons, in float64 (E not normalised).

    E[i] = (cos iω, sin iω); W_in's columns are (cos iθ, sin iθ); W_out's rows (cos 2iθ, sin 2iθ);
    ω = 2π/M, θ = 2π/N.
    """
    _check_N(N)
    return circle_embedding(M, normalise=False), _circle(N, N).T.contiguous(), _circle(N, N, turns=2)


def construction_logits(
    M: int, N: int, activation: Activation = "relu", dtype: torch.dtype = torch.float64
) -> Float[Tensor, "a b c"]:
    """logits[a, b, c] = act(E[a] W_in + E[b] W_in) W_out E[c]^T of Appendix A's construction.

    ``activation`` is "relu" or "x2" (x ↦ x²). Computed in ``dtype`` (float64 by default: the top-2
    gaps can be ~1e-5 and smaller). Memory is M³ entries.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not one of {ACTIVATIONS}; pass 'relu' or 'x2'")
    E, W_in, W_out = (w.to(dtype) for w in construction_weights(M, N))
    h = E @ W_in  # [a, neuron]: cos(aω − iθ)
    pre = h[:, None, :] + h[None, :, :]  # [a, b, neuron]
    post = torch.relu(pre) if activation == "relu" else pre * pre
    return post @ (W_out @ E.T)  # [a, b, c]


def _residues(M: int) -> tuple[Tensor, Tensor, Tensor]:
    r = torch.arange(M, dtype=torch.float64)
    return r[:, None, None], r[None, :, None], r[None, None, :]


def x2_closed_form(M: int, N: int) -> Float[Tensor, "a b c"]:
    """N·cos²((a−b)ω/2)·cos((a+b−c)ω), ω = 2π/M, in float64: the x² logits for N = 3 and N >= 5 (module docstring)."""
    _check_N(N)
    a, b, c = _residues(_check_M(M))
    w = 2 * math.pi / M
    return N * torch.cos((a - b) * w / 2) ** 2 * torch.cos((a + b - c) * w)


# ----------------------------------------------------------------------------- accuracy
@dataclass(frozen=True)
class ConstructionAccuracy:
    """Argmax accuracy of logits over all (a, b) against c = a+b mod M.

    ``accuracy``: the fraction of all M² cells whose single largest logit is at a+b mod M (a tie
    counts as wrong). ``accuracy_excluding_ties``: the same over the cells that are not ties
    (nan when every cell ties). A cell is a tie when its top-2 gap is at most ``tie_tolerance`` ×
    the largest |logit| of the whole table (e.g. the a−b ≡ M/2 cells of an even M, where all
    logits are 0). ``min_gap``: the smallest top-2 gap over the cells that are not ties (nan if
    none), i.e. how close the argmax came to changing.
    """

    M: int
    accuracy: float
    accuracy_excluding_ties: float
    n_ties: int
    n_cells: int
    min_gap: float

    def table(self) -> pd.DataFrame:
        """One row: M, accuracy, accuracy_excluding_ties, n_ties, n_cells, min_gap."""
        return pd.DataFrame([vars(self)])


def construction_accuracy(
    logits: Float[Tensor, "a b c"], M: int, *, tie_tolerance: float = 1e-9
) -> ConstructionAccuracy:
    """Argmax accuracy of ``logits`` [a, b, c] (or [a*M + b, c], grid order) for a+b mod M, in float64.

    Ties are counted apart (see ``ConstructionAccuracy``).
    """
    _check_M(M)
    if not (isinstance(tie_tolerance, (int, float)) and 0 <= tie_tolerance < 1):
        raise ValueError(f"tie_tolerance={tie_tolerance!r} must be a number in [0, 1); the default is 1e-9")
    if logits.shape == (M * M, M):
        logits = logits.reshape(M, M, M)  # grid order a*M + b
    if logits.shape != (M, M, M):
        raise ValueError(
            f"logits have shape {tuple(logits.shape)}; expected [a, b, c] = [{M}, {M}, {M}] (or [{M * M}, {M}] in "
            "grid order a*M + b) for M={M}: pass the M the logits were built for"
        )
    L = logits.double()
    top = L.topk(2, dim=-1)
    gap = top.values[..., 0] - top.values[..., 1]  # [a, b]
    tie = gap <= tie_tolerance * L.abs().max()
    r = torch.arange(M, device=L.device)
    correct = (top.indices[..., 0] == (r[:, None] + r[None, :]) % M) & ~tie
    n_ties = int(tie.sum())
    n_clear = M * M - n_ties
    return ConstructionAccuracy(
        M=M,
        accuracy=correct.double().mean().item(),
        accuracy_excluding_ties=(correct.sum().item() / n_clear) if n_clear else math.nan,
        n_ties=n_ties,
        n_cells=M * M,
        min_gap=gap[~tie].min().item() if n_clear else math.nan,
    )


def relu_accuracy_grid(neurons: Sequence[int], moduli: Sequence[int]) -> pd.DataFrame:
    """Accuracy of the untrained ReLU construction for each N in ``neurons`` and M in ``moduli``.

    The explorable's "wrinkles" chart (Appendix A). One row per (N, M): neurons, modulus, and the
    fields of ``ConstructionAccuracy`` (accuracy, accuracy_excluding_ties, n_ties, n_cells, min_gap).
    Each cell builds M³ logits in float64. Odd M can tie too, by symmetry: for N = 3 and M = 67,
    34 cells on a + b ≡ 0 have their top two logits equal to 1e-16.
    """
    rows = []
    for N in neurons:
        for M in moduli:
            acc = construction_accuracy(construction_logits(M, N, "relu"), M)
            rows.append({"neurons": N, **vars(acc)})
    columns = ["neurons", "M", "accuracy", "accuracy_excluding_ties", "n_ties", "n_cells", "min_gap"]
    return pd.DataFrame(rows, columns=columns).rename(columns={"M": "modulus"})


# ----------------------------------------------------------------------------- a trained circle
def _wrap(x: Tensor) -> Tensor:
    """Angles wrapped into (−π, π]."""
    return math.pi - torch.remainder(math.pi - x, 2 * math.pi)


@dataclass(frozen=True)
class CircleGeometry:
    """The circle readouts of a circle model's W_in [2, N] and W_out [N, 2] (``circle_geometry``).

    Per neuron i: ``in_points[i]`` = W_in[:, i] and ``out_points[i]`` = W_out[i] (the (cos, sin)
    point of each), their ``*_norms`` and ``*_angles`` (atan2(sin, cos), in (−π, π]).

    * ``order``: the neurons sorted by in-angle, counter-clockwise from −π.
    * ``in_gaps``: the angular gaps between consecutive neurons in that order, the last one
      wrapping round (they sum to 2π); ``gap_error`` = max |gap − 2π/N| (0 when evenly spaced).
    * ``in_norm_spread``, ``out_norm_spread``: std/mean of the norms (population std; 0 when all
      neurons have the same norm).
    * ``rotation_ratio``: the least-squares slope of the unwrapped out-angles against the
      in-angles, taken in ``order`` (see ``circle_geometry`` for the convention);
      ``rotation_residual``: the RMS of that fit's residual, in radians.
    * ``collapsed_pairs``: the number of neuron pairs whose in-angles lie within
      ``collapse_fraction`` × 2π/N of each other (circularly), neurons that have collapsed onto
      one another.
    """

    in_points: Float[Tensor, "neuron 2"]
    out_points: Float[Tensor, "neuron 2"]
    in_norms: Float[Tensor, "neuron"]
    out_norms: Float[Tensor, "neuron"]
    in_angles: Float[Tensor, "neuron"]
    out_angles: Float[Tensor, "neuron"]
    order: list[int]
    in_gaps: Float[Tensor, "neuron"]
    gap_error: float
    in_norm_spread: float
    out_norm_spread: float
    rotation_ratio: float
    rotation_residual: float
    collapsed_pairs: int

    def table(self) -> pd.DataFrame:
        """One row per neuron, in in-angle order: neuron, position, in/out cos, sin, norm, angle; in_gap (to the next)."""
        idx = self.order
        return pd.DataFrame(
            {
                "neuron": idx,
                "position": list(range(len(idx))),
                "in_cos": self.in_points[idx, 0].tolist(),
                "in_sin": self.in_points[idx, 1].tolist(),
                "in_norm": self.in_norms[idx].tolist(),
                "in_angle": self.in_angles[idx].tolist(),
                "out_cos": self.out_points[idx, 0].tolist(),
                "out_sin": self.out_points[idx, 1].tolist(),
                "out_norm": self.out_norms[idx].tolist(),
                "out_angle": self.out_angles[idx].tolist(),
                "in_gap": self.in_gaps.tolist(),
            }
        )

    def summary(self) -> pd.DataFrame:
        """One row of the scalar readouts: gap_error, norm spreads, rotation ratio and residual, collapsed pairs."""
        keys = ["gap_error", "in_norm_spread", "out_norm_spread", "rotation_ratio", "rotation_residual", "collapsed_pairs"]
        return pd.DataFrame([{k: getattr(self, k) for k in keys}])


def _spread(x: Tensor) -> float:
    mean = x.mean()
    return (x.std(correction=0) / mean).item() if mean > 0 else math.nan


def circle_geometry(
    W_in: Float[Tensor, "2 neuron"], W_out: Float[Tensor, "neuron 2"], *, collapse_fraction: float = 0.25
) -> CircleGeometry:
    """Norms, spacing, the doubled rotation and collapsed neurons of a circle model's W_in and W_out.

    ``W_in`` [2, N] maps the embedding's (cos, sin) to the neurons, ``W_out`` [N, 2] maps the
    neurons back (the explorable's W_in-proj and W_out-proj; ``construction_weights`` gives the
    exact ones). All in float64.

    Rotation ratio convention: neuron i has in-angle φ_i = atan2(W_in[1, i], W_in[0, i]) and
    out-angle ψ_i = atan2(W_out[i, 1], W_out[i, 0]). Walking the neurons in increasing φ, each step
    of ψ is wrapped into (−π, π] and accumulated (unwrapping), and ``rotation_ratio`` is the
    least-squares slope of that ψ against φ. The construction gives exactly +2 (ψ_i = 2φ_i); −2
    means W_out rotates twice as fast the other way (an equally valid solution: mirroring W_out
    mirrors the output circle). A global rotation of either circle moves only the intercept.
    Unwrapping assumes each step of ψ is under π: with N evenly spaced neurons and ratio 2 that
    holds for N >= 5, while for N <= 4 the ratio is only determined modulo N (for N = 3, ψ_i =
    2φ_i and ψ_i = −φ_i are the same points, and the slope reads −1).
    """
    if W_in.ndim != 2 or W_in.shape[0] != 2:
        raise ValueError(f"W_in has shape {tuple(W_in.shape)}; expected [2, neuron] (the (cos, sin) rows of W_in-proj)")
    if W_out.ndim != 2 or W_out.shape[1] != 2 or W_out.shape[0] != W_in.shape[1]:
        raise ValueError(
            f"W_out has shape {tuple(W_out.shape)}; expected [neuron, 2] = [{W_in.shape[1]}, 2] to match W_in "
            f"{tuple(W_in.shape)} (transpose it if it is [2, neuron])"
        )
    if not (isinstance(collapse_fraction, (int, float)) and 0 <= collapse_fraction < 1):
        raise ValueError(f"collapse_fraction={collapse_fraction!r} must be in [0, 1); the default is 0.25 of 2π/N")
    N = W_in.shape[1]
    in_points, out_points = W_in.double().T.cpu(), W_out.double().cpu()
    in_angles = torch.atan2(in_points[:, 1], in_points[:, 0])
    out_angles = torch.atan2(out_points[:, 1], out_points[:, 0])
    order = torch.argsort(in_angles, stable=True)
    phi = in_angles[order]
    gaps = torch.diff(phi, append=phi[:1] + 2 * math.pi)  # the last gap wraps round to the first
    even = 2 * math.pi / N
    psi = out_angles[order]
    psi = torch.cat([psi[:1], psi[0] + torch.cumsum(_wrap(torch.diff(psi)), 0)])  # unwrapped
    if N >= 2 and (phi - phi.mean()).abs().max() > 0:
        x, y = phi - phi.mean(), psi - psi.mean()
        ratio = ((x * y).sum() / (x * x).sum()).item()
        rotation_residual = (y - ratio * x).pow(2).mean().sqrt().item()
    else:  # one neuron, or all at one angle: no slope
        ratio, rotation_residual = math.nan, math.nan
    distance = _wrap(in_angles[:, None] - in_angles[None, :]).abs()  # circular, [neuron, neuron]
    close = torch.triu(distance < collapse_fraction * even, diagonal=1)
    in_norms, out_norms = in_points.norm(dim=1), out_points.norm(dim=1)
    return CircleGeometry(
        in_points=in_points,
        out_points=out_points,
        in_norms=in_norms,
        out_norms=out_norms,
        in_angles=in_angles,
        out_angles=out_angles,
        order=order.tolist(),
        in_gaps=gaps,
        gap_error=(gaps - even).abs().max().item(),
        in_norm_spread=_spread(in_norms),
        out_norm_spread=_spread(out_norms),
        rotation_ratio=ratio,
        rotation_residual=rotation_residual,
        collapsed_pairs=int(close.sum()),
    )
