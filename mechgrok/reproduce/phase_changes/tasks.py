"""The post's sequence tasks as experiments: 5-digit addition, repeated subsequences, max of a list,
and a search for the crossover train size between memorising and generalising.

========================  =================================================================
experiment                runs (default sizes fit the report's budget on 2 cores; ``full``:
                          the post's own)
========================  =================================================================
addition                  5-digit addition (``n_digits``), fresh batches of 128, 1L transformer
                          d_model 128 (full: 512); each answer digit's loss is a component
induction                 repeated subsequences, fresh batches, 2L attention-only, d_model 48,
                          4 heads; checkpoints often enough to follow each head's scores
max_list                  max of a list, fresh batches, 1L attention-only, d_model 48; each
                          skip trigram's loss is a component
crossover                 max of a list on a fixed train set of n_train lists, searched over
                          n_train for the crossover (:func:`crossover_search`); full: 5-digit
                          addition at d_model 128 (the post: 700 examples at d_model 512)
========================  =================================================================

Every run uses the post's optimiser: AdamW, weight decay 1, betas (0.9, 0.98), full-precision
(float64) loss, unless its settings say otherwise (``*_config`` below). :func:`summarise` reads
what the figures and claims need from the run folders; :func:`claims` decides each claim of
the post by the documented rules of :mod:`mechgrok.analysis.phase_changes` and
:mod:`mechgrok.analysis.crossover`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mechgrok import runs
from mechgrok.analysis import crossover, phase_changes
from mechgrok.analysis.induction import score_curves
from mechgrok.config import Config
from mechgrok.sweeps import Sweep, experiment_runs
from mechgrok.training.sequence import component_curves

# The addition run's phase-change window: 5% of its steps, not the rule's default 10%, because the
# carry digit and the first digit change within the first tenth of the run.
ADDITION_WINDOW = 0.05

__all__ = ["addition_config", "induction_config", "max_list_config", "crossover_config", "CROSSOVER_SIZES", "plan",
           "next_sizes", "crossover_search", "summarise", "claims", "figures", "CLAIMS", "ADDITION_WINDOW"]

_SEQ = dict(family="sequence_transformer", lr=1e-3, weight_decay=1.0, beta1=0.9, beta2=0.98, warmup_steps=10,
            loss_dtype="float64", init="paper", seed=0)

def addition_config(*, n_digits: int = 5, full: bool = False, **changes) -> Config:
    """n-digit addition on fresh batches (the post's infinite-data setting); full: d_model 512."""
    d = 512 if full else 128
    return Config(**{**_SEQ, "task": "addition", "n_digits": n_digits, "d_model": d, "n_heads": 4, "d_mlp": 4 * d,
                     "data": "fresh", "batch_size": 128, "n_test": 1000, "lr": 3e-3, "epochs": 3000 if full else 2000,
                     "eval_every": 10, "checkpoint_every": 500, **changes})


def induction_config(*, full: bool = False, **changes) -> Config:
    """Repeated subsequences on fresh batches: 2L attention-only, d_model 48, 4 heads."""
    return Config(**{**_SEQ, "task": "induction", "seq_len": 20, "n_symbols": 10, "repeat_len": 5, "n_layers": 2,
                     "attn_only": True, "d_model": 48, "n_heads": 4, "data": "fresh", "batch_size": 128, "n_test": 500,
                     "lr": 1e-2, "weight_decay": 0.1, "epochs": 2000 if full else 600, "eval_every": 5,
                     "checkpoint_every": 10, **changes})


def max_list_config(*, full: bool = False, **changes) -> Config:
    """Max of a list (one special entry among 10..19 in 10 entries) on fresh batches: 1L attention-only."""
    return Config(**{**_SEQ, "task": "max_list", "seq_len": 10, "n_symbols": 10, "attn_only": True, "d_model": 48,
                     "n_heads": 4, "data": "fresh", "batch_size": 64, "n_test": 1000, "epochs": 1000 if full else 400,
                     "eval_every": 5, "checkpoint_every": 100, **changes})


def crossover_config(*, full: bool = False, **changes) -> Config:
    """The crossover search's base run (n_train is the searched axis): max of a list on a fixed
    train set, full batch; full: 5-digit addition at d_model 128."""
    if full:
        return addition_config(full=False, **{"data": "fixed", "batch_size": 0, "lr": 1e-3, "epochs": 10_000,
                                              "eval_every": 20, "checkpoint_every": 1000, **changes})
    return max_list_config(**{"data": "fixed", "batch_size": 0, "epochs": 2000, "eval_every": 10, "checkpoint_every": 1000,
                              **changes})


# The search's first round: train sizes spread geometrically over the range it searches.
CROSSOVER_SIZES = {False: (10, 30, 100, 300), True: (100, 300, 1000, 3000)}


def plan(full: bool = False, *, n_digits: int = 5) -> dict[str, Sweep]:
    """Each experiment's sweep (module docstring). The crossover search's later rounds are planned
    from the first round's results (:func:`crossover_search`); this is its first round."""
    return {
        "addition": Sweep(addition_config(n_digits=n_digits, full=full), {"seed": (0,)}),
        "induction": Sweep(induction_config(full=full), {"seed": (0,)}),
        "max_list": Sweep(max_list_config(full=full), {"seed": (0,)}),
        "crossover": Sweep(crossover_config(full=full), {"n_train": CROSSOVER_SIZES[full]}),
    }


# ----------------------------------------------------------------------------- the crossover search
def _regimes(folder: Path) -> pd.DataFrame:
    rows = []
    for config_file in sorted(folder.glob("**/" + runs.CONFIG_FILE)):
        run_dir = config_file.parent
        metrics = runs.read_metrics(run_dir)
        if metrics is None or metrics.empty:
            continue
        cfg = runs.read_config(run_dir)
        if int(metrics["epoch"].iloc[-1]) < cfg.epochs:
            continue  # unfinished: its regime is not known yet
        rows.append({"n_train": cfg.n_train, **crossover.regime_row(metrics), "run": str(run_dir)})
    return pd.DataFrame(rows, columns=["n_train", "regime", "train_step", "test_step", "final_train_acc",
                                       "final_test_acc", "steps", "run"]).sort_values("n_train", ignore_index=True)


def next_sizes(table: pd.DataFrame, per_round: int = 2) -> list[int]:
    """The train sizes the next round tries: ``per_round`` sizes spread geometrically inside the
    widest gap between neighbouring sizes whose regimes differ, where no grokking run lies yet;
    none once the crossover is bracketed (:func:`mechgrok.analysis.crossover.bracket`)."""
    if table.empty or crossover.bracket(table)["bracketed"]:
        return []
    rows = table.sort_values("n_train").reset_index(drop=True)
    gaps = []
    for i in range(len(rows) - 1):
        lo, hi = int(rows.n_train[i]), int(rows.n_train[i + 1])
        if rows.regime[i] != rows.regime[i + 1] and hi - lo > 1:
            gaps.append((math.log(hi / lo), lo, hi))
    if not gaps:
        return []
    _, lo, hi = max(gaps)
    sizes = np.unique(np.round(np.geomspace(lo, hi, per_round + 2)[1:-1]).astype(int))
    return [int(n) for n in sizes if lo < n < hi]


def crossover_search(out: str | Path, base: Config, sizes: Sequence[int], train: Callable[[Sweep, Path], Any], *,
                     rounds: int = 2, per_round: int = 2) -> pd.DataFrame:
    """Search train sizes for the crossover: train ``sizes`` (round 0) into ``OUT/round0``, classify
    every run (memorise, grok, generalise, fail), then up to ``rounds`` more rounds of
    ``per_round`` sizes each inside the widest gap between differing regimes (:func:`next_sizes`),
    until a grokking size is bracketed. ``train(sweep, folder)`` trains a sweep (e.g.
    :func:`mechgrok.sweeps.run_sweep`). Returns one row per run (:func:`_regimes`); re-running
    reuses every finished run."""
    out = Path(out)
    todo = [int(n) for n in sizes]
    for r in range(rounds + 1):
        if not todo:
            break
        train(Sweep(base, {"n_train": tuple(todo)}), out / f"round{r}")
        todo = next_sizes(_regimes(out), per_round)
    return _regimes(out)


# ----------------------------------------------------------------------------- what the runs show
def _one_run(out: Path, name: str) -> Path:
    """The (first) run folder of the experiment ``name`` (its sweep's manifest says which)."""
    return experiment_runs(out, name)[1][0]


def _changes(curves: dict[str, tuple[np.ndarray, np.ndarray]], **rule) -> pd.DataFrame:
    return phase_changes.table(curves, **rule)


def summarise(out: str | Path) -> dict[str, Any]:
    """The numbers of each experiment present under ``OUT`` (an absent experiment is left out)."""
    out = Path(out)
    summary: dict[str, Any] = {}
    if (out / "addition").exists():
        run_dir = _one_run(out, "addition")
        cfg = runs.read_config(run_dir)
        table = _changes(component_curves(run_dir), window=ADDITION_WINDOW * cfg.epochs)
        found = table.dropna(subset=["step"])
        summary["addition"] = {
            "run": str(run_dir), "n_digits": cfg.n_digits, "steps": cfg.epochs,
            "phase_changes": table.to_dict("records"),
            "digits_with_phase_change": sorted(found.component.unique().tolist()),
            "order": found.sort_values("step").component.tolist(),
            "final": _final(run_dir),
        }
    if (out / "max_list").exists():
        run_dir = _one_run(out, "max_list")
        table = _changes(component_curves(run_dir))
        steps = table.step.dropna()
        summary["max_list"] = {
            "run": str(run_dir), "phase_changes": table.to_dict("records"),
            "trigrams": len(table.component.unique()), "trigrams_with_phase_change": int(table.dropna(subset=["step"]).component.nunique()),
            "first_step": None if steps.empty else int(steps.min()), "last_step": None if steps.empty else int(steps.max()),
            "steps": runs.read_config(run_dir).epochs, "final": _final(run_dir),
        }
    if (out / "induction").exists():
        run_dir = _one_run(out, "induction")
        summary["induction"] = _induction_summary(run_dir)
    if (out / "crossover").exists():
        table = _regimes(out / "crossover")
        summary["crossover"] = {"runs": table.drop(columns="run").to_dict("records"), **crossover.bracket(table)}
    return summary


def _final(run_dir: Path) -> dict[str, float]:
    last = runs.read_metrics(run_dir).iloc[-1]
    return {k: float(last[k]) for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")}


def _induction_summary(run_dir: Path) -> dict[str, Any]:
    metrics = runs.read_metrics(run_dir)
    loss_changes = phase_changes.detect(metrics.epoch.to_numpy(float), metrics.test_loss.to_numpy(float))
    loss_change = phase_changes.largest(loss_changes)
    scores = score_curves(run_dir)
    # the induction head: of the heads after layer 0 (an induction head reads a previous-token head's
    # output), the one with the highest mean repeat-induction score over the last quarter of the run
    late = scores[scores.epoch >= scores.epoch.max() * 0.75]
    later = late[late.layer >= 1] if (late.layer >= 1).any() else late
    mean = later.groupby(["layer", "head"]).repeat_induction.mean()
    layer, head_index = mean.idxmax()
    final = scores[scores.epoch == scores.epoch.max()]
    best = final[(final.layer == layer) & (final["head"] == head_index)].iloc[0]
    prev = final[final.layer < layer]
    prev_best = prev.loc[prev.previous_token.idxmax()] if not prev.empty else None
    head = scores[(scores.layer == layer) & (scores["head"] == head_index)].sort_values("epoch")
    # a score jump: the rule on the score as it is (a rise of MIN_RISE within the window, 2x the pace before)
    x, y = head.epoch.to_numpy(float), head.repeat_induction.to_numpy(float)
    jump = phase_changes.largest(phase_changes.detect(x, y, log=False, rising=True))
    during = None
    if loss_change is not None:  # the head's score across the loss's phase-change window
        during = {"start": loss_change.start, "end": loss_change.end, "before": float(np.interp(loss_change.start, x, y)),
                  "after": float(np.interp(loss_change.end, x, y))}
    return {
        "run": str(run_dir), "steps": int(metrics.epoch.iloc[-1]), "final": _final(run_dir),
        "loss_phase_change": None if loss_change is None else loss_change.to_dict(),
        "induction_head": {"layer": int(layer), "head": int(head_index), "repeat_induction": float(best.repeat_induction),
                           "induction": float(best.induction), "late_mean_repeat_induction": float(mean.max())},
        "previous_token_head": None if prev_best is None else {
            "layer": int(prev_best.layer), "head": int(prev_best["head"]), "previous_token": float(prev_best.previous_token)},
        "score_jump": None if jump is None else jump.to_dict(),
        "score_during_loss_change": during,
    }


# Each claim's id (the keys of :func:`claims`) and what it says, for the report's table.
CLAIMS = {
    "addition_digit_phase_changes": "5-digit addition on fresh data: a separate phase change for at least 4 answer digits",
    "induction_score_jumps_with_loss": "repeated subsequences: the induction head's score jumps with the loss's phase change",
    "max_list_trigram_phase_changes": "max of a list: every skip trigram has its own phase change",
    "crossover_bracketed": "the automatic search brackets a train size that groks (memorise below, generalise above)",
}


def figures(out: str | Path, summary: dict[str, Any]) -> list:
    """The part's figures (:mod:`mechgrok.report.phase_changes.tasks`)."""
    from mechgrok.report.phase_changes import tasks as figures_module

    return figures_module.figures(Path(out), summary)


def claims(summary: dict[str, Any]) -> dict[str, bool]:
    """Each claim of the post on these runs, decided by the rules (None-safe: a missing experiment is False)."""
    out = {}
    if "addition" in summary:
        out["addition_digit_phase_changes"] = len(summary["addition"]["digits_with_phase_change"]) >= 4
    if "induction" in summary:
        # the loss changes phase, the induction head's score jumps, and the two windows overlap
        s = summary["induction"]
        jump, drop = s["score_jump"], s["loss_phase_change"]
        out["induction_score_jumps_with_loss"] = bool(
            jump and drop and jump["start"] <= drop["end"] and drop["start"] <= jump["end"])
    if "max_list" in summary:
        s = summary["max_list"]
        out["max_list_trigram_phase_changes"] = s["trigrams_with_phase_change"] == s["trigrams"]
    if "crossover" in summary:
        out["crossover_bracketed"] = bool(summary["crossover"]["bracketed"])
    return out
