"""The figures of the mainline model's part of the post (:mod:`mechgrok.reproduce.phase_changes.mainline`).

==================  ==========================================================================
figure              what it draws
==================  ==========================================================================
``slingshots``      train loss (log) over steps of the float32 and float64 runs, full batch
                    and minibatch, each detected spike marked; the float32 loss quantum
``weight_decay``    test accuracy over epochs per weight decay, and the grokking epoch
                    (test accuracy >= 0.99) against weight decay
``more_data``       train and test loss of the 95%-data run, each detected phase change marked
``excluded_loss``   the paper's excluded loss (fitted on all p² inputs) beside the train-only
                    fit, with train and test loss, at every checkpoint
==================  ==========================================================================

Every builder takes run folders (transformer runs on modular addition; others are refused) and
returns a :class:`mechgrok.report.figures.FigureOutput` whose caption is computed from the runs:
spike counts and steps, grokking epochs, phase-change steps, excluded losses. A statement of the
post is set beside ours only labelled as the post's, about its own runs.
Spikes follow :mod:`mechgrok.analysis.slingshots`, phase changes
:mod:`mechgrok.analysis.phase_changes`, grokking :func:`mechgrok.report.figures.first_epoch_reaching`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechgrok import runs
from mechgrok.analysis import phase_changes, progress, slingshots as spikes_rule
from mechgrok.config import Config
from mechgrok.report.figures import GROKKED_TEST_ACCURACY, FigureOutput, first_epoch_reaching

__all__ = ["MAINLINE_FIGURES", "coinciding", "slingshots", "weight_decay", "more_data", "excluded_loss"]

COLORS = {"float32": "#d62728", "float64": "#1f77b4"}
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
_LAYOUT = dict(template="plotly_white", font=dict(size=12), margin=dict(l=70, r=30, t=90, b=50))


def _post(text: str) -> str:
    return f"The post (Nanda 2022, about its own runs, not these): {text}"


def _g(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _acc(x: float) -> str:
    """Rounded down to 3 decimals, so 0.9899 never prints as the threshold 0.990."""
    return "–" if not math.isfinite(x) else f"{math.floor(x * 1000) / 1000:.3f}"


def _steps(xs: Sequence[int]) -> str:
    return ", ".join(f"{int(x):,}" for x in xs) if len(xs) else "none"


def _open(run_dir: str | Path, figure: str) -> tuple[Path, Config, pd.DataFrame]:
    path = Path(run_dir)
    if not (path / runs.CONFIG_FILE).exists():
        raise ValueError(f"{figure}: {path} is not a mechgrok run folder (no {runs.CONFIG_FILE}); pass a trained run folder")
    cfg = runs.read_config(path)
    if cfg.family != "transformer" or cfg.task != "modular":
        raise ValueError(f"{figure} reads runs of the mainline transformer on modular arithmetic; {path} is a "
                         f"{cfg.family!r} run on task {cfg.task!r}. Pass runs of mechgrok.reproduce.phase_changes.mainline.plan()")
    metrics = runs.read_metrics(path)
    if metrics is None or metrics.empty:
        raise ValueError(f"{figure}: {path} has no metrics.csv yet; train it first")
    return path, cfg, metrics.sort_values("epoch", ignore_index=True)


def _open_all(run_dirs: Sequence[str | Path], figure: str) -> list[tuple[Path, Config, pd.DataFrame]]:
    if isinstance(run_dirs, (str, Path)):
        raise ValueError(f"{figure} takes a list of run folders; pass [{str(run_dirs)!r}]")
    out = [_open(d, figure) for d in run_dirs]
    if not out:
        raise ValueError(f"{figure}: no run folders given; pass at least one")
    return out


def _label(cfg: Config) -> str:
    batch = "full batch" if cfg.batch_size == 0 else f"minibatch {cfg.batch_size}"
    return f"{cfg.loss_dtype}, {batch}"


def _finish(fig: go.Figure, title: str, height: int) -> None:
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), height=height, **_LAYOUT,
                      legend=dict(orientation="h", x=0, y=-0.18, yanchor="top"))


# ----------------------------------------------------------------------------- slingshots
def slingshots(run_dirs: Sequence[str | Path]) -> FigureOutput:
    """Train loss (log) of each run over steps, its detected spikes marked (module docstring)."""
    opened = _open_all(run_dirs, "slingshots")
    curves, rows = [], []
    for path, cfg, m in opened:
        label = _label(cfg)
        curves.append(m[["epoch", "train_loss", "test_loss", "test_acc"]].assign(run=label))
        table = spikes_rule.spike_table(m)
        rows.append(table.assign(run=label, loss_dtype=cfg.loss_dtype, batch_size=cfg.batch_size))
    curves = pd.concat(curves, ignore_index=True).rename(columns={"epoch": "step"})
    table = pd.concat(rows, ignore_index=True)[["run", "loss_dtype", "batch_size", *spikes_rule.SPIKE_COLUMNS]]

    fig = go.Figure()
    for i, (path, cfg, m) in enumerate(opened):
        label = _label(cfg)
        color = COLORS.get(cfg.loss_dtype, PALETTE[i % len(PALETTE)])
        fig.add_trace(go.Scatter(x=m["epoch"], y=m["train_loss"].clip(lower=1e-12), mode="lines", name=label,
                                 line=dict(color=color, width=1.5, dash="solid" if cfg.batch_size == 0 else "dot")))
        mine = table[table["run"] == label]
        if len(mine):
            fig.add_trace(go.Scatter(x=mine["peak_step"], y=mine["peak_loss"], mode="markers", name=f"{label}: spike peaks",
                                     marker=dict(color=color, size=10, symbol="triangle-up")))
    # a trace, not add_hline: plotly places an hline's annotation wrongly on a log axis
    quantum = spikes_rule.float32_loss_quantum()
    fig.add_trace(go.Scatter(x=[float(curves["step"].min()), float(curves["step"].max())], y=[quantum, quantum], mode="lines",
                             name=f"float32 loss quantum log(1 + 2⁻²³) ≈ {quantum:.3g}", line=dict(color="gray", dash="dash", width=1)))
    fig.update_yaxes(title_text="train loss (cross-entropy)", type="log", exponentformat="power")
    fig.update_xaxes(title_text="step")
    cfg0 = opened[0][1]
    _finish(fig, f"Slingshots: train loss from float32 vs float64 logits (p={cfg0.p}, {cfg0.frac_train:.0%} of the pairs)", 560)
    return FigureOutput("slingshots", fig, {"": curves, "spikes": table}, _slingshot_caption(opened, table))


def _slingshot_caption(opened, table: pd.DataFrame) -> str:
    cfg0 = opened[0][1]
    parts = [f"Train loss of the mainline transformer (p={cfg0.p}, {cfg0.frac_train:.0%} of the pairs, lr {cfg0.lr:g}, "
             f"weight decay {cfg0.weight_decay:g}), the loss taken from float32 or float64 logits, full batch (solid) "
             "or minibatches (dotted; their logged train loss is the whole train split's). A spike (triangles at peaks) is a "
             f"rise to ≥ {spikes_rule.SPIKE_FACTOR:g}× the trailing {spikes_rule.SPIKE_WINDOW}-step minimum (floored at "
             f"{spikes_rule.FLOAT32_RESOLUTION:.3g}) from a train loss ≤ {spikes_rule.SPIKE_LOW:g} (mechgrok.analysis.slingshots)."]
    for path, cfg, m in opened:
        label = _label(cfg)
        mine = table[table["run"] == label]
        floor = f"lowest train loss {_g(float(m['train_loss'].min()))}"
        if len(mine):
            peaks = "; ".join((f"at step {int(r.start_step):,} to {_g(r.peak_loss)}" if r.start_step == r.peak_step else
                               f"from step {int(r.start_step):,} to {_g(r.peak_loss)} at {int(r.peak_step):,}")
                              + f" ({_g(r.rise)}× its baseline)" for r in mine.itertuples())
            parts.append(f"{label}: {len(mine)} spike{'s' if len(mine) != 1 else ''} ({peaks}); {floor}.")
        else:
            parts.append(f"{label}: no spike in {int(m['epoch'].iloc[-1]):,} steps; {floor}.")
    parts.append(_post("slingshots are a float32 artefact: a float32 log-softmax outputs no loss between 0 and 1.19e-7, "
                       "and with the logits cast to float64 they go away; with minibatches and float64 there are spikes too, "
                       "rarer and less severe."))
    return " ".join(parts)


# ----------------------------------------------------------------------------- weight decay
def weight_decay(run_dirs: Sequence[str | Path]) -> FigureOutput:
    """Test accuracy per weight decay over epochs, and the grokking epoch against weight decay."""
    opened = sorted(_open_all(run_dirs, "weight_decay"), key=lambda o: o[1].weight_decay)
    curves = pd.concat([m[["epoch", "train_loss", "test_loss", "train_acc", "test_acc"]].assign(weight_decay=cfg.weight_decay)
                        for _, cfg, m in opened], ignore_index=True)
    grok = pd.DataFrame([{"weight_decay": cfg.weight_decay, "grok_epoch": first_epoch_reaching(m, "test_acc"),
                          "train_acc_epoch": first_epoch_reaching(m, "train_acc"), "epochs": int(m["epoch"].iloc[-1]),
                          "final_test_acc": float(m["test_acc"].iloc[-1])} for _, cfg, m in opened])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Test accuracy", f"Grokking epoch (test accuracy ≥ {GROKKED_TEST_ACCURACY:g})"),
                        horizontal_spacing=0.12)
    for i, (_, cfg, m) in enumerate(opened):
        fig.add_trace(go.Scatter(x=m["epoch"], y=m["test_acc"], mode="lines", name=f"weight decay {cfg.weight_decay:g}",
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=1.6)), row=1, col=1)
    done = grok.dropna(subset=["grok_epoch"])
    fig.add_trace(go.Scatter(x=done["weight_decay"], y=done["grok_epoch"], mode="lines+markers", name="grokking epoch",
                             marker=dict(size=10, color="black"), line=dict(color="black")), row=1, col=2)
    never = grok[grok["grok_epoch"].isna()]
    if len(never):
        fig.add_trace(go.Scatter(x=never["weight_decay"], y=never["epochs"], mode="markers", name="not grokked by the last epoch",
                                 marker=dict(size=11, color="white", line=dict(color="black", width=2), symbol="triangle-up")),
                      row=1, col=2)
    fig.update_xaxes(title_text="epoch", row=1, col=1)
    fig.update_yaxes(title_text="test accuracy", range=[0, 1.03], row=1, col=1)
    fig.update_xaxes(title_text="weight decay", type="log", row=1, col=2)
    fig.update_yaxes(title_text="epoch", row=1, col=2)
    cfg0 = opened[0][1]
    _finish(fig, f"Weight decay and the grokking epoch (p={cfg0.p}, {cfg0.frac_train:.0%} of the pairs, lr {cfg0.lr:g})", 520)
    return FigureOutput("weight_decay", fig, {"": curves, "grokking": grok}, _weight_decay_caption(grok, cfg0))


def _weight_decay_caption(grok: pd.DataFrame, cfg: Config) -> str:
    said = []
    for r in grok.itertuples():
        if pd.isna(r.grok_epoch):
            said.append(f"weight decay {r.weight_decay:g}: not grokked by epoch {r.epochs:,} (final test accuracy {_acc(r.final_test_acc)})")
        else:
            said.append(f"weight decay {r.weight_decay:g}: grokked at epoch {int(r.grok_epoch):,}")
    finite = grok.dropna(subset=["grok_epoch"]).sort_values("weight_decay")
    epochs = finite["grok_epoch"].tolist()
    if len(finite) >= 2 and all(a > b for a, b in zip(epochs, epochs[1:])):
        order = "On these runs each lower weight decay grokked later."
    elif len(finite) >= 2:
        order = "On these runs the grokking epoch does not fall with every increase of weight decay."
    else:
        order = "Fewer than two runs grokked, so no order can be read."
    return " ".join([
        f"Test accuracy over epochs and the first logged epoch with test accuracy ≥ {GROKKED_TEST_ACCURACY:g}, per weight "
        f"decay (mainline transformer, p={cfg.p}, {cfg.frac_train:.0%} of the pairs, lr {cfg.lr:g}, full batch, float64 loss).",
        "; ".join(said) + ".", order,
        _post("weight decay delays grokking rather than stopping it: the less weight decay, the later it groks."),
    ])


# ----------------------------------------------------------------------------- more data
def coinciding(train_changes: Sequence[dict], test_changes: Sequence[dict]) -> list[int]:
    """The steps of the train-loss phase changes (``PhaseChange.to_dict()`` rows) with a test-loss
    phase change at most one window away (the window :func:`mechgrok.analysis.phase_changes.detect`
    reports around the train change, ``end - start``): train and test loss changing together."""
    return [int(a["step"]) for a in train_changes
            if any(abs(a["step"] - b["step"]) <= a["end"] - a["start"] for b in test_changes)]


def more_data(run_dirs: Sequence[str | Path]) -> FigureOutput:
    """Train and test loss of each (large-data) run, its detected phase changes marked."""
    opened = _open_all(run_dirs, "more_data")
    curves, rows = [], []
    for path, cfg, m in opened:
        run = f"{cfg.frac_train:.0%} of the pairs"
        curves.append(m[["epoch", "train_loss", "test_loss", "train_acc", "test_acc"]].assign(frac_train=cfg.frac_train))
        for column in ("train_loss", "test_loss"):
            for c in phase_changes.detect(m["epoch"].to_numpy(), m[column].to_numpy()):
                rows.append({"run": run, "frac_train": cfg.frac_train, "curve": column, **c.to_dict()})
    curves = pd.concat(curves, ignore_index=True)
    table = pd.DataFrame(rows, columns=["run", "frac_train", "curve", "step", "start", "end", "before", "after", "sharpness"])
    fig = go.Figure()
    for i, (path, cfg, m) in enumerate(opened):
        for column, dash in (("train_loss", "solid"), ("test_loss", "dash")):
            fig.add_trace(go.Scatter(x=m["epoch"], y=m[column].clip(lower=1e-12), mode="lines",
                                     name=f"{cfg.frac_train:.0%}: {column.replace('_', ' ')}",
                                     line=dict(color=PALETTE[i % len(PALETTE)], dash=dash, width=1.6)))
    colors = {cfg.frac_train: PALETTE[i % len(PALETTE)] for i, (_, cfg, _) in enumerate(opened)}
    for r in table.itertuples():
        fig.add_vline(x=r.step, line_dash="dot" if r.curve == "test_loss" else "solid", line_color=colors[r.frac_train],
                      line_width=1, opacity=0.6)
    fig.update_yaxes(title_text="loss (cross-entropy)", type="log", exponentformat="power")
    fig.update_xaxes(title_text="epoch")
    cfg0 = opened[0][1]
    fracs = " and ".join(f"{c.frac_train:.0%}" for _, c, _ in opened)
    _finish(fig, f"Much more data: train and test loss (p={cfg0.p}, {fracs} of the pairs)", 520)
    return FigureOutput("more_data", fig, {"": curves, "phase_changes": table}, _more_data_caption(opened, table))


def _more_data_caption(opened, table: pd.DataFrame) -> str:
    parts = ["Train (solid) and test (dashed) loss of the mainline transformer per share of the pairs in the train set; "
             "vertical lines at the phase changes found by mechgrok.analysis.phase_changes.detect (its default rule: the "
             "loss falls ≥ 4× within a window, ≥ 3× faster than in the window before; solid: train, dotted: test)."]
    for path, cfg, m in opened:
        run = f"{cfg.frac_train:.0%} of the pairs"
        said = []
        for column in ("train_loss", "test_loss"):
            mine = table[(table["run"] == run) & (table["curve"] == column)]
            name = column.replace("_", " ")
            if len(mine):
                said.append(f"{name}: {len(mine)} phase change{'s' if len(mine) != 1 else ''} at step "
                            + ", ".join(f"{int(r.step):,} ({_g(r.before)} → {_g(r.after)})" for r in mine.itertuples()))
            else:
                said.append(f"{name}: no phase change")
        grok = first_epoch_reaching(m, "test_acc")
        mine = table[table["run"] == run]
        together = coinciding(mine[mine["curve"] == "train_loss"].to_dict("records"),
                              mine[mine["curve"] == "test_loss"].to_dict("records"))
        same = (f"train and test loss change together at step {_steps(together)}" if together
                else "no train-loss phase change has a test-loss one within its window")
        parts.append(f"p={cfg.p}, {run} (lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}): " + "; ".join(said)
                     + f"; {same}; test accuracy ≥ {GROKKED_TEST_ACCURACY:g} "
                     + (f"from epoch {grok:,}." if grok is not None else "never reached."))
    parts.append(_post("with 95% of the pairs as training data there is a phase change in the train loss too, not only in "
                       "the test loss."))
    return " ".join(parts)


# ----------------------------------------------------------------------------- excluded loss
def excluded_loss(run_dir: str | Path) -> FigureOutput:
    """The paper's excluded loss and the train-only fit, beside train and test loss, over checkpoints."""
    path, cfg, _ = _open(run_dir, "excluded_loss")
    prog = progress.load_progress(path)
    t = prog.measures.sort_values("epoch", ignore_index=True)
    cols = ["epoch", "train_loss", "test_loss", "excluded_loss", "excluded_loss_train_fit", "restricted_loss"]
    table = t[cols]
    fig = go.Figure()
    for column, name, color, dash in (
        ("excluded_loss", "excluded loss, the paper's (fitted on all p² inputs)", "#2ca02c", "solid"),
        ("excluded_loss_train_fit", "excluded loss, fitted on the train inputs only", "#9467bd", "dash"),
        ("train_loss", "train loss", "#1f77b4", "solid"),
        ("test_loss", "test loss", "#d62728", "solid"),
    ):
        fig.add_trace(go.Scatter(x=t["epoch"], y=t[column].clip(lower=1e-12), mode="lines+markers", name=name,
                                 line=dict(color=color, dash=dash, width=1.6), marker=dict(size=4)))
    fig.update_yaxes(title_text="loss (cross-entropy, float64)", type="log", exponentformat="power")
    fig.update_xaxes(title_text="epoch (checkpoints)")
    _finish(fig, f"Excluded loss: the paper's fit vs a fit on the train inputs only (p={cfg.p}, {cfg.frac_train:.0%} of the pairs)", 540)
    return FigureOutput("excluded_loss", fig, {"": table}, _excluded_caption(t, cfg, prog.key_frequencies))


def _at_epochs(t: pd.DataFrame, n: int = 4) -> list[int]:
    """A few checkpoints to quote: the first, the two minima, the last, and evenly spaced ones."""
    wanted = [int(t["epoch"].iloc[0]), int(t.loc[t["excluded_loss"].idxmin(), "epoch"]),
              int(t.loc[t["excluded_loss_train_fit"].idxmin(), "epoch"]), int(t["epoch"].iloc[-1])]
    wanted += [int(t["epoch"].iloc[i]) for i in np.linspace(0, len(t) - 1, n).round().astype(int)]
    return sorted(set(wanted))[: n + 3]


def _excluded_caption(t: pd.DataFrame, cfg: Config, key: Sequence[int]) -> str:
    rows = t.set_index("epoch")
    quotes = "; ".join(f"epoch {e:,}: paper {_g(rows.loc[e, 'excluded_loss'])}, train-only {_g(rows.loc[e, 'excluded_loss_train_fit'])}, "
                       f"train loss {_g(rows.loc[e, 'train_loss'])}" for e in _at_epochs(t))
    ratio = (t["excluded_loss_train_fit"] / t["excluded_loss"]).replace([np.inf, -np.inf], np.nan).dropna()
    lo_p = int(t.loc[t["excluded_loss"].idxmin(), "epoch"])
    lo_t = int(t.loc[t["excluded_loss_train_fit"].idxmin(), "epoch"])
    return " ".join([
        f"Excluded loss of the mainline transformer (p={cfg.p}, {cfg.frac_train:.0%} of the pairs) at every checkpoint, with "
        f"the key frequencies {', '.join(map(str, key))} (of the final checkpoint) removed from the logits. The paper's "
        "fits the directions cos/sin(w_k(a+b)) by projection over all p² inputs, test inputs included; the train-only "
        "variant fits their coefficients (and a constant per class) by least squares on the train inputs alone. Both are "
        "the train loss of what is left.",
        f"{quotes}.",
        f"Train-only / paper ranges {_g(float(ratio.min()))}–{_g(float(ratio.max()))} over the checkpoints; the paper's is "
        f"lowest at epoch {lo_p:,}, the train-only one at epoch {lo_t:,}.",
        _post("excluded loss as defined fits on all the data, so it depends on the test data too."),
    ])


# name -> builder, in report order. slingshots, weight_decay and more_data take a list of run
# folders; excluded_loss takes one run folder.
MAINLINE_FIGURES: dict[str, Callable[..., FigureOutput]] = {
    "slingshots": slingshots, "weight_decay": weight_decay, "more_data": more_data, "excluded_loss": excluded_loss,
}
