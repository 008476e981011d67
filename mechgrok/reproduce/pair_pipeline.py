"""The whole PAIR reproduction (Pearce et al., 2023) in one call: ``mechgrok reproduce pair2023``.

1. Train every experiment as a sweep (:mod:`mechgrok.sweeps`) into ``OUT/<experiment>/``,
   reusing finished runs and resuming partial ones; the process pool trains on every CPU:

   ===================  ==========================================================================
   experiment           runs (settings: :mod:`mechgrok.reproduce.pair2023`)
   ===================  ==========================================================================
   main                 the tied a+b mod 67 MLP, seeds 0-2, 50k steps
   variants             the unfactored and the two collapsed variants, seed 0, 50k steps
   no_weight_decay      the main model without weight decay, seed 0, 10k steps
   circle               the constructed 5-neuron circle, seeds 0-9, 15k steps
   parity               sparse parity with L1 decay, λ in 1e-5, 1e-4, 1e-3, 3e-3, 3k steps
   regimes              the regime sweep: by default the slice train 1,000 × hidden 16 × all five
                        weight decays × 9 seeds (45 models); ``full=True``: all 1,125
   ===================  ==========================================================================

2. Read each experiment's numbers from its run folders (:func:`summarise`): grokking steps,
   frequency groups and their logit waves, the circle's success rate and geometry, the parity
   model's distractor weights, the regime of every sweep model and the regime table.
3. Build the figures (:mod:`mechgrok.report.pair2023`) and write ``OUT/report.html`` (one
   self-contained page) and ``OUT/summary.json``.

Nothing here prints; pass ``on_step`` to hear about each step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from mechgrok import runs
from mechgrok.analysis import circuits, constructions, parity, regimes, waves
from mechgrok.reproduce import pair2023 as P
from mechgrok.report import PAIR_FIGURE_NAMES
from mechgrok.report import pair2023 as figures
from mechgrok.report.figures import GROKKED_TEST_ACCURACY, first_epoch_reaching
from mechgrok.report.html import SUMMARY_FILE
from mechgrok.sweeps import MANIFEST_FILE, Sweep, read_manifest, run_sweep

__all__ = ["EXPERIMENTS", "DEFAULT_OUT", "GROKKED", "plan", "train_all", "summarise", "make_figure", "build_figures", "build_report",
           "reproduce_pair", "PairResult"]

DEFAULT_OUT = "runs/pair2023"
EXPERIMENTS = ("main", "variants", "no_weight_decay", "circle", "parity", "regimes")
GROKKED = GROKKED_TEST_ACCURACY  # accuracy that counts as reached: 0.99, the Nanda report's rule too
MAIN_SEEDS = (0, 1, 2)
CIRCLE_SEEDS = tuple(range(10))
PARITY_L1 = (1e-5, 1e-4, 1e-3, 3e-3)


def plan(full: bool = False) -> dict[str, Sweep]:
    """Each experiment's sweep (module docstring); ``full`` runs the whole 1,125-model regime grid."""
    return {
        "main": Sweep(P.main_config(), {"seed": MAIN_SEEDS}),
        "variants": Sweep(P.main_config(), {"family": P.VARIANT_FAMILIES}),
        "no_weight_decay": Sweep(P.no_weight_decay_config(epochs=10_000), {"seed": (0,)}),
        "circle": Sweep(P.circle_config(), {"seed": CIRCLE_SEEDS}),
        "parity": Sweep(P.parity_config(), {"weight_decay": PARITY_L1}),
        "regimes": Sweep(P.sweep_base(), P.SWEEP_AXES if full else P.SLICE_AXES),
    }


def train_all(out: str | Path, sweeps: dict[str, Sweep], *, executor: str = "process", workers: int | None = None,
              device: str = "cpu", threads: int | None = None, progress: bool = False,
              on_step: Callable[[str], None] | None = None) -> dict[str, pd.DataFrame]:
    """Train (or reuse) every experiment's sweep into ``OUT/<name>``; each one's results table."""
    say = on_step or (lambda message: None)
    results = {}
    for name, sweep in sweeps.items():
        t0 = time.perf_counter()
        results[name] = run_sweep(sweep, Path(out) / name, executor=executor, workers=workers, device=device,
                                  threads=threads, progress=progress)
        say(f"{name}: {len(sweep)} runs ready in {time.perf_counter() - t0:.0f} s")
    return results


# ----------------------------------------------------------------------------- what the runs show
def run_curve(folder: str | Path) -> dict[str, Any]:
    """One run's milestones: when train and test accuracy reached 0.99, final and best numbers."""
    metrics = runs.read_metrics(Path(folder))
    if metrics is None or metrics.empty:
        raise ValueError(f"{folder} has no metrics.csv yet; train it first")
    last = metrics.iloc[-1]
    best = metrics.loc[metrics["test_acc"].idxmax()]
    return {
        "train_acc_step": first_epoch_reaching(metrics, "train_acc"),
        "test_acc_step": first_epoch_reaching(metrics, "test_acc"),
        "final_step": int(last["epoch"]),
        "final_train_loss": float(last["train_loss"]),
        "final_test_loss": float(last["test_loss"]),
        "final_train_acc": float(last["train_acc"]),
        "final_test_acc": float(last["test_acc"]),
        "max_train_acc": float(metrics["train_acc"].max()),
        "peak_test_acc": float(best["test_acc"]),
        "peak_test_acc_step": int(best["epoch"]),
        "elapsed_s": float(last["elapsed_s"]),
    }


def frequency_readout(folder: str | Path) -> dict[str, Any]:
    """A trained modular MLP's frequency groups, each group's share of neurons and its logit wave fit."""
    run = runs.load_run(folder)
    model = run.model
    p = run.config.p
    in_coeffs = waves.neuron_dft(figures.input_weights(model).double())
    out_coeffs = waves.neuron_dft(figures.output_weights(model).double())
    freqs = waves.neuron_frequencies(in_coeffs, out_coeffs)
    groups = waves.frequency_groups(freqs)
    acts = circuits.gather_activations(model)
    contributions = waves.group_logits(acts.neurons.double(), acts.W_L.double(), groups)
    fits = {k: waves.wave_fit(c, k, p) for k, c in contributions.items()}
    energy = in_coeffs.pow(2).sum(-1)  # [neuron, freq]
    own = energy[torch.arange(len(freqs)), freqs - 1] / energy.sum(-1)
    return {
        "frequencies": sorted(groups),
        "group_sizes": {int(k): len(v) for k, v in groups.items()},
        "own_frequency_energy": float(own.mean()),  # mean over neurons
        "own_frequency_energy_min": float(own.min()),
        "wave_r2": {int(k): float(f.r2) for k, f in fits.items()},
        "wave_r2_centred": {int(k): float(f.r2_centred) for k, f in fits.items()},
    }


def circle_readout(folder: str | Path) -> dict[str, Any]:
    """A trained circle's accuracy and geometry, and the geometry of its initial weights."""
    run = runs.load_run(folder)
    final = constructions.circle_geometry(run.model.mlp.W_in.detach().double(), run.model.mlp.W_out.detach().double())
    first = run.load_epoch(run.checkpoint_epochs[0])
    initial = constructions.circle_geometry(first.mlp.W_in.detach().double(), first.mlp.W_out.detach().double())
    return {**run_curve(folder), "final": final.summary().iloc[0].to_dict(), "initial": initial.summary().iloc[0].to_dict()}


def parity_readout(folder: str | Path) -> dict[str, Any]:
    run = runs.load_run(folder)
    W_in = run.model.mlp.W_in.detach().double()
    bits = parity.distractor_weight(W_in, run.config.parity_bits)
    metrics = runs.read_metrics(Path(folder))
    rise = parity.loss_rise_before_drop(torch.tensor(metrics["train_loss"].to_numpy()),
                                        torch.tensor(metrics["test_loss"].to_numpy()),
                                        steps=torch.tensor(metrics["epoch"].to_numpy()))
    return {**run_curve(folder), "weight_decay": run.config.weight_decay,
            "parity_share": parity.parity_weight_share(W_in, run.config.parity_bits),
            "parity_mean_abs": float(bits.parity), "distractor_mean_abs": float(bits.distractor),
            "loss_rise": None if rise is None else {k: (float(v) if v is not None else None) for k, v in vars(rise).items()}}


def regime_rows(sweep: Sweep, out: str | Path) -> pd.DataFrame:
    """Every sweep model's regime, from its logged losses (the explorable's rules, in order)."""
    rows = []
    for run in sweep.runs:
        metrics = runs.read_metrics(Path(out) / run.name)
        evidence = regimes.regime_evidence(metrics["train_loss"].to_numpy(), metrics["test_loss"].to_numpy())
        rows.append({**dict(run.values), "regime": evidence.regime, "min_train_loss": evidence.min_train_loss,
                     "min_test_loss": evidence.min_test_loss, "max_ratio": evidence.max_ratio})
    return pd.DataFrame(rows)


def regime_order_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Per (n_train, d_mlp) row of cells: do the dominant regimes follow the explorable's order
    memorize -> grok -> generalize -> fail as weight decay grows (never stepping back)?"""
    order = {r: i for i, r in enumerate(P.EXPLORABLE["regime_order_by_weight_decay"])}
    out = []
    for (n_train, d_mlp), cells in table.groupby(["n_train", "d_mlp"]):
        cells = cells.sort_values("weight_decay")
        ranks = [order[r] for r in cells["dominant"]]
        out.append({"n_train": n_train, "d_mlp": d_mlp, "dominant_by_weight_decay": " → ".join(cells["dominant"]),
                    "follows_order": all(a <= b for a, b in zip(ranks, ranks[1:]))})
    return pd.DataFrame(out)


def summarise(out: str | Path, sweeps: dict[str, Sweep]) -> dict[str, Any]:
    """The numbers the report states, each read from the run folders."""
    out = Path(out)
    folders = {name: [out / name / run.name for run in sweep.runs] for name, sweep in sweeps.items()}
    main = {}
    for run, folder in zip(sweeps["main"].runs, folders["main"]):
        main[int(dict(run.values)["seed"])] = {**run_curve(folder), **frequency_readout(folder)}
    variants = {"mlp": run_curve(folders["main"][0])}
    for run, folder in zip(sweeps["variants"].runs, folders["variants"]):
        variants[dict(run.values)["family"]] = run_curve(folder)
    circle = {int(dict(run.values)["seed"]): circle_readout(folder)
              for run, folder in zip(sweeps["circle"].runs, folders["circle"])}
    solved = [s for s, c in circle.items() if c["final_test_acc"] >= 1.0]
    parity_runs = {float(dict(run.values)["weight_decay"]): parity_readout(folder)
                   for run, folder in zip(sweeps["parity"].runs, folders["parity"])}
    rows = regime_rows(sweeps["regimes"], out / "regimes")
    table = regimes.regime_table(rows, ["n_train", "d_mlp", "weight_decay"])
    return {
        "main": main,
        "main_grokked": sorted(s for s, m in main.items() if m["test_acc_step"] is not None),
        "variants": variants,
        "no_weight_decay": run_curve(folders["no_weight_decay"][0]),
        "circle": circle,
        "circle_solved": solved,
        "parity": parity_runs,
        "regime_rows": rows,
        "regime_table": table,
        "regime_counts": rows["regime"].value_counts().reindex(regimes.REGIMES, fill_value=0).to_dict(),
        "regime_order": regime_order_agreement(table),
    }


def _experiment(out: Path, name: str) -> tuple[Sweep, list[Path]]:
    folder = out / name
    if not (folder / MANIFEST_FILE).exists():
        raise ValueError(f"{folder} holds no {name} experiment yet; run `mechgrok reproduce pair2023 --out {out}` first")
    sweep = read_manifest(folder)
    return sweep, [folder / run.name for run in sweep.runs]


def shown_main_run(out: str | Path) -> Path:
    """The main seed the single-model figures read: the first that reached test accuracy 0.99, else the first."""
    _, folders = _experiment(Path(out), "main")
    for folder in folders:
        if run_curve(folder)["test_acc_step"] is not None:
            return folder
    return folders[0]


def make_figure(name: str, out: str | Path):
    """One figure of :data:`mechgrok.report.PAIR_FIGURE_NAMES`, from the reproduction folder ``out``."""
    out = Path(out)
    if name == "loss_curves":
        return figures.loss_curves(_experiment(out, "main")[1])
    if name in ("neuron_waves", "stars", "logit_waves"):
        return getattr(figures, name)(shown_main_run(out))
    if name == "parity_weights":
        sweep, folders = _experiment(out, "parity")
        by_decay = {run.config.weight_decay: folder for run, folder in zip(sweep.runs, folders)}
        return figures.parity_weights(by_decay.get(1e-4, folders[0]))  # the explorable's middle λ, if run
    if name == "regime_diagram":
        sweep, _ = _experiment(out, "regimes")
        return figures.regime_diagram(regime_rows(sweep, out / "regimes"))
    if name == "circle":
        return figures.circle(_experiment(out, "circle")[1])
    if name == "constructions":
        return figures.constructions()
    if name == "variants":
        return figures.variants([_experiment(out, "main")[1][0], *_experiment(out, "variants")[1]])
    if name == "no_weight_decay":
        return figures.no_weight_decay(_experiment(out, "no_weight_decay")[1][0])
    raise ValueError(f"unknown PAIR figure {name!r}; choose one of {list(PAIR_FIGURE_NAMES)}")


def build_figures(out: str | Path) -> list:
    """Every figure of :data:`mechgrok.report.PAIR_FIGURE_NAMES`, from the experiments' run folders."""
    return [make_figure(name, out) for name in PAIR_FIGURE_NAMES]


def _step(step: int | None) -> str:
    """A step for a table cell: 27,800, or "never" (a column mixing None and ints prints as floats)."""
    return "never" if step is None else f"{step:,}"


def summary_tables(summary: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The report's tables: the main seeds, the variants, the circle seeds, the parity runs, the regimes."""
    main = pd.DataFrame([{"seed": seed, "train acc 0.99 at": _step(m["train_acc_step"]), "test acc 0.99 at": _step(m["test_acc_step"]),
                          "final test acc": m["final_test_acc"], "frequencies": " ".join(map(str, m["frequencies"])),
                          "group sizes": " ".join(f"{k}:{n}" for k, n in m["group_sizes"].items()),
                          "wave R² (min)": min(m["wave_r2"].values()), "train time (s)": m["elapsed_s"]}
                         for seed, m in summary["main"].items()])
    variants = pd.DataFrame([{"family": f, "test acc 0.99 at": _step(v["test_acc_step"]), "max train acc": v["max_train_acc"],
                              "final train acc": v["final_train_acc"], "final test acc": v["final_test_acc"],
                              "peak test acc": v["peak_test_acc"]} for f, v in summary["variants"].items()])
    circle = pd.DataFrame([{"seed": seed, "solved": c["final_test_acc"] >= 1.0, "final test acc": c["final_test_acc"],
                            **{f"final {k}": v for k, v in c["final"].items()},
                            **{f"initial {k}": v for k, v in c["initial"].items()}} for seed, c in summary["circle"].items()])
    parity_runs = pd.DataFrame([{"λ (L1)": lam, "test acc 0.99 at": _step(r["test_acc_step"]), "final test acc": r["final_test_acc"],
                                 "parity-bit share of Σw²": r["parity_share"], "parity-bit mean |w|": r["parity_mean_abs"],
                                 "distractor mean |w|": r["distractor_mean_abs"]} for lam, r in summary["parity"].items()])
    counts = pd.DataFrame([summary["regime_counts"]])
    return {"main MLP, per seed": main, "variants": variants, "circle, per seed (initial = step 0)": circle,
            "sparse parity with L1 decay": parity_runs, "regime counts": counts, "regime table": summary["regime_table"],
            "regime order along weight decay (explorable: memorize → grok → generalize → fail)": summary["regime_order"]}


def build_report(out: str | Path, sweeps: dict[str, Sweep], summary: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``OUT/report.html`` and ``OUT/summary.json``; return their paths."""
    out = Path(out)
    report = figures.write_pair_report(out, build_figures(out), summary_tables(summary),
                                       {k: v for k, v in summary.items() if k != "regime_rows"})
    return report, out / SUMMARY_FILE


@dataclass
class PairResult:
    out: Path
    summary: dict[str, Any]
    report: Path | None
    summary_path: Path | None
    seconds: dict[str, float]


def reproduce_pair(out: str | Path = DEFAULT_OUT, *, full: bool = False, executor: str = "process",
                   workers: int | None = None, device: str = "cpu", threads: int | None = None,
                   progress: bool = False, on_step: Callable[[str], None] | None = None,
                   sweeps: dict[str, Sweep] | None = None) -> PairResult:
    """Train every experiment (or reuse it), summarise the runs, and write the report (module docstring).

    ``sweeps`` replaces :func:`plan`'s (the same experiment names; the tests pass tiny ones)."""
    sweeps = plan(full) if sweeps is None else sweeps
    if sorted(sweeps) != sorted(EXPERIMENTS):
        raise ValueError(f"sweeps must name the experiments {list(EXPERIMENTS)}, not {sorted(sweeps)}")
    out = Path(out)
    t0 = time.perf_counter()
    train_all(out, sweeps, executor=executor, workers=workers, device=device, threads=threads,
              progress=progress, on_step=on_step)
    t_train = time.perf_counter() - t0
    summary = summarise(out, sweeps)
    report, summary_path = build_report(out, sweeps, summary)
    seconds = {"train": t_train, "total": time.perf_counter() - t0}
    return PairResult(out, summary, report, summary_path, seconds)
