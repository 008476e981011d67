"""Figures of the post's sequence tasks (:mod:`mechgrok.reproduce.phase_changes.tasks`).

=====================  ==================================================================
figure                 what it draws
=====================  ==================================================================
``addition_digits``    each answer digit's test loss over training (log), its detected
                       phase change marked
``induction_heads``    the test loss and every head's scores (previous-token in layer 0,
                       induction in the later layers) over training, the jumps marked
``max_list_trigrams``  each skip trigram's test loss over training, its phase change marked
``crossover``          the crossover search: each train size's regime and when train and
                       test accuracy reached 0.99
=====================  ==================================================================

Captions state what these runs show, from the summary (detected steps, counts, accuracies);
the post's statement is set beside ours only labelled as the post's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechgrok import runs
from mechgrok.analysis.induction import score_curves
from mechgrok.report.figures import FigureOutput
from mechgrok.training.sequence import component_curves

__all__ = ["FIGURES", "POST", "figures", "addition_digits", "induction_heads", "max_list_trigrams", "crossover"]

# What the post states, set beside our numbers (labelled as the post's) in the captions.
POST = {
    "addition": "each of the 6 digits of 5-digit addition has its own phase change; 15-digit addition shows 16",
    "induction": "a 2L attention-only transformer forms induction heads in a phase change",
    "max_list": "the model learns 10 skip trigrams, each with its own phase change, all at about the same time",
    "crossover": "700 examples, found by binary search by hand, sit just above the crossover where 5-digit addition groks",
}

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
          "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]
REGIME_COLORS = {"fail": "#9e9e9e", "memorise": "#d62728", "grok": "#2ca02c", "generalise": "#1f77b4"}
_LAYOUT = dict(template="plotly_white", font=dict(size=12), margin=dict(l=60, r=30, t=80, b=50))


def _post(key: str) -> str:
    return f" (The post, about its own runs: {POST[key]}.)"


def _steps(rows: list[dict]) -> str:
    found = [r for r in rows if r["step"] == r["step"]]  # not NaN
    return ", ".join(f"{r['component']} at step {int(r['step']):,}" for r in sorted(found, key=lambda r: r["step"]))


def _component_figure(run_dir: str, rows: list[dict], title: str, legend_title: str) -> go.Figure:
    curves = component_curves(run_dir)
    fig = go.Figure()
    steps = {r["component"]: r["step"] for r in rows if r["step"] == r["step"]}
    for i, (name, (x, y)) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name, line=dict(color=color, width=1.6)))
        if name in steps:
            at = steps[name]
            fig.add_trace(go.Scatter(x=[at], y=[float(np.interp(at, x, y))], mode="markers", showlegend=False,
                                     marker=dict(color=color, size=10, symbol="diamond", line=dict(color="black", width=1)),
                                     hovertemplate=f"{name}: phase change at step {int(at):,}<extra></extra>"))
    fig.update_yaxes(title_text="test loss (cross-entropy)", type="log", exponentformat="power")
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, height=480, legend_title_text=legend_title, **_LAYOUT)
    return fig


def _component_table(run_dir: str) -> pd.DataFrame:
    frames = [pd.DataFrame({"component": name, "step": x, "test_loss": y}) for name, (x, y) in component_curves(run_dir).items()]
    return pd.concat(frames, ignore_index=True)


def addition_digits(summary: dict[str, Any]) -> FigureOutput:
    """Each answer digit's test loss, and the phase changes the rule found (summary['addition'])."""
    s = summary["addition"]
    rows, n = s["phase_changes"], s["n_digits"] + 1
    found = s["digits_with_phase_change"]
    missing = [r["component"] for r in rows if r["component"] not in found]
    fig = _component_figure(s["run"], rows, f"{s['n_digits']}-digit addition on fresh data: each answer digit's test loss",
                            "answer digit (d0: carry)")
    caption = (f"Test loss of each of the {n} answer digits of {s['n_digits']}-digit addition (d0 is the carry digit, "
               f"d{n - 1} the units), trained {s['steps']:,} steps on fresh batches. The rule "
               f"(mechgrok.analysis.phase_changes) finds a phase change in {len(found)} of {n} digits: {_steps(rows)}"
               + (f"; none in {', '.join(missing)}" if missing else "") + ". "
               f"At the end the per-token test accuracy is {s['final']['test_acc']:.3f}." + _post("addition"))
    return FigureOutput("addition_digits", fig, {"": _component_table(s["run"]), "phase_changes": pd.DataFrame(rows)}, caption)


def max_list_trigrams(summary: dict[str, Any]) -> FigureOutput:
    """Each skip trigram's test loss (the special entry s: ``s .. END -> s``) and its phase change."""
    s = summary["max_list"]
    rows = s["phase_changes"]
    fig = _component_figure(s["run"], rows, "Max of a list on fresh data: each skip trigram's test loss", "special entry")
    spread = "" if s["first_step"] is None else (
        f" They fall between steps {s['first_step']:,} and {s['last_step']:,}, within "
        f"{(s['last_step'] - s['first_step']) / s['steps']:.0%} of the run's {s['steps']:,} steps.")
    caption = (f"Test loss of each of the {s['trigrams']} skip trigrams (s .. END → s, one per special entry s) of max of a "
               f"list, on fresh batches. The rule finds a phase change in {s['trigrams_with_phase_change']} of {s['trigrams']}: "
               f"{_steps(rows)}.{spread} Final test accuracy {s['final']['test_acc']:.3f}." + _post("max_list"))
    return FigureOutput("max_list_trigrams", fig, {"": _component_table(s["run"]), "phase_changes": pd.DataFrame(rows)}, caption)


def induction_heads(summary: dict[str, Any]) -> FigureOutput:
    """The induction run's test loss, and each head's scores over training."""
    s = summary["induction"]
    metrics = runs.read_metrics(Path(s["run"]))
    scores = score_curves(s["run"])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.4, 0.6],
                        subplot_titles=["Test loss", "Head scores (layer 0: previous-token; later layers: repeat induction)"])
    fig.add_trace(go.Scatter(x=metrics.epoch, y=metrics.test_loss, mode="lines", name="test loss", line=dict(color="black")), row=1, col=1)
    fig.add_trace(go.Scatter(x=metrics.epoch, y=metrics.train_loss, mode="lines", name="train loss (batch)",
                             line=dict(color="gray", width=1)), row=1, col=1)
    for i, ((layer, head), part) in enumerate(scores.groupby(["layer", "head"])):
        measure = "previous_token" if layer == 0 else "repeat_induction"
        width = 3 if (layer, head) == (s["induction_head"]["layer"], s["induction_head"]["head"]) else 1.4
        fig.add_trace(go.Scatter(x=part.epoch, y=part[measure], mode="lines", name=f"L{layer}H{head} {measure.replace('_', ' ')}",
                                 line=dict(color=COLORS[i % len(COLORS)], width=width, dash="solid" if layer else "dot")), row=2, col=1)
    for change, row in ((s["loss_phase_change"], 1), (s["score_jump"], 2)):
        if change:
            fig.add_vrect(x0=change["start"], x1=change["end"], fillcolor="orange", opacity=0.15, line_width=0, row=row, col=1)
    fig.update_yaxes(title_text="loss", type="log", exponentformat="power", row=1, col=1)
    fig.update_yaxes(title_text="score", range=[0, 1], row=2, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(title="Repeated subsequences: the loss and the heads", height=700, **_LAYOUT)
    h, drop, jump = s["induction_head"], s["loss_phase_change"], s["score_jump"]
    prev = s["previous_token_head"]
    parts = [f"A {runs.read_config(Path(s['run'])).n_layers}-layer attention-only transformer on repeated subsequences, "
             f"{s['steps']:,} steps of fresh batches; final test loss {s['final']['test_loss']:.3g}, per-token test accuracy "
             f"{s['final']['test_acc']:.3f}."]
    parts.append("The test loss has no phase change by the rule." if drop is None else
                 f"The test loss changes phase at step {drop['step']:,} ({drop['before']:.3g} → {drop['after']:.3g}, window "
                 f"{drop['start']:,}–{drop['end']:,}, shaded).")
    parts.append(f"The head after layer 0 with the highest repeat-induction score over the last quarter of the run is "
                 f"L{h['layer']}H{h['head']} (mean {h['late_mean_repeat_induction']:.2f}; at the end {h['repeat_induction']:.2f}, "
                 f"TransformerLens's induction score {h['induction']:.2f})"
                 + ("." if prev is None else f"; the best previous-token head before it is L{prev['layer']}H{prev['head']} "
                    f"({prev['previous_token']:.2f})."))
    overlap = jump is not None and drop is not None and jump["start"] <= drop["end"] and drop["start"] <= jump["end"]
    parts.append("Its score has no jump by the rule (a rise of 0.15 within the window, twice the pace before)." if jump is None
                 else f"Its score jumps at step {jump['step']:,} ({jump['before']:.2f} → {jump['after']:.2f}, window "
                 f"{jump['start']:,}–{jump['end']:,}), {'overlapping' if overlap else 'not overlapping'} the loss's phase change.")
    during = s["score_during_loss_change"]
    if during is not None:
        parts.append(f"Across the loss's phase change (steps {during['start']:,}–{during['end']:,}) the score goes "
                     f"{during['before']:.2f} → {during['after']:.2f} ({during['after'] / max(during['before'], 1e-12):.1f}×).")
    return FigureOutput("induction_heads", fig, {"": scores, "metrics": metrics}, " ".join(parts) + _post("induction"))


def crossover(summary: dict[str, Any]) -> FigureOutput:
    """The crossover search's runs: train size × step at which train and test accuracy reached 0.99."""
    s = summary["crossover"]
    table = pd.DataFrame(s["runs"])
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["Step at which accuracy reached 0.99", "Final accuracy"])
    for regime, part in table.groupby("regime"):
        color = REGIME_COLORS.get(regime, "black")
        for split, symbol in (("train", "circle-open"), ("test", "circle")):
            reached = part.dropna(subset=[f"{split}_step"])
            fig.add_trace(go.Scatter(x=reached.n_train, y=reached[f"{split}_step"], mode="markers", name=f"{regime}: {split}",
                                     legendgroup=f"{regime}: {split}", marker=dict(color=color, symbol=symbol, size=11)),
                          row=1, col=1)
            fig.add_trace(go.Scatter(x=part.n_train, y=part[f"final_{split}_acc"], mode="markers", showlegend=False,
                                     legendgroup=f"{regime}: {split}", marker=dict(color=color, symbol=symbol, size=11)),
                          row=1, col=2)
    fig.update_xaxes(title_text="train examples (n_train)", type="log")
    fig.update_yaxes(title_text="step", type="log", row=1, col=1)
    fig.update_yaxes(title_text="accuracy (open: train, filled: test)", range=[0, 1.03], row=1, col=2)
    fig.update_layout(title="The crossover search: memorise, grok or generalise per train size", height=480, **_LAYOUT)
    regimes = ", ".join(f"{int(r.n_train)}: {r.regime}" for r in table.itertuples())
    if s["bracketed"]:
        verdict = (f"The search brackets the crossover: {s['memorise_below']} examples memorise, "
                   f"{', '.join(map(str, s['grok']))} grok, {s['generalise_above']} generalise.")
    else:
        verdict = "The search did not bracket a grokking size between a memorising and a generalising one."
    caption = (f"Each run of the crossover search ({len(table)} train sizes), its regime by mechgrok.analysis.crossover's rule "
               f"(grok: test accuracy reaches 0.99 at least twice as late as train accuracy): {regimes}. {verdict}"
               + _post("crossover"))
    return FigureOutput("crossover", fig, {"": table}, caption)


FIGURES = {"addition": addition_digits, "induction": induction_heads, "max_list": max_list_trigrams, "crossover": crossover}


def figures(out: Path, summary: dict[str, Any]) -> list[FigureOutput]:
    """The figures of the experiments present in ``summary``, in report order."""
    return [build(summary) for key, build in FIGURES.items() if key in summary]
