"""Plotly figure builders for the paper's figures: tidy DataFrames in, ``go.Figure`` out.

Nothing here computes an analysis; the data come from :mod:`mechgrok.figures`. No analysis
module imports this one. Every builder labels its axes in the paper's words, and Fourier
components are named by ``fourier.component_names`` ("cos 14", "sin 14"), never by index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "COLORS",
    "loss_curves",
    "fourier_norms",
    "activations",
    "neuron_clusters",
    "frequency_ablation",
    "progress_measures",
    "per_frequency_excluded_loss",
    "cos_coefficients",
    "sweep",
]

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
PHASE_COLORS = {"memorization": "rgba(31,119,180,0.08)", "circuit formation": "rgba(44,160,44,0.08)", "cleanup": "rgba(214,39,40,0.08)"}
_LAYOUT = dict(template="plotly_white", font=dict(size=12), margin=dict(l=60, r=20, t=60, b=50))


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# ----------------------------------------------------------------------------- Fig. 2
def loss_curves(curves: pd.DataFrame) -> go.Figure:
    """Fig. 2: train/test loss (log scale) and accuracy over epochs.

    ``curves``: columns seed, epoch, train_loss, test_loss, train_acc, test_acc (one row per seed
    and evaluated epoch). With several seeds, each split is drawn as its median over seeds with
    a shaded min-max band; past the end of a shorter seed, over the seeds that went on.
    """
    seeds = sorted(curves["seed"].unique())
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    for col, (metric, log) in enumerate((("loss", True), ("acc", False)), start=1):
        for i, split in enumerate(("train", "test")):
            name, color = f"{split}_{metric}", COLORS[i]
            # seeds may have run for different lengths: each epoch aggregates the seeds that reached it
            wide = curves.pivot_table(index="epoch", columns="seed", values=name)
            label = f"{split} {'loss' if metric == 'loss' else 'accuracy'}"
            if len(seeds) > 1:
                fig.add_trace(go.Scatter(x=wide.index, y=wide.max(axis=1), line=dict(width=0), hoverinfo="skip",
                                         showlegend=False, legendgroup=label), row=1, col=col)
                fig.add_trace(go.Scatter(x=wide.index, y=wide.min(axis=1), line=dict(width=0), fill="tonexty",
                                         fillcolor=_rgba(color, 0.25), hoverinfo="skip", legendgroup=label,
                                         name=f"{label} (min-max over {len(seeds)} seeds)", showlegend=col == 1), row=1, col=col)
            y = wide.median(axis=1) if len(seeds) > 1 else wide.iloc[:, 0].dropna()
            fig.add_trace(go.Scatter(x=wide.index, y=y, line=dict(color=color, width=1.5), legendgroup=label,
                                     name=label + (" (median)" if len(seeds) > 1 else ""), showlegend=True), row=1, col=col)
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_yaxes(title_text="cross-entropy loss", type="log", exponentformat="power", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], row=1, col=2)
    title = "Fig. 2: loss and accuracy" + (f" over {len(seeds)} seeds" if len(seeds) > 1 else f" (seed {seeds[0]})")
    fig.update_layout(title=title, **_LAYOUT)
    return fig


# ----------------------------------------------------------------------------- Fig. 3
def fourier_norms(norms: pd.DataFrame, key_freqs: Sequence[int] = ()) -> go.Figure:
    """Fig. 3: norms of the Fourier components of W_E (over the residue axis) and W_L (over c).

    ``norms``: columns component (names like "cos 14"), W_E, W_L, one row per basis component.
    """
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.16,
                        subplot_titles=("W_E: norm of each Fourier component (over d_model)",
                                        "W_L = W_out W_U: norm of each Fourier component of the logit axis (over neurons)"))
    keys = {f"{t} {k}" for k in key_freqs for t in ("cos", "sin")}
    colors = [COLORS[1] if c in keys else COLORS[0] for c in norms["component"]]
    for row, col in enumerate(("W_E", "W_L"), start=1):
        fig.add_trace(go.Bar(x=norms["component"], y=norms[col], marker_color=colors, name=col, showlegend=False,
                             hovertemplate="%{x}: %{y:.3g}<extra>" + col + "</extra>"), row=row, col=1)
        fig.update_yaxes(title_text="norm", row=row, col=1)
        fig.update_xaxes(title_text="Fourier component", tickangle=-90, tickfont=dict(size=8), row=row, col=1)
    fig.update_layout(title="Fig. 3: Fourier components of the embedding and of the neuron-logit map"
                      + (f" (key frequencies in red: {', '.join(map(str, key_freqs))})" if key_freqs else ""),
                      height=750, **_LAYOUT)
    return fig


# ----------------------------------------------------------------------------- Fig. 4
def activations(grids: pd.DataFrame, component_names: Sequence[str]) -> go.Figure:
    """Fig. 4: attention from ``=`` to a per head, neuron activations over (a, b), and the
    logits' 2D Fourier norms.

    ``grids``: long table with columns panel, row, col, value; panels are "head h" (row a, col
    b), "neuron n (freq k)" (row a, col b) and "logit 2D Fourier norms" (row: component of a,
    col: component of b, as indices into ``component_names``).
    """
    panels = list(dict.fromkeys(grids["panel"]))
    heads = [p for p in panels if p.startswith("head")]
    neurons = [p for p in panels if p.startswith("neuron")]
    logit = [p for p in panels if p.startswith("logit")]
    n_cols = max(len(heads), len(neurons) + len(logit), 1)
    titles = [f"attention from = to a, {h}" for h in heads] + [""] * (n_cols - len(heads))
    titles += [f"{n}: activation" for n in neurons] + logit + [""] * (n_cols - len(neurons) - len(logit))
    fig = make_subplots(rows=2, cols=n_cols, subplot_titles=titles, horizontal_spacing=0.05, vertical_spacing=0.14)

    def heat(panel, row, col, colorscale, x_label, y_label, names=None):
        d = grids[grids["panel"] == panel]
        z = d.pivot(index="row", columns="col", values="value")
        x = names if names is not None else z.columns
        y = names if names is not None else z.index
        fig.add_trace(go.Heatmap(z=z.to_numpy(), x=list(x), y=list(y), colorscale=colorscale, showscale=False,
                                 hovertemplate=f"{y_label}=%{{y}}, {x_label}=%{{x}}: %{{z:.3g}}<extra>{panel}</extra>"),
                      row=row, col=col)
        fig.update_xaxes(title_text=x_label, row=row, col=col)
        fig.update_yaxes(title_text=y_label, autorange="reversed", row=row, col=col)

    for i, h in enumerate(heads, start=1):
        heat(h, 1, i, "Blues", "b", "a")
    for i, n in enumerate(neurons, start=1):
        heat(n, 2, i, "RdBu_r", "b", "a")
    for j, name in enumerate(logit, start=len(neurons) + 1):
        heat(name, 2, j, "Viridis", "component of b", "component of a", names=component_names)
        fig.update_xaxes(showticklabels=False, row=2, col=j)
        fig.update_yaxes(showticklabels=False, row=2, col=j)
    fig.update_layout(title="Fig. 4: attention, neuron activations and logits over the inputs (a, b)", height=720, **_LAYOUT)
    return fig


# ----------------------------------------------------------------------------- Fig. 5
def neuron_clusters(clusters: pd.DataFrame, W_L_cluster: pd.DataFrame, frequency: int, threshold: float,
                    shown_components: Sequence[str] | None = None) -> go.Figure:
    """Fig. 5: histogram of each neuron's fraction of variance explained by its best frequency,
    and W_L's Fourier components (logit axis) for the neurons of one cluster.

    ``clusters``: one row per neuron with fraction_explained (``circuits.neuron_clusters``);
    ``W_L_cluster``: long table neuron, component, value; ``shown_components`` limits the heatmap's
    columns (e.g. the constant and the key frequencies), all by default.
    """
    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6], horizontal_spacing=0.12,
                        subplot_titles=("Fraction of each neuron's variance explained by one frequency",
                                        f"W_L in the Fourier basis, neurons of the frequency-{frequency} cluster"))
    fig.add_trace(go.Histogram(x=clusters["fraction_explained"], xbins=dict(start=0, end=1.0001, size=0.02),
                               marker_color=COLORS[0], name="neurons", showlegend=False), row=1, col=1)
    fig.add_vline(x=threshold, line_dash="dash", line_color=COLORS[1], row=1, col=1)
    fig.update_xaxes(title_text="fraction of variance explained", row=1, col=1)
    fig.update_yaxes(title_text="neurons", row=1, col=1)
    z = W_L_cluster.pivot(index="neuron", columns="component", values="value")
    order = list(dict.fromkeys(W_L_cluster["component"]))
    if shown_components is not None:
        order = [c for c in order if c in set(shown_components)]
    z = z[order]
    fig.add_trace(go.Heatmap(z=z.to_numpy(), x=order, y=[str(n) for n in z.index], colorscale="RdBu_r", zmid=0,
                             colorbar=dict(title="weight", x=1.0),
                             hovertemplate="neuron %{y}, %{x}: %{z:.3g}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="Fourier component of the logit axis c", tickangle=-90, row=1, col=2)
    fig.update_yaxes(title_text="neuron", type="category", showticklabels=False, row=1, col=2)
    fig.update_layout(title="Fig. 5: neurons cluster by frequency", height=520, **_LAYOUT)
    return fig


# ----------------------------------------------------------------------------- Fig. 6
def frequency_ablation(losses: pd.DataFrame, restricted_loss: float, original_loss: float) -> go.Figure:
    """Fig. 6: loss on all inputs when each frequency's cos/sin(w_k(a+b)) is removed from the
    logits, with the restricted loss (only the key frequencies kept) and the model's own loss.

    ``losses``: columns frequency, key, loss_all (``ablations.frequency_ablation_losses``).
    """
    colors = [COLORS[1] if k else COLORS[0] for k in losses["key"]]
    fig = go.Figure(go.Bar(x=losses["frequency"], y=losses["loss_all"], marker_color=colors, name="frequency k removed",
                           hovertemplate="remove k=%{x}: loss %{y:.3g}<extra></extra>"))
    for y, name, color in ((restricted_loss, "restricted loss (key frequencies only)", COLORS[2]),
                           (original_loss, "original loss", "black")):
        fig.add_trace(go.Scatter(x=[losses["frequency"].min() - 0.5, losses["frequency"].max() + 0.5], y=[y, y],
                                 mode="lines", line=dict(color=color, dash="dash"), name=f"{name}: {y:.3g}"))
    fig.update_yaxes(title_text="loss on all p² inputs", type="log", exponentformat="power")
    fig.update_xaxes(title_text="frequency k removed from the logits (red: key frequencies)")
    fig.update_layout(title="Fig. 6: removing one frequency from the logits",
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0), **_LAYOUT)
    return fig


# ----------------------------------------------------------------------------- Fig. 7 and appendix
def _phase_shapes(fig: go.Figure, boundaries: dict, n_rows: int, n_cols: int) -> None:
    """Shade the detected phases in every panel; label each boundary once, along its line in the first panel."""
    names = ["memorization", "circuit formation", "cleanup"]
    edges = [0] + [boundaries.get(k) for k in ("memorization_end", "circuit_formation_end", "cleanup_end")]
    for i, name in enumerate(names):
        lo, hi = edges[i], edges[i + 1]
        if lo is None or hi is None:
            break
        for r in range(1, n_rows + 1):
            for c in range(1, n_cols + 1):
                fig.add_vrect(x0=lo, x1=hi, fillcolor=PHASE_COLORS[name], line_width=0, layer="below", row=r, col=c)
                fig.add_vline(x=hi, line_dash="dot", line_color="gray", line_width=1, row=r, col=c)
        fig.add_annotation(x=hi, y=0.98, xref="x", yref="y domain", xanchor="left", yanchor="top", textangle=-90,
                           showarrow=False, text=f"end of {name}: {hi:,}", font=dict(size=10, color="dimgray"))


def progress_measures(measures: pd.DataFrame, boundaries: dict) -> go.Figure:
    """Fig. 7: the progress measures with the detected phase boundaries.

    Panels: excluded loss with train and test loss; restricted loss with test loss; Gini of W_E
    and W_L; sum of squared weights. ``boundaries``: ``phases.Phases.boundaries``.
    """
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.2, horizontal_spacing=0.1,
                        subplot_titles=("Excluded loss", "Restricted loss", "Gini coefficient of Fourier norms",
                                        "Sum of squared weights"))
    e = measures["epoch"]
    panels = [
        (1, 1, [("excluded_loss", "excluded loss (train)", COLORS[2]), ("train_loss", "train loss", COLORS[0]),
                ("test_loss", "test loss", COLORS[1])], True, "loss"),
        (1, 2, [("restricted_loss", "restricted loss (all inputs)", COLORS[3]), ("test_loss", "test loss", COLORS[1])], True, "loss"),
        (2, 1, [("gini_W_E", "Gini, W_E", COLORS[4]), ("gini_W_L", "Gini, W_L", COLORS[5])], False, "Gini coefficient"),
        (2, 2, [("sum_sq_weights", "sum of squared weights", COLORS[6])], False, "Σ w²"),
    ]
    shown = set()
    for r, c, series, log, ylabel in panels:
        for col, name, color in series:
            fig.add_trace(go.Scatter(x=e, y=measures[col], name=name, line=dict(color=color, width=1.6),
                                     legendgroup=name, showlegend=name not in shown), row=r, col=c)
            shown.add(name)
        fig.update_yaxes(title_text=ylabel, type="log" if log else "linear", exponentformat="power", row=r, col=c)
        fig.update_xaxes(title_text="epoch", row=r, col=c)
    _phase_shapes(fig, boundaries, 2, 2)
    fig.update_layout(title="Fig. 7: progress measures; shaded: detected phases (paper: 1.4k / 9.4k / 14k)",
                      height=760, **_LAYOUT)
    return fig


def per_frequency_excluded_loss(measures: pd.DataFrame, columns: dict[int, str], boundaries: dict) -> go.Figure:
    """Appendix: excluded loss with each key frequency removed alone, beside train and test loss."""
    fig = go.Figure()
    for i, (k, col) in enumerate(sorted(columns.items())):
        fig.add_trace(go.Scatter(x=measures["epoch"], y=measures[col], name=f"excluded loss, k={k} removed",
                                 line=dict(color=COLORS[(i + 2) % len(COLORS)])))
    for col, name, color in (("excluded_loss", "excluded loss, all key frequencies removed", "black"),
                             ("train_loss", "train loss", COLORS[0]), ("test_loss", "test loss", COLORS[1])):
        fig.add_trace(go.Scatter(x=measures["epoch"], y=measures[col], name=name,
                                 line=dict(color=color, dash="dash" if col != "excluded_loss" else "solid")))
    _phase_shapes(fig, boundaries, 1, 1)
    fig.update_yaxes(title_text="loss on the train inputs", type="log", exponentformat="power")
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title="Appendix: excluded loss per key frequency over training", height=520, **_LAYOUT)
    return fig


def cos_coefficients(measures: pd.DataFrame, columns: dict[int, str], boundaries: dict) -> go.Figure:
    """Appendix: α_k of logits ≈ Σ_k α_k cos(w_k(a+b-c)) for each key frequency over training."""
    fig = go.Figure()
    for i, (k, col) in enumerate(sorted(columns.items())):
        fig.add_trace(go.Scatter(x=measures["epoch"], y=measures[col], name=f"α_{k}  (k = {k})",
                                 line=dict(color=COLORS[(i + 2) % len(COLORS)])))
    _phase_shapes(fig, boundaries, 1, 1)
    fig.update_yaxes(title_text="coefficient α_k of cos(w_k(a+b-c))")
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title="Appendix: cos(w_k(a+b-c)) coefficients of the logits over training", height=480, **_LAYOUT)
    return fig


def sweep(curves: pd.DataFrame, field: str, title: str, label: Callable[[float], str] = str) -> go.Figure:
    """Appendix sweeps: test loss and accuracy over training, one line per value of ``field``.

    ``curves``: columns ``field``, epoch, test_loss, test_acc (``figures.sweep_curves``).
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Test loss", "Test accuracy"), horizontal_spacing=0.1)
    for i, (value, d) in enumerate(curves.groupby(field)):
        color = COLORS[i % len(COLORS)]
        fig.add_trace(go.Scatter(x=d["epoch"], y=d["test_loss"], name=label(value), line=dict(color=color),
                                 legendgroup=str(value)), row=1, col=1)
        fig.add_trace(go.Scatter(x=d["epoch"], y=d["test_acc"], name=label(value), line=dict(color=color),
                                 legendgroup=str(value), showlegend=False), row=1, col=2)
    fig.update_yaxes(title_text="test loss", type="log", exponentformat="power", row=1, col=1)
    fig.update_yaxes(title_text="test accuracy", range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title, height=480, **_LAYOUT)
    return fig
