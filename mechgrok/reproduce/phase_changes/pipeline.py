"""The Alignment Forum post's reproduction in one call: ``mechgrok reproduce phase-changes``.

1. Plan every part's experiments (:data:`PARTS`: the sequence tasks, the mainline model's
   slingshots / weight decay / more data / excluded loss, the 2-layer MLP), each a sweep.
2. Train them into ``OUT/<experiment>/`` (reusing finished runs, resuming partial ones): a
   pool of ``workers`` single-thread processes (default: every CPU) takes whole experiments,
   longest first, so both cores of a 2-core machine stay busy; ``executor='inline'`` trains
   them one after another in this process. The crossover search trains round by round
   (:func:`mechgrok.reproduce.phase_changes.tasks.crossover_search`).
3. Summarise each part from its run folders, decide each claim by its rule, build every
   figure (:mod:`mechgrok.report.phase_changes`) and write ``OUT/report.html`` (one
   self-contained page) and ``OUT/summary.json``.

Nothing here prints; pass ``on_step`` to hear about each step.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechgrok.sweeps import Sweep, run_sweep
from mechgrok.sweeps.chunks import die_with_parent
from mechgrok.sweeps.execute import usable_cpus

__all__ = ["PARTS", "DEFAULT_OUT", "EXECUTORS", "plan", "train_all", "summarise", "claims", "build_figures",
           "FIGURE_PARTS", "make_figure", "reproduce_phase_changes", "PhaseChangesResult"]

DEFAULT_OUT = "runs/phase-changes"
# part -> its module: plan, summarise, claims, CLAIMS (id -> what it says) and figures
PARTS = {
    "tasks": "mechgrok.reproduce.phase_changes.tasks",
    "mainline": "mechgrok.reproduce.phase_changes.mainline",
    "mlp": "mechgrok.reproduce.phase_changes.mlp",
}
EXECUTORS = ("process", "inline")


def _part(name: str):
    return importlib.import_module(PARTS[name])


def plan(full: bool = False, *, n_digits: int = 5, parts: tuple[str, ...] = tuple(PARTS)) -> dict[str, dict[str, Sweep]]:
    """{part: {experiment: sweep}} (``n_digits``: the addition experiment's digits)."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; the parts are {list(PARTS)}")
    out = {}
    for name in parts:
        module = _part(name)
        out[name] = module.plan(full, n_digits=n_digits) if name == "tasks" else module.plan(full)
    names = [e for sweeps in out.values() for e in sweeps]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment names repeat across parts: {names}")
    return out


def _cost(sweep: Sweep) -> float:
    """A rough size of an experiment, to start the longest first: its runs' steps × train rows × width."""
    total = 0.0
    for cfg in sweep.configs:
        rows = cfg.batch_size or (cfg.n_train if cfg.task != "modular" else cfg.frac_train * cfg.p**2)
        total += cfg.epochs * rows * max(cfg.d_model, cfg.d_mlp) * cfg.n_ctx
    return total


def _train_one(name: str, sweep: Sweep, folder: str, device: str, threads: int | None) -> tuple[str, float, float]:
    """Train one experiment in this process (a pool worker, or inline): (name, wall s, CPU s of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    if name == "crossover":
        from mechgrok.reproduce.phase_changes.tasks import crossover_search

        sizes = sweep.axes["n_train"]
        crossover_search(folder, sweep.base, sizes, lambda s, f: run_sweep(s, f, executor="inline", device=device,
                                                                           threads=threads))
    else:
        run_sweep(sweep, folder, executor="inline", device=device, threads=threads)
    return name, time.perf_counter() - t0, time.process_time() - c0


def train_all(out: str | Path, plans: dict[str, dict[str, Sweep]], *, executor: str = "process", workers: int | None = None,
              device: str = "cpu", threads: int | None = None, on_step: Callable[[str], None] | None = None) -> dict[str, float]:
    """Train (or reuse) every experiment into ``OUT/<experiment>``; {experiment: {"wall_s", "cpu_s"}}
    (the CPU seconds of the process that trained it: on a shared machine, what it would take alone)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r} is not one of {list(EXECUTORS)}; pass e.g. executor='process'")
    say = on_step or (lambda message: None)
    jobs = sorted(((e, s) for sweeps in plans.values() for e, s in sweeps.items()), key=lambda job: -_cost(job[1]))
    out = Path(out)
    seconds: dict[str, dict[str, float]] = {}
    if executor == "inline" or (workers or usable_cpus()) == 1:
        for name, sweep in jobs:
            _, wall, cpu = _train_one(name, sweep, str(out / name), device, threads)
            seconds[name] = {"wall_s": wall, "cpu_s": cpu}
            say(f"{name}: {len(sweep)} run(s) ready in {wall:.0f} s")
        return seconds
    n = min(workers or usable_cpus(), len(jobs))
    # workers die with this process (a SIGKILLed driver leaves no trainer holding a run folder)
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_train_one, name, sweep, str(out / name), device, threads) for name, sweep in jobs]
        for future in as_completed(futures):
            name, wall, cpu = future.result()
            seconds[name] = {"wall_s": wall, "cpu_s": cpu}
            say(f"{name}: ready in {wall:.0f} s ({cpu:.0f} CPU s)")
    return seconds


def summarise(out: str | Path, parts: tuple[str, ...] = tuple(PARTS)) -> dict[str, Any]:
    """{part: its summary} read from the run folders under ``OUT``."""
    return {name: _part(name).summarise(Path(out)) for name in parts}


def claims(summary: dict[str, Any]) -> dict[str, bool]:
    """Every part's claims, decided by its rules."""
    out: dict[str, bool] = {}
    for name, part_summary in summary.items():
        out.update(_part(name).claims(part_summary))
    return out


def claim_texts(parts) -> dict[str, str]:
    """{claim id: what it says} of the parts."""
    out: dict[str, str] = {}
    for name in parts:
        out.update(getattr(_part(name), "CLAIMS", {}))
    return out


def build_figures(out: str | Path, summary: dict[str, Any]) -> list:
    """Every part's figures (FigureOutputs), in part order."""
    figures = []
    for name, part_summary in summary.items():
        figures.extend(_part(name).figures(Path(out), part_summary))
    return figures


# figure -> the part that builds it (mechgrok.report.PHASE_FIGURE_NAMES, in the same order)
FIGURE_PARTS = {
    "addition_digits": "tasks", "induction_heads": "tasks", "max_list_trigrams": "tasks", "crossover": "tasks",
    "slingshots": "mainline", "weight_decay": "mainline", "more_data": "mainline", "excluded_loss": "mainline",
    "mlp2_clusters": "mlp",
}


def make_figure(name: str, out: str | Path):
    """One figure of :data:`mechgrok.report.PHASE_FIGURE_NAMES`, from the reproduction folder ``out``
    (only the part that owns it is summarised)."""
    if name not in FIGURE_PARTS:
        raise ValueError(f"unknown phase-changes figure {name!r}; choose one of {list(FIGURE_PARTS)}")
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"{out} is not a folder; pass the folder of `mechgrok reproduce phase-changes --out DIR`")
    part = FIGURE_PARTS[name]
    for figure in _part(part).figures(out, _part(part).summarise(out)):
        if figure.name == name:
            return figure
    raise ValueError(f"{out} holds no runs for the figure {name!r} yet; run `mechgrok reproduce phase-changes --out {out}` first")


@dataclass
class PhaseChangesResult:
    out: Path
    summary: dict[str, Any]
    claims: dict[str, bool]
    report: Path
    seconds: dict[str, Any]  # train, total (wall s), experiments: {name: {wall_s, cpu_s}}


def reproduce_phase_changes(out: str | Path = DEFAULT_OUT, *, full: bool = False, n_digits: int = 5,
                            executor: str = "process", workers: int | None = None, device: str = "cpu",
                            threads: int | None = None, parts: tuple[str, ...] = tuple(PARTS),
                            plans: dict[str, dict[str, Sweep]] | None = None,
                            on_step: Callable[[str], None] | None = None) -> PhaseChangesResult:
    """Train every experiment (or reuse it), summarise, decide the claims and write the report.

    ``plans`` replaces :func:`plan`'s (the tests pass tiny ones); ``parts`` picks parts."""
    from mechgrok.report.phase_changes import write_report

    plans = plan(full, n_digits=n_digits, parts=parts) if plans is None else plans
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder for the reproduction")
    t0 = time.perf_counter()
    experiments = train_all(out, plans, executor=executor, workers=workers, device=device, threads=threads,
                            on_step=on_step)
    seconds = {"train": time.perf_counter() - t0}
    summary = summarise(out, tuple(plans))
    decided = claims(summary)
    timings = {"experiments": experiments, "train_wall_s": seconds["train"], "workers": workers or usable_cpus(),
               "note": "this call only: an experiment whose runs were already finished takes about 0 s"}
    report = write_report(out, build_figures(out, summary), {**summary, "timings": timings}, decided,
                          claim_texts(tuple(plans)))
    seconds["total"] = time.perf_counter() - t0
    seconds["experiments"] = experiments
    return PhaseChangesResult(out, summary, decided, report, seconds)
