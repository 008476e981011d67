"""The figure of the post's 2-layer MLP (:mod:`mechgrok.reproduce.phase_changes.mlp`).

``mlp2_clusters(run_dirs)``: train and test loss and accuracy of each seed; every seed's neuron
clusters, the live neurons per frequency, beside the post's 3-7 band; and one seed's neurons'
1D Fourier spectra, input side (W_input over a) and output side (W_output over c), each
neuron's energy per frequency as a share of its non-constant energy, neurons grouped by cluster.
Clusters follow the rule of :mod:`mechgrok.analysis.weight_clusters`. The caption is computed
from the runs; the post's statement is set beside ours, labelled as the post's.
``figures(out, summary)`` builds it from the reproduction folder (``OUT/mlp2``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from mechgrok import runs
from mechgrok.analysis import waves, weight_clusters
from mechgrok.report.figures import GROKKED_TEST_ACCURACY, FigureOutput, first_epoch_reaching
from mechgrok.sweeps import experiment_runs

__all__ = ["MLP2_FIGURES", "POST_CLUSTER_SIZES", "mlp2_clusters", "figures"]

POST_CLUSTER_SIZES = (3, 7)  # the post: "a cluster for every single frequency, with 3-7 neurons per cluster (width 256)"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _post(text: str) -> str:
    return f"The post (Nanda 2022, about its own run, not these): {text}"


def _acc(x: float) -> str:
    """Rounded down to 3 decimals, so 0.9899 never prints as the threshold 0.990."""
    return "–" if not math.isfinite(x) else f"{math.floor(x * 1000) / 1000:.3f}"


def _open(run_dirs: Sequence[str | Path]) -> list[tuple[Path, runs.Run, pd.DataFrame]]:
    if isinstance(run_dirs, (str, Path)):
        raise ValueError(f"mlp2_clusters takes a list of run folders (one per seed); pass [{str(run_dirs)!r}]")
    out = []
    for d in run_dirs:
        path = Path(d)
        if not (path / runs.CONFIG_FILE).exists():
            raise ValueError(f"mlp2_clusters: {path} is not a mechgrok run folder (no {runs.CONFIG_FILE}); pass a trained mlp2 run")
        cfg = runs.read_config(path)
        if cfg.family != "mlp2":
            raise ValueError(f"mlp2_clusters reads runs of the mlp2 family; {path} is a {cfg.family!r} run. "
                             "Pass runs of mechgrok.reproduce.phase_changes.mlp.plan()")
        metrics = runs.read_metrics(path)
        if metrics is None or metrics.empty:
            raise ValueError(f"mlp2_clusters: {path} has no metrics.csv yet; train it first")
        out.append((path, runs.load_run(path), metrics.sort_values("epoch", ignore_index=True)))
    if not out:
        raise ValueError("mlp2_clusters: no run folders given; pass at least one")
    return out


def _spectra(model: torch.nn.Module, clusters: weight_clusters.WeightClusters) -> pd.DataFrame:
    """Long table side, neuron, position (drawn row), frequency, share, for the live neurons ordered
    by cluster frequency, then by how sparse they are."""
    live = clusters.live.sort_values(["frequency", "in_share"], ascending=[True, False])
    order = live["neuron"].tolist()
    frames = []
    for side, W in (("input", model.W_E.detach().double().cpu()), ("output", model.W_L.detach().double().cpu().T)):
        energy = waves.neuron_dft(W).pow(2).sum(-1)[order]  # [neuron, freq]
        share = energy / energy.sum(-1, keepdim=True).clamp_min(1e-300)
        n, K = share.shape
        frames.append(pd.DataFrame({"side": side, "neuron": np.repeat(order, K), "position": np.repeat(np.arange(n), K),
                                    "frequency": np.tile(np.arange(1, K + 1), n), "share": share.flatten().numpy()}))
    return pd.concat(frames, ignore_index=True)


def mlp2_clusters(run_dirs: Sequence[str | Path]) -> FigureOutput:
    """Loss curves, cluster sizes per seed, and the first grokked seed's neuron spectra (module docstring)."""
    opened = _open(run_dirs)
    curves, sizes, neurons, sentences = [], [], [], []
    found = {}
    for path, run, m in opened:
        seed = run.config.seed
        c = weight_clusters.weight_clusters(run.model.W_E.detach(), run.model.W_L.detach())
        found[seed] = (run, c, m)
        curves.append(m.assign(seed=seed)[["seed", "epoch", "train_loss", "test_loss", "train_acc", "test_acc"]])
        sizes.append(pd.DataFrame({"seed": seed, "frequency": list(c.sizes), "neurons": list(c.sizes.values())}))
        neurons.append(c.table.assign(seed=seed))
        sentences.append(_seed_sentence(seed, m, c))
    shown = next((s for s, (_, _, m) in found.items() if first_epoch_reaching(m, "test_acc") is not None), next(iter(found)))
    run, c, _ = found[shown]
    spectra = _spectra(run.model, c)
    cfg = run.config
    fig = _draw(pd.concat(curves, ignore_index=True), pd.concat(sizes, ignore_index=True), spectra, cfg.p, shown)
    K = (cfg.p - 1) // 2
    low, high = POST_CLUSTER_SIZES
    caption = " ".join([
        f"The 2-layer MLP (input onehot(a) + onehot(b), {cfg.d_mlp} ReLU neurons, biases), a+b mod {cfg.p} on "
        f"{cfg.frac_train:.0%} of the pairs, AdamW lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, "
        f"{len(found)} seed{'s' if len(found) > 1 else ''}. Top: train (solid) and test (dashed) loss and accuracy.",
        *sentences,
        f"Middle: live neurons per frequency (of the {K}), one bar per seed; the shaded band is the post's {low}–{high}.",
        f"Bottom: seed {shown}'s live neurons (rows, grouped by cluster), each one's energy per frequency as a share of "
        "its non-constant 1D Fourier energy, input side (W_input over a) and output side (W_output over c). A neuron is "
        f"live when |W_input[:, n]|·|W_output[n]| is at least {c.negligible:.0%} of the largest, and sparse when its "
        f"frequency holds at least {c.sparse_share:.0%} of the energy on both sides.",
        _post(f"a cluster for every single frequency, {low}–{high} neurons per cluster (width 256), input and output "
              "weights sparse in the 1D Fourier basis."),
    ])
    tables = {"": pd.concat(curves, ignore_index=True), "cluster_sizes": pd.concat(sizes, ignore_index=True),
              "neurons": pd.concat(neurons, ignore_index=True), "spectra": spectra}
    return FigureOutput("mlp2_clusters", fig, tables, caption)


def _seed_sentence(seed: int, m: pd.DataFrame, c: weight_clusters.WeightClusters) -> str:
    train_at, test_at = first_epoch_reaching(m, "train_acc"), first_epoch_reaching(m, "test_acc")
    last = m.iloc[-1]
    grok = (f"train accuracy reached {GROKKED_TEST_ACCURACY:g} at step {train_at:,}" if train_at is not None
            else f"train accuracy never reached {GROKKED_TEST_ACCURACY:g}")
    grok += (f", test accuracy at step {test_at:,}" if test_at is not None
             else f", test accuracy never did (highest {_acc(float(m['test_acc'].max()))})")
    s = c.summary()
    live = s["n_live"]
    missing = sorted(set(range(1, c.n_frequencies + 1)) - set(c.sizes))
    spread = (f"sizes {s['cluster_size_min']}–{s['cluster_size_max']} (median {float(np.median(list(c.sizes.values()))):g})"
              if c.sizes else "no clusters")
    return (f"Seed {seed}: {grok}; at step {int(last['epoch']):,} test accuracy {_acc(float(last['test_acc']))}. "
            f"{live} of {s['n_neurons']} neurons are live; {s['n_sparse']} of them ({s['n_sparse'] / max(live, 1):.0%}) are "
            f"sparse (share of their frequency: input mean {s['in_share_mean']:.3f}, min {s['in_share_min']:.3f}; output "
            f"mean {s['out_share_mean']:.3f}, min {s['out_share_min']:.3f}). They form {s['n_clusters']} clusters over the "
            f"{c.n_frequencies} frequencies ({'every frequency has one' if not missing else 'none at ' + ', '.join(map(str, missing))}), "
            f"{spread}.")


def _draw(curves: pd.DataFrame, sizes: pd.DataFrame, spectra: pd.DataFrame, p: int, shown: int) -> go.Figure:
    fig = make_subplots(rows=3, cols=2, specs=[[{}, {}], [{"colspan": 2}, None], [{}, {}]], row_heights=[0.25, 0.2, 0.55],
                        vertical_spacing=0.08, horizontal_spacing=0.1,
                        subplot_titles=["Loss (cross-entropy)", "Accuracy", "Live neurons per frequency (clusters)",
                                        f"Seed {shown}: input weights' spectra", f"Seed {shown}: output weights' spectra"])
    for i, (seed, m) in enumerate(curves.groupby("seed", sort=True)):
        color = COLORS[i % len(COLORS)]
        for split, dash in (("train", "solid"), ("test", "dash")):
            for col, metric in ((1, "loss"), (2, "acc")):
                fig.add_trace(go.Scatter(x=m["epoch"], y=m[f"{split}_{metric}"], mode="lines", name=f"seed {seed}, {split}",
                                         legendgroup=f"seed {seed}, {split}", showlegend=metric == "loss",
                                         line=dict(color=color, dash=dash, width=1.5)), row=1, col=col)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    fig.update_yaxes(range=[0, 1.03], row=1, col=2)
    for col in (1, 2):
        fig.update_xaxes(title_text="step", row=1, col=col)
    low, high = POST_CLUSTER_SIZES
    fig.add_hrect(y0=low, y1=high, fillcolor="gray", opacity=0.15, line_width=0, row=2, col=1)
    for i, (seed, s) in enumerate(sizes.groupby("seed", sort=True)):
        fig.add_trace(go.Bar(x=s["frequency"], y=s["neurons"], name=f"seed {seed} clusters", marker_color=COLORS[i % len(COLORS)]),
                      row=2, col=1)
    fig.update_xaxes(title_text="frequency k", range=[0.5, (p - 1) / 2 + 0.5], row=2, col=1)
    fig.update_yaxes(title_text="neurons", row=2, col=1)
    for col, side in ((1, "input"), (2, "output")):
        z = spectra[spectra["side"] == side].pivot(index="position", columns="frequency", values="share")
        fig.add_trace(go.Heatmap(z=z.to_numpy(), x=list(z.columns), y=list(z.index), coloraxis="coloraxis",
                                 hovertemplate=f"{side}: frequency %{{x}}, neuron row %{{y}}: share %{{z:.2f}}<extra></extra>"),
                      row=3, col=col)
        fig.update_xaxes(title_text="frequency k", row=3, col=col)
        fig.update_yaxes(title_text="live neurons, by cluster" if col == 1 else None, autorange="reversed", row=3, col=col)
    fig.update_layout(title=dict(text=f"A 2-layer MLP on a+b mod {p}: loss, clusters and Fourier spectra", x=0.01,
                                 y=1 - 12 / 1150, yanchor="top"),
                      template="plotly_white", height=1150, barmode="group", margin=dict(l=60, r=30, t=150, b=50),
                      legend=dict(orientation="h", x=0, y=1.03, yanchor="bottom"),
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=1, colorbar=dict(title="share", len=0.5, y=0.27)))
    return fig


MLP2_FIGURES = {"mlp2_clusters": mlp2_clusters}


def figures(out: Path, summary: dict[str, Any] | None = None) -> list[FigureOutput]:
    """The part's figures from the reproduction folder ``OUT`` (its runs in ``OUT/mlp2``, as
    :func:`mechgrok.reproduce.phase_changes.mlp.plan` names them); ``summary`` is not needed."""
    return [mlp2_clusters(experiment_runs(out, "mlp2")[1])]
