"""The paper's figures, one function each: a run folder in, (plotly figure, data tables) out.

Each ``figN_*`` function reads what it needs from a :class:`RunAnalysis` (which loads the final
model, its activations and the progress measures once, lazily) and returns a
:class:`FigureOutput`; :func:`write_figure` saves it to ``RUN/figures/<name>.html`` (interactive,
opens offline: plotly.js is written once to ``RUN/figures/plotly.min.js``) and the figure's data
to ``RUN/figures/<name>.csv`` (plus ``<name>_<table>.csv`` for extra tables).

The ``experiments/`` scripts are thin wrappers over these; ``mechgrok reproduce`` runs all of
``FIGURES`` on one shared analysis.

Several seeds: a run folder may hold more seeds as run folders ``RUN/seeds/seed_<s>/``
(``mechgrok reproduce --seeds N`` makes them); Fig. 2 then draws shaded bands over seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from mechgrok import runs
from mechgrok.analysis import ablations, circuits, fourier, progress
from mechgrok.config import Config
from mechgrok.report import FIGURE_NAMES, plotting

__all__ = [
    "FIGURE_DIR",
    "SEEDS_DIR",
    "seed_runs",
    "RunAnalysis",
    "FigureOutput",
    "FIGURES",
    "make_figure",
    "write_figure",
    "fig2_loss_curves",
    "fig3_fourier_norms",
    "fig4_activations",
    "fig5_neuron_clusters",
    "fig6_frequency_ablation",
    "fig7_progress_measures",
    "appendix_excluded_per_frequency",
    "appendix_cos_coefficients",
    "SWEEPABLE",
    "sweep_curves",
    "frac_train_sweep_curves",
    "appendix_frac_train_sweep",
    "appendix_weight_decay_sweep",
]

FIGURE_DIR = "figures"
SEEDS_DIR = "seeds"


def seed_runs(run_dir: str | Path) -> list[Path]:
    """The run folder itself, then every extra seed in ``RUN/seeds/seed_*`` (that has a config)."""
    run_dir = Path(run_dir)
    extra = sorted((run_dir / SEEDS_DIR).glob("seed_*"), key=lambda p: (len(p.name), p.name))
    return [run_dir] + [p for p in extra if (p / runs.CONFIG_FILE).exists()]


class RunAnalysis:
    """Everything the figures read from one run, loaded once on first use."""

    def __init__(self, run_dir: str | Path, *, rule: str = circuits.DEFAULT_KEY_FREQUENCY_RULE, threshold: float = 0.85):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / runs.CONFIG_FILE).exists():
            raise ValueError(f"{self.run_dir} is not a mechgrok run folder (no {runs.CONFIG_FILE}); "
                             f"train one with `mechgrok train --out {self.run_dir}` or `mechgrok reproduce`")
        if rule not in circuits.KEY_FREQUENCY_RULES:
            raise ValueError(f"rule={rule!r} is not one of {sorted(circuits.KEY_FREQUENCY_RULES)}")
        self.rule, self.threshold = rule, threshold

    @cached_property
    def run(self) -> runs.Run:
        """The newest checkpoint."""
        return runs.load_run(self.run_dir)

    @cached_property
    def acts(self) -> circuits.GridActivations:
        return circuits.gather_activations(self.run.model)

    @cached_property
    def key_frequencies(self) -> list[int]:
        return circuits.key_frequencies(self.acts, self.rule, threshold=self.threshold)

    @cached_property
    def clusters(self) -> pd.DataFrame:
        return circuits.neuron_clusters(self.acts.neurons, self.threshold)

    @cached_property
    def progress(self) -> progress.Progress:
        return progress.load_progress(self.run_dir, rule=self.rule)


@dataclass
class FigureOutput:
    """A built figure: its plotly figure, its data (``tables[""]`` is the main one), and a caption."""

    name: str
    figure: go.Figure
    tables: dict[str, pd.DataFrame]
    caption: str
    files: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------- the figures
def fig2_loss_curves(a: RunAnalysis) -> FigureOutput:
    """Fig. 2: train/test loss and accuracy; min-max bands when the run folder holds several seeds."""
    frames = []
    for path in seed_runs(a.run_dir):
        metrics = runs.read_metrics(path)
        if metrics is None or metrics.empty:
            continue
        seed = runs.read_config(path).seed
        frames.append(metrics.drop(columns="elapsed_s").assign(seed=seed))
    if not frames:
        raise ValueError(f"{a.run_dir} has no metrics.csv yet; train it first")
    curves = pd.concat(frames, ignore_index=True)[["seed", "epoch", "train_loss", "test_loss", "train_acc", "test_acc"]]
    n = curves["seed"].nunique()
    caption = (f"Train and test loss and accuracy of {n} seed{'s' if n > 1 else ''}"
               + (": median line, min-max band." if n > 1 else ".") + " Loss is float64 cross-entropy.")
    return FigureOutput("fig2_loss_curves", plotting.loss_curves(curves), {"": curves}, caption)


def fig3_fourier_norms(a: RunAnalysis) -> FigureOutput:
    """Fig. 3: norms of the Fourier components of W_E and of W_L."""
    p = a.acts.p
    e = circuits.embedding_fourier_norms(a.acts.W_E, p)
    w = circuits.neuron_logit_fourier_norms(a.acts.W_L)
    table = pd.DataFrame({"component": e.names, "W_E": e.component.tolist(), "W_L": w.component.tolist()})
    caption = (f"Both are sparse in the Fourier basis. Key frequencies ({a.rule} rule): "
               f"{', '.join(map(str, a.key_frequencies))}.")
    return FigureOutput("fig3_fourier_norms", plotting.fourier_norms(table, a.key_frequencies), {"": table}, caption)


def _grid_rows(panel: str, grid) -> pd.DataFrame:
    p = grid.shape[0]
    return pd.DataFrame({"panel": panel, "row": [i for i in range(p) for _ in range(grid.shape[1])],
                         "col": list(range(grid.shape[1])) * p, "value": grid.flatten().tolist()})


def fig4_activations(a: RunAnalysis) -> FigureOutput:
    """Fig. 4: attention from ``=`` to a per head; two neurons over (a, b); the logits' 2D Fourier norms."""
    p = a.acts.p
    attention = circuits.attention_readout(a.acts.attention)
    parts = [_grid_rows(f"head {h}", attention.to_a[h]) for h in range(attention.to_a.shape[0])]
    sizes = circuits.cluster_sizes(a.clusters).drop(circuits.OTHER_CLUSTER).sort_values(ascending=False)
    for k in list(sizes.index)[:2]:
        neuron = int(a.clusters[a.clusters["cluster"] == k]["neuron"].min())
        parts.append(_grid_rows(f"neuron {neuron} (freq {k})", fourier.to_grid(a.acts.neurons[:, neuron], p)))
    parts.append(_grid_rows("logit 2D Fourier norms", circuits.logit_fourier_norms(a.acts.logits)))
    grids = pd.concat(parts, ignore_index=True)
    caption = ("Top: attention from = to a for each head, over (a, b). Bottom: activations of the first neuron of the "
               "two largest clusters, and the norm (over c) of each 2D Fourier component of the logits "
               "(rows: component of a, columns: component of b; hover for names).")
    fig = plotting.activations(grids, fourier.component_names(p))
    return FigureOutput("fig4_activations", fig, {"": grids}, caption)


def fig5_neuron_clusters(a: RunAnalysis) -> FigureOutput:
    """Fig. 5: histogram of neuron fraction explained; W_L (Fourier basis) of the largest cluster."""
    sizes = circuits.cluster_sizes(a.clusters).drop(circuits.OTHER_CLUSTER)
    if sizes.sum() == 0:
        raise ValueError("no neuron passes the cluster threshold; lower --threshold or train the run longer")
    k = int(sizes.idxmax())
    neurons = a.clusters[a.clusters["cluster"] == k]["neuron"].tolist()
    coeffs = fourier.fourier_1d(a.acts.W_L[neurons].double())  # [neuron, component]
    names = fourier.component_names(a.acts.p)
    wl = pd.DataFrame({"neuron": [n for n in neurons for _ in names], "component": names * len(neurons),
                       "value": coeffs.flatten().tolist()})
    clustered = int(sizes.sum())
    caption = (f"{clustered} of {len(a.clusters)} neurons ({clustered / len(a.clusters):.1%}) have ≥ {a.threshold:g} of their "
               f"variance in one frequency (paper: 84.6%). Right: W_L of the {len(neurons)} neurons of the "
               f"frequency-{k} cluster lies on cos {k} and sin {k} (shown: the constant and the key frequencies; "
               "the CSV has every component).")
    shown = ["const"] + [f"{t} {q}" for q in sorted(set(a.key_frequencies) | {k}) for t in ("cos", "sin")]
    fig = plotting.neuron_clusters(a.clusters, wl, k, a.threshold, shown)
    return FigureOutput("fig5_neuron_clusters", fig, {"": a.clusters, "W_L": wl}, caption)


def fig6_frequency_ablation(a: RunAnalysis) -> FigureOutput:
    """Fig. 6: loss with each frequency removed from the logits; restricted loss."""
    acts, key = a.acts, a.key_frequencies
    losses = ablations.frequency_ablation_losses(acts.logits, acts.labels, acts.split, key)
    restricted = ablations.restricted_loss(acts.logits, acts.labels, key)
    original = ablations.score(acts.logits, acts.labels, acts.split).loss_all
    caption = (f"Removing a key frequency ({', '.join(map(str, key))}) raises the loss sharply; removing any other "
               f"barely changes it. Keeping only the key frequencies (restricted loss {restricted:.3g}) "
               f"matches or beats the model (loss {original:.3g}).")
    return FigureOutput("fig6_frequency_ablation", plotting.frequency_ablation(losses, restricted, original),
                        {"": losses.assign(restricted_loss=restricted, original_loss=original)}, caption)


def fig7_progress_measures(a: RunAnalysis) -> FigureOutput:
    """Fig. 7: the four progress-measure panels with the detected phase boundaries."""
    prog = a.progress
    cols = ["epoch", "train_loss", "test_loss", "excluded_loss", "restricted_loss", "gini_W_E", "gini_W_L", "sum_sq_weights"]
    table = prog.measures[cols].assign(phase=[prog.phases.phase_of(e) for e in prog.measures["epoch"]])
    b = prog.phases.boundaries
    caption = ("Detected phase boundaries: " + ", ".join(f"{k.replace('_', ' ')} {v if v is None else f'{v:,}'}" for k, v in b.items())
               + " (paper, by eye: 1,400 / 9,400 / 14,000). Rules: mechgrok.phases.")
    return FigureOutput("fig7_progress_measures", plotting.progress_measures(prog.measures, b), {"": table}, caption)


def appendix_excluded_per_frequency(a: RunAnalysis) -> FigureOutput:
    """Appendix: excluded loss with each key frequency removed alone, over training."""
    prog = a.progress
    columns = progress.frequency_columns(prog.measures, "excluded_loss")
    table = prog.measures[["epoch", "train_loss", "test_loss", "excluded_loss", *columns.values()]]
    caption = "Excluded loss (train inputs) with one key frequency removed at a time; each rises as its circuit forms."
    fig = plotting.per_frequency_excluded_loss(prog.measures, columns, prog.phases.boundaries)
    return FigureOutput("appendix_excluded_per_frequency", fig, {"": table}, caption)


def appendix_cos_coefficients(a: RunAnalysis) -> FigureOutput:
    """Appendix: the coefficients α_k of cos(w_k(a+b-c)) in the logits, over training."""
    prog = a.progress
    columns = progress.frequency_columns(prog.measures, "cos_coefficient")
    table = prog.measures[["epoch", *columns.values()]]
    caption = "α_k of the fit logits ≈ Σ_k α_k cos(w_k(a+b-c)) at each checkpoint, for the final model's key frequencies."
    fig = plotting.cos_coefficients(prog.measures, columns, prog.phases.boundaries)
    return FigureOutput("appendix_cos_coefficients", fig, {"": table}, caption)


# name -> builder, in report order. The train-fraction sweep trains new runs, so it is opt-in.
FIGURES: dict[str, Callable[[RunAnalysis], FigureOutput]] = {
    "fig2_loss_curves": fig2_loss_curves,
    "fig3_fourier_norms": fig3_fourier_norms,
    "fig4_activations": fig4_activations,
    "fig5_neuron_clusters": fig5_neuron_clusters,
    "fig6_frequency_ablation": fig6_frequency_ablation,
    "fig7_progress_measures": fig7_progress_measures,
    "appendix_excluded_per_frequency": appendix_excluded_per_frequency,
    "appendix_cos_coefficients": appendix_cos_coefficients,
}


def make_figure(name: str, analysis: RunAnalysis | str | Path) -> FigureOutput:
    """Build one of ``FIGURES`` by name for a run folder (or a shared ``RunAnalysis``)."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; choose one of {list(FIGURES)}")
    a = analysis if isinstance(analysis, RunAnalysis) else RunAnalysis(analysis)
    return FIGURES[name](a)


def write_figure(out: FigureOutput, run_dir: str | Path, folder: str | Path | None = None) -> list[Path]:
    """Write ``<name>.html`` and the data CSVs to ``folder`` (default ``RUN/figures``); return the paths."""
    folder = Path(folder) if folder is not None else Path(run_dir) / FIGURE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / f"{out.name}.html"
    # plotly.js goes once into the folder as plotly.min.js, referenced relatively: works offline
    out.figure.write_html(html, include_plotlyjs="directory", full_html=True)
    paths = [html]
    for suffix, table in out.tables.items():
        path = folder / (f"{out.name}.csv" if not suffix else f"{out.name}_{suffix}.csv")
        runs.atomic_write_text(path, table.to_csv(index=False))
        paths.append(path)
    out.files = paths
    return paths


# ----------------------------------------------------------------------------- opt-in sweeps
SWEEPABLE = ("frac_train", "weight_decay")


def sweep_curves(
    run_dir: str | Path, field: str, values: Sequence[float], epochs: int, *, progress_bar: bool = False
) -> pd.DataFrame:
    """Train (or resume) one run per value of a config ``field`` (``SWEEPABLE``), with the run's
    other settings, under ``RUN/<field>_sweep/<field>_<value>/``; return their curves
    (field, epoch, train/test loss and accuracy)."""
    from mechgrok.training.loop import train

    if field not in SWEEPABLE:
        raise ValueError(f"field={field!r} cannot be swept here; choose one of {SWEEPABLE}")
    base = runs.read_config(Path(run_dir))
    frames = []
    for value in values:
        cfg: Config = base.replace(**{field: float(value)}, epochs=int(epochs))
        out = Path(run_dir) / f"{field}_sweep" / f"{field}_{value:g}"
        done = runs.checkpoint_epochs(out)
        if not done or done[-1] < epochs:
            train(cfg, out, progress=progress_bar)
        metrics = runs.read_metrics(out)
        frames.append(metrics[metrics["epoch"] <= epochs].assign(**{field: float(value)}))
    return pd.concat(frames, ignore_index=True)[[field, "epoch", "train_loss", "test_loss", "train_acc", "test_acc"]]


def frac_train_sweep_curves(run_dir: str | Path, fracs: Sequence[float], epochs: int, *, progress_bar: bool = False) -> pd.DataFrame:
    """``sweep_curves`` over the training fraction (runs in ``RUN/frac_train_sweep/``)."""
    return sweep_curves(run_dir, "frac_train", fracs, epochs, progress_bar=progress_bar)


def appendix_frac_train_sweep(run_dir: str | Path, fracs: Sequence[float], epochs: int, *, progress_bar: bool = False) -> FigureOutput:
    """Appendix (opt-in, trains ``len(fracs)`` runs): test loss and accuracy per training fraction."""
    curves = frac_train_sweep_curves(run_dir, fracs, epochs, progress_bar=progress_bar)
    caption = (f"Runs with the same settings and {len(fracs)} training fractions, {epochs:,} epochs each. "
               "The paper: 30-50% groks after a delay; ≥ 60% generalizes at once.")
    fig = plotting.sweep(curves, "frac_train", "Appendix: training-fraction sweep (paper: 30-50% groks, ≥60% generalizes at once)",
                         lambda v: f"{v:.0%} train")
    return FigureOutput("appendix_frac_train_sweep", fig, {"": curves}, caption)


def appendix_weight_decay_sweep(run_dir: str | Path, values: Sequence[float], epochs: int, *, progress_bar: bool = False) -> FigureOutput:
    """Appendix (opt-in, trains ``len(values)`` runs): test loss and accuracy per weight decay."""
    curves = sweep_curves(run_dir, "weight_decay", values, epochs, progress_bar=progress_bar)
    caption = (f"Runs with the same settings and {len(values)} weight decays, {epochs:,} epochs each. "
               "Weight decay drives cleanup: with less of it, grokking comes later or not at all.")
    fig = plotting.sweep(curves, "weight_decay", "Appendix: weight-decay sweep", lambda v: f"weight decay {v:g}")
    return FigureOutput("appendix_weight_decay_sweep", fig, {"": curves}, caption)


assert tuple(FIGURES) == FIGURE_NAMES, "mechgrok.report.FIGURE_NAMES must list FIGURES in order"
