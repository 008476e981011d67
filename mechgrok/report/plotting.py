"""Plotly figure builders for the paper's figures: tidy DataFrames in, ``go.Figure`` out.

Nothing here computes an analysis; the data come from :mod:`mechgrok.report.figures`. No analysis
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
PHASE_COLORS = {"memorization": "rgba(31,119,180,0.13)", "circuit formation": "rgba(44,160,44,0.13)", "cleanup": "rgba(214,39,40,0.13)"}
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
# Fig. 4 is drawn at a fixed width so that every heatmap cell is square and each colour bar sits
# in the gap to the right of its own panel (plotly places colour bars in figure fractions).
FIG4_WIDTH = 1150
_FIG4_MARGIN = dict(l=60, r=20, t=70, b=45)
_FIG4_HGAP = 0.1  # fraction of the plot width between columns: colour bar + its labels + the next y axis
_FIG4_VGAP_PX = 85  # subplot title, x ticks and x title


def _colorbar(fig: go.Figure, row: int, col: int, title: str) -> dict:
    """A slim colour bar just right of the (row, col) panel, as tall as the panel."""
    sub = fig.get_subplot(row, col)
    (x0, x1), (y0, y1) = sub.xaxis.domain, sub.yaxis.domain
    return dict(title=dict(text=title, side="right", font=dict(size=10)), x=x1 + 0.006, xanchor="left",
                y=(y0 + y1) / 2, yanchor="middle", len=y1 - y0, lenmode="fraction", thickness=9,
                tickfont=dict(size=9), outlinewidth=0)


def _tick_step(n_freq: int, target: int = 6) -> int:
    """A round step (1, 2, 5, 10, 20, ...) giving about ``target`` frequency ticks."""
    raw, scale = max(1.0, n_freq / target), 1
    while True:
        for m in (1, 2, 5):
            if m * scale >= raw:
                return m * scale
        scale *= 10


def _blocks(cells: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """The cells' edge-connected groups (one per key frequency: its 2×2 block of terms), as
    bounding boxes (row0, row1, col0, col1)."""
    left, out = set(cells), []
    while left:
        stack, group = [left.pop()], []
        while stack:
            i, j = stack.pop()
            group.append((i, j))
            for n in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if n in left:
                    left.remove(n)
                    stack.append(n)
        rows, cols = [i for i, _ in group], [j for _, j in group]
        out.append((min(rows), max(rows), min(cols), max(cols)))
    return sorted(out)


def activations(grids: pd.DataFrame, component_names: Sequence[str],
                key_terms: Sequence[tuple[int, int]] = ()) -> go.Figure:
    """Fig. 4: attention from ``=`` to a per head, neuron activations over (a, b), and the
    logits' 2D Fourier norms, each heatmap with its own colour bar.

    ``grids``: long table with columns panel, row, col, value; panels are "head h" (row a, col
    b), "neuron n (freq k)" (row a, col b) and "logit 2D Fourier norms" (row: component of a,
    col: component of b, as indices into ``component_names``). ``key_terms``: (row, col)
    cells of the logit panel to ring (the key frequencies' terms).

    Layout: the heads on the first row; the neurons fill rows 2-3 of the left columns; the logit
    panel is a large square over rows 2-3 of the two right columns.
    """
    panels = list(dict.fromkeys(grids["panel"]))
    heads = [p for p in panels if p.startswith("head")]
    neurons = [p for p in panels if p.startswith("neuron")]
    logit = [p for p in panels if p.startswith("logit")][:1]
    n_cols = max(len(heads), 4)
    left = n_cols - 2  # columns for the neurons, beside the 2-column logit panel
    slots = [(r, c) for r in (2, 3) for c in range(1, left + 1)]
    neurons = neurons[: len(slots)]
    specs = [[{} if c <= len(heads) else None for c in range(1, n_cols + 1)]]
    for r in (2, 3):
        row = [{} if (r, c) in slots[: len(neurons)] else None for c in range(1, left + 1)]
        row += [{"rowspan": 2, "colspan": 2}, None] if r == 2 and logit else [None, None]
        specs.append(row)
    titles = [f"attention from = to a, {h}" for h in heads]
    titles += [f"{n}: activation" for n in neurons[:left]]
    titles += ["logits: norm of each 2D Fourier component (boxed: key-frequency terms)"] if logit else []
    titles += [f"{n}: activation" for n in neurons[left:]]

    plot_w = FIG4_WIDTH - _FIG4_MARGIN["l"] - _FIG4_MARGIN["r"]
    cell = plot_w * (1 - (n_cols - 1) * _FIG4_HGAP) / n_cols  # px: one square panel
    plot_h = 3 * cell + 2 * _FIG4_VGAP_PX
    fig = make_subplots(rows=3, cols=n_cols, specs=specs, subplot_titles=titles, horizontal_spacing=_FIG4_HGAP,
                        vertical_spacing=_FIG4_VGAP_PX / plot_h)

    def heat(panel, row, col, colorscale, bar, x_label, y_label, **kwargs):
        d = grids[grids["panel"] == panel]
        z = d.pivot(index="row", columns="col", values="value")
        fig.add_trace(go.Heatmap(z=z.to_numpy(), x=list(z.columns), y=list(z.index), colorscale=colorscale,
                                 colorbar=_colorbar(fig, row, col, bar), **kwargs), row=row, col=col)
        fig.update_xaxes(title_text=x_label, title_standoff=4, row=row, col=col)
        fig.update_yaxes(title_text=y_label, title_standoff=2, autorange="reversed", row=row, col=col)

    for i, h in enumerate(heads, start=1):
        heat(h, 1, i, "Blues", "attention", "b", "a", hovertemplate=f"a=%{{y}}, b=%{{x}}: %{{z:.3g}}<extra>{h}</extra>")
    for n, (r, c) in zip(neurons, slots):
        heat(n, r, c, "Reds", "activation", "b", "a", hovertemplate=f"a=%{{y}}, b=%{{x}}: %{{z:.3g}}<extra>{n}</extra>")
    if logit:
        names = list(component_names)
        text = [[f"a: {names[i]}, b: {names[j]}" for j in range(len(names))] for i in range(len(names))]
        heat(logit[0], 2, left + 1, "Viridis", "norm over c", "component of b", "component of a", text=text,
             hovertemplate="%{text}: %{z:.3g}<extra>logits</extra>")
        # ticks at the constant and at round frequencies, named as in component_names
        step = _tick_step((len(names) - 1) // 2)
        ticks = [0] + [names.index(f"cos {k}") for k in range(step, (len(names) - 1) // 2 + 1, step)]
        for axis in (fig.update_xaxes, fig.update_yaxes):
            axis(tickmode="array", tickvals=ticks, ticktext=[names[t] for t in ticks], tickfont=dict(size=10),
                 row=2, col=left + 1)
        # one box around each key frequency's block of terms, drawn in axis units so it stays
        # visible when a cell is a few pixels wide (p=113)
        term_px = (2 * cell + _FIG4_HGAP * plot_w) / len(names)  # one cell of the logit panel
        sub = fig.get_subplot(2, left + 1)
        xref, yref = sub.xaxis.plotly_name.replace("axis", ""), sub.yaxis.plotly_name.replace("axis", "")
        pad = 0.5 + max(0.15, 3 / term_px)  # in cells: the box clears its block by >= 3 px
        # the cells plus room for a box at the edge (autorange would pad the axes for the shapes)
        edge = pad + 2 / term_px
        fig.update_xaxes(range=[-edge, len(names) - 1 + edge], row=2, col=left + 1)
        fig.update_yaxes(range=[len(names) - 1 + edge, -edge], autorange=False, row=2, col=left + 1)
        for i0, i1, j0, j1 in _blocks(key_terms):
            fig.add_shape(type="rect", x0=j0 - pad, x1=j1 + pad, y0=i0 - pad, y1=i1 + pad, xref=xref, yref=yref,
                          line=dict(color="#ff3b3b", width=2), fillcolor="rgba(0,0,0,0)")
    fig.update_annotations(font_size=12)
    layout = {**_LAYOUT, "margin": _FIG4_MARGIN}
    fig.update_layout(title="Fig. 4: attention, neuron activations and logits over the inputs (a, b)",
                      width=FIG4_WIDTH, height=int(plot_h + _FIG4_MARGIN["t"] + _FIG4_MARGIN["b"]), **layout)
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
    """Shade the detected phases in every panel, label each boundary once along its line in the
    first panel, and add one legend entry per shaded phase (the colour key)."""
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
        # the key: a legend swatch in the band's colour (a trace with no data draws nothing)
        key = go.Scatter(x=[None], y=[None], mode="markers", name=f"{name} (epochs {lo:,}–{hi:,})",
                         legendgroup="phases", legendgrouptitle_text="shaded: detected phases",
                         marker=dict(symbol="square", size=15, color=PHASE_COLORS[name], line=dict(color="gray", width=1)),
                         hoverinfo="skip")
        if n_rows * n_cols > 1:
            fig.add_trace(key, row=1, col=1)
        else:
            fig.add_trace(key)


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
    fig.update_layout(title="Fig. 7: progress measures; shaded: the phases detected on this run", height=760, **_LAYOUT)
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


def cos_coefficients(measures: pd.DataFrame, columns: dict[int, str], boundaries: dict, inputs: str = "a+b−c") -> go.Figure:
    """Appendix: α_k of logits ≈ Σ_k α_k cos(w_k(``inputs``)) for each key frequency over training
    (``inputs`` "a+b−c" for op="add", "a−b−c" for "sub")."""
    fig = go.Figure()
    for i, (k, col) in enumerate(sorted(columns.items())):
        fig.add_trace(go.Scatter(x=measures["epoch"], y=measures[col], name=f"α_{k}  (k = {k})",
                                 line=dict(color=COLORS[(i + 2) % len(COLORS)])))
    _phase_shapes(fig, boundaries, 1, 1)
    fig.update_yaxes(title_text=f"coefficient α_k of cos(w_k({inputs}))")
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=f"Appendix: cos(w_k({inputs})) coefficients of the logits over training", height=480, **_LAYOUT)
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
