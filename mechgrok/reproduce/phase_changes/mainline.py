"""The mainline model's part of the Alignment Forum post: slingshots, weight decay, more data and
the excluded loss fitted on the train inputs only.

Every run is the mainline 1-layer ``HookedTransformer`` (family ``transformer``: d_model 128, 4
heads, d_mlp 512, no LayerNorm) on a+b mod p, trained by :func:`mechgrok.train` on its exact fast
path (AdamW, betas (0.9, 0.98), full batch unless ``batch_size`` says otherwise).

=======================  ==================================================================
experiment               runs (default sizes; ``full=True``: the post's p = 113)
=======================  ==================================================================
``slingshots``           p = 31, 70% of the pairs, lr 1e-3, weight decay 1: the loss from
                         float32 logits against float64 logits, each full batch and with
                         minibatches of 128 (``batch_size``), 3,200 steps
``weight_decay``         p = 31, 70%, lr 3e-3 (so that every run groks within the budget):
                         weight decay 0.3, 1 and 3, 1,800 epochs (``full``: 0.1 too, 6,000)
``more_data``            p = 31, 95% of the pairs, lr 1e-3, weight decay 1, 1,000 epochs
``excluded_loss``        ``full=True`` only: the paper's mainline, p = 113, 30% of the pairs,
                         20,000 epochs, a checkpoint every 200 for the progress measures. By
                         default the excluded loss is read from the slingshots experiment's
                         float64 full-batch run (a checkpoint every 200 steps): at p = 31, 30%
                         of the pairs did not grok in 4,000 epochs (measured), 70% did
=======================  ==================================================================

What is read from the runs (:func:`summarise`): the train-loss spikes of every slingshot run by
the rule of :mod:`mechgrok.analysis.slingshots`; the grokking epoch of every weight decay (the
first logged epoch with test accuracy >= 0.99, :func:`mechgrok.report.figures.first_epoch_reaching`);
the phase changes of the 95% run's train and test loss by the rule of
:mod:`mechgrok.analysis.phase_changes`; and the paper's excluded loss beside the train-only fit
(:func:`mechgrok.analysis.ablations.excluded_loss_train_fit`) at every checkpoint, from the
progress measures (:func:`mechgrok.analysis.progress.load_progress`).

Claims (:func:`claims`), each decided by a rule on those numbers:

* ``float32_slingshots``: every float32 full-batch run has at least one spike and every float64
  full-batch run has none;
* ``lower_weight_decay_groks_later``: at least two weight decays grok, and for every pair
  wd_i < wd_j where the wd_j run grokked, the wd_i run grokked strictly later or not at all;
* ``more_data_train_loss_phase_change``: the 95% run's train loss has a phase change with a
  test-loss phase change at most one window away
  (:func:`mechgrok.report.phase_changes.mainline.coinciding`): train and test loss change
  together. The limited-data contrast (the slingshots experiment's float64 full-batch run, 70%)
  is read beside it: there the test loss's changes come long after the train loss's (grokking).

The figures are :mod:`mechgrok.report.phase_changes.mainline`'s: :func:`figure_inputs` names the
run folders each one reads, and :func:`build_figures` builds them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mechgrok import runs
from mechgrok.analysis import phase_changes, progress, slingshots
from mechgrok.config import Config
from mechgrok.report.figures import first_epoch_reaching
from mechgrok.report.phase_changes.mainline import MAINLINE_FIGURES, coinciding
from mechgrok import sweeps
from mechgrok.sweeps import MANIFEST_FILE, Sweep

__all__ = ["EXPERIMENTS", "POST", "SLINGSHOT_BATCH", "mainline_config", "plan", "experiment_runs", "run_readout",
           "slingshot_readout", "weight_decay_readout", "more_data_readout", "excluded_loss_readout", "summarise",
           "claims", "contrast_run", "excluded_loss_run", "figure_inputs", "build_figures", "figures", "CLAIMS"]

EXPERIMENTS = ("slingshots", "weight_decay", "more_data", "excluded_loss")
DEFAULT_P = 31
FULL_P = 113
SLINGSHOT_BATCH = 128  # the minibatch runs' batch size (of 672 train pairs at p=31, 70%)
WEIGHT_DECAYS = (0.3, 1.0, 3.0)
FULL_WEIGHT_DECAYS = (0.1, 0.3, 1.0, 3.0)

# The mainline's model and optimiser (docs/training.md), at a small p for the budget.
_MAINLINE = dict(
    task="modular", op="add", family="transformer", p=DEFAULT_P, d_model=128, n_heads=4, d_mlp=512,
    lr=1e-3, weight_decay=1.0, beta1=0.9, beta2=0.98, warmup_steps=10, loss_dtype="float64", batch_size=0,
    eval_every=10,
)
_SETTINGS: dict[str, dict] = {
    "slingshots": dict(frac_train=0.7, epochs=3_200, checkpoint_every=200),
    "weight_decay": dict(frac_train=0.7, lr=3e-3, epochs=1_800, checkpoint_every=1_800),
    "more_data": dict(frac_train=0.95, epochs=1_000, checkpoint_every=1_000),
    "excluded_loss": dict(frac_train=0.3, epochs=20_000, checkpoint_every=200),
}
_FULL: dict[str, dict] = {
    "slingshots": dict(p=FULL_P, frac_train=0.5, epochs=5_000, checkpoint_every=5_000),
    "weight_decay": dict(epochs=6_000, checkpoint_every=6_000),
    "more_data": dict(p=FULL_P, epochs=3_000, checkpoint_every=3_000),
    "excluded_loss": dict(p=FULL_P),
}

# What the post states (set beside ours in the report, labelled as the post's).
POST = {
    "slingshots": "slingshots come from float32: with the loss taken in float64 they go away; with minibatches "
                  "they are rarer and smaller",
    "float32_floor": "a float32 train loss floors at about 1.19e-7 (float32's machine epsilon)",
    "weight_decay": "weight decay delays grokking rather than stopping it: less weight decay groks later",
    "more_data": "with 95% of the pairs as training data the train loss has a phase change too, not only the test loss",
    "excluded_loss": "excluded loss as defined fits the frequencies on all data, so it also depends on the test data",
}


def mainline_config(experiment: str, *, full: bool = False, **changes) -> Config:
    """The base config of one experiment (module docstring); ``full``: the post's sizes."""
    if experiment not in _SETTINGS:
        raise ValueError(f"experiment={experiment!r} is not one of {list(EXPERIMENTS)}")
    return Config(**{**_MAINLINE, **_SETTINGS[experiment], **(_FULL[experiment] if full else {}), **changes})


def plan(full: bool = False) -> dict[str, Sweep]:
    """Each experiment's sweep (module docstring); ``full``: the post's sizes, and ``excluded_loss``."""
    sweeps = {
        "slingshots": Sweep(mainline_config("slingshots", full=full),
                            {"loss_dtype": ("float32", "float64"), "batch_size": (0, SLINGSHOT_BATCH)}),
        "weight_decay": Sweep(mainline_config("weight_decay", full=full),
                              {"weight_decay": FULL_WEIGHT_DECAYS if full else WEIGHT_DECAYS}),
        "more_data": Sweep(mainline_config("more_data", full=full), {"seed": (0,)}),
    }
    if full:
        sweeps["excluded_loss"] = Sweep(mainline_config("excluded_loss", full=True), {"seed": (0,)})
    return sweeps


# ----------------------------------------------------------------------------- what the runs show
def experiment_runs(out: str | Path, name: str) -> tuple[Sweep, list[Path]]:
    """The sweep written to ``OUT/<name>`` and its run folders, or a ValueError saying what to run."""
    if name not in EXPERIMENTS:
        raise ValueError(f"{name!r} is not one of the mainline experiments {list(EXPERIMENTS)}")
    return sweeps.experiment_runs(out, name)


def _metrics(folder: Path):
    metrics = runs.read_metrics(Path(folder))
    if metrics is None or metrics.empty:
        raise ValueError(f"{folder} has no metrics.csv yet; train it first")
    return metrics.sort_values("epoch", ignore_index=True)


def run_readout(folder: str | Path) -> dict[str, Any]:
    """One run's settings and milestones: when train and test accuracy reached 0.99, final numbers."""
    cfg = runs.read_config(Path(folder))
    m = _metrics(Path(folder))
    last = m.iloc[-1]
    return {
        "p": cfg.p, "frac_train": cfg.frac_train, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
        "loss_dtype": cfg.loss_dtype, "batch_size": cfg.batch_size, "epochs": int(last["epoch"]),
        "train_acc_epoch": first_epoch_reaching(m, "train_acc"),
        "grok_epoch": first_epoch_reaching(m, "test_acc"),
        "final_train_loss": float(last["train_loss"]), "final_test_loss": float(last["test_loss"]),
        "final_train_acc": float(last["train_acc"]), "final_test_acc": float(last["test_acc"]),
        "min_train_loss": float(m["train_loss"].min()), "elapsed_s": float(last["elapsed_s"]),
    }


def slingshot_readout(folder: str | Path) -> dict[str, Any]:
    """A run's train-loss spikes by :func:`mechgrok.analysis.slingshots.detect_spikes` (its
    default rule), with the run's readout."""
    m = _metrics(Path(folder))
    spikes = slingshots.detect_spikes(m["epoch"].to_numpy(), m["train_loss"].to_numpy())
    return {**run_readout(folder), "n_spikes": len(spikes), "spikes": [s.to_dict() for s in spikes],
            "rule": {"factor": slingshots.SPIKE_FACTOR, "window": slingshots.SPIKE_WINDOW,
                     "floor": slingshots.FLOAT32_RESOLUTION, "low": slingshots.SPIKE_LOW}}


def weight_decay_readout(folder: str | Path) -> dict[str, Any]:
    return run_readout(folder)


def _changes(m, column: str) -> list[dict[str, Any]]:
    return [c.to_dict() for c in phase_changes.detect(m["epoch"].to_numpy(), m[column].to_numpy())]


def more_data_readout(folder: str | Path) -> dict[str, Any]:
    """A run's phase changes in train and in test loss, by :func:`mechgrok.analysis.phase_changes.detect`
    (its default rule), those that coincide (:func:`coinciding`), and the run's readout."""
    m = _metrics(Path(folder))
    train, test = _changes(m, "train_loss"), _changes(m, "test_loss")
    return {**run_readout(folder), "train_loss_phase_changes": train, "test_loss_phase_changes": test,
            "coinciding_phase_changes": coinciding(train, test)}


def excluded_loss_readout(folder: str | Path) -> dict[str, Any]:
    """The paper's excluded loss and the train-only fit at every checkpoint (progress measures)."""
    prog = progress.load_progress(folder)
    t = prog.measures.sort_values("epoch")
    cols = ["epoch", "train_loss", "test_loss", "excluded_loss", "excluded_loss_train_fit", "restricted_loss"]
    curve = {c: [int(v) if c == "epoch" else float(v) for v in t[c]] for c in cols}
    lo_paper, lo_train = int(t.loc[t["excluded_loss"].idxmin(), "epoch"]), int(t.loc[t["excluded_loss_train_fit"].idxmin(), "epoch"])
    return {**run_readout(folder), "key_frequencies": list(prog.key_frequencies), "curve": curve,
            "excluded_loss_min_epoch": lo_paper, "excluded_loss_train_fit_min_epoch": lo_train,
            "phase_boundaries": dict(prog.phases.boundaries)}


def summarise(out: str | Path) -> dict[str, Any]:
    """JSON-safe numbers per experiment of ``OUT/<experiment>`` (module docstring)."""
    out = Path(out)
    summary: dict[str, Any] = {}
    sweep, folders = experiment_runs(out, "slingshots")
    summary["slingshots"] = {"runs": {run.name: slingshot_readout(f) for run, f in zip(sweep.runs, folders)}}
    sweep, folders = experiment_runs(out, "weight_decay")
    summary["weight_decay"] = {"runs": {repr(float(run.config.weight_decay)): weight_decay_readout(f)
                                        for run, f in zip(sweep.runs, folders)}}
    sweep, folders = experiment_runs(out, "more_data")
    summary["more_data"] = {"runs": {run.name: more_data_readout(f) for run, f in zip(sweep.runs, folders)},
                            "contrast": more_data_readout(contrast_run(out))}
    folder = excluded_loss_run(out)
    summary["excluded_loss"] = {"runs": {str(folder.relative_to(out)): excluded_loss_readout(folder)}}
    summary["mainline_wall_s"] = {name: max((r["elapsed_s"] for r in part["runs"].values()), default=0.0)
                                  for name, part in summary.items()}
    return summary


def contrast_run(out: str | Path) -> Path:
    """The limited-data run the more-data figure sets beside the 95% run: the slingshots
    experiment's float64 full-batch run (the same model and optimiser, 70% of the pairs)."""
    sweep, folders = experiment_runs(out, "slingshots")
    for run, folder in zip(sweep.runs, folders):
        if run.config.loss_dtype == "float64" and run.config.batch_size == 0:
            return folder
    raise ValueError(f"{Path(out) / 'slingshots'} has no float64 full-batch run; train plan()['slingshots'] into it")


def excluded_loss_run(out: str | Path) -> Path:
    """The run whose excluded loss is read: ``OUT/excluded_loss``'s (``plan(full=True)``) where it
    was trained, else the slingshots experiment's float64 full-batch run (:func:`contrast_run`)."""
    if (Path(out) / "excluded_loss" / MANIFEST_FILE).exists():
        return experiment_runs(out, "excluded_loss")[1][0]
    return contrast_run(out)


def _grokked_later(earlier_wd: dict, later_wd: dict) -> bool:
    """The lower weight decay's run grokked strictly later than the higher one's (or never)."""
    a, b = earlier_wd["grok_epoch"], later_wd["grok_epoch"]
    return b is not None and (a is None or a > b)


def claims(summary: dict[str, Any]) -> dict[str, bool]:
    """Each claim of the module docstring, decided on :func:`summarise`'s numbers."""
    sling = list(summary["slingshots"]["runs"].values())
    full_batch = [r for r in sling if r["batch_size"] == 0]
    f32 = [r for r in full_batch if r["loss_dtype"] == "float32"]
    f64 = [r for r in full_batch if r["loss_dtype"] == "float64"]
    wd = sorted(summary["weight_decay"]["runs"].values(), key=lambda r: r["weight_decay"])
    grokked = [r for r in wd if r["grok_epoch"] is not None]
    ordered = all(_grokked_later(lo, hi) for i, lo in enumerate(wd) for hi in wd[i + 1:] if hi["grok_epoch"] is not None)
    more = list(summary["more_data"]["runs"].values())
    return {
        "float32_slingshots": bool(f32 and f64) and all(r["n_spikes"] >= 1 for r in f32) and all(r["n_spikes"] == 0 for r in f64),
        "lower_weight_decay_groks_later": len(grokked) >= 2 and ordered,
        "more_data_train_loss_phase_change": bool(more) and all(len(r["coinciding_phase_changes"]) >= 1 for r in more),
    }


# ----------------------------------------------------------------------------- figures
def figure_inputs(out: str | Path) -> dict[str, Any]:
    """{figure name: what its builder takes}: the run folders of each experiment (``excluded_loss``
    takes its one run folder), in :data:`mechgrok.report.phase_changes.mainline.MAINLINE_FIGURES`' order."""
    return {
        "slingshots": experiment_runs(out, "slingshots")[1],
        "weight_decay": experiment_runs(out, "weight_decay")[1],
        "more_data": [*experiment_runs(out, "more_data")[1], contrast_run(out)],
        "excluded_loss": excluded_loss_run(out),
    }


def build_figures(out: str | Path) -> list:
    """Every figure of the mainline part (``FigureOutput`` each), from the experiments' run folders."""
    inputs = figure_inputs(out)
    return [builder(inputs[name]) for name, builder in MAINLINE_FIGURES.items()]


def figures(out: str | Path, summary: dict[str, Any]) -> list:
    """The part's figures, for the pipeline (:func:`build_figures`; the runs carry what they need)."""
    return build_figures(out)


# Each claim's id (the keys of :func:`claims`) and what it says, for the report's table.
CLAIMS = {
    "float32_slingshots": "the mainline model's float32 loss shows slingshot spikes; the same run in float64 shows none",
    "lower_weight_decay_groks_later": "lower weight decay delays grokking rather than stopping it",
    "more_data_train_loss_phase_change": "with 95% of the pairs, train loss changes phase too, together with test loss",
}
