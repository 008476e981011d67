"""Stars and waves: the Fourier readouts of a trained modular MLP in Pearce et al.'s explorable.

The explorable's model is logits = ReLU(E[a] W_in + E[b] W_in) W_out Eᵀ. Its readouts take each
neuron's weights as a function of a residue:

* the input side, ``E @ W_in`` [p, neuron] (the neuron's pre-activation share from one operand),
* the output side, ``(W_out @ E.T).T`` [c, neuron] (what the neuron adds to each logit c),

and this module owns, as pure functions of those tensors:

* ``neuron_dft``: each neuron's cos and sin coefficients at frequencies 1..(p−1)/2 (33 for p=67),
  the "W_in-proj / W_out-proj" of the constructed circle, one per frequency;
* ``neuron_frequencies``, ``frequency_groups``: each neuron's frequency (its largest (cos, sin)
  pair) and the neurons of each frequency, as the explorable groups its wave charts;
* ``star_points``: the tidy table behind the star plots (each group's neurons at the group's
  frequency);
* ``group_logits``: each frequency group's contribution to the logits;
* ``wave_fit``: how well a contribution is the wave cos(2πk(a+b−c)/p) over the outputs c.

Coefficients use mechgrok's orthonormal Fourier basis (``mechgrok.analysis.fourier``): the
coefficient of cos k is ⟨w, cos(w_k x)⟩ / ‖cos(w_k x)‖ = sqrt(2/p)·Σ_x w(x) cos(2πkx/p), so a
neuron whose weights are A·cos(2πkx/p − φ) has (cos, sin) = A·sqrt(p/2)·(cos φ, sin φ). Its angle
is the neuron's phase, which is what the star plots show. p must be odd (the basis's rule).

Valid for op='add' (the waves of a+b); axis names follow the glossary in ``mechgrok.hooks``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechgrok.analysis import fourier

__all__ = [
    "neuron_dft",
    "neuron_frequencies",
    "frequency_groups",
    "star_points",
    "group_logits",
    "WaveFit",
    "wave_fit",
]


# ----------------------------------------------------------------------------- the DFT of each neuron
def neuron_dft(weights: Float[Tensor, "p neuron"]) -> Float[Tensor, "neuron freq 2"]:
    """Each neuron's cos and sin coefficients over the residue axis, at k = 1..(p−1)/2 (index k−1).

    ``out[n, k-1]`` = (coefficient of cos k, coefficient of sin k) of ``weights[:, n]`` in the
    orthonormal basis of ``fourier.fourier_basis`` (the constant component is dropped). Float64.
    """
    if weights.ndim != 2:
        raise ValueError(f"weights have shape {tuple(weights.shape)}; expected [p, neuron], the residue axis first")
    fourier.check_p(weights.shape[0])
    coeffs = fourier.fourier_1d(weights.double().T)  # [neuron, component]: const, cos 1, sin 1, ...
    return torch.stack([coeffs[:, 1::2], coeffs[:, 2::2]], dim=-1)


def _pair_norms(coeffs: Tensor, name: str) -> Tensor:
    if coeffs.ndim != 3 or coeffs.shape[-1] != 2:
        raise ValueError(f"{name} has shape {tuple(coeffs.shape)}; expected [neuron, freq, 2], as neuron_dft returns")
    return coeffs.double().norm(dim=-1)  # [neuron, freq]


def neuron_frequencies(
    in_coeffs: Float[Tensor, "neuron freq 2"], out_coeffs: Float[Tensor, "neuron freq 2"] | None = None
) -> Int[Tensor, "neuron"]:
    """Each neuron's frequency k (1-based): the k whose (cos, sin) pair has the largest norm.

    With ``out_coeffs`` too, the k with the largest in² + out² (both sides' squared pair norms
    together). Ties go to the smaller k.
    """
    energy = _pair_norms(in_coeffs, "in_coeffs") ** 2
    if out_coeffs is not None:
        out_energy = _pair_norms(out_coeffs, "out_coeffs") ** 2
        if out_energy.shape != energy.shape:
            raise ValueError(
                f"out_coeffs have shape {tuple(out_coeffs.shape)} but in_coeffs {tuple(in_coeffs.shape)}; "
                "both must be neuron_dft of the same neurons and p"
            )
        energy = energy + out_energy
    return energy.argmax(dim=1) + 1


def frequency_groups(freqs: Int[Tensor, "neuron"]) -> dict[int, list[int]]:
    """The neurons of each frequency: {k: [neuron, ...]}, keys and neurons ascending.

    >>> frequency_groups(torch.tensor([4, 7, 4]))
    {4: [0, 2], 7: [1]}
    """
    groups: dict[int, list[int]] = {}
    for neuron, k in enumerate(torch.as_tensor(freqs).flatten().tolist()):
        groups.setdefault(int(k), []).append(neuron)
    return dict(sorted(groups.items()))


def _check_groups(groups: Mapping[int, list[int]], n_neurons: int, n_freqs: int | None = None) -> None:
    for k, neurons in groups.items():
        if n_freqs is not None and not 1 <= k <= n_freqs:
            raise ValueError(f"group frequency {k} is out of range 1..{n_freqs} for these coefficients")
        bad = [n for n in neurons if not 0 <= n < n_neurons]
        if bad:
            raise ValueError(
                f"group {k} names neurons {bad}, out of range 0..{n_neurons - 1}; build groups with "
                "frequency_groups(neuron_frequencies(...)) from the same neurons"
            )


# ----------------------------------------------------------------------------- stars
def star_points(
    coeffs: Float[Tensor, "neuron freq 2"] | Mapping[str, Float[Tensor, "neuron freq 2"]],
    groups: Mapping[int, list[int]],
    *,
    which: str = "in",
) -> pd.DataFrame:
    """The star plots' points: each group's neurons at the group's own frequency.

    ``coeffs`` is one ``neuron_dft`` result (labelled ``which``) or a mapping such as
    ``{"in": in_coeffs, "out": out_coeffs}``. One row per (side, group, neuron): which, frequency,
    neuron, cos, sin, norm, angle (atan2(sin, cos), the neuron's phase).
    """
    sides = dict(coeffs) if isinstance(coeffs, Mapping) else {which: coeffs}
    rows = []
    for side, c in sides.items():
        _pair_norms(c, f"coeffs[{side!r}]")
        _check_groups(groups, c.shape[0], c.shape[1])
        c = c.double()
        for k, neurons in groups.items():
            for n in neurons:
                cos, sin = c[n, k - 1].tolist()
                rows.append({"which": side, "frequency": k, "neuron": n, "cos": cos, "sin": sin,
                             "norm": math.hypot(cos, sin), "angle": math.atan2(sin, cos)})
    return pd.DataFrame(rows, columns=["which", "frequency", "neuron", "cos", "sin", "norm", "angle"])


# ----------------------------------------------------------------------------- waves
def group_logits(
    neurons: Float[Tensor, "batch neuron"], W_L: Float[Tensor, "neuron c"], groups: Mapping[int, list[int]]
) -> dict[int, Float[Tensor, "batch c"]]:
    """Each frequency group's contribution to the logits: ``neurons[:, group] @ W_L[group]``.

    ``neurons`` are the activations after the ReLU, ``W_L`` the neuron-to-logit map (the
    explorable's W_out Eᵀ). The contributions of groups that cover every neuron once sum to the
    logits (without any bias).
    """
    if neurons.ndim != 2 or W_L.ndim != 2 or neurons.shape[1] != W_L.shape[0]:
        raise ValueError(
            f"neurons {tuple(neurons.shape)} and W_L {tuple(W_L.shape)} do not fit: expected [batch, neuron] and "
            "[neuron, c] with the same number of neurons"
        )
    _check_groups(groups, W_L.shape[0])
    return {k: neurons[:, list(idx)] @ W_L[list(idx)] for k, idx in groups.items()}


@dataclass(frozen=True)
class WaveFit:
    """contribution(a, b, c) ≈ α cos(w_k(a+b−c)) + β sin(w_k(a+b−c)) + γ, w_k = 2πk/p.

    ``amplitude`` = sqrt(α² + β²) and ``phase`` = atan2(β, α), so the wave is
    amplitude·cos(w_k(a+b−c) − phase). ``r2``: the fraction of the contribution's variance (about
    its overall mean) that the fit explains. ``r2_centred``: the same after removing each input's
    mean over c first (the softmax ignores a per-input constant); the waves are orthogonal to any
    function of (a, b) alone, so α and β are the same either way.
    """

    k: int
    p: int
    alpha: float
    beta: float
    constant: float
    amplitude: float
    phase: float
    r2: float
    r2_centred: float
    fitted: Float[Tensor, "batch c"] = field(repr=False)

    def table(self) -> pd.DataFrame:
        """One row: k, p, alpha, beta, constant, amplitude, phase, r2, r2_centred."""
        keys = ["k", "p", "alpha", "beta", "constant", "amplitude", "phase", "r2", "r2_centred"]
        return pd.DataFrame([{key: getattr(self, key) for key in keys}])


def _r2(y: Tensor, residual: Tensor) -> float:
    total = (y * y).sum()
    return (1 - (residual * residual).sum() / total).item() if total > 0 else math.nan


def wave_fit(contribution: Float[Tensor, "batch c"], k: int, p: int) -> WaveFit:
    """Least-squares fit of α cos(2πk(a+b−c)/p) + β sin(...) + γ to a contribution over all p² inputs.

    ``contribution`` is [p², c] in grid order (row a*p + b), with c = p outputs, e.g. one entry of
    ``group_logits``. The explorable's claim is that each frequency group computes
    cos(2π(a+b)k/p) across the outputs; R² says how much of the contribution that wave is.
    For Appendix A's exact x² circle, the contribution is N cos²((a−b)ω/2) cos((a+b−c)ω), whose
    cos²((a−b)ω/2) = (1 + cos((a−b)ω))/2 modulation is no part of the wave: R² is 2/3 there.
    """
    (k,) = fourier.check_frequencies([k], p)
    if contribution.shape != (p * p, p):
        raise ValueError(
            f"contribution has shape {tuple(contribution.shape)}; expected [p², c] = [{p * p}, {p}] for p={p}: "
            "all inputs in grid order (a*p + b) and one column per output c"
        )
    y = fourier.to_grid(contribution.double().cpu(), p)  # [a, b, c]
    r = torch.arange(p, dtype=torch.float64)
    t = 2 * math.pi * k * (r[:, None, None] + r[None, :, None] - r[None, None, :]) / p
    X = torch.stack([torch.cos(t), torch.sin(t), torch.ones_like(t)], dim=-1).reshape(-1, 3)
    coef = torch.linalg.lstsq(X, y.reshape(-1, 1)).solution[:, 0]
    fitted = (X @ coef).reshape(p, p, p)
    alpha, beta, gamma = coef.tolist()
    residual = y - fitted
    centred = y - y.mean(dim=-1, keepdim=True)
    wave = fitted - gamma
    return WaveFit(
        k=k,
        p=p,
        alpha=alpha,
        beta=beta,
        constant=gamma,
        amplitude=math.hypot(alpha, beta),
        phase=math.atan2(beta, alpha),
        r2=_r2(y - y.mean(), residual),
        r2_centred=_r2(centred, centred - wave),
        fitted=fourier.from_grid(fitted),
    )
