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

Captions are readouts: each states what this run's data show, computed from them, and states a
conclusion of the paper only where this run's numbers support it (the rules are the constants
below: :data:`GROKKED_TEST_ACCURACY`, :data:`SPARSE_FRACTION`, ...). The paper's own numbers come
from :mod:`mechgrok.reproduce.nanda2023` and are labelled as the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import torch

from mechgrok import runs
from mechgrok.analysis import ablations, circuits, fourier, progress
from mechgrok.config import Config
from mechgrok.report import FIGURE_NAMES, plotting
from mechgrok.reproduce import nanda2023
from mechgrok.tasks.modular import require_fourier

__all__ = [
    "FIGURE_DIR",
    "SEEDS_DIR",
    "seed_runs",
    "GROKKED_TEST_ACCURACY",
    "SPARSE_FRACTION",
    "Grokking",
    "grokking_from_metrics",
    "first_epoch_reaching",
    "operation_text",
    "wave_inputs",
    "key_fraction",
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


# ----------------------------------------------------------------------------- what captions may claim
# The one rule for "this run has grokked": its newest checkpoint classifies at least this fraction
# of the held-out (test) pairs correctly. Below it, captions say so and claim none of the paper's
# conclusions about the formed circuit.
GROKKED_TEST_ACCURACY = 0.99
# A matrix is "sparse in the Fourier basis" when its key frequencies are at most a third of all
# frequencies and carry at least this fraction of its squared norm over the non-constant ones.
SPARSE_FRACTION = 0.8
# Removing a frequency "raises the loss sharply" when the loss grows at least this many times.
SHARP_FACTOR = 10.0
# The restricted loss "matches" the model's loss when it is at most this many times as large.
MATCH_FACTOR = 2.0


def _acc(x: float) -> str:
    """An accuracy rounded down to 3 decimals, so 0.9899 never prints as the threshold 0.990."""
    return "–" if not math.isfinite(x) else f"{math.floor(x * 1000) / 1000:.3f}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _list(xs: Iterable) -> str:
    return ", ".join(f"{x:,}" if isinstance(x, int) else str(x) for x in xs)


@dataclass(frozen=True)
class Grokking:
    """Whether a run has grokked (test accuracy >= :data:`GROKKED_TEST_ACCURACY`) at ``epoch``."""

    epoch: int
    test_acc: float
    train_acc: float

    @property
    def grokked(self) -> bool:
        return math.isfinite(self.test_acc) and self.test_acc >= GROKKED_TEST_ACCURACY

    def sentence(self) -> str:
        """One caption sentence: has this run grokked, by the rule, with its numbers."""
        if self.grokked:
            return f"This run has grokked (test accuracy {_acc(self.test_acc)} at epoch {self.epoch:,})."
        if not math.isfinite(self.test_acc):
            return (f"This run holds out no test pairs, so whether it has grokked cannot be judged "
                    f"(train accuracy {_acc(self.train_acc)} at epoch {self.epoch:,}).")
        return (f"This run has not grokked (test accuracy {_acc(self.test_acc)} at epoch {self.epoch:,}, "
                f"train accuracy {_acc(self.train_acc)}; grokked means test accuracy ≥ {GROKKED_TEST_ACCURACY:g}).")


def grokking_from_metrics(metrics: pd.DataFrame) -> Grokking:
    """The :class:`Grokking` of a metrics table (``runs.read_metrics``) at its last evaluated epoch."""
    if metrics is None or metrics.empty:
        raise ValueError("the metrics table is empty; train the run first (`mechgrok train`)")
    last = metrics.sort_values("epoch").iloc[-1]
    return Grokking(int(last["epoch"]), float(last["test_acc"]), float(last["train_acc"]))


def first_epoch_reaching(metrics: pd.DataFrame, column: str, level: float = GROKKED_TEST_ACCURACY) -> int | None:
    """The first evaluated epoch at which ``column`` (e.g. test_acc) is >= ``level``; None if never."""
    hit = metrics.sort_values("epoch")
    hit = hit[hit[column] >= level]
    return None if hit.empty else int(hit["epoch"].iloc[0])


_OPERATION_TEXT = {"add": "a + b", "sub": "a − b", "mul": "a · b", "div": "a / b", "x2xyy2": "a² + ab + b²"}


def operation_text(op: str) -> str:
    """How a caption writes the task's operation: "a + b" for op="add", "a − b" for "sub", ..."""
    if op not in _OPERATION_TEXT:
        raise ValueError(f"op={op!r} is not one of {list(_OPERATION_TEXT)}; read it from the run's config")
    return _OPERATION_TEXT[op]


def wave_inputs(op: str) -> str:
    """The combination inside the Fourier directions cos/sin(w_k(·)): "a+b" (add) or "a−b" (sub)."""
    operation_text(op)  # validates op
    return "a−b" if op == "sub" else "a+b"


def key_fraction(norms: circuits.FourierNorms, key_freqs: Iterable[int]) -> float:
    """The fraction of the squared norm over the non-constant frequencies that ``key_freqs`` carry."""
    table = norms.frequency_table()
    return float(table.loc[table["frequency"].isin(list(key_freqs)), "fraction"].sum())


def _is_sparse(fraction: float, n_key: int, n_freq: int) -> bool:
    return fraction >= SPARSE_FRACTION and 3 * n_key <= n_freq


def _paper(text: str) -> str:
    return f"Paper (Nanda et al. 2023, its p=113 addition mainline run, not this run): {text}"


class RunAnalysis:
    """Everything the figures read from one run, loaded once on first use."""

    def __init__(self, run_dir: str | Path, *, rule: str = circuits.DEFAULT_KEY_FREQUENCY_RULE, threshold: float = 0.85,
                 device: str = "cpu"):
        from mechgrok.training.device import resolve_device  # a device this torch lacks: refused with the fix

        self.device = resolve_device(device)  # where the forward passes over the p² inputs run; results are on the CPU
        self.run_dir = Path(run_dir)
        if not (self.run_dir / runs.CONFIG_FILE).exists():
            raise ValueError(f"{self.run_dir} is not a mechgrok run folder (no {runs.CONFIG_FILE}); "
                             f"train one with `mechgrok train --out {self.run_dir}` or `mechgrok reproduce`")
        if rule not in circuits.KEY_FREQUENCY_RULES:
            raise ValueError(f"rule={rule!r} is not one of {sorted(circuits.KEY_FREQUENCY_RULES)}")
        self.rule, self.threshold = rule, threshold

    @cached_property
    def config(self) -> Config:
        """The run's saved config (read without loading a checkpoint)."""
        return runs.read_config(self.run_dir)

    @property
    def op(self) -> str:
        return self.config.op

    @cached_property
    def run(self) -> runs.Run:
        """The newest checkpoint."""
        return runs.load_run(self.run_dir)

    @cached_property
    def acts(self) -> circuits.GridActivations:
        model = self.run.model
        if self.device.type == "cpu":
            return circuits.gather_activations(model)
        from mechgrok.training.device import to_device

        try:  # gather_activations runs on the model's device and hands back CPU tensors
            return circuits.gather_activations(to_device(model, self.device))
        finally:
            to_device(model, torch.device("cpu"))

    @cached_property
    def key_frequencies(self) -> list[int]:
        return circuits.key_frequencies(self.acts, self.rule, threshold=self.threshold)

    @cached_property
    def clusters(self) -> pd.DataFrame:
        return circuits.neuron_clusters(self.acts.neurons, self.threshold)

    @cached_property
    def progress(self) -> progress.Progress:
        return progress.load_progress(self.run_dir, rule=self.rule, device=self.device)

    @cached_property
    def score(self) -> ablations.AblationResult:
        """Loss and accuracy of the newest checkpoint on the train, test and all pairs."""
        return ablations.score(self.acts.logits, self.acts.labels, self.acts.split)

    @cached_property
    def grokking(self) -> Grokking:
        """Whether the newest checkpoint has grokked (the one rule, :class:`Grokking`)."""
        return Grokking(self.run.epoch, self.score.accuracy_test, self.score.accuracy_train)


@dataclass
class FigureOutput:
    """A built figure: its plotly figure, its data (``tables[""]`` is the main one), and a caption."""

    name: str
    figure: go.Figure
    tables: dict[str, pd.DataFrame]
    caption: str
    files: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------- the figures
def _seed_sentence(seed: int, metrics: pd.DataFrame) -> str:
    g = grokking_from_metrics(metrics)
    train_at = first_epoch_reaching(metrics, "train_acc")
    test_at = first_epoch_reaching(metrics, "test_acc")
    memorized = (f"train accuracy reached {GROKKED_TEST_ACCURACY:g} at epoch {train_at:,}" if train_at is not None
                 else f"train accuracy never reached {GROKKED_TEST_ACCURACY:g}")
    last = metrics.sort_values("epoch").iloc[-1]
    if g.grokked and test_at is not None:
        delay = f", {test_at - train_at:,} epochs later" if train_at is not None else ""
        return (f"Seed {seed}: {memorized} and test accuracy at epoch {test_at:,}{delay}; at epoch {g.epoch:,} "
                f"test accuracy is {_acc(g.test_acc)} and test loss {last['test_loss']:.3g}.")
    return (f"Seed {seed} has not grokked: test accuracy {_acc(g.test_acc)} at epoch {g.epoch:,} "
            f"(test loss {last['test_loss']:.3g}); {memorized}.")


def _over_seeds(frames: list[pd.DataFrame]) -> str:
    """One sentence over every seed: when test accuracy reached GROKKED_TEST_ACCURACY, and the test-loss peak."""
    reached = sorted(e for e in (first_epoch_reaching(f, "test_acc") for f in frames) if e is not None)
    peaks = [f.loc[f["test_loss"].idxmax()] for f in frames]
    peak_text = (f"the test loss peaks at {min(r['test_loss'] for r in peaks):.3g}–{max(r['test_loss'] for r in peaks):.3g}, "
                 f"at epochs {min(int(r['epoch']) for r in peaks):,}–{max(int(r['epoch']) for r in peaks):,}")
    if not reached:
        return f"Over the {len(frames)} seeds, none reached test accuracy {GROKKED_TEST_ACCURACY:g}; {peak_text}."
    median = int(pd.Series(reached).median())
    return (f"{len(reached)} of {len(frames)} seeds reached test accuracy {GROKKED_TEST_ACCURACY:g}, at epochs "
            f"{reached[0]:,}–{reached[-1]:,} (median {median:,}); {peak_text}.")


def fig2_loss_curves(a: RunAnalysis) -> FigureOutput:
    """Fig. 2: train/test loss and accuracy; min-max bands when the run folder holds several seeds."""
    frames, sentences = [], []
    for path in seed_runs(a.run_dir):
        metrics = runs.read_metrics(path)
        if metrics is None or metrics.empty:
            continue
        seed = runs.read_config(path).seed
        frames.append(metrics.drop(columns="elapsed_s").assign(seed=seed))
        sentences.append(_seed_sentence(seed, metrics))
    if not frames:
        raise ValueError(f"{a.run_dir} has no metrics.csv yet; train it first")
    curves = pd.concat(frames, ignore_index=True)[["seed", "epoch", "train_loss", "test_loss", "train_acc", "test_acc"]]
    n = curves["seed"].nunique()
    logits = (f" over all {a.config.d_vocab_out} logits, `=` included (unembed_equals)" if a.config.unembed_equals
              else "")
    caption = " ".join([
        f"Train and test loss and accuracy of {n} seed{'s' if n > 1 else ''}"
        + (": median line, min-max band." if n > 1 else ".")
        + f" Loss is {a.config.loss_dtype} cross-entropy{logits} (the run's loss).",
        *([_over_seeds(frames)] if n > 1 else []),
        *sentences,
        _paper(f"trained {nanda2023.EPOCHS:,} epochs to a final loss of {nanda2023.FINAL_LOSS:.3g} on all pairs."),
    ])
    return FigureOutput("fig2_loss_curves", plotting.loss_curves(curves), {"": curves}, caption)


def fig3_fourier_norms(a: RunAnalysis) -> FigureOutput:
    """Fig. 3: norms of the Fourier components of W_E and of W_L."""
    p, key = a.acts.p, a.key_frequencies
    e = circuits.embedding_fourier_norms(a.acts.W_E, p)
    w = circuits.neuron_logit_fourier_norms(a.acts.W_L)
    table = pd.DataFrame({"component": e.names, "W_E": e.component.tolist(), "W_L": w.component.tolist()})
    n_freq = fourier.n_frequencies(p)
    fractions = {"W_E": key_fraction(e, key), "W_L": key_fraction(w, key)}
    sparse = {m: _is_sparse(f, len(key), n_freq) for m, f in fractions.items()}
    parts = [a.grokking.sentence(),
             f"{len(key)} of {n_freq} frequencies are key ({a.rule} rule): {_list(key)}. They carry "
             f"{_pct(fractions['W_E'])} of W_E's squared Fourier norm and {_pct(fractions['W_L'])} of W_L's "
             "(the constant component left out)."]
    yes, no = [m for m in sparse if sparse[m]], [m for m in sparse if not sparse[m]]
    why = f"sparse: at most a third of the frequencies carry ≥ {SPARSE_FRACTION:.0%} of the squared norm"
    if not a.grokking.grokked:
        if no:
            parts.append(f"{' and '.join(no)} {'is' if len(no) == 1 else 'are'} not sparse in the Fourier basis ({why}).")
        if yes:
            parts.append(f"{' and '.join(yes)} already concentrate{'s' if len(yes) == 1 else ''} on these frequencies, "
                         "but the model does not yet generalize.")
    elif not no:
        parts.append(f"Both are sparse in the Fourier basis ({why}).")
    elif not yes:
        parts.append(f"Neither is sparse in the Fourier basis ({why}).")
    else:
        parts.append(f"{yes[0]} is sparse in the Fourier basis; {no[0]} is not ({why}).")
    parts.append(_paper(f"key frequencies {_list(nanda2023.KEY_FREQUENCIES)}."))
    caption = " ".join(parts)
    return FigureOutput("fig3_fourier_norms", plotting.fourier_norms(table, key), {"": table}, caption)


def _grid_rows(panel: str, grid) -> pd.DataFrame:
    p = grid.shape[0]
    return pd.DataFrame({"panel": panel, "row": [i for i in range(p) for _ in range(grid.shape[1])],
                         "col": list(range(grid.shape[1])) * p, "value": grid.flatten().tolist()})


def _key_terms(key_freqs: Iterable[int]) -> list[tuple[int, int]]:
    """(component of a, component of b) of the 2D terms cos/sin(w_k a)·cos/sin(w_k b) of each key k."""
    out = []
    for k in key_freqs:
        rows = (fourier.cos_component(k), fourier.sin_component(k))
        out += [(i, j) for i in rows for j in rows]
    return out


# Fig. 4 shows the first neuron of this many of the largest clusters.
FIG4_NEURONS = 4


def fig4_activations(a: RunAnalysis) -> FigureOutput:
    """Fig. 4: attention from ``=`` to a per head; neurons over (a, b); the logits' 2D Fourier norms."""
    p, key = a.acts.p, a.key_frequencies
    attention = circuits.attention_readout(a.acts.attention)
    parts = [_grid_rows(f"head {h}", attention.to_a[h]) for h in range(attention.to_a.shape[0])]
    sizes = circuits.cluster_sizes(a.clusters).drop(circuits.OTHER_CLUSTER).sort_values(ascending=False)
    neuron_text = []
    for k in list(sizes.index)[:FIG4_NEURONS]:
        row = a.clusters[a.clusters["cluster"] == k].sort_values("neuron").iloc[0]
        neuron = int(row["neuron"])
        parts.append(_grid_rows(f"neuron {neuron} (freq {k})", fourier.to_grid(a.acts.neurons[:, neuron], p)))
        neuron_text.append(f"neuron {neuron}: {_pct(row['fraction_explained'])} in frequency {k}")
    norms = circuits.logit_fourier_norms(a.acts.logits)
    parts.append(_grid_rows("logit 2D Fourier norms", norms))
    grids = pd.concat(parts, ignore_index=True)
    terms = _key_terms(key)
    sq = norms.double() ** 2
    key_share = float(sum(sq[i, j] for i, j in terms) / sq.sum())
    heads = "; ".join(f"head {int(r.head)}: frequency {int(r.frequency)}, FVE {r.fve:.3f}" for r in attention.table.itertuples())
    text = [
        a.grokking.sentence(),
        f"Top: attention from = to a for each head over (a, b); the mean plus one frequency's wave explains "
        f"its variance as follows: {heads}.",
        (("Bottom left: the first neuron of "
          + ("the largest cluster" if len(neuron_text) == 1 else f"each of the {len(neuron_text)} largest clusters")
          + f", with the share of its variance in its frequency: {'; '.join(neuron_text)}.") if neuron_text else
         f"Bottom left: no neuron panel, since no neuron has ≥ {a.threshold:g} of its variance in one frequency."),
        f"Right: the norm over c of each 2D Fourier component of the logits (rows: component of a, columns: "
        f"component of b; hover for names). The {len(terms)} boxed terms cos/sin(w_k a)·cos/sin(w_k b) of the "
        f"key frequencies ({_list(key)}) carry {_pct(key_share)} of the logits' squared 2D Fourier norm.",
        _paper(f"the mean plus one frequency explains "
               f"{nanda2023.HEADLINE['attention = -> a: FVE of one-frequency wave (min over heads)']:.1%}–"
               f"{nanda2023.HEADLINE['attention = -> a: FVE of one-frequency wave (max over heads)']:.1%} "
               "of each head's attention to a."),
    ]
    fig = plotting.activations(grids, fourier.component_names(p), terms)
    return FigureOutput("fig4_activations", fig, {"": grids}, " ".join(text))


def fig5_neuron_clusters(a: RunAnalysis) -> FigureOutput:
    """Fig. 5: histogram of neuron fraction explained; W_L (Fourier basis) of the largest cluster.

    Without any cluster (an early run), the right panel shows the neurons whose best frequency is
    the most common one, and the caption says so.
    """
    sizes = circuits.cluster_sizes(a.clusters).drop(circuits.OTHER_CLUSTER)
    clustered = int(sizes.sum())
    if clustered:
        k = int(sizes.idxmax())
        neurons = a.clusters[a.clusters["cluster"] == k]["neuron"].tolist()
        group = f"the {len(neurons)} neurons of the frequency-{k} cluster"
    else:
        live = a.clusters[a.clusters["frequency"] > 0]
        if live.empty:
            raise ValueError(f"every neuron of {a.run_dir} is constant over the inputs; train the run longer")
        k = int(live["frequency"].mode().min())
        neurons = live[live["frequency"] == k]["neuron"].tolist()
        group = f"the {len(neurons)} neurons whose best frequency is {k} (no neuron passes the threshold)"
    coeffs = fourier.fourier_1d(a.acts.W_L[neurons].double())  # [neuron, component]
    names = fourier.component_names(a.acts.p)
    wl = pd.DataFrame({"neuron": [n for n in neurons for _ in names], "component": names * len(neurons),
                       "value": coeffs.flatten().tolist()})
    sq = coeffs**2
    on_k = float(sq[:, [fourier.cos_component(k), fourier.sin_component(k)]].sum() / sq.sum())
    n = len(a.clusters)
    listed = ", ".join(f"{f}: {int(c)}" for f, c in sizes.items() if c) or "none"
    text = [
        a.grokking.sentence(),
        f"Left: {clustered} of {n} neurons ({_pct(clustered / n)}) have ≥ {a.threshold:g} of their variance in "
        f"one frequency (dashed line); neurons per frequency: {listed}; "
        f"{int(circuits.cluster_sizes(a.clusters)[circuits.OTHER_CLUSTER])} in none.",
        f"Right: W_L of {group} in the Fourier basis of the logit axis c; cos {k} and sin {k} carry "
        f"{_pct(on_k)} of its squared norm"
        + (f", so these neurons write along cos {k} and sin {k}." if a.grokking.grokked and on_k >= SPARSE_FRACTION else ".")
        + " Shown: the constant and the key frequencies; the CSV has every component.",
        _paper(f"{nanda2023.HEADLINE['neurons explained > threshold (fraction)']:.1%} of the neurons are clustered; "
               "neurons per frequency: " + ", ".join(f"{f}: {c}" for f, c in nanda2023.CLUSTER_SIZES.items()) + "."),
    ]
    shown = ["const"] + [f"{t} {q}" for q in sorted(set(a.key_frequencies) | {k}) for t in ("cos", "sin")]
    fig = plotting.neuron_clusters(a.clusters, wl, k, a.threshold, shown)
    return FigureOutput("fig5_neuron_clusters", fig, {"": a.clusters, "W_L": wl}, " ".join(text))


def fig6_frequency_ablation(a: RunAnalysis) -> FigureOutput:
    """Fig. 6: loss with each frequency removed from the logits; restricted loss."""
    acts, key = a.acts, a.key_frequencies
    sign = require_fourier(acts.task, "fig6_frequency_ablation")  # +1 add, -1 sub; other ops refused
    losses = ablations.frequency_ablation_losses(acts.logits, acts.labels, acts.split, key, sign=sign)
    restricted = ablations.restricted_loss(acts.logits, acts.labels, key, sign=sign)
    original = a.score.loss_all
    waves = f"cos/sin(w_k({wave_inputs(a.op)}))"
    on_key, off_key = losses[losses["key"]]["loss_all"], losses[~losses["key"]]["loss_all"]
    text = [a.grokking.sentence()]
    removed = (f"Removing {waves} of one key frequency ({_list(key)}) from the logits takes the loss on all inputs "
               f"from {original:.3g} to {on_key.min():.3g}–{on_key.max():.3g}")
    if off_key.empty:
        text.append(removed + "; every frequency is key.")
    else:
        text.append(removed + f"; removing any other frequency gives at most {off_key.max():.3g}.")
        if a.grokking.grokked:
            sharp = on_key.min() >= SHARP_FACTOR * max(original, off_key.max())
            text.append(f"Each key frequency matters and the others barely do (≥ {SHARP_FACTOR:g}× apart)." if sharp else
                        f"Removing a key frequency is not {SHARP_FACTOR:g}× worse than removing another, so this "
                        "run does not single out its key frequencies.")
    kept = f"Keeping only the key frequencies gives a restricted loss of {restricted:.3g}, against the model's {original:.3g}"
    if not a.grokking.grokked:
        text.append(kept + ".")
    elif restricted <= MATCH_FACTOR * original:
        text.append(kept + f": keeping only the key frequencies matches or beats the model (within {MATCH_FACTOR:g}×).")
    else:
        text.append(kept + f", {restricted / original:.3g}× as large: the key frequencies alone do not account for "
                    "the model's predictions.")
    fig = plotting.frequency_ablation(losses, restricted, original)
    return FigureOutput("fig6_frequency_ablation", fig,
                        {"": losses.assign(restricted_loss=restricted, original_loss=original)}, " ".join(text))


def _epoch(v: int | None) -> str:
    return "not reached" if v is None else f"epoch {v:,}"


def _phase_sentence(boundaries: dict) -> str:
    return ("Detected phase ends (rules: mechgrok.analysis.phases): "
            + "; ".join(f"{k.removesuffix('_end').replace('_', ' ')}: {_epoch(v)}" for k, v in boundaries.items()) + ".")


def _paper_phases() -> str:
    b = nanda2023.PHASE_BOUNDARIES
    return _paper("phase lines drawn by eye at epochs " + " / ".join(f"{v:,}" for v in b.values())
                  + " (" + ", ".join(k.removesuffix("_end").replace("_", " ") for k in b) + " ends).")


def fig7_progress_measures(a: RunAnalysis) -> FigureOutput:
    """Fig. 7: the four progress-measure panels with the detected phase boundaries."""
    prog = a.progress
    m = prog.measures.sort_values("epoch")
    cols = ["epoch", "train_loss", "test_loss", "excluded_loss", "restricted_loss", "gini_W_E", "gini_W_L", "sum_sq_weights"]
    table = prog.measures[cols].assign(phase=[prog.phases.phase_of(e) for e in prog.measures["epoch"]])
    b = prog.phases.boundaries
    first, last = m.iloc[0], m.iloc[-1]
    peak = m.loc[m["sum_sq_weights"].idxmax()]
    text = [
        a.grokking.sentence(),
        _phase_sentence(b),
        *[n[0].upper() + n[1:] + ("" if n.endswith(".") else ".") for n in prog.phases.notes],
        f"From epoch {int(first.epoch):,} to {int(last.epoch):,}: excluded loss {first.excluded_loss:.3g} → "
        f"{last.excluded_loss:.3g} (train loss → {last.train_loss:.3g}); restricted loss {first.restricted_loss:.3g} → "
        f"{last.restricted_loss:.3g} (test loss → {last.test_loss:.3g}); Gini of W_E {first.gini_W_E:.2f} → "
        f"{last.gini_W_E:.2f}, of W_L {first.gini_W_L:.2f} → {last.gini_W_L:.2f}; sum of squared weights "
        f"{first.sum_sq_weights:,.1f}, peak {peak.sum_sq_weights:,.1f} at epoch {int(peak.epoch):,}, "
        f"final {last.sum_sq_weights:,.1f}.",
        _paper_phases(),
    ]
    fig = plotting.progress_measures(prog.measures, b)
    return FigureOutput("fig7_progress_measures", fig, {"": table}, " ".join(text))


# An excluded loss "rises" when it ends at least this many times above its minimum over training.
RISE_FACTOR = 2.0


def appendix_excluded_per_frequency(a: RunAnalysis) -> FigureOutput:
    """Appendix: excluded loss with each key frequency removed alone, over training."""
    prog = a.progress
    m = prog.measures.sort_values("epoch")
    columns = progress.frequency_columns(prog.measures, "excluded_loss")
    table = prog.measures[["epoch", "train_loss", "test_loss", "excluded_loss", *columns.values()]]
    last = m.iloc[-1]
    readouts, risen = [], []
    for k, col in sorted(columns.items()):
        low = m.loc[m[col].idxmin()]
        readouts.append(f"k={k}: lowest {low[col]:.3g} at epoch {int(low.epoch):,}, final {last[col]:.3g}")
        risen.append(last[col] >= RISE_FACTOR * low[col])
    text = [a.grokking.sentence(),
            f"Excluded loss (train inputs) with one key frequency's cos/sin(w_k({wave_inputs(a.op)})) removed from the "
            f"logits at a time, beside the train loss (final {last.train_loss:.3g}): " + "; ".join(readouts) + "."]
    if a.grokking.grokked and risen and all(risen):
        text.append(f"Each ends ≥ {RISE_FACTOR:g}× above its lowest value: each rises as its circuit forms.")
    elif a.grokking.grokked:
        flat = [str(k) for (k, _), r in zip(sorted(columns.items()), risen) if not r]
        text.append(f"For k = {', '.join(flat)} the excluded loss ends less than {RISE_FACTOR:g}× above its lowest "
                    "value, so on this run not every curve climbs back up once its circuit has formed.")
    text.append(_phase_sentence(prog.phases.boundaries))
    fig = plotting.per_frequency_excluded_loss(prog.measures, columns, prog.phases.boundaries)
    return FigureOutput("appendix_excluded_per_frequency", fig, {"": table}, " ".join(text))


def appendix_cos_coefficients(a: RunAnalysis) -> FigureOutput:
    """Appendix: the coefficients α_k of cos(w_k(a+b-c)) in the logits, over training."""
    prog = a.progress
    m = prog.measures.sort_values("epoch")
    columns = progress.frequency_columns(prog.measures, "cos_coefficient")
    table = prog.measures[["epoch", *columns.values()]]
    first, last = m.iloc[0], m.iloc[-1]
    inputs = f"{wave_inputs(a.op)}−c"
    readouts = "; ".join(f"α_{k} {first[c]:.3g} → {last[c]:.3g}" for k, c in sorted(columns.items()))
    text = [a.grokking.sentence(),
            f"α_k of the fit logits ≈ Σ_k α_k cos(w_k({inputs})) at each checkpoint, for the final model's key "
            f"frequencies; from epoch {int(first.epoch):,} to {int(last.epoch):,}: {readouts}.",
            _phase_sentence(prog.phases.boundaries),
            _paper(f"the fit explains {nanda2023.HEADLINE['logit fit Σ α_k cos(w_k(a+b-c)): FVE']:.0%} of the "
                   "final logits' variance.")]
    fig = plotting.cos_coefficients(prog.measures, columns, prog.phases.boundaries, inputs)
    return FigureOutput("appendix_cos_coefficients", fig, {"": table}, " ".join(text))


# name -> builder, in report order (mechgrok.report.FIGURE_NAMES, which the CLI lists without
# importing torch; each name is the builder's own). The sweeps train new runs, so they are opt-in.
FIGURES: dict[str, Callable[[RunAnalysis], FigureOutput]] = {name: globals()[name] for name in FIGURE_NAMES}


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


def _sweep_readout(curves: pd.DataFrame, field: str, label: Callable[[float], str], epochs: int) -> str:
    """Per swept value: when train and test accuracy first reach GROKKED_TEST_ACCURACY, or the final test accuracy."""
    parts = []
    for value, d in curves.groupby(field):
        train_at, test_at = first_epoch_reaching(d, "train_acc"), first_epoch_reaching(d, "test_acc")
        if test_at is None:
            parts.append(f"{label(value)}: not grokked within {epochs:,} epochs (final test accuracy "
                         f"{_acc(grokking_from_metrics(d).test_acc)})")
        elif train_at is None:
            parts.append(f"{label(value)}: test accuracy {GROKKED_TEST_ACCURACY:g} at epoch {test_at:,}")
        else:
            parts.append(f"{label(value)}: train accuracy {GROKKED_TEST_ACCURACY:g} at epoch {train_at:,}, test at "
                         f"{test_at:,} ({test_at - train_at:,} epochs later)")
    return "; ".join(parts) + "."


def _frac_label(v: float) -> str:
    return f"{v:.0%} train"


def _wd_label(v: float) -> str:
    return f"weight decay {v:g}"


def appendix_frac_train_sweep(run_dir: str | Path, fracs: Sequence[float], epochs: int, *, progress_bar: bool = False) -> FigureOutput:
    """Appendix (opt-in, trains ``len(fracs)`` runs): test loss and accuracy per training fraction."""
    curves = frac_train_sweep_curves(run_dir, fracs, epochs, progress_bar=progress_bar)
    lo, hi = nanda2023.FRAC_TRAIN_GROKS
    caption = " ".join([
        f"Runs with the same settings and {len(fracs)} training fractions, {epochs:,} epochs each.",
        "This sweep: " + _sweep_readout(curves, "frac_train", _frac_label, epochs),
        _paper(f"{lo:.0%}–{hi:.0%} of the pairs groks after a delay; "
               f"≥ {nanda2023.FRAC_TRAIN_GENERALIZES_AT_ONCE:.0%} generalizes at once."),
    ])
    fig = plotting.sweep(curves, "frac_train", "Appendix: training-fraction sweep", _frac_label)
    return FigureOutput("appendix_frac_train_sweep", fig, {"": curves}, caption)


def appendix_weight_decay_sweep(run_dir: str | Path, values: Sequence[float], epochs: int, *, progress_bar: bool = False) -> FigureOutput:
    """Appendix (opt-in, trains ``len(values)`` runs): test loss and accuracy per weight decay."""
    curves = sweep_curves(run_dir, "weight_decay", values, epochs, progress_bar=progress_bar)
    caption = " ".join([
        f"Runs with the same settings and {len(values)} weight decays, {epochs:,} epochs each.",
        "This sweep: " + _sweep_readout(curves, "weight_decay", _wd_label, epochs),
        _paper("weight decay drives cleanup: with less of it, grokking comes later or not at all."),
    ])
    fig = plotting.sweep(curves, "weight_decay", "Appendix: weight-decay sweep", _wd_label)
    return FigureOutput("appendix_weight_decay_sweep", fig, {"": curves}, caption)

