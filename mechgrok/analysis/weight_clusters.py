"""Neuron clusters read from the weights, and how sparse the weights are in the 1D Fourier basis.

The Alignment Forum post's claim for the 2-layer MLP on a+b mod p: "the neurons formed a cluster
for every single frequency, with 3-7 neurons per cluster (width 256), and the input and output
weights were sparse in the 1D Fourier basis". Each neuron n has an input side, its weights over
the residues a (``W_input[:, n]``, [p]), and an output side, what it adds to each logit c
(``W_L[n, :]``, [c]). :func:`weight_clusters` decides, by a fixed rule:

* **energy** per side: the squared (cos k, sin k) coefficients of ``waves.neuron_dft`` at each
  frequency k = 1..(p−1)/2. The constant component is left out: on the input side it acts as
  a bias, on the output side the softmax ignores it.
* **frequency** of a neuron: the k with the most input plus output energy
  (``waves.neuron_frequencies``), and its **share** on each side: that k's energy / the side's
  energy over all k. A share of 1 is a pure single-frequency wave; ``SPARSE_SHARE`` (0.85, the
  cut of the paper's activation clusters, ``circuits.neuron_clusters``) counts it as sparse.
* **live** neurons: ``‖W_input[:, n]‖·‖W_L[n]‖`` at least ``NEGLIGIBLE`` (1%) of the largest
  neuron's. Weight decay drives unused neurons to ~0; their direction is noise, not a frequency.
* a **cluster** is the live neurons of one frequency. Each sparse neuron sits in exactly one
  frequency's cluster; ``every_live_neuron_sparse`` says whether all of them do (how many must,
  for the post's claim, is the reproduction's rule: :mod:`mechgrok.reproduce.phase_changes.mlp`).

Valid for any model with per-residue input weights and a neuron-to-logit map over p outputs
(odd p): the modular MLP families. Pure functions of tensors; axis names from ``mechgrok.hooks``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from mechgrok.analysis import waves

__all__ = ["SPARSE_SHARE", "NEGLIGIBLE", "WeightClusters", "weight_clusters"]

SPARSE_SHARE = 0.85  # a side is sparse when one frequency holds >= 85% of its non-constant energy
NEGLIGIBLE = 0.01  # a neuron is left out when its |in|·|out| is under 1% of the largest neuron's


@dataclass(frozen=True)
class WeightClusters:
    """What :func:`weight_clusters` found. ``table``: one row per neuron (neuron, frequency,
    in_share, out_share, scale, live, sparse); ``sizes``: live neurons per frequency, ascending k."""

    p: int
    table: pd.DataFrame
    sizes: dict[int, int]
    sparse_share: float
    negligible: float

    @property
    def live(self) -> pd.DataFrame:
        return self.table[self.table["live"]]

    @property
    def n_frequencies(self) -> int:
        """All frequencies 1..(p−1)/2: the post's "every single frequency"."""
        return (self.p - 1) // 2

    @property
    def every_live_neuron_sparse(self) -> bool:
        """Every live neuron is sparse on both sides (so each belongs to one frequency's cluster),
        and at least one neuron is live: the strictest reading of "one cluster per frequency"."""
        live = self.live
        return len(live) > 0 and bool(live["sparse"].all())

    def summary(self) -> dict:
        """JSON-safe numbers: counts, cluster sizes and the shares' mean and minimum over live neurons."""
        live = self.live
        sizes = list(self.sizes.values())
        return {
            "n_neurons": int(len(self.table)),
            "n_live": int(len(live)),
            "n_sparse": int(live["sparse"].sum()),
            "n_clusters": len(self.sizes),
            "n_frequencies": self.n_frequencies,
            "cluster_frequencies": sorted(self.sizes),
            "cluster_sizes": {int(k): int(v) for k, v in self.sizes.items()},
            "cluster_size_min": min(sizes) if sizes else 0,
            "cluster_size_max": max(sizes) if sizes else 0,
            "in_share_mean": float(live["in_share"].mean()) if len(live) else float("nan"),
            "in_share_min": float(live["in_share"].min()) if len(live) else float("nan"),
            "out_share_mean": float(live["out_share"].mean()) if len(live) else float("nan"),
            "out_share_min": float(live["out_share"].min()) if len(live) else float("nan"),
            "every_live_neuron_sparse": self.every_live_neuron_sparse,
            "sparse_share": self.sparse_share,
            "negligible": self.negligible,
        }


def _share(coeffs: Tensor, freqs: Tensor) -> Tensor:
    energy = coeffs.pow(2).sum(-1)  # [neuron, freq]
    own = energy[torch.arange(len(freqs)), freqs - 1]
    total = energy.sum(-1)
    return torch.where(total > 0, own / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(total))


def weight_clusters(
    W_input: Float[Tensor, "p neuron"],
    W_L: Float[Tensor, "neuron c"],
    *,
    sparse_share: float = SPARSE_SHARE,
    negligible: float = NEGLIGIBLE,
) -> WeightClusters:
    """The neurons' frequencies, Fourier shares and clusters, by the rule of the module docstring.

    ``W_input``: each neuron's weight on each input residue (the model's ``W_E`` for the
    unfactored input side); ``W_L``: the neuron-to-logit map with p outputs (``task_logits``).

    >>> c = weight_clusters(model.W_E.detach(), model.W_L.detach())
    >>> c.sizes, c.every_live_neuron_sparse
    """
    if W_input.ndim != 2 or W_L.ndim != 2 or W_input.shape[1] != W_L.shape[0] or W_input.shape[0] != W_L.shape[1]:
        raise ValueError(
            f"W_input {tuple(W_input.shape)} and W_L {tuple(W_L.shape)} do not fit: expected [p, neuron] and "
            "[neuron, c] with c = p (the task's logits; drop an = column with scoring.task_logits)"
        )
    if not 0 < sparse_share <= 1:
        raise ValueError(f"sparse_share={sparse_share} must be in (0, 1]; the default is {SPARSE_SHARE}")
    if not 0 <= negligible < 1:
        raise ValueError(f"negligible={negligible} must be in [0, 1); the default is {NEGLIGIBLE}")
    W_in, W_out = W_input.detach().double().cpu(), W_L.detach().double().cpu()
    p = W_in.shape[0]
    c_in, c_out = waves.neuron_dft(W_in), waves.neuron_dft(W_out.T)  # [neuron, freq, 2] each
    freqs = waves.neuron_frequencies(c_in, c_out)
    in_share, out_share = _share(c_in, freqs), _share(c_out, freqs)
    scale = W_in.norm(dim=0) * W_out.norm(dim=1)
    live = scale >= negligible * scale.max() if scale.max() > 0 else torch.zeros_like(scale, dtype=torch.bool)
    sparse = (in_share >= sparse_share) & (out_share >= sparse_share)
    table = pd.DataFrame({
        "neuron": list(range(W_in.shape[1])),
        "frequency": freqs.tolist(),
        "in_share": in_share.tolist(),
        "out_share": out_share.tolist(),
        "scale": scale.tolist(),
        "live": live.tolist(),
        "sparse": sparse.tolist(),
    })
    counts = table[table["live"]]["frequency"].value_counts()
    sizes = {int(k): int(counts[k]) for k in sorted(counts.index)}
    return WeightClusters(p=p, table=table, sizes=sizes, sparse_share=sparse_share, negligible=negligible)
