"""The figures of Pearce et al.'s explorable, *Do Machine Learning Models Memorize or Generalize?*
(PAIR, 2023), one function each: run folders (or a small table) in, a :class:`FigureOutput` out.

========================  ===================================================================
figure                    what it draws
========================  ===================================================================
``loss_curves``           train/test loss and accuracy per seed; the weights W_input = E·W_in at
                          a few checkpoints from memorisation to generalisation
``neuron_waves``          each frequency group's neurons, their input weights over the residues
``parity_weights``        the sparse-parity model's |W_in| at a few checkpoints; loss, the
                          parity bits' weight share and the distractors' mean |w| over training
``regime_diagram``        train size × weight decay per hidden size, each cell the seeds' regimes
``circle``                the constructed 5-neuron circle's W_in-proj and W_out-proj points
``constructions``         the untrained ReLU construction's accuracy over neurons × modulus; the
                          x² identity's error and accuracy per neuron count
``stars``                 each group's neurons' (cos, sin) DFT components at its frequency, input
                          and output side, at the end and at earlier checkpoints
``logit_waves``           each group's contribution to the logits, with its fitted cos wave
``variants``              the tied MLP beside its unfactored and collapsed variants
``no_weight_decay``       the tied MLP trained without weight decay
========================  ===================================================================

Captions are readouts: each states what these runs' data show, computed from them (steps,
accuracies, shares, R², counts). A statement of the explorable is set beside ours only where it
names something our numbers can be held against, and is labelled as the explorable's, about its
own runs (p = 67), not these.

Units. A modular run with ``loss_scale='per_output'`` minimises, and logs in ``metrics.csv``,
the explorable's loss: cross-entropy / p (the mean over all p outputs of one-hot × log-softmax;
:mod:`mechgrok.training.stack` logs the loss in the scale it trains in). A run with
``loss_scale='mean'`` logs the plain cross-entropy, which these figures divide by p so that
every modular loss is drawn in the explorable's units, and every axis says which. The sparse-
parity loss is drawn as the mean cross-entropy of its two logits [0, z] (the logistic loss).
Steps: one full-batch step per epoch, so a run's "epoch" column is the step.

:func:`write_pair_report` writes one self-contained ``report.html`` (plotly.js inlined once)
and ``summary.json``; :func:`mechgrok.report.figures.write_figure` writes any one figure alone.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from mechgrok import runs
from mechgrok.analysis import circuits, parity, regimes, waves
from mechgrok.analysis import constructions as construction_maths  # the name `constructions` is the figure's
from mechgrok.config import Config
from mechgrok.report import PAIR_FIGURE_NAMES
from mechgrok.report.figures import GROKKED_TEST_ACCURACY, FigureOutput
from mechgrok.report.html import write_page
from mechgrok.scoring import accuracy

__all__ = [
    "MODULAR_MLP_FAMILIES",
    "REACHED",
    "FALL",
    "PAIR_FIGURES",
    "loss_axis",
    "input_weights",
    "output_weights",
    "pick_steps",
    "phase_resultant",
    "loss_curves",
    "neuron_waves",
    "parity_weights",
    "regime_diagram",
    "circle",
    "constructions",
    "stars",
    "logit_waves",
    "variants",
    "no_weight_decay",
    "write_pair_report",
]

# The modular families whose input weights over the residues are E·W_in (or W_input, collapsed).
MODULAR_MLP_FAMILIES = ("mlp", "mlp_unfactored", "mlp_collapsed_in", "mlp_collapsed_out")
# The level at which the captions say an accuracy "reached" (the Nanda report's grokking rule).
REACHED = GROKKED_TEST_ACCURACY
# A test accuracy "falls back" when it ends at least this far below its peak.
FALL = 0.05
_LAYOUT = dict(template="plotly_white", font=dict(size=12), margin=dict(l=60, r=30, t=70, b=50))
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
REGIME_COLORS = {"fail": "#9e9e9e", "memorize": "#d62728", "generalize": "#1f77b4", "grok": "#2ca02c"}


def _explorable(text: str) -> str:
    return f"Explorable (Pearce et al. 2023, about its own runs, not these): {text}"


# ----------------------------------------------------------------------------- formatting
def _acc(x: float) -> str:
    """An accuracy rounded down to 3 decimals, so 0.9899 never prints as the threshold 0.990."""
    return "–" if not math.isfinite(x) else f"{math.floor(x * 1000) / 1000:.3f}"


def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:.1f}%"


def _g(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.3g}"


def _ranges(ns: Sequence[int]) -> str:
    """Integers as runs: [3, 5, 6, 7, 9] -> "3, 5–7, 9"; "none" when empty."""
    ns = sorted(set(int(n) for n in ns))
    if not ns:
        return "none"
    out, start = [], ns[0]
    for prev, n in zip(ns, ns[1:] + [None]):
        if n != prev + 1:
            out.append(f"{start}" if start == prev else (f"{start}, {prev}" if prev == start + 1 else f"{start}–{prev}"))
            start = n
    return ", ".join(out)


# ----------------------------------------------------------------------------- reading runs
@dataclass(frozen=True)
class _Run:
    """One run folder's config and its metrics (columns step, train/test loss and accuracy)."""

    path: Path
    config: Config
    metrics: pd.DataFrame

    @property
    def seed(self) -> int:
        return self.config.seed

    def load(self, step: int | None = None) -> torch.nn.Module:
        """The model at a saved step (default: the newest)."""
        return runs.load_run(self.path, epoch=step).model

    @property
    def saved_steps(self) -> list[int]:
        return runs.checkpoint_epochs(self.path)

    @property
    def last_step(self) -> int:
        """The newest saved step, or a ValueError for a run without checkpoints."""
        saved = self.saved_steps
        if not saved:
            raise ValueError(f"{self.path} has no checkpoints yet; train it (checkpoint_every sets how often weights are saved)")
        return saved[-1]


def loss_axis(cfg: Config) -> tuple[float, str]:
    """(factor taking the logged loss to the drawn one, the unit the axis names).

    Modular runs are drawn in the explorable's units, cross-entropy / p (module docstring);
    sparse-parity runs as the mean cross-entropy of their two logits.
    """
    logged_per_output = cfg.loss_scale == "per_output"
    if cfg.task == "parity":
        return (float(cfg.d_vocab_out) if logged_per_output else 1.0), "mean cross-entropy (logistic loss of z)"
    return (1.0 if logged_per_output else 1.0 / cfg.p), f"cross-entropy / {cfg.p} (the explorable's units)"


def _open(run_dir: str | Path, families: Sequence[str], figure: str) -> _Run:
    """A run folder of one of ``families`` with metrics, or a ValueError that says what to pass."""
    path = Path(run_dir)
    if not (path / runs.CONFIG_FILE).exists():
        raise ValueError(f"{figure}: {path} is not a mechgrok run folder (no {runs.CONFIG_FILE}); pass a trained run folder")
    cfg = runs.read_config(path)
    if cfg.family not in families:
        raise ValueError(f"{figure} reads runs of the {' / '.join(families)} famil{'y' if len(families) == 1 else 'ies'}; "
                         f"{path} is a {cfg.family!r} run. Pass a run of one of those families")
    metrics = runs.read_metrics(path)
    if metrics is None or metrics.empty:
        raise ValueError(f"{figure}: {path} has no metrics.csv yet; train it first")
    factor, _ = loss_axis(cfg)
    m = metrics.rename(columns={"epoch": "step"}).sort_values("step", ignore_index=True)
    m = m[["step", "train_loss", "test_loss", "train_acc", "test_acc"]].assign(
        train_loss=m["train_loss"] * factor, test_loss=m["test_loss"] * factor)
    return _Run(path, cfg, m)


def _open_all(run_dirs: Sequence[str | Path], families: Sequence[str], figure: str) -> list[_Run]:
    if isinstance(run_dirs, (str, Path)):
        raise ValueError(f"{figure} takes a list of run folders (one per seed or variant); pass [{str(run_dirs)!r}]")
    out = [_open(d, families, figure) for d in run_dirs]
    if not out:
        raise ValueError(f"{figure}: no run folders given; pass at least one")
    return out


def _first_step(m: pd.DataFrame, column: str, level: float = REACHED) -> int | None:
    hit = m[m[column] >= level]
    return None if hit.empty else int(hit["step"].iloc[0])


def _reached(m: pd.DataFrame, column: str, what: str, level: float = REACHED) -> str:
    """ "test accuracy ≥ 0.99 from step 1,200" or "test accuracy never reached 0.99 (highest 0.613, step 200)"."""
    at = _first_step(m, column, level)
    if at is not None:
        return f"{what} ≥ {level:g} at step {at:,}"
    best = m.loc[m[column].idxmax()]
    return f"{what} never reached {level:g} (highest {_acc(best[column])}, step {int(best['step']):,})"


def _final(m: pd.DataFrame) -> str:
    last = m.iloc[-1]
    return (f"final (step {int(last['step']):,}) train loss {_g(last['train_loss'])}, test loss {_g(last['test_loss'])}, "
            f"train accuracy {_acc(last['train_acc'])}, test accuracy {_acc(last['test_acc'])}")


def _seed_sentence(r: _Run) -> str:
    m = r.metrics
    train_at, test_at = _first_step(m, "train_acc"), _first_step(m, "test_acc")
    later = f" ({test_at - train_at:,} steps after train)" if train_at is not None and test_at is not None else ""
    return (f"Seed {r.seed}: {_reached(m, 'train_acc', 'train accuracy')}, "
            f"{_reached(m, 'test_acc', 'test accuracy')}{later}; {_final(m)}.")


# ----------------------------------------------------------------------------- model readouts
def input_weights(model: torch.nn.Module) -> Float[Tensor, "p neuron"]:
    """W_input over the residues: E·W_in for a factored input side, the collapsed W_input otherwise."""
    W_in = getattr(model.mlp, "W_in", None)
    W = model.W_E @ W_in if W_in is not None else model.W_E
    return W.detach().double().cpu()


def output_weights(model: torch.nn.Module) -> Float[Tensor, "c neuron"]:
    """What each neuron adds to each logit c: W_L = W_out·Eᵀ (or the collapsed W_output), transposed."""
    return model.W_L.detach().double().cpu().T


def _groups(model: torch.nn.Module) -> tuple[dict[int, list[int]], Tensor, Tensor]:
    """The frequency groups of a model's neurons (by their input and output DFT energy together),
    and the two DFTs [neuron, freq, 2]."""
    c_in, c_out = waves.neuron_dft(input_weights(model)), waves.neuron_dft(output_weights(model))
    return waves.frequency_groups(waves.neuron_frequencies(c_in, c_out)), c_in, c_out


def _neuron_order(groups: Mapping[int, list[int]], c_in: Tensor) -> list[int]:
    """Neurons sorted by group frequency, then by input phase at that frequency (as the explorable reindexes them)."""
    order = []
    for k, neurons in groups.items():
        phase = {n: math.atan2(c_in[n, k - 1, 1].item(), c_in[n, k - 1, 0].item()) for n in neurons}
        order += sorted(neurons, key=phase.get)
    return order


def pick_steps(saved: Sequence[int], metrics: pd.DataFrame, n: int) -> list[int]:
    """``n`` saved steps spanning a run: the first and the last, then (as many as fit) the first
    steps at which test and train accuracy reached :data:`REACHED` and the midpoint between
    them, then evenly spaced ones; each snapped to the nearest saved step, ascending.
    ``metrics``: columns step, train_acc, test_acc (one row per logged step)."""
    saved = sorted(saved)
    if not saved:
        raise ValueError("the run has no checkpoints; train it (checkpoint_every sets how often weights are saved)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be an integer >= 1 (how many checkpoints to draw)")
    train_at, test_at = _first_step(metrics, "train_acc"), _first_step(metrics, "test_acc")
    wanted = [saved[0], saved[-1], test_at, train_at]
    if train_at is not None and test_at is not None:
        wanted.append((train_at + test_at) // 2)
    wanted += list(np.linspace(saved[0], saved[-1], max(n, 2)).round().astype(int))
    picked: list[int] = []
    for w in wanted:
        if w is None:
            continue
        s = min(saved, key=lambda x: (abs(x - w), x))
        if s not in picked:
            picked.append(s)
        if len(picked) == min(n, len(saved)):
            break
    return sorted(picked)


def _check_steps(steps: Sequence[int] | None, r: _Run, n: int) -> list[int]:
    if steps is None:
        return pick_steps(r.saved_steps, r.metrics, n)
    missing = [s for s in steps if s not in r.saved_steps]
    if missing or not steps:
        raise ValueError(f"steps {list(missing) or list(steps)} are not saved in {r.path}; saved: {r.saved_steps}")
    return sorted(set(int(s) for s in steps))


def phase_resultant(angles: Sequence[float]) -> float:
    """|mean of e^{iθ}| over the angles: 0 when they balance around the circle (e.g. evenly
    spread), 1 when they all point one way; nan for no angles."""
    a = np.asarray(list(angles), dtype=np.float64)
    return float(abs(np.exp(1j * a).mean())) if len(a) else math.nan


# ----------------------------------------------------------------------------- drawing helpers
def _row_col_specs(n: int, upper_rows: int) -> list[list[dict | None]]:
    """``upper_rows`` rows of two wide panels (each n columns), then one row of n panels (2 columns each)."""
    wide = [[{"colspan": n}] + [None] * (n - 1) + [{"colspan": n}] + [None] * (n - 1) for _ in range(upper_rows)]
    return wide + [sum(([{"colspan": 2}, None] for _ in range(n)), [])]


def _curves(fig: go.Figure, m: pd.DataFrame, row: int, cols: tuple[int, int], color: str, label: str,
            legend: bool = True) -> None:
    """Train (solid) and test (dashed) loss at (row, cols[0]) and accuracy at (row, cols[1])."""
    for split, dash in (("train", "solid"), ("test", "dash")):
        for col, metric in zip(cols, ("loss", "acc")):
            fig.add_trace(go.Scatter(x=m["step"], y=m[f"{split}_{metric}"], mode="lines",
                                     line=dict(color=color, dash=dash, width=1.6), name=f"{label}, {split}",
                                     legendgroup=f"{label}, {split}", showlegend=legend and metric == "loss"),
                          row=row, col=col)


def _loss_acc_axes(fig: go.Figure, row: int, cols: tuple[int, int], unit: str) -> None:
    fig.update_yaxes(title_text=f"loss: {unit}", type="log", exponentformat="power", row=row, col=cols[0])
    fig.update_yaxes(title_text="accuracy", range=[0, 1.03], row=row, col=cols[1])
    for c in cols:
        fig.update_xaxes(title_text="step", row=row, col=c)


def _mark_steps(fig: go.Figure, steps: Sequence[int], row: int, cols: Sequence[int]) -> None:
    """Dotted lines at the drawn checkpoints' steps."""
    for c in cols:
        for s in steps:
            fig.add_vline(x=s, line_dash="dot", line_color="gray", line_width=1, row=row, col=c)


def _finish(fig: go.Figure, title: str, height: int, *, width: int | None = None, legend: bool = True, **layout) -> None:
    """Title at the top, then (``legend``) a one-line legend between it and the subplot titles."""
    margin = {**_LAYOUT["margin"], "t": 120 if legend else 75}
    plot_h = height - margin["t"] - margin["b"]
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left", y=1 - 12 / height, yanchor="top"),
                      height=height, width=width, template=_LAYOUT["template"], font=_LAYOUT["font"], margin=margin,
                      showlegend=legend, legend=dict(orientation="h", x=0, xanchor="left", y=1 + 34 / plot_h, yanchor="bottom"),
                      **layout)


def _split_top(fig: go.Figure, row: int, cols: tuple[int, int], gap: float = 0.08) -> None:
    """Move a row's two wide panels apart, so the right one's axis title clears the left one."""
    left, right = fig.get_subplot(row, cols[0]).xaxis.domain, fig.get_subplot(row, cols[1]).xaxis.domain
    middle = (left[1] + right[0]) / 2
    fig.update_xaxes(domain=[left[0], middle - gap / 2], row=row, col=cols[0])
    fig.update_xaxes(domain=[middle + gap / 2, right[1]], row=row, col=cols[1])


def _colorbar_beside(fig: go.Figure, row: int, col: int, title: str) -> dict:
    """A colour bar right of the last panel of a row, as tall as that row."""
    sub = fig.get_subplot(row, col)
    (_, x1), (y0, y1) = sub.xaxis.domain, sub.yaxis.domain
    return dict(title=dict(text=title, side="right"), x=x1 + 0.01, xanchor="left", y=(y0 + y1) / 2, yanchor="middle",
                len=y1 - y0, lenmode="fraction", thickness=12)


# ----------------------------------------------------------------------------- 1. loss curves
def loss_curves(run_dirs: Sequence[str | Path], *, steps: Sequence[int] | None = None, n_steps: int = 5) -> FigureOutput:
    """Train/test loss (log, the explorable's units) and accuracy of each seed of one MLP, and
    the first seed's W_input = E·W_in [neuron × residue] at ``steps`` (default: ``n_steps``
    saved steps from :func:`pick_steps`, memorisation to generalisation)."""
    rs = _open_all(run_dirs, MODULAR_MLP_FAMILIES, "loss_curves")
    if len({r.config.family for r in rs}) > 1:
        raise ValueError("loss_curves draws seeds of one model; these runs are of families "
                         f"{sorted({r.config.family for r in rs})}: compare families with variants(...)")
    first = rs[0]
    steps = _check_steps(steps, first, n_steps)
    curves = pd.concat([r.metrics.assign(seed=r.seed) for r in rs], ignore_index=True)
    curves = curves[["seed", "step", "train_loss", "test_loss", "train_acc", "test_acc"]]
    weights = _weights_over_steps(first, steps)
    norms = weights.groupby("step")["weight"].apply(lambda w: float(np.sqrt((w**2).sum())))
    unit = loss_axis(first.config)[1]
    fig = _draw_loss_curves(rs, weights, steps, unit)
    cfg = first.config
    caption = " ".join([
        f"Train (solid) and test (dashed) loss, in {unit}, and accuracy of {len(rs)} seed{'s' if len(rs) > 1 else ''} "
        f"of the {cfg.family} model (p={cfg.p}, {cfg.d_mlp} neurons, {cfg.frac_train:.0%} of the "
        f"{'pairs a ≤ b' if cfg.pairs == 'unordered' else 'pairs'} for training, weight decay {cfg.weight_decay:g}).",
        *[_seed_sentence(r) for r in rs],
        f"Below: W_input = E·W_in of seed {first.seed} at steps {', '.join(f'{s:,}' for s in steps)} (dotted lines above), "
        "neurons ordered by their final frequency and phase; its Frobenius norm at those steps: "
        + " → ".join(_g(norms[s]) for s in steps) + ".",
    ])
    return FigureOutput("loss_curves", fig, {"": curves, "weights": weights}, caption)


def _weights_over_steps(r: _Run, steps: Sequence[int]) -> pd.DataFrame:
    """Long table step, neuron, position (row in the drawn order), residue, weight of W_input."""
    groups, c_in, _ = _groups(r.load(r.last_step))
    order = _neuron_order(groups, c_in)
    frames = []
    for s in steps:
        W = input_weights(r.load(s))[:, order]  # [residue, position]
        p, n = W.shape
        frames.append(pd.DataFrame({"step": s, "neuron": np.tile(order, p), "position": np.tile(np.arange(n), p),
                                    "residue": np.repeat(np.arange(p), n), "weight": W.flatten().numpy()}))
    return pd.concat(frames, ignore_index=True)


def _draw_loss_curves(rs: Sequence[_Run], weights: pd.DataFrame, steps: Sequence[int], unit: str) -> go.Figure:
    n = len(steps)
    fig = make_subplots(rows=2, cols=2 * n, specs=_row_col_specs(n, 1), row_heights=[0.55, 0.45],
                        vertical_spacing=0.14, horizontal_spacing=0.03,
                        subplot_titles=["Loss", "Accuracy"] + [f"W_input at step {s:,}" for s in steps])
    for i, r in enumerate(rs):
        _curves(fig, r.metrics, 1, (1, n + 1), COLORS[i % len(COLORS)], f"seed {r.seed}")
    _loss_acc_axes(fig, 1, (1, n + 1), unit)
    _split_top(fig, 1, (1, n + 1))
    _mark_steps(fig, steps, 1, (1, n + 1))
    zmax = float(weights["weight"].abs().max()) or 1.0
    for j, s in enumerate(steps):
        z = weights[weights["step"] == s].pivot(index="position", columns="residue", values="weight")
        col = 2 * j + 1
        fig.add_trace(go.Heatmap(z=z.to_numpy(), x=list(z.columns), y=list(z.index), coloraxis="coloraxis",
                                 hovertemplate=f"step {s:,}, residue %{{x}}, neuron #%{{y}}: %{{z:.3g}}<extra></extra>"),
                      row=2, col=col)
        fig.update_xaxes(title_text="residue", row=2, col=col)
        fig.update_yaxes(title_text="neuron (by final frequency, phase)" if j == 0 else None, showticklabels=j == 0,
                         autorange="reversed", row=2, col=col)
    _finish(fig, f"Loss, accuracy and weights over training ({rs[0].config.family}, p={rs[0].config.p})", 800,
            coloraxis=dict(colorscale="RdBu_r", cmin=-zmax, cmax=zmax, colorbar=_colorbar_beside(fig, 2, 2 * n - 1, "weight")))
    return fig


# ----------------------------------------------------------------------------- 2. neuron waves
def neuron_waves(run_dir: str | Path) -> FigureOutput:
    """The final model's neurons grouped by frequency: one panel per group, each neuron's input
    weights (a column of W_input = E·W_in) over the residues 0..p-1 as a line."""
    r = _open(run_dir, MODULAR_MLP_FAMILIES, "neuron_waves")
    step = r.last_step
    model = r.load(step)
    W = input_weights(model)
    groups, c_in, c_out = _groups(model)
    energy = (c_in**2).sum(-1)  # [neuron, freq]
    per_neuron = pd.DataFrame([
        {"neuron": n, "frequency": k, "fraction_at_frequency": (energy[n, k - 1] / energy[n].sum()).item(),
         "phase": math.atan2(c_in[n, k - 1, 1].item(), c_in[n, k - 1, 0].item())}
        for k, ns in groups.items() for n in ns])
    p = W.shape[0]
    lines = pd.DataFrame([{"frequency": k, "neuron": n, "residue": x, "weight": W[x, n].item()}
                          for k, ns in groups.items() for n in _neuron_order({k: ns}, c_in) for x in range(p)])
    fig = _draw_neuron_waves(lines, groups, r.config.p)
    listed = "; ".join(f"k={k}: {len(ns)} neuron{'s' if len(ns) > 1 else ''}" for k, ns in groups.items())
    shares = "; ".join(
        f"k={k}: median {_pct(g.median())}, lowest {_pct(g.min())}"
        for k, g in per_neuron.groupby("frequency")["fraction_at_frequency"])
    caption = " ".join([
        f"The {r.config.family} model (seed {r.seed}) at step {step:,} ({_final(r.metrics)}).",
        f"Its {W.shape[1]} neurons fall into {len(groups)} frequency group{'s' if len(groups) > 1 else ''} "
        f"(a neuron's frequency: the k whose DFT energy of its input and output weights together is largest, "
        f"the constant left out): {listed}.",
        f"Share of each neuron's input-weight DFT energy (constant left out) at its own frequency: {shares}; "
        f"over all neurons, median {_pct(per_neuron['fraction_at_frequency'].median())}.",
        _explorable("its model's neurons group into frequencies 4, 5, 7 and 26."),
    ])
    return FigureOutput("neuron_waves", fig, {"": per_neuron, "weights": lines}, caption)


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _draw_neuron_waves(lines: pd.DataFrame, groups: Mapping[int, list[int]], p: int) -> go.Figure:
    rows, cols = _grid(len(groups))
    fig = make_subplots(rows=rows, cols=cols, vertical_spacing=0.12 if rows > 1 else 0.1, horizontal_spacing=0.06,
                        subplot_titles=[f"frequency {k}: {len(ns)} neuron{'s' if len(ns) > 1 else ''}" for k, ns in groups.items()])
    for i, k in enumerate(groups):
        row, col = i // cols + 1, i % cols + 1
        d = lines[lines["frequency"] == k]
        for j, (n, g) in enumerate(d.groupby("neuron", sort=False)):
            fig.add_trace(go.Scatter(x=g["residue"], y=g["weight"], mode="lines", line=dict(width=1.1, color=COLORS[j % len(COLORS)]),
                                     name=f"neuron {n}", showlegend=False,
                                     hovertemplate=f"neuron {n}, residue %{{x}}: %{{y:.3g}}<extra>k={k}</extra>"),
                          row=row, col=col)
        fig.update_xaxes(title_text="residue (input number)", range=[0, p - 1], row=row, col=col)
        fig.update_yaxes(title_text="input weight (E·W_in)" if col == 1 else None, row=row, col=col)
    _finish(fig, "Neurons grouped by frequency: input weights over the residues", 330 * rows + 100, legend=False)
    return fig


# ----------------------------------------------------------------------------- 3. parity weights
def parity_weights(run_dir: str | Path, *, steps: Sequence[int] | None = None, n_steps: int = 4,
                   window: int | None = None) -> FigureOutput:
    """The sparse-parity model: train/test loss and accuracy, the parity bits' share of the first
    layer's Σw² and the mean |w| on distractor and parity bits at every saved step, and |W_in|
    (bits and the bias input × neurons) at ``steps`` (default ``n_steps`` from :func:`pick_steps`).
    The train-loss rise before the test loss drops (``parity.loss_rise_before_drop``, ``window``
    steps before the drop, all by default) is shaded when there is one."""
    r = _open(run_dir, ("parity_mlp",), "parity_weights")
    cfg = r.config
    steps = _check_steps(steps, r, n_steps)
    over = pd.DataFrame([_bit_readouts(r.load(s), s, cfg.parity_bits) for s in r.saved_steps])
    heat = pd.concat([_abs_weights(r.load(s), s) for s in steps], ignore_index=True)
    m = r.metrics
    by_step = m.set_index("step")
    rise = parity.loss_rise_before_drop(by_step["train_loss"], by_step["test_loss"], window=window)
    unit = loss_axis(cfg)[1]
    fig = _draw_parity(m, over, heat, steps, rise, cfg, unit)
    last = over.iloc[-1]
    caption = " ".join([
        f"Sparse parity (the parity of the first {cfg.parity_bits} of {cfg.n_bits} bits; {cfg.n_train:,} train and "
        f"{cfg.n_test:,} test strings; {cfg.d_mlp} neurons; {cfg.decay.upper()} weight decay {cfg.weight_decay:g}), seed {r.seed}.",
        f"{_reached(m, 'train_acc', 'Train accuracy')}; {_reached(m, 'test_acc', 'test accuracy')}; {_final(m)} (loss: {unit}).",
        f"At step {int(last['step']):,} the parity bits carry {_pct(last['parity_share'])} of the first layer's Σw² "
        f"(the bias row left out; spread evenly it would be {_pct(cfg.parity_bits / cfg.n_bits)}), "
        f"up from {_pct(over['parity_share'].iloc[0])} at step {int(over['step'].iloc[0]):,}; mean |w| on the "
        f"{cfg.n_bits - cfg.parity_bits} distractor bits {_g(last['distractor_mean_abs'])} against "
        f"{_g(last['parity_mean_abs'])} on the parity bits (ratio {_g(last['distractor_mean_abs'] / last['parity_mean_abs'])}).",
        _rise_sentence(rise),
        _explorable("once its model generalises, the weights on the 27 distractor bits fall to about 0, and the train "
                    "loss rises slightly just before it generalises."),
    ])
    return FigureOutput("parity_weights", fig, {"": over, "metrics": m, "weights": heat,
                                                 "loss_rise": rise.table() if rise else pd.DataFrame()}, caption)


def _bit_readouts(model: torch.nn.Module, step: int, parity_bits: int) -> dict[str, float]:
    W = model.mlp.W_in.detach()
    bits = parity.distractor_weight(W, parity_bits)
    return {"step": step, "parity_share": parity.parity_weight_share(W, parity_bits),
            "parity_mean_abs": bits.parity, "distractor_mean_abs": bits.distractor}


def _abs_weights(model: torch.nn.Module, step: int) -> pd.DataFrame:
    W = model.mlp.W_in.detach().double().abs()  # [bit (+ bias), neuron]
    n_in, n = W.shape
    return pd.DataFrame({"step": step, "bit": np.repeat(np.arange(n_in), n), "neuron": np.tile(np.arange(n), n_in),
                         "abs_weight": W.flatten().numpy()})


def _rise_sentence(rise: parity.LossRise | None) -> str:
    if rise is None:
        return ("No rise of the train loss was found before the test loss fell below half its peak "
                "(or the test loss never did; rule: analysis.parity.loss_rise_before_drop).")
    return (f"Before the test loss fell below half its peak (step {rise.drop_step:,}), the train loss rose from "
            f"{_g(rise.train_at_rise)} at step {rise.rise_step:,} to {_g(rise.train_at_peak)} at step {rise.peak_step:,} "
            f"(+{_pct(rise.relative_rise)}; shaded).")


def _draw_parity(m: pd.DataFrame, over: pd.DataFrame, heat: pd.DataFrame, steps: Sequence[int],
                 rise: parity.LossRise | None, cfg: Config, unit: str) -> go.Figure:
    n = max(len(steps), 2)
    titles = ["Loss", "Accuracy", "Parity bits' share of the first layer's Σw²", "Mean |w| per input bit"]
    fig = make_subplots(rows=3, cols=2 * n, specs=_row_col_specs(n, 2), row_heights=[0.27, 0.27, 0.46],
                        vertical_spacing=0.09, horizontal_spacing=0.03,
                        subplot_titles=titles + [f"|W_in| at step {s:,}" for s in steps])
    _curves(fig, m, 1, (1, n + 1), COLORS[0], "model")
    _loss_acc_axes(fig, 1, (1, n + 1), unit)
    _split_top(fig, 1, (1, n + 1))
    _split_top(fig, 2, (1, n + 1))
    fig.add_trace(go.Scatter(x=over["step"], y=over["parity_share"], mode="lines+markers", line=dict(color=COLORS[2]),
                             name="parity share of Σw²"), row=2, col=1)
    fig.add_hline(y=cfg.parity_bits / cfg.n_bits, line_dash="dot", line_color="gray", row=2, col=1,
                  annotation_text="spread evenly", annotation_position="bottom right")
    for col, name, color in (("parity_mean_abs", "parity bits", COLORS[3]), ("distractor_mean_abs", "distractor bits", COLORS[4])):
        fig.add_trace(go.Scatter(x=over["step"], y=over[col], mode="lines+markers", line=dict(color=color),
                                 name=f"mean |w|, {name}"), row=2, col=n + 1)
    fig.update_yaxes(title_text="share", range=[0, 1.03], row=2, col=1)
    fig.update_yaxes(title_text="mean |w|", type="log", dtick="D2", row=2, col=n + 1)
    for c in (1, n + 1):
        fig.update_xaxes(title_text="step", row=2, col=c)
    if rise is not None:
        for row, c in ((1, 1), (1, n + 1), (2, 1), (2, n + 1)):
            fig.add_vrect(x0=rise.rise_step, x1=rise.peak_step, fillcolor="rgba(255,127,14,0.18)", line_width=0, row=row, col=c)
    _mark_steps(fig, steps, 1, (1, n + 1))
    zmax = float(heat["abs_weight"].max()) or 1.0
    labels = [f"{b} (parity)" if b < cfg.parity_bits else str(b) for b in range(cfg.n_bits)] + ["bias"]
    for j, s in enumerate(steps):
        z = heat[heat["step"] == s].pivot(index="bit", columns="neuron", values="abs_weight")
        col = 2 * j + 1
        fig.add_trace(go.Heatmap(z=z.to_numpy(), x=list(z.columns), y=labels, coloraxis="coloraxis",
                                 hovertemplate=f"step {s:,}, input %{{y}}, neuron %{{x}}: %{{z:.3g}}<extra></extra>"),
                      row=3, col=col)
        fig.update_xaxes(title_text="neuron", row=3, col=col)
        fig.update_yaxes(showticklabels=j == 0, autorange="reversed", tickfont=dict(size=8), row=3, col=col)
    _finish(fig, "Sparse parity: loss, weight on the parity bits, and |W_in| over training", 1040,
            coloraxis=dict(colorscale="Greys", cmin=0, cmax=zmax, colorbar=_colorbar_beside(fig, 3, 2 * len(steps) - 1, "|w|")))
    return fig


# ----------------------------------------------------------------------------- 4. regime diagram
REGIME_AXES = ("d_mlp", "n_train", "weight_decay")
# Pixels: a seed's square, the pitch from one square to the next, and the padding of a cell.
_SQUARE_PX, _PITCH_PX, _CELL_PAD_PX = 12, 15, 12
_PANELS_PER_ROW = 3
_PANEL_GAP_PX = 70


def regime_diagram(results: pd.DataFrame) -> FigureOutput:
    """The sweep's regimes: one panel per hidden size (d_mlp), train size (n_train) × weight
    decay, each cell a small grid of squares, one per seed, coloured by its regime.

    ``results``: one row per model with columns n_train, d_mlp, weight_decay, seed, regime (one
    of ``regimes.REGIMES``), and optionally the evidence min_train_loss, min_test_loss, max_ratio
    (shown on hover)."""
    if not isinstance(results, pd.DataFrame):
        raise ValueError(f"regime_diagram takes a DataFrame of sweep results, not {type(results).__name__}")
    missing = [c for c in (*REGIME_AXES, "seed", "regime") if c not in results.columns]
    if missing:
        raise ValueError(f"regime_diagram: results lack columns {missing}; it has {list(results.columns)}. "
                         "Pass one row per model (e.g. regimes.classify_runs(history, by=[...]))")
    dupes = results.duplicated([*REGIME_AXES, "seed"])
    if dupes.any():
        raise ValueError(f"regime_diagram: {int(dupes.sum())} rows repeat a (d_mlp, n_train, weight_decay, seed); "
                         "pass one row per model")
    counts = regimes.regime_table(results, list(REGIME_AXES))
    fig = _draw_regimes(results)
    caption = _regime_caption(results, counts)
    return FigureOutput("regime_diagram", fig, {"": results.reset_index(drop=True), "counts": counts}, caption)


def _regime_caption(results: pd.DataFrame, counts: pd.DataFrame) -> str:
    total = {g: int((results["regime"] == g).sum()) for g in regimes.REGIMES}
    values = {a: sorted(results[a].unique()) for a in REGIME_AXES}
    n_full = math.prod(len(v) for v in values.values())
    seeds = results.groupby(list(REGIME_AXES))["seed"].nunique()
    by_wd = results.groupby("weight_decay")["regime"].agg(lambda s: s.value_counts().reindex(regimes.REGIMES).idxmax())
    return " ".join([
        f"{len(results):,} models in {len(counts)} cells ({_seed_count(seeds)} per cell), "
        f"of the {n_full} combinations of the values present: hidden size {', '.join(f'{v:g}' for v in values['d_mlp'])}; "
        f"train size {', '.join(f'{v:,}' for v in values['n_train'])}; "
        f"weight decay {', '.join(f'{v:g}' for v in values['weight_decay'])}.",
        "Regimes (rules of analysis.regimes, checked in order: fail if min train loss > 1e-5, memorize if min test "
        "loss > 1e-5, generalize if test/train loss stays < 5e4, else grok): "
        + ", ".join(f"{g} {total[g]:,} ({_pct(total[g] / len(results))})" for g in regimes.REGIMES) + ".",
        "Most common regime per weight decay, over all cells: "
        + ", ".join(f"{wd:g}: {g}" for wd, g in by_wd.items()) + ".",
        _explorable("1,125 models (5 train sizes × 5 hidden sizes × 5 weight decays × 9 seeds); as weight decay grows "
                    "its models go from memorizing to grokking, to generalizing directly, to failing."),
    ])


def _seed_count(seeds: pd.Series) -> str:
    lo, hi = int(seeds.min()), int(seeds.max())
    return f"{lo} seed{'s' if lo > 1 else ''}" if lo == hi else f"{lo}–{hi} seeds"


def _cell_side(n: int) -> int:
    """The side g of the g×g mini-grid that holds n seeds."""
    return max(1, math.ceil(math.sqrt(n)))


def _cell_offsets(n: int, g: int, cell_px: float) -> list[tuple[float, float]]:
    """Each of n seeds' (dx, dy) from its cell's centre, in cell units, row by row in a g×g grid."""
    step = _PITCH_PX / cell_px
    return [((i % g - (g - 1) / 2) * step, (i // g - (g - 1) / 2) * step) for i in range(n)]


def _draw_regimes(results: pd.DataFrame) -> go.Figure:
    """Drawn at a fixed pixel size, so that the squares (sized in pixels) fit their cells."""
    hidden = sorted(results["d_mlp"].unique())
    wds, sizes = sorted(results["weight_decay"].unique()), sorted(results["n_train"].unique())
    g = _cell_side(int(results.groupby(list(REGIME_AXES))["seed"].count().max()))
    cell = g * _PITCH_PX + _CELL_PAD_PX  # px per cell
    rows, cols = math.ceil(len(hidden) / _PANELS_PER_ROW), min(len(hidden), _PANELS_PER_ROW)
    panel_w, panel_h, title_px = cell * len(wds), cell * len(sizes), 90
    margin = dict(l=90, r=130, t=80, b=20)
    plot_w, plot_h = cols * panel_w + (cols - 1) * _PANEL_GAP_PX, rows * panel_h + rows * title_px
    margin["r"] = max(margin["r"], 600 - plot_w - margin["l"])  # room for the title and legend beside a narrow slice
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=_PANEL_GAP_PX / plot_w if cols > 1 else 0.0,
                        vertical_spacing=title_px / plot_h if rows > 1 else 0.0,
                        subplot_titles=[f"hidden size {h:g}" for h in hidden])
    points = _regime_points(results, wds, sizes, g, cell)
    for i, h in enumerate(hidden):
        row, col = i // cols + 1, i % cols + 1
        for regime in regimes.REGIMES:
            d = points[(points["regime"] == regime) & (points["d_mlp"] == h)]
            fig.add_trace(go.Scatter(
                x=d["x"] if len(d) else [None], y=d["y"] if len(d) else [None], mode="markers",
                marker=dict(symbol="square", size=_SQUARE_PX, color=REGIME_COLORS[regime], line=dict(width=0)),
                name=regime, legendgroup=regime, showlegend=i == 0, text=d["hover"] if len(d) else None,
                hovertemplate="%{text}<extra></extra>"), row=row, col=col)
        fig.update_xaxes(tickmode="array", tickvals=list(range(len(wds))), ticktext=[f"{w:g}" for w in wds],
                         range=[-0.5, len(wds) - 0.5], title_text="weight decay", title_standoff=4, showgrid=False,
                         zeroline=False, row=row, col=col)
        fig.update_yaxes(tickmode="array", tickvals=list(range(len(sizes))), ticktext=[f"{s:,}" for s in sizes],
                         range=[-0.5, len(sizes) - 0.5], title_text="train size" if col == 1 else None,
                         showticklabels=col == 1, showgrid=False, zeroline=False, row=row, col=col)
        for x in range(len(wds) + 1):  # cell borders
            fig.add_vline(x=x - 0.5, line_color="#d0d0d0", line_width=1, row=row, col=col)
        for y in range(len(sizes) + 1):
            fig.add_hline(y=y - 0.5, line_color="#d0d0d0", line_width=1, row=row, col=col)
    fig.update_layout(title=dict(text="Regimes of the sweep: one square per seed", x=0.01, xanchor="left", y=0.99,
                                 yanchor="top"),
                      width=int(plot_w + margin["l"] + margin["r"]), height=int(plot_h + margin["t"] + margin["b"]),
                      template="plotly_white", font=dict(size=12), margin=margin,
                      legend=dict(x=1.0, xanchor="left", y=1.0, yanchor="top", tracegroupgap=0, font=dict(size=11)))
    return fig


def _regime_points(results: pd.DataFrame, wds: list, sizes: list, g: int, cell_px: float) -> pd.DataFrame:
    """One row per model: its panel, (x, y) in axis units inside its cell, and a hover text."""
    rows = []
    for (h, size, wd), cell in results.groupby(list(REGIME_AXES)):
        cell = cell.sort_values("seed")
        for (dx, dy), row in zip(_cell_offsets(len(cell), g, cell_px), cell.itertuples(index=False)):
            evidence = "".join(f"<br>{c.replace('_', ' ')}: {getattr(row, c):.3g}"
                               for c in ("min_train_loss", "min_test_loss", "max_ratio") if hasattr(row, c))
            rows.append({"d_mlp": h, "x": wds.index(wd) + dx, "y": sizes.index(size) - dy, "regime": row.regime,
                         "hover": f"hidden {h:g}, train {size:,}, weight decay {wd:g}, seed {row.seed}: "
                                  f"<b>{row.regime}</b>{evidence}"})
    return pd.DataFrame(rows, columns=["d_mlp", "x", "y", "regime", "hover"])


# ----------------------------------------------------------------------------- 5. the trained circle
def circle(run_dirs: Sequence[str | Path]) -> FigureOutput:
    """The constructed circle model over seeds: for the best seed (highest test accuracy, then the
    most even spacing), W_in-proj's and W_out-proj's neurons as (cos, sin) points with adjacent
    neurons (in in-angle order) joined; a table of each seed's geometry (``circle_geometry``)."""
    rs = _open_all(run_dirs, ("circle",), "circle")
    rows, geoms = [], {}
    for r in rs:
        model = r.load(r.last_step)
        acts = circuits.gather_activations(model)
        geo = construction_maths.circle_geometry(model.mlp.W_in.detach(), model.mlp.W_out.detach())
        geoms[r.seed] = geo
        split = acts.split
        rows.append({"seed": r.seed, "step": r.last_step,
                     "train_acc": accuracy(acts.logits[split.train], acts.labels[split.train]).item(),
                     "test_acc": accuracy(acts.logits[split.test], acts.labels[split.test]).item(),
                     **geo.summary().iloc[0].to_dict()})
    table = pd.DataFrame(rows)
    best = table.sort_values(["test_acc", "gap_error"], ascending=[False, True]).iloc[0]
    best_seed = int(best["seed"])
    points = geoms[best_seed].table()
    fig = _draw_circle(points, best_seed, _acc(best["test_acc"]))
    caption = _circle_caption(table, best_seed, rs[0].config)
    return FigureOutput("circle", fig, {"": table, "points": points.assign(seed=best_seed)}, caption)


def _circle_caption(table: pd.DataFrame, best_seed: int, cfg: Config) -> str:
    ok = table[table["test_acc"] >= 1.0]
    bad = table[table["test_acc"] < 1.0]
    parts = [f"The circle model (frozen (cos, sin) embedding of p={cfg.p}, {cfg.d_mlp} neurons, {cfg.act_fn}): "
             f"{len(ok)} of {len(table)} seeds reached test accuracy 1.0"
             + (f" (seed{'s' if len(ok) > 1 else ''} {', '.join(str(int(s)) for s in ok['seed'])})." if len(ok) else ".")]
    for t in ok.itertuples():
        parts.append(f"Seed {t.seed}: rotation ratio {t.rotation_ratio:.3g} (out-angle against in-angle, residual "
                     f"{t.rotation_residual:.2g} rad), norm spread (std/mean) {t.in_norm_spread:.2g} in, "
                     f"{t.out_norm_spread:.2g} out, largest gap error {t.gap_error:.2g} rad.")
    for t in bad.itertuples():
        parts.append(f"Seed {t.seed}: test accuracy {_acc(t.test_acc)} (train {_acc(t.train_acc)}), "
                     f"{int(t.collapsed_pairs)} collapsed neuron pair{'s' if t.collapsed_pairs != 1 else ''}, "
                     f"rotation ratio {t.rotation_ratio:.3g}, "
                     f"gap error {t.gap_error:.2g} rad.")
    parts.append(f"(Collapsed pair: two neurons whose in-angles lie within a quarter of 2π/{cfg.d_mlp}; rotation ratio: "
                 "the slope of the out-angles against the in-angles, 2 for the explorable's construction.) "
                 f"Drawn: seed {best_seed}; the numbers at the points give the neurons' order by in-angle.")
    parts.append(_explorable("with 5 neurons the model reaches perfect accuracy; the neurons' norms are about equal, "
                             "they spread evenly around the circle, and W_out-proj rotates twice as fast as W_in-proj."))
    return " ".join(parts)


def _draw_circle(points: pd.DataFrame, seed: int, test_acc: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("W_in-proj: each neuron's (cos, sin) input weights",
                                        "W_out-proj: each neuron's (cos, sin) output weights"))
    for col, side, color in ((1, "in", COLORS[0]), (2, "out", COLORS[1])):
        x, y = points[f"{side}_cos"].tolist(), points[f"{side}_sin"].tolist()
        fig.add_trace(go.Scatter(x=x + x[:1], y=y + y[:1], mode="lines+markers+text", line=dict(color=color, width=1.5),
                                 marker=dict(size=10, color=color), text=[str(i) for i in points["position"]] + [""],
                                 textposition="top center", name=f"W_{side}-proj, neighbours (by in-angle) joined",
                                 customdata=points["neuron"].tolist() + [None],
                                 hovertemplate="neuron %{customdata}: (%{x:.3g}, %{y:.3g})<extra></extra>"), row=1, col=col)
        fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", marker=dict(symbol="cross", color="gray", size=8),
                                 showlegend=False, hoverinfo="skip"), row=1, col=col)
        r = 1.2 * max(max(abs(v) for v in x + y), 1e-12)
        fig.update_xaxes(title_text="cos component", range=[-r, r], zeroline=True, row=1, col=col)
        fig.update_yaxes(title_text="sin component", range=[-r, r], zeroline=True,
                         scaleanchor="x" if col == 1 else "x2", scaleratio=1, row=1, col=col)
    _finish(fig, f"The trained circle, seed {seed} (test accuracy {test_acc})", 560, width=1000)
    return fig


# ----------------------------------------------------------------------------- 6. constructions
DEFAULT_NEURONS = tuple(range(2, 25))
# Every odd modulus from 7 to 67: an even M always ties on its a − b ≡ M/2 cells (every logit is 0
# there), which would colour the chart by ties rather than by the construction's wrinkles.
DEFAULT_MODULI = tuple(range(7, 68, 2))


def constructions(neurons: Sequence[int] = DEFAULT_NEURONS, moduli: Sequence[int] = DEFAULT_MODULI,
                         modulus: int = 67) -> FigureOutput:
    """Appendix A's charts: the untrained ReLU construction's accuracy over ``neurons`` × ``moduli``
    (``constructions.relu_accuracy_grid``), and for each N at ``modulus`` the x² construction's
    largest deviation from N·cos²((a−b)ω/2)·cos((a+b−c)ω) and its accuracy."""
    neurons, moduli = [int(n) for n in neurons], [int(m) for m in moduli]
    if not neurons or not moduli:
        raise ValueError("constructions needs at least one neuron count and one modulus")
    if modulus not in moduli:
        raise ValueError(f"modulus={modulus} must be one of moduli {moduli} (the caption reads the ReLU chart there)")
    grid = construction_maths.relu_accuracy_grid(neurons, moduli)
    x2 = pd.DataFrame([_x2_row(N, modulus) for N in neurons])
    fig = _draw_constructions(grid, x2, modulus)
    return FigureOutput("constructions", fig, {"": grid, "x2": x2}, _constructions_caption(grid, x2, modulus))


def _x2_row(N: int, M: int) -> dict[str, Any]:
    logits = construction_maths.construction_logits(M, N, "x2")
    closed = construction_maths.x2_closed_form(M, N)
    acc = construction_maths.construction_accuracy(logits, M)
    relu = construction_maths.construction_accuracy(construction_maths.construction_logits(M, N, "relu"), M)
    return {"neurons": N, "modulus": M, "x2_identity_error": (logits - closed).abs().max().item(),
            "x2_scale": closed.abs().max().item(), "x2_accuracy": acc.accuracy, "x2_ties": acc.n_ties,
            "relu_accuracy": relu.accuracy}


# The x² identity "holds" where it deviates by at most this fraction of its largest logit (float64 rounding).
IDENTITY_TOLERANCE = 1e-9


def _constructions_caption(grid: pd.DataFrame, x2: pd.DataFrame, M: int) -> str:
    at = grid[grid["modulus"] == M].sort_values("neurons")
    exact = at[at["accuracy"] >= 1.0]["neurons"].tolist()
    worst = at.loc[at["accuracy"].idxmin()]
    inexact = at[at["accuracy"] < 1.0]
    holds = x2["x2_identity_error"] <= IDENTITY_TOLERANCE * x2["x2_scale"]
    fails = x2[~holds]
    x2_exact = x2[x2["x2_accuracy"] >= 1.0]["neurons"].tolist()
    n_exact = int((grid["accuracy"] >= 1.0).sum())
    parts = [
        f"Left: accuracy of the untrained ReLU construction (N neurons evenly spaced, W_out rotating twice as fast) "
        f"over N = {_ranges(grid['neurons'])} and M = {_ranges(grid['modulus'])}: {n_exact} of {len(grid)} cells are exact "
        "(every a + b mod M is the single largest logit; ties count as wrong).",
        f"At M={M} it is exact for N = {_ranges(exact)}"
        + (f"; the others reach {', '.join(f'N={int(t.neurons)}: {_acc(t.accuracy)}' for t in inexact.itertuples())}"
           f" (lowest: N={int(worst['neurons'])}, {_acc(worst['accuracy'])})." if len(inexact) else "."),
        f"Right, M={M}: with x² instead of ReLU the logits equal N·cos²((a−b)ω/2)·cos((a+b−c)ω) to within "
        f"{_g(float(x2[holds]['x2_identity_error'].max())) if holds.any() else '–'} for N = {_ranges(x2[holds]['neurons'])}"
        + ("; the identity fails for " + ", ".join(f"N={int(t.neurons)} (largest deviation {_g(t.x2_identity_error)})"
                                                  for t in fails.itertuples()) if len(fails) else "")
        + f". The x² construction is exact (accuracy 1.0) for N = {_ranges(x2_exact)}.",
        _explorable("the ReLU construction has wrinkles (it is not exact everywhere); with x² it is provably exact for "
                    "N > 4 (and, by the same sums, N = 3)."),
    ]
    return " ".join(parts)


def _draw_constructions(grid: pd.DataFrame, x2: pd.DataFrame, M: int) -> go.Figure:
    fig = make_subplots(rows=2, cols=2, column_widths=[0.58, 0.42], specs=[[{"rowspan": 2}, {}], [None, {}]],
                        vertical_spacing=0.16, horizontal_spacing=0.12,
                        subplot_titles=("ReLU construction: accuracy over neurons × modulus",
                                        f"x² logits − N·cos²((a−b)ω/2)·cos((a+b−c)ω), M={M}",
                                        f"accuracy at M={M}"))
    z = grid.pivot(index="neurons", columns="modulus", values="accuracy")
    fig.add_trace(go.Heatmap(z=z.to_numpy(), x=[str(m) for m in z.columns], y=[str(n) for n in z.index], zmin=0, zmax=1,
                             colorscale="Viridis", colorbar=_colorbar_beside(fig, 1, 1, "accuracy"),
                             hovertemplate="N=%{y}, M=%{x}: accuracy %{z:.4f}<extra></extra>"), row=1, col=1)
    fig.update_xaxes(title_text="modulus M", type="category", row=1, col=1)
    fig.update_yaxes(title_text="neurons N", type="category", row=1, col=1)
    err = x2["x2_identity_error"].clip(lower=1e-17)  # an exact 0 cannot sit on a log axis
    fig.add_trace(go.Scatter(x=x2["neurons"], y=err, mode="markers+lines", marker=dict(color=COLORS[1]), showlegend=False,
                             hovertemplate="N=%{x}: largest |difference| %{y:.3g}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(title_text="largest |difference|", type="log", exponentformat="power", row=1, col=2)
    for col, name, color in (("x2_accuracy", "x²", COLORS[1]), ("relu_accuracy", "ReLU", COLORS[0])):
        fig.add_trace(go.Scatter(x=x2["neurons"], y=x2[col], mode="markers+lines", marker=dict(color=color), name=name,
                                 showlegend=False,
                                 hovertemplate=f"{name}, N=%{{x}}: %{{y:.4f}}<extra></extra>"), row=2, col=2)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.05], row=2, col=2)
    for y, text, color in ((0.55, "x²", COLORS[1]), (0.45, "ReLU", COLORS[0])):  # a key inside the panel
        fig.add_annotation(x=0.98, y=y, xref="x3 domain", yref="y3 domain", text=f"<b>{text}</b>", showarrow=False,
                           font=dict(color=color), xanchor="right")
    for row in (1, 2):
        fig.update_xaxes(title_text="neurons N", dtick=2, row=row, col=2)
    _finish(fig, "Appendix A: the constructed circle without training", 680, legend=False)
    return fig


# ----------------------------------------------------------------------------- 7. stars
def stars(run_dir: str | Path, *, steps: Sequence[int] | None = None, n_steps: int = 3) -> FigureOutput:
    """Per final frequency group, each neuron's (cos, sin) DFT coefficients at the group's
    frequency (``waves.star_points``), input side and output side, as spokes from the origin,
    at ``steps`` (default ``n_steps`` from :func:`pick_steps`, ending at the last saved step)."""
    r = _open(run_dir, MODULAR_MLP_FAMILIES, "stars")
    steps = _check_steps(steps, r, n_steps)
    groups, _, _ = _groups(r.load(r.last_step))
    frames = []
    for s in steps:
        model = r.load(s)
        c = {"in": waves.neuron_dft(input_weights(model)), "out": waves.neuron_dft(output_weights(model))}
        frames.append(waves.star_points(c, groups).assign(step=s))
    points = pd.concat(frames, ignore_index=True)
    spread = (points.groupby(["step", "which", "frequency"])
              .agg(resultant=("angle", phase_resultant), mean_norm=("norm", "mean"), neurons=("neuron", "count"))
              .reset_index())
    fig = _draw_stars(points, steps, list(groups))
    return FigureOutput("stars", fig, {"": points, "spread": spread}, _stars_caption(r, spread, steps))


def _stars_caption(r: _Run, spread: pd.DataFrame, steps: Sequence[int]) -> str:
    s0, s1 = steps[0], steps[-1]
    parts = [f"The {r.config.family} model (seed {r.seed}; {_final(r.metrics)}): for each frequency group of its "
             f"final neurons, each neuron's (cos, sin) DFT coefficients at the group's frequency, input side (blue) "
             f"and output side (red), each side scaled to its largest norm in the panel, at steps "
             f"{', '.join(f'{s:,}' for s in steps)}. Spread of the phases, |mean e^(iθ)| (0: balanced around the "
             f"circle, 1: one direction), step {s0:,} → {s1:,}:"]
    per_group = []
    for k, g in spread.groupby("frequency"):
        get = {(row.step, row.which): row for row in g.itertuples()}
        n = int(get[(s1, "in")].neurons)
        text = (f"k={k} ({n} neuron{'s' if n > 1 else ''}): input {get[(s0, 'in')].resultant:.2f} → "
                f"{get[(s1, 'in')].resultant:.2f}, output {get[(s0, 'out')].resultant:.2f} → {get[(s1, 'out')].resultant:.2f}; "
                f"mean input norm {_g(get[(s0, 'in')].mean_norm)} → {_g(get[(s1, 'in')].mean_norm)}")
        per_group.append(text + (" (one neuron: no spread to measure)" if n == 1 else ""))
    parts.append("; ".join(per_group) + ".")
    parts.append(_explorable("grouped by their final frequencies, its neurons' components form the same star shapes "
                             "as the constructed circle."))
    return " ".join(parts)


def _draw_stars(points: pd.DataFrame, steps: Sequence[int], ks: Sequence[int]) -> go.Figure:
    rows, cols = len(steps), len(ks)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.04, vertical_spacing=0.08,
                        subplot_titles=[f"k={k}, step {s:,}" for s in steps for k in ks])
    for i, s in enumerate(steps):
        for j, k in enumerate(ks):
            d = points[(points["step"] == s) & (points["frequency"] == k)]
            for side, color in (("in", COLORS[0]), ("out", COLORS[1])):
                e = d[d["which"] == side]
                scale = float(e["norm"].max()) or 1.0
                xs = [v for c in e["cos"] for v in (0.0, c / scale, None)]
                ys = [v for c in e["sin"] for v in (0.0, c / scale, None)]
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=1.5),
                                         name="input side" if side == "in" else "output side", legendgroup=side,
                                         showlegend=i == 0 and j == 0, hoverinfo="skip"), row=i + 1, col=j + 1)
                fig.add_trace(go.Scatter(x=e["cos"] / scale, y=e["sin"] / scale, mode="markers",
                                         marker=dict(color=color, size=6), showlegend=False, legendgroup=side,
                                         customdata=np.stack([e["neuron"], e["norm"]], axis=1),
                                         hovertemplate=f"{side}, neuron %{{customdata[0]}}: norm %{{customdata[1]:.3g}}"
                                                       "<extra></extra>"), row=i + 1, col=j + 1)
            n_axis = i * cols + j + 1
            fig.add_shape(type="circle", x0=-1, y0=-1, x1=1, y1=1, line=dict(color="#bbbbbb", dash="dot", width=1),
                          row=i + 1, col=j + 1)
            fig.update_xaxes(range=[-1.15, 1.15], showticklabels=False, zeroline=True, row=i + 1, col=j + 1)
            fig.update_yaxes(range=[-1.15, 1.15], showticklabels=False, zeroline=True,
                             scaleanchor=f"x{n_axis if n_axis > 1 else ''}", scaleratio=1, row=i + 1, col=j + 1)
    side = 230
    _finish(fig, "Stars: (cos, sin) DFT coefficients at each group's frequency (dotted: radius 1)", 150 + side * rows,
            width=max(640, 90 + side * cols))
    return fig


# ----------------------------------------------------------------------------- 8. logit waves
def logit_waves(run_dir: str | Path, *, inputs: Sequence[tuple[int, int]] | None = None) -> FigureOutput:
    """Each final frequency group's contribution to the logits (``waves.group_logits``) for a few
    inputs (a, b), with its fit α cos(2πk(a+b−c)/p) + β sin(...) + γ over all p² inputs
    (``waves.wave_fit``) drawn over it. ``inputs`` default: (1, 2), (p//3, p//2), (p−2, p−1)."""
    r = _open(run_dir, MODULAR_MLP_FAMILIES, "logit_waves")
    model = r.load(r.last_step)
    p = r.config.p
    inputs = [(1, 2), (p // 3, p // 2), (p - 2, p - 1)] if inputs is None else [tuple(x) for x in inputs]
    bad = [x for x in inputs if len(x) != 2 or not all(isinstance(v, int) and 0 <= v < p for v in x)]
    if bad or not inputs:
        raise ValueError(f"inputs {bad or inputs} must be (a, b) pairs of residues 0..{p - 1}")
    groups, _, _ = _groups(model)
    acts = circuits.gather_activations(model)
    contrib = waves.group_logits(acts.neurons.double(), acts.W_L.double(), groups)
    fits = {k: waves.wave_fit(c, k, p) for k, c in contrib.items()}
    total_gap = (sum(contrib.values()) - acts.logits.double()).abs().max().item()
    train = set(acts.split.train.tolist())
    curves = pd.DataFrame([
        {"a": a, "b": b, "frequency": k, "c": c, "contribution": contrib[k][a * p + b, c].item(),
         "fit": fits[k].fitted[a * p + b, c].item(), "in_train": a * p + b in train}
        for a, b in inputs for k in groups for c in range(p)])
    fit_table = pd.concat([f.table().assign(neurons=len(groups[k])) for k, f in fits.items()], ignore_index=True)
    fig = _draw_logit_waves(curves, inputs, list(groups), p)
    caption = " ".join([
        f"The {r.config.family} model (seed {r.seed}; {_final(r.metrics)}): each frequency group's neurons' "
        f"contribution to the logits over the outputs c, for inputs "
        + ", ".join(f"({a}, {b}){' (train)' if a * p + b in train else ''}" for a, b in inputs)
        + f"; dashed: the fit α cos(2πk(a+b−c)/{p}) + β sin(2πk(a+b−c)/{p}) + γ over all {p}² inputs and {p} outputs; "
          f"vertical line at c = a + b mod {p}. The groups' contributions add up to the logits to within {_g(total_gap)}.",
        "R² of the fit (and after removing each input's mean over c, which the softmax ignores): "
        + "; ".join(f"k={k}: {_g(f.r2)} ({_g(f.r2_centred)}), phase {f.phase:+.2f} rad" for k, f in fits.items()) + ".",
        _explorable("each frequency group computes cos(2π(a+b)k/67) across the outputs."),
    ])
    return FigureOutput("logit_waves", fig, {"": curves, "fits": fit_table}, caption)


def _draw_logit_waves(curves: pd.DataFrame, inputs: Sequence[tuple[int, int]], ks: Sequence[int], p: int) -> go.Figure:
    rows, cols = len(inputs), len(ks)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.05, vertical_spacing=0.1,
                        subplot_titles=[f"k={k}, input ({a}, {b})" for a, b in inputs for k in ks])
    for i, (a, b) in enumerate(inputs):
        for j, k in enumerate(ks):
            d = curves[(curves["a"] == a) & (curves["b"] == b) & (curves["frequency"] == k)]
            first = i == 0 and j == 0
            fig.add_trace(go.Scatter(x=d["c"], y=d["contribution"], mode="lines+markers", marker=dict(size=4),
                                     line=dict(color=COLORS[0], width=1.3), name="group's contribution",
                                     legendgroup="c", showlegend=first), row=i + 1, col=j + 1)
            fig.add_trace(go.Scatter(x=d["c"], y=d["fit"], mode="lines", line=dict(color=COLORS[1], dash="dash"),
                                     name="fitted cos wave", legendgroup="f", showlegend=first), row=i + 1, col=j + 1)
            fig.add_vline(x=(a + b) % p, line_dash="dot", line_color="gray", row=i + 1, col=j + 1)
            fig.update_xaxes(title_text="output c" if i == rows - 1 else None, range=[0, p - 1], row=i + 1, col=j + 1)
            fig.update_yaxes(title_text="logit contribution" if j == 0 else None, row=i + 1, col=j + 1)
    _finish(fig, "Each frequency group's contribution to the logits, and its cos(2πk(a+b−c)/p) fit", 170 + 260 * rows)
    return fig


# ----------------------------------------------------------------------------- 9. variants
def variants(run_dirs: Sequence[str | Path]) -> FigureOutput:
    """Train/test loss and accuracy of the tied MLP and its unfactored / collapsed variants (one
    run each, the same settings otherwise: the caption names any field that differs)."""
    rs = _open_all(run_dirs, MODULAR_MLP_FAMILIES, "variants")
    families = [r.config.family for r in rs]
    if len(set(families)) != len(families):
        raise ValueError(f"variants draws one run per family; these runs' families are {families}")
    curves = pd.concat([r.metrics.assign(family=r.config.family) for r in rs], ignore_index=True)
    curves = curves[["family", "step", "train_loss", "test_loss", "train_acc", "test_acc"]]
    unit = loss_axis(rs[0].config)[1]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    for i, r in enumerate(rs):
        _curves(fig, r.metrics, 1, (1, 2), COLORS[i % len(COLORS)], r.config.family)
    _loss_acc_axes(fig, 1, (1, 2), unit)
    _finish(fig, "The tied MLP and its factorings", 520)
    return FigureOutput("variants", fig, {"": curves}, _variants_caption(rs, unit))


def _differences(rs: Sequence[_Run]) -> list[str]:
    base = rs[0].config.to_dict()
    out = []
    for r in rs[1:]:
        other = r.config.to_dict()
        out += [f"{r.config.family}: {k}={other[k]!r} (vs {base[k]!r})" for k in base if k != "family" and other[k] != base[k]]
    return out


def _variants_caption(rs: Sequence[_Run], unit: str) -> str:
    reached = [r.config.family for r in rs if _first_step(r.metrics, "test_acc") is not None]
    below = [r.config.family for r in rs if r.metrics["train_acc"].iloc[-1] < 1.0]
    diffs = _differences(rs)
    cfg = rs[0].config
    parts = [f"Train (solid) and test (dashed) loss ({unit}) and accuracy, one run of each family, p={cfg.p}, "
             f"{cfg.d_mlp} neurons, weight decay {cfg.weight_decay:g}, seed {cfg.seed}"
             + (". Settings differ: " + "; ".join(diffs) + "." if diffs else ", the same settings otherwise."),
             *[f"{r.config.family}: {_reached(r.metrics, 'test_acc', 'test accuracy')}; {_final(r.metrics)}." for r in rs],
             f"Test accuracy reached {REACHED:g}: {', '.join(reached) or 'none'}; "
             f"train accuracy below 1.0 at the end: {', '.join(below) or 'none'}.",
             _explorable("the model with both W_input and W_output unfactored does not generalise, even with weight decay; "
                         "collapsing one side helps in some setups and hurts in others.")]
    return " ".join(parts)


# ----------------------------------------------------------------------------- 10. no weight decay
def no_weight_decay(run_dir: str | Path) -> FigureOutput:
    """The tied MLP trained with ``weight_decay=0``: train/test loss and accuracy over steps."""
    r = _open(run_dir, MODULAR_MLP_FAMILIES, "no_weight_decay")
    if r.config.weight_decay != 0:
        raise ValueError(f"no_weight_decay draws a run trained without weight decay; {r.path} has "
                         f"weight_decay={r.config.weight_decay:g}. Pass a run trained with weight_decay=0")
    m = r.metrics
    unit = loss_axis(r.config)[1]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    _curves(fig, m, 1, (1, 2), COLORS[0], f"seed {r.seed}")
    _loss_acc_axes(fig, 1, (1, 2), unit)
    peak = m.loc[m["test_acc"].idxmax()]
    fig.add_trace(go.Scatter(x=[peak["step"]], y=[peak["test_acc"]], mode="markers", marker=dict(size=10, color=COLORS[1]),
                             name=f"peak test accuracy {_acc(peak['test_acc'])}"), row=1, col=2)
    _finish(fig, f"The {r.config.family} model without weight decay", 520)
    return FigureOutput("no_weight_decay", fig, {"": m.assign(seed=r.seed)}, _no_wd_caption(r, peak, unit))


def _no_wd_caption(r: _Run, peak: pd.Series, unit: str) -> str:
    m = r.metrics
    last = m.iloc[-1]
    low = m.loc[m["test_loss"].idxmin()]
    fall = float(peak["test_acc"] - last["test_acc"])
    if fall >= FALL and last["train_acc"] >= REACHED:
        turn = (f"test accuracy fell by {fall:.3f} after its peak while train accuracy stayed at {_acc(last['train_acc'])}: "
                "on this run it started to generalise and then fell back to fitting the train set alone.")
    elif fall >= FALL:
        turn = f"test accuracy fell by {fall:.3f} after its peak, with train accuracy at {_acc(last['train_acc'])}."
    else:
        turn = f"test accuracy ended within {FALL:g} of its peak: no fall back on this run."
    return " ".join([
        f"The {r.config.family} model (p={r.config.p}, seed {r.seed}) without weight decay; loss in {unit}.",
        f"Peak test accuracy {_acc(peak['test_acc'])} at step {int(peak['step']):,}; final test accuracy "
        f"{_acc(last['test_acc'])} at step {int(last['step']):,}; lowest test loss {_g(low['test_loss'])} at step "
        f"{int(low['step']):,}; {_reached(m, 'train_acc', 'train accuracy')}.",
        turn[0].upper() + turn[1:],
        _explorable("a small model trained without weight decay starts generalising, then switches to memorising."),
    ])


# ----------------------------------------------------------------------------- the report
# name -> builder, in report order (mechgrok.report.PAIR_FIGURE_NAMES; the builders take different inputs).
PAIR_FIGURES: dict[str, Callable[..., FigureOutput]] = {
    name: globals()[name] for name in PAIR_FIGURE_NAMES
}


def write_pair_report(out_dir: str | Path, figures: Sequence[FigureOutput], tables: dict[str, pd.DataFrame] | None = None,
                      summary: dict[str, Any] | None = None) -> Path:
    """Write ``OUT/report.html`` (one self-contained page: plotly.js inlined once, opens offline)
    and ``OUT/summary.json`` (``summary`` plus every caption); return the page's path."""
    if not figures:
        raise ValueError("write_pair_report needs at least one figure (a FigureOutput of mechgrok.report.pair2023)")
    names = [f.name for f in figures]
    if len(set(names)) != len(names):
        raise ValueError(f"figure names repeat: {names}; each figure must appear once")
    summary = dict(summary or {})
    title = str(summary.pop("title", "mechgrok: Pearce et al. (PAIR 2023) reproduction report"))
    intro = ('<p class="caption">Runs of mechgrok beside Pearce et al., "Do Machine Learning Models Memorize or '
             'Generalize?" (PAIR explorable, 2023): every number is these runs\' unless labelled as the explorable\'s. '
             f'Modular losses are drawn in the explorable\'s units, cross-entropy / p. Figures: {html.escape(", ".join(names))}.</p>')
    return write_page(out_dir, title, intro, figures, tables, summary)
