"""Readouts of a trained model's algorithm (Nanda et al. §4; docs/concepts.md).

Every readout is a pure function of weights, activations or logits that returns tensors, a
pandas table or a small dataclass. ``gather_activations(model)`` is the one function here that
runs the model: once, on all p² inputs in grid order, collecting what the readouts need.

* Embedding: ``embedding_fourier_norms`` (W_E without its ``=`` row, 1D basis over residues).
* Neuron-logit map W_L = W_out @ W_U, [neuron, c]: ``neuron_logit_map``,
  ``neuron_logit_fourier_norms``, its rank-2K fit ``neuron_logit_fit`` and the paper's Table 1,
  ``mlp_direction_fits``.
* Neurons: ``neuron_frequency_fractions``, ``neuron_clusters``, ``cluster_sizes``.
* Key frequencies: ``key_frequencies`` with the rules in ``KEY_FREQUENCY_RULES``.
* Logits: ``logit_fourier_norms``, ``top_logit_components``, ``logit_cos_fit``.
* Attention: ``attention_readout``.

Valid tasks: the readouts that use the directions of a+b (``logit_cos_fit``,
``mlp_direction_fits``) hold for op='add' and, with ``sign=-1`` (a-b), for op='sub'; they take
the sign as a keyword (default +1, addition) because they see tensors, not a run, so pass
``require_fourier(acts.task, ...)``. The others (Fourier norms, clusters over the eight 2D terms
of a frequency, attention) are the same for every operation whose pairs fill the grid.

Axis names follow the glossary in ``mechgrok.hooks``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechgrok import hooks, registry
from mechgrok.analysis import fourier
from mechgrok.analysis.ablations import grid_task
from mechgrok.scoring import cross_entropy, task_logits
from mechgrok.tasks.modular import ModularTask

__all__ = [
    "GridActivations",
    "gather_activations",
    "FourierNorms",
    "embedding_fourier_norms",
    "neuron_logit_map",
    "neuron_logit_fourier_norms",
    "NeuronLogitFit",
    "neuron_logit_fit",
    "mlp_direction_fits",
    "neuron_frequency_fractions",
    "neuron_clusters",
    "cluster_sizes",
    "clustered_neurons",
    "OTHER_CLUSTER",
    "KEY_FREQUENCY_RULES",
    "DEFAULT_KEY_FREQUENCY_RULE",
    "key_frequencies",
    "key_frequencies_from_norms",
    "key_frequencies_from_clusters",
    "key_frequencies_original",
    "logit_fourier_norms",
    "top_logit_components",
    "LogitFit",
    "logit_cos_fit",
    "AttentionReadout",
    "attention_readout",
]


# ----------------------------------------------------------------------------- the one model run
@dataclass(frozen=True)
class GridActivations:
    """What the readouts need, from one run of the model on all p² inputs in grid order."""

    p: int
    labels: Int[Tensor, "batch"]
    split: Any  # mechgrok.tasks.base.Split
    logits: Float[Tensor, "batch c"]  # at the = position, the p task logits
    neurons: Float[Tensor, "batch neuron"]  # the family's "neurons" site (transformer: hook_post at =)
    attention: Float[Tensor, "batch head key_pos"] | None  # the pattern from = to a, b and =; None without attention
    W_E: Float[Tensor, "p d_model"]  # token embeddings of the residues (the = row dropped)
    W_L: Float[Tensor, "neuron c"]  # W_out @ W_U
    task: ModularTask  # the run's task: labels and the Fourier sign (require_fourier) come from it


def gather_activations(model: torch.nn.Module) -> GridActivations:
    """Run ``model`` once on its task's tokens (all p² inputs, grid order) and collect the readouts' inputs.

    The model must carry its task and split (``build_model(cfg, split=...)`` or ``load_run``);
    the labels are its task's. Any operation whose pairs fill the grid (all but 'div'), on
    every family with a single hidden layer (``ModelFamily.neuron_logit_map``): the
    transformer, and Pearce et al.'s MLPs, whose ``attention`` is None.
    """
    info = grid_task(model, "gather_activations")
    p = info.task.p
    family = registry.family(info.config.family)
    if family.neuron_logit_map is None or "neurons" not in family.sites:
        raise ValueError(f"gather_activations needs one hidden layer of neurons; the {family.name} family has none")
    neurons, out = family.sites["neurons"], family.sites["logits"]
    tokens = info.task.tokens().to(model.W_E.device)
    has_attention = hooks.ATTN_PATTERN in model.hook_dict
    names = [neurons.hook] + ([hooks.ATTN_PATTERN] if has_attention else [])
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=names)
    return GridActivations(
        p=p,
        labels=info.task.labels(),
        split=info.split,
        logits=task_logits(out.select(logits), p).detach().cpu(),
        neurons=neurons.select(cache[neurons.hook]).detach().cpu(),
        # the query that is read out
        attention=cache[hooks.ATTN_PATTERN][:, :, out.pos].detach().cpu() if has_attention else None,
        W_E=model.W_E[:p].detach().cpu(),
        W_L=task_logits(family.neuron_logit_map(model).detach(), p).cpu(),
        task=info.task,
    )


# ----------------------------------------------------------------------------- Fourier norms
@dataclass(frozen=True)
class FourierNorms:
    """Norms of the Fourier components of a tensor along one residue axis.

    ``component[i]`` is the norm of basis row i (names in ``names``); ``frequency[k-1]`` the
    norm of the cos k and sin k rows together.
    """

    component: Float[Tensor, "component"]
    frequency: Float[Tensor, "freq"]
    names: list[str]

    def table(self) -> pd.DataFrame:
        """One row per basis component: component, norm."""
        return pd.DataFrame({"component": self.names, "norm": self.component.tolist()})

    def frequency_table(self) -> pd.DataFrame:
        """One row per frequency: frequency, norm, fraction of the squared norm of all frequencies."""
        sq = self.frequency.double() ** 2
        return pd.DataFrame(
            {
                "frequency": list(range(1, len(self.frequency) + 1)),
                "norm": self.frequency.tolist(),
                "fraction": (sq / sq.sum()).tolist(),
            }
        )


def _norms(coefficients: Float[Tensor, "component *channel"]) -> FourierNorms:
    p = coefficients.shape[0]
    return FourierNorms(
        component=fourier.component_norms(coefficients),
        frequency=fourier.frequency_norms(coefficients),
        names=fourier.component_names(p),
    )


def embedding_fourier_norms(W_E: Float[Tensor, "d_vocab d_model"], p: int) -> FourierNorms:
    """Norms of W_E's Fourier components over the residue axis; the ``=`` row (index p) is excluded."""
    if W_E.shape[0] not in (p, p + 1):
        raise ValueError(f"W_E has {W_E.shape[0]} rows; expected p={p} or p+1={p + 1} (with the = row)")
    return _norms(fourier.fourier_1d(W_E[:p].double().T).T)  # [component, d_model]


# ----------------------------------------------------------------------------- neuron-logit map
def neuron_logit_map(
    W_out: Float[Tensor, "neuron d_model"], W_U: Float[Tensor, "d_model d_vocab_out"], p: int
) -> Float[Tensor, "neuron c"]:
    """W_L = W_out @ W_U (TransformerLens orientation; the paper's W_U·W_out transposed).

    A p+1 wide W_U (old checkpoints) has its ``=`` column dropped.
    """
    return W_out @ task_logits(W_U, p)


def neuron_logit_fourier_norms(W_L: Float[Tensor, "neuron c"]) -> FourierNorms:
    """Norms of W_L's Fourier components along the logit axis c (taken over neurons)."""
    return _norms(fourier.fourier_1d(W_L.double()).T)  # [component, neuron]


@dataclass(frozen=True)
class NeuronLogitFit:
    """W_L ≈ Σ_k cos(w_k c)·u_k + sin(w_k c)·v_k, the paper's rank-2K description of W_L.

    ``u[i]``, ``v[i]`` belong to ``frequencies[i]``; ``residual_fraction`` is
    ‖W_L − fit‖_F / ‖W_L‖_F (the paper: under 0.55%).
    """

    frequencies: list[int]
    u: Float[Tensor, "freq neuron"]
    v: Float[Tensor, "freq neuron"]
    fitted: Float[Tensor, "neuron c"]
    residual_fraction: float

    @property
    def residual_energy_fraction(self) -> float:
        """‖W_L − fit‖² / ‖W_L‖², the residual as a fraction of the squared norm.

        The paper's "residual under 0.55% of its norm" does not say which; we report both."""
        return self.residual_fraction**2

    @property
    def directions(self) -> Float[Tensor, "direction neuron"]:
        """The 2K neuron-space directions u_1, v_1, u_2, v_2, ... ."""
        return torch.stack([d for pair in zip(self.u, self.v) for d in pair]) if self.frequencies else self.u


def neuron_logit_fit(W_L: Float[Tensor, "neuron c"], key_freqs: Iterable[int]) -> NeuronLogitFit:
    """Least-squares fit of W_L by cos(w_k c)·u_kᵀ + sin(w_k c)·v_kᵀ over the key frequencies.

    The waves are orthogonal over c, so u_k = (2/p) Σ_c W_L[:, c] cos(w_k c), and likewise v_k.
    """
    p = W_L.shape[-1]
    ks = fourier.check_frequencies(key_freqs, p)
    W = W_L.double()
    c = torch.arange(p, dtype=torch.float64)
    cos = torch.stack([torch.cos(2 * math.pi * k * c / p) for k in ks]) if ks else torch.zeros(0, p, dtype=W.dtype)
    sin = torch.stack([torch.sin(2 * math.pi * k * c / p) for k in ks]) if ks else torch.zeros(0, p, dtype=W.dtype)
    u = (2 / p) * (cos @ W.T)  # [freq, neuron]
    v = (2 / p) * (sin @ W.T)
    fitted = u.T @ cos + v.T @ sin
    residual = (W - fitted).norm() / W.norm()
    return NeuronLogitFit(frequencies=ks, u=u, v=v, fitted=fitted, residual_fraction=residual.item())


def _combination(p: int, sign: int) -> Int[Tensor, "a b"]:
    """a + sign·b over the grid (not reduced mod p: only cos and sin of it are taken)."""
    r = torch.arange(p)
    return r[:, None] + r[None, :] if fourier.check_sign(sign) == 1 else r[:, None] - r[None, :]


def _term(sign: int) -> str:
    return "a+b" if sign == 1 else "a-b"


def _sum_waves(p: int, k: int, sign: int = +1) -> tuple[Tensor, Tensor]:
    """cos(w_k(a + sign·b)) and sin(w_k(a + sign·b)) over the grid, flattened in grid order (unnormalised)."""
    s = _combination(p, sign).flatten().double()
    w = 2 * math.pi * k / p
    return torch.cos(w * s), torch.sin(w * s)


def _fit(y: Tensor, basis: list[Tensor]) -> tuple[Tensor, float]:
    """Least-squares coefficients of centred y on ``basis`` (centred too), and the FVE."""
    yc = y - y.mean()
    X = torch.stack([b - b.mean() for b in basis], dim=1)
    coef = torch.linalg.lstsq(X, yc[:, None]).solution.flatten()
    total = (yc**2).sum()
    fve = 1 - ((yc - X @ coef) ** 2).sum() / total if total > 0 else torch.tensor(float("nan"))
    return coef, float(fve)


def mlp_direction_fits(
    neurons: Float[Tensor, "batch neuron"], fit: NeuronLogitFit, *, sign: int = +1
) -> pd.DataFrame:
    """The paper's Table 1: u_k·MLP(a, b) ≈ α cos(w_k(a+b)) and v_k·MLP(a, b) ≈ β sin(w_k(a+b)).

    ``sign`` +1 (default) for op='add'; -1 for op='sub', whose waves are of a-b (and the
    ``term`` column says so). ``neurons`` are the activations at the ``=`` position over all p²
    inputs in grid order. For each key frequency and each of u_k, v_k, the centred projection is
    fitted by its one matching wave (``coefficient``, ``fve``), and by cos and sin together (``fve_cos_sin``).
    """
    p = math.isqrt(neurons.shape[0])
    fourier.to_grid(neurons, p)  # checks the batch is the whole grid
    fourier.check_sign(sign)
    acts = neurons.double()
    rows = []
    for i, k in enumerate(fit.frequencies):
        cos, sin = _sum_waves(p, k, sign)
        for name, vec, term, wave in (("u", fit.u[i], "cos", cos), ("v", fit.v[i], "sin", sin)):
            y = acts @ vec
            coef, fve = _fit(y, [wave])
            _, fve_both = _fit(y, [cos, sin])
            rows.append(
                {"frequency": k, "direction": name, "term": f"{term}(w_k({_term(sign)}))", "coefficient": coef.item(),
                 "fve": fve, "fve_cos_sin": fve_both}
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- neuron clusters
OTHER_CLUSTER = "other"


def _frequency_term_energy(coeffs: Float[Tensor, "component_a component_b neuron"]) -> Float[Tensor, "neuron freq"]:
    """Squared coefficients in each frequency's 8 terms: const⊗k, k⊗const and k⊗k."""
    sq = coeffs**2
    K = (coeffs.shape[0] - 1) // 2
    out = []
    for k in range(1, K + 1):
        rows = [fourier.cos_component(k), fourier.sin_component(k)]
        linear = sq[0, rows].sum(0) + sq[rows, 0].sum(0)
        products = sq[rows][:, rows].sum((0, 1))
        out.append(linear + products)
    return torch.stack(out, dim=-1)


def neuron_frequency_fractions(neurons: Float[Tensor, "batch neuron"]) -> Float[Tensor, "neuron freq"]:
    """For each neuron, the fraction of its centred activation variance in each frequency's 8 terms.

    ``neurons`` are activations at the ``=`` position over all p² inputs in grid order. A
    constant (e.g. dead) neuron has no variance; its fractions are 0, never NaN.
    """
    p = math.isqrt(neurons.shape[0])
    x = neurons.double()
    centred = x - x.mean(dim=0, keepdim=True)
    coeffs = fourier.fourier_2d(fourier.to_grid(centred, p))
    total = (centred**2).sum(0)  # = Σ coeffs² (orthonormal basis)
    # a constant neuron's centred values are rounding noise; treat it as having no variance
    scale = x.abs().amax(0)
    constant = total <= (p * p) * (1e-12 * scale) ** 2
    energy = _frequency_term_energy(coeffs)
    frac = energy / torch.where(constant, torch.ones_like(total), total)[:, None]
    return torch.where(constant[:, None], torch.zeros_like(frac), frac)


def neuron_clusters(neurons: Float[Tensor, "batch neuron"], threshold: float = 0.85) -> pd.DataFrame:
    """Cluster neurons by frequency (docs/concepts.md).

    Returns one row per neuron: ``neuron``, ``frequency`` (the best-explaining k; 0 for a neuron
    with no variance), ``fraction_explained`` (its fraction in that k's 8 terms) and ``cluster``
    (``frequency`` if ``fraction_explained >= threshold``, else ``"other"``).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold} must be in (0, 1]; the paper uses 0.85")
    frac = neuron_frequency_fractions(neurons)
    best, k_idx = frac.max(dim=1)
    frequency = torch.where(best > 0, k_idx + 1, torch.zeros_like(k_idx))
    clustered = best >= threshold
    return pd.DataFrame(
        {
            "neuron": list(range(frac.shape[0])),
            "frequency": frequency.tolist(),
            "fraction_explained": best.tolist(),
            "cluster": [int(k) if c else OTHER_CLUSTER for k, c in zip(frequency.tolist(), clustered.tolist())],
        }
    )


def cluster_sizes(clusters: pd.DataFrame) -> pd.Series:
    """Neurons per cluster: frequencies ascending, then ``"other"`` (always present, maybe 0)."""
    counts = clusters["cluster"].value_counts()
    freqs = sorted(k for k in counts.index if k != OTHER_CLUSTER)
    sizes = pd.Series([int(counts[k]) for k in freqs] + [int(counts.get(OTHER_CLUSTER, 0))], index=freqs + [OTHER_CLUSTER])
    sizes.index.name, sizes.name = "cluster", "neurons"
    return sizes


def clustered_neurons(clusters: pd.DataFrame) -> dict[int, int]:
    """{neuron: frequency} for the neurons in a frequency cluster (not "other"), as the §4.4
    ``ablations.cluster_approximation_hook`` takes them."""
    rows = clusters[clusters["cluster"] != OTHER_CLUSTER]
    return {int(n): int(k) for n, k in zip(rows["neuron"], rows["frequency"])}


# ----------------------------------------------------------------------------- key frequencies
# name -> what it reads. The default is the paper's own definition; "original" is the original
# code's rule; "clusters" and "W_E" are mechgrok's own (the TransformerLens demo has no rule: it
# hard-codes [17, 25, 32, 47], which progress.compute_measures(key_freqs=...) takes as they are).
KEY_FREQUENCY_RULES: dict[str, str] = {
    "W_L": "frequencies whose W_L Fourier norm exceeds ratio × the largest (paper: non-trivial W_L coefficients)",
    "original": "the distinct best frequencies of every neuron, k = 1..(p-1)/2 - 1, no threshold (the original code)",
    "clusters": "frequencies of neuron clusters (threshold) with at least min_cluster_size neurons (mechgrok's rule)",
    "W_E": "frequencies whose W_E Fourier norm exceeds ratio × the largest (mechgrok's rule; the demo has none)",
}
DEFAULT_KEY_FREQUENCY_RULE = "W_L"


def key_frequencies_from_norms(frequency_norms: Float[Tensor, "freq"], ratio: float = 0.25) -> list[int]:
    """The frequencies k (1-based) whose norm exceeds ``ratio`` × the largest norm."""
    if not 0 < ratio < 1:
        raise ValueError(f"ratio={ratio} must be in (0, 1); the default is 0.25 (a quarter of the largest norm)")
    norms = frequency_norms.double()
    return [i + 1 for i in (norms > ratio * norms.max()).nonzero().flatten().tolist()]


def key_frequencies_from_clusters(clusters: pd.DataFrame, min_cluster_size: int = 1) -> list[int]:
    """The frequencies of the clusters (``neuron_clusters``) with at least ``min_cluster_size`` neurons."""
    sizes = cluster_sizes(clusters).drop(OTHER_CLUSTER)
    return sorted(int(k) for k, n in sizes.items() if n >= min_cluster_size)


def key_frequencies_original(neurons: Float[Tensor, "batch neuron"]) -> list[int]:
    """The original code's key frequencies: the distinct best frequencies of every neuron.

    Each neuron's frequency is the k with the largest fraction of its variance in k's 8 terms
    (:func:`neuron_frequency_fractions`), searched over k = 1..(p-1)/2 - 1 as the original's
    search is (it never considers the last frequency); there is no threshold and no cluster
    size, so one neuron is enough to make a frequency key. A neuron without variance (dead) has
    no best frequency and adds none.
    """
    frac = neuron_frequency_fractions(neurons)[:, :-1]  # drop k = (p-1)/2
    if frac.shape[1] == 0:
        raise ValueError(f"the original rule searches k = 1..(p-1)/2 - 1, which is empty for p={math.isqrt(neurons.shape[0])}; "
                         "use p >= 5 or another rule")
    best, k_idx = frac.max(dim=1)
    return sorted({int(k) + 1 for k, b in zip(k_idx.tolist(), best.tolist()) if b > 0})


def key_frequencies(
    acts: GridActivations,
    rule: Literal["W_L", "original", "clusters", "W_E"] = DEFAULT_KEY_FREQUENCY_RULE,
    *,
    ratio: float = 0.25,
    threshold: float = 0.85,
    min_cluster_size: int | None = None,
) -> list[int]:
    """The frequencies the model uses, by one of ``KEY_FREQUENCY_RULES`` (default ``"W_L"``).

    * ``"W_L"`` (default, the paper's definition): W_L's Fourier norm per frequency > ``ratio`` × max.
    * ``"original"`` (the original code's rule): the distinct best frequencies of every neuron
      (:func:`key_frequencies_original`; no threshold, no size cut, k ≤ (p−1)/2 − 1). It agrees
      with ``"clusters"`` once every neuron sits on a key frequency.
    * ``"clusters"`` (mechgrok's rule): the frequencies of neuron clusters (``threshold``) with at
      least ``min_cluster_size`` neurons (default: 1% of the neurons, at least 1).
    * ``"W_E"`` (mechgrok's rule): W_E's Fourier norm per frequency > ``ratio`` × max. The
      TransformerLens demo has no rule of its own; it hard-codes [17, 25, 32, 47].

    Fix them on the final model and reuse them at every checkpoint.
    """
    if rule == "W_L":
        return key_frequencies_from_norms(neuron_logit_fourier_norms(acts.W_L).frequency, ratio)
    if rule == "W_E":
        return key_frequencies_from_norms(embedding_fourier_norms(acts.W_E, acts.p).frequency, ratio)
    if rule == "original":
        return key_frequencies_original(acts.neurons)
    if rule == "clusters":
        n = acts.neurons.shape[1]
        size = max(1, round(0.01 * n)) if min_cluster_size is None else min_cluster_size
        return key_frequencies_from_clusters(neuron_clusters(acts.neurons, threshold), size)
    raise ValueError(f"rule={rule!r} is not one of {sorted(KEY_FREQUENCY_RULES)}; the default is {DEFAULT_KEY_FREQUENCY_RULE!r}")


# ----------------------------------------------------------------------------- logits
def logit_fourier_norms(logits: Float[Tensor, "batch c"]) -> Float[Tensor, "component_a component_b"]:
    """Norm over c of each 2D Fourier component of the logits over the input grid (paper: ~20 significant)."""
    p = math.isqrt(logits.shape[0])
    coeffs = fourier.fourier_2d(fourier.to_grid(task_logits(logits, p).double(), p))
    return coeffs.norm(dim=-1)


def top_logit_components(norms: Float[Tensor, "component_a component_b"], n: int = 20) -> pd.DataFrame:
    """The ``n`` largest 2D components: a_component, b_component, norm, fraction of the squared norm."""
    p = norms.shape[0]
    names = fourier.component_names(p)
    flat = norms.flatten().double()
    top = flat.argsort(descending=True)[:n].tolist()
    total = (flat**2).sum()
    return pd.DataFrame(
        {
            "a_component": [names[i // p] for i in top],
            "b_component": [names[i % p] for i in top],
            "norm": [flat[i].item() for i in top],
            "fraction": [(flat[i] ** 2 / total).item() for i in top],
        }
    )


@dataclass(frozen=True)
class LogitFit:
    """logits(a, b, c) ≈ Σ_k α_k cos(w_k(a+b−c)) (op='add'), or cos(w_k(a−b−c)) (op='sub').

    ``fve``: the fraction of the logits' variance explained, after centring each input's logits
    over c (softmax ignores a per-input constant). ``loss``: the float64 loss of the approximation
    on all p² inputs; ``loss_model`` the model's own, for comparison.
    """

    frequencies: list[int]
    alpha: Float[Tensor, "freq"]
    fve: float
    loss: float
    loss_model: float
    approximation: Float[Tensor, "batch c"] = field(repr=False)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"frequency": self.frequencies, "alpha": self.alpha.tolist()})


def logit_cos_fit(
    logits: Float[Tensor, "batch c"], labels: Int[Tensor, "batch"], key_freqs: Iterable[int], *, sign: int = +1
) -> LogitFit:
    """Fit the logits over all p² inputs (grid order) by Σ_k α_k cos(w_k(a + sign·b − c)).

    ``sign`` +1 (default) for op='add', -1 for op='sub'; ``labels`` are the run's task's. The
    waves of different k are orthogonal, so α_k = ⟨L, cos_k⟩ / ⟨cos_k, cos_k⟩.
    """
    p = math.isqrt(logits.shape[0])
    L = fourier.to_grid(task_logits(logits, p).double(), p)  # [a, b, c]
    ks = fourier.check_frequencies(key_freqs, p)
    L = L - L.mean(dim=-1, keepdim=True)
    r = torch.arange(p)
    t = (_combination(p, sign)[:, :, None] - r[None, None, :]).double()  # a + sign·b - c
    waves = [torch.cos(2 * math.pi * k * t / p) for k in ks]
    alpha = torch.tensor([((L * w).sum() / (w * w).sum()).item() for w in waves], dtype=torch.float64)
    approx = sum((a * w for a, w in zip(alpha, waves)), torch.zeros_like(L))
    fve = 1 - ((L - approx) ** 2).sum() / (L**2).sum()
    approx_flat = fourier.from_grid(approx)
    return LogitFit(
        frequencies=ks,
        alpha=alpha,
        fve=fve.item(),
        loss=cross_entropy(approx_flat, labels).item(),
        loss_model=cross_entropy(task_logits(logits, p), labels).item(),
        approximation=approx_flat,
    )


# ----------------------------------------------------------------------------- attention
@dataclass(frozen=True)
class AttentionReadout:
    """Attention from ``=`` over the input grid, per head.

    ``to_a``, ``to_b``, ``to_self`` are [head, a, b]. ``table`` has one row per head:
    ``frequency`` (the k whose 8 2D terms best fit the attention to a), ``fve`` (fraction of the
    variance of the attention to a explained by its mean plus that single-frequency wave),
    ``mean_to_a`` (≈ 0.5 in the paper), ``mean_to_b``, ``mean_to_self``, ``max_to_self``.
    """

    to_a: Float[Tensor, "head a b"]
    to_b: Float[Tensor, "head a b"]
    to_self: Float[Tensor, "head a b"]
    table: pd.DataFrame


def attention_readout(attention: Float[Tensor, "batch head key_pos"]) -> AttentionReadout:
    """Per head, the attention from ``=`` to a and b as mean + one-frequency wave, and to ``=`` itself.

    ``attention`` is the pattern at the ``=`` query over all p² inputs in grid order
    (``GridActivations.attention``); a model without attention (the MLP families) has None there.
    """
    if attention is None:
        raise ValueError("attention_readout needs an attention pattern, but this model has no attention "
                         "(an MLP family); it applies to the transformer family")
    p = math.isqrt(attention.shape[0])
    grid = fourier.to_grid(attention.double(), p)  # [a, b, head, key_pos]
    to_a, to_b, to_self = (grid[..., i].permute(2, 0, 1) for i in range(3))
    # the same 8-term fraction of variance as for neurons, with attention heads as channels
    fve, k_idx = neuron_frequency_fractions(attention[:, :, 0]).max(dim=1)
    table = pd.DataFrame(
        {
            "head": list(range(grid.shape[2])),
            "frequency": (k_idx + 1).tolist(),
            "fve": fve.tolist(),
            "mean_to_a": to_a.mean((1, 2)).tolist(),
            "mean_to_b": to_b.mean((1, 2)).tolist(),
            "mean_to_self": to_self.mean((1, 2)).tolist(),
            "max_to_self": to_self.amax((1, 2)).tolist(),
        }
    )
    return AttentionReadout(to_a=to_a, to_b=to_b, to_self=to_self, table=table)
