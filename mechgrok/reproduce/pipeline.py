"""The whole reproduction in one call: what ``mechgrok reproduce`` and ``make reproduce`` run.

1. Train the run's config (default ``Config()``, the paper's p=113 mainline, docs/training.md;
   any p, fraction, seed, operation or loss precision works the same) for each seed (one after
   another, or ``parallel`` at once in separate processes), or reuse a run that already reached
   the asked epochs. Seed ``s0`` (the config's seed) lives in ``OUT/``; further seeds in
   ``OUT/seeds/seed_<s>/``.
2. Compute the progress measures and phase boundaries of every seed (:mod:`mechgrok.analysis.progress`).
3. Build every figure of :data:`mechgrok.report.figures.FIGURES` into ``OUT/figures/``.
4. Write the reverse-engineering tables (:func:`write_ablation_tables`) into ``OUT/analysis/``.
5. Write ``OUT/report.html`` (self-contained) and ``OUT/summary.json``.

Nothing here prints; pass ``on_step`` to hear about each step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mechgrok import runs
from mechgrok.analysis import circuits, progress
from mechgrok.analysis import tables as analysis_tables
from mechgrok.config import Config
from mechgrok.report import figures
from mechgrok.report import html as report
from mechgrok.reproduce import nanda2023

__all__ = ["DEFAULT_EPOCHS", "PAPER_EPOCHS", "seed_dir", "train_or_reuse", "write_ablation_tables", "reproduce", "ReproduceResult"]

# Long enough for the mainline to grok and clean up (the curves settle by ~15-20k), short
# enough that `make reproduce` takes well under 15 minutes on 2 CPU cores.
DEFAULT_EPOCHS = Config().epochs
PAPER_EPOCHS = nanda2023.EPOCHS


def seed_dir(out: str | Path, seed: int, first_seed: int = 0) -> Path:
    """Where seed ``seed`` of a reproduction lives: ``OUT`` for the first, ``OUT/seeds/seed_<s>`` after."""
    out = Path(out)
    return out if seed == first_seed else out / figures.SEEDS_DIR / f"seed_{seed}"


def train_or_reuse(cfg: Config, run_dir: Path, *, progress_bar: bool = False, threads: int | None = None,
                   on_resume: Callable[[int], None] | None = None) -> tuple[bool, float]:
    """Train ``cfg`` into ``run_dir`` unless a run there already reached ``cfg.epochs``.

    A shorter run with the same settings is extended (the trainer resumes it, calling
    ``on_resume`` with its epoch first). ``threads`` is the trainer's torch thread count.
    Returns (trained, seconds). An interrupted training raises ``KeyboardInterrupt`` whose
    message says where it stopped (a resume checkpoint is written; calling again resumes).
    """
    done = runs.checkpoint_epochs(run_dir)
    resume = run_dir / runs.RESUME_FILE
    # Reached: its resume file (written last at every save) is at the epochs asked or past them,
    # or it is an imported run, which has no resume file. A kill between the final checkpoint and
    # the final resume file leaves a run the trainer must finish (its last metrics row is missing).
    reached = done and done[-1] >= cfg.epochs and (
        runs.read_checkpoint_file(resume).epoch >= cfg.epochs if resume.exists() else runs.imported_from(run_dir) is not None)
    if reached and (run_dir / runs.CONFIG_FILE).exists():
        from mechgrok.training.loop import config_clash

        clash = config_clash(runs.read_config(run_dir), cfg.to_dict())
        if clash:
            differs = [f"{f}: saved {old!r}, asked {new!r}" for f, (old, new) in clash.items()]
            raise ValueError(
                f"{run_dir} holds a finished run with other settings ({', '.join(differs)}); pass its "
                "settings (or none, to use them), choose another --out, or delete it yourself"
            )
        return False, 0.0
    from mechgrok.training.loop import train

    t0 = time.perf_counter()
    result = train(cfg, run_dir, progress=progress_bar, threads=threads, on_resume=on_resume)
    if result.interrupted:
        raise KeyboardInterrupt(f"training of {run_dir} was interrupted at epoch {result.epoch}")
    return True, time.perf_counter() - t0


ANALYSIS_DIR = "analysis"


def write_ablation_tables(
    run_dir: str | Path, *, epoch: int | None = None, rule: str = circuits.DEFAULT_KEY_FREQUENCY_RULE,
    threshold: float = 0.85, out: str | Path | None = None,
) -> tuple[dict[str, pd.DataFrame], list[Path]]:
    """The reverse-engineering tables of a run (:func:`mechgrok.analysis.tables.ablation_tables`)
    with the paper's numbers beside ours, written as CSV files and one ``ablation_table.md`` to
    ``out`` (default ``RUN/analysis``). Returns (tables, written paths)."""
    run = runs.load_run(run_dir, epoch=epoch)
    tables = nanda2023.with_published(analysis_tables.ablation_tables(run.model, rule=rule, threshold=threshold))
    folder = Path(out) if out is not None else Path(run_dir) / ANALYSIS_DIR
    paths = []
    for name, df in tables.items():
        path = folder / f"{name}.csv"
        runs.atomic_write_text(path, df.to_csv(index=False))
        paths.append(path)
    key = tables["key_frequencies"].query("used")["frequencies"].iloc[0]
    md = analysis_tables.markdown
    paper_sizes = "/".join(str(v) for k, v in nanda2023.CLUSTER_SIZES.items() if k != "other")
    parts = [
        f"# Ablation table: {run_dir} (epoch {run.epoch}, p={run.config.p}, op={run.config.op})",
        f"Key frequencies ({rule} rule): {key.replace(' ', ', ')}. Neuron-cluster threshold {threshold}.",
        "## Headline numbers\n\n" + md(tables["headline"]),
        "## Key frequencies by rule\n\n" + md(tables["key_frequencies"]),
        "## §4.4 ablations (loss on all p² inputs)\n\n" + md(tables["section_4_4"]),
        "## Removing one frequency from the logits (Fig. 6)\n\n" + md(tables["frequencies"]),
        "## Table 1: u_k·MLP and v_k·MLP against the key directions\n\n" + md(tables["table_1"]),
        f"## Neuron cluster sizes (paper: {paper_sizes}, {nanda2023.CLUSTER_SIZES['other']} other)\n\n"
        + md(tables["cluster_sizes"]),
        "## Logit fit coefficients α_k\n\n" + md(tables["logit_fit_alpha"]),
        "## Attention from `=`\n\n" + md(tables["attention"]),
    ]
    path = folder / "ablation_table.md"
    runs.atomic_write_text(path, "\n\n".join(parts) + "\n")
    paths.append(path)
    return tables, paths


def _train_in_worker(cfg_dict: dict, run_dir: str, threads: int) -> tuple[bool, float]:
    """One seed in a worker process (top level, so it pickles), on ``threads`` torch threads."""
    return train_or_reuse(Config.from_dict(cfg_dict), Path(run_dir), threads=threads)


def _train_seeds(jobs: list[tuple[int, Config, Path]], parallel: int, progress_bar: bool,
                 say: Callable[[str], None], threads: int | None) -> dict[int, tuple[bool, float]]:
    """Train every seed: one after another, or ``parallel`` at a time in separate processes."""
    results: dict[int, tuple[bool, float]] = {}
    if parallel <= 1 or len(jobs) <= 1:
        for seed, cfg, run_dir in jobs:
            say(f"seed {seed}: training {cfg.epochs:,} epochs into {run_dir} (or reusing it)")
            results[seed] = train_or_reuse(
                cfg, run_dir, progress_bar=progress_bar, threads=threads,
                on_resume=lambda epoch, seed=seed, run_dir=run_dir: say(f"seed {seed}: resuming {run_dir} from epoch {epoch}"))
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from mechgrok import speed

    # Later seeds live inside the first seed's folder. Claim every fresh folder with its config
    # first, so the first seed's trainer never finds its folder already holding `seeds/`.
    for _, cfg, run_dir in jobs:
        if not (run_dir / runs.CONFIG_FILE).exists() and (not run_dir.exists() or not any(run_dir.iterdir())):
            runs.write_config(run_dir, cfg)
    # Resolved here, not in the workers: a worker process knows neither the caller's
    # torch_threads block nor, under spawn, anything but its arguments.
    threads = speed.resolve_threads(threads)
    say(f"training seeds {[s for s, _, _ in jobs]} {parallel} at a time, {threads} thread(s) each")
    with ProcessPoolExecutor(max_workers=parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {seed: pool.submit(_train_in_worker, cfg.to_dict(), str(run_dir), threads) for seed, cfg, run_dir in jobs}
        for seed, future in futures.items():
            results[seed] = future.result()
    return results


@dataclass
class ReproduceResult:
    run_dir: Path
    report: Path
    summary_path: Path
    summary: dict[str, Any]
    figures: list[figures.FigureOutput] = field(default_factory=list)


def _final_row(measures: pd.DataFrame) -> dict[str, float]:
    last = measures.iloc[-1]
    cols = ["train_loss", "test_loss", "train_acc", "test_acc", "restricted_loss", "excluded_loss", "gini_W_E", "gini_W_L",
            "sum_sq_weights"]
    return {"epoch": int(last["epoch"]), **{c: float(last[c]) for c in cols}}


def reproduce(
    out: str | Path = "runs/mainline",
    *,
    epochs: int | None = None,
    seeds: int = 1,
    config: Config | None = None,
    rule: str = circuits.DEFAULT_KEY_FREQUENCY_RULE,
    progress_bar: bool = False,
    parallel: int = 1,
    threads: int | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ReproduceResult:
    """Train (or reuse), measure, plot and report; see the module docstring.

    ``config`` is the run's config (default: the saved config of a run already in ``out``,
    else ``Config()``, the paper's mainline); any p, op,
    frac_train, seed or loss_dtype gets the same report::

        from mechgrok import Config
        from mechgrok.reproduce.pipeline import reproduce

        result = reproduce("runs/p97", config=Config(p=97, frac_train=0.4, epochs=15_000))
        result.summary["key_frequencies"], result.report   # [...], runs/p97/report.html

    ``epochs`` overrides ``config.epochs`` when given. The seeds are ``config.seed ..
    config.seed + seeds - 1``. A folder whose run already reached the epochs is reused
    without training; a shorter one is extended. Seed s trains ``config.reseeded(s)``: a
    config that pins ``split_seed`` or ``model_seed`` moves them with the seed. ``threads`` is the torch thread count of
    training (default :func:`mechgrok.speed.resolve_threads`); ``parallel`` > 1 trains that
    many seeds at once in separate processes, each on ``threads`` threads (for machines with
    cores to spare). ``on_step`` hears about each step, including a resumption.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r} must be an integer >= 1 (the number of seeds to train)")
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ValueError(f"parallel={parallel!r} must be an integer >= 1 (seeds trained at once)")
    out = Path(out)
    say = on_step or (lambda message: None)
    base = config or (runs.read_config(out) if (out / runs.CONFIG_FILE).exists() else Config())
    if epochs is not None:
        base = base.replace(epochs=epochs)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    seed_list = [base.seed + i for i in range(seeds)]
    # a pinned split_seed or model_seed (the tl-demo preset's) moves with the seed (Config.reseeded)
    jobs = [(seed, base.reseeded(seed), seed_dir(out, seed, base.seed)) for seed in seed_list]
    reused = []
    for seed, (trained, seconds) in _train_seeds(jobs, parallel, progress_bar, say, threads).items():
        timings[f"train_seed_{seed}"] = seconds
        if not trained:
            reused.append(seed)
            say(f"seed {seed}: reused the finished run in {seed_dir(out, seed, base.seed)}")

    t0 = time.perf_counter()
    phase_rows, progresses = [], {}
    for seed in seed_list:
        run_dir = seed_dir(out, seed, base.seed)
        say(f"seed {seed}: progress measures at every checkpoint")
        prog = progress.load_progress(run_dir, rule=rule)
        progresses[seed] = prog
        phase_rows.append({"seed": seed, **prog.phases.boundaries, "key_frequencies": " ".join(map(str, prog.key_frequencies)),
                           "notes": "; ".join(prog.phases.notes)})
    phase_rows.append({"seed": "paper", **nanda2023.PHASE_BOUNDARIES,
                       "key_frequencies": " ".join(map(str, nanda2023.KEY_FREQUENCIES)), "notes": "by eye"})
    timings["progress_measures"] = time.perf_counter() - t0

    analysis = figures.RunAnalysis(out, rule=rule)
    built = []
    t0 = time.perf_counter()
    for name in figures.FIGURES:
        say(f"figure {name}")
        fig = figures.make_figure(name, analysis)
        figures.write_figure(fig, out)
        built.append(fig)
    timings["figures"] = time.perf_counter() - t0

    say("ablation tables")
    t0 = time.perf_counter()
    tables, _ = write_ablation_tables(out, rule=rule)
    timings["ablation_table"] = time.perf_counter() - t0

    main = progresses[base.seed]
    section = tables["section_4_4"][["intervention", "loss", "paper_loss", "accuracy"]]
    summary: dict[str, Any] = {
        "title": f"mechgrok reproduction: {out}",
        "run_dir": str(out),
        "config": base.to_dict(),
        "epochs": base.epochs,
        "seeds": seed_list,
        "reused_seeds": reused,
        "key_frequency_rule": rule,
        "key_frequencies": main.key_frequencies,
        "paper_key_frequencies": nanda2023.KEY_FREQUENCIES,
        "phases": main.phases.to_dict(),
        "paper_phases": nanda2023.PHASE_BOUNDARIES,
        "phases_by_seed": phase_rows,
        "final": _final_row(main.measures),
        "paper_final_loss": nanda2023.FINAL_LOSS,
        "final_by_seed": {str(s): _final_row(p.measures) for s, p in progresses.items()},
        "ablation_table": section.to_dict("records"),
        "headline": tables["headline"].to_dict("records"),
        "notes": [n for s, p in progresses.items() for n in (f"seed {s}: {m}" for m in p.phases.notes)],
    }
    timings["total"] = time.perf_counter() - t_start
    summary["timings_s"] = timings
    summary_path = report.write_summary(out, summary)
    report_tables = {
        "§4.4 ablations: loss on all p² inputs, ours beside the paper's": section,
        "Headline numbers beside the paper's": tables["headline"],
    }
    say("report")
    path = report.write_report(out, summary, built, report_tables)
    return ReproduceResult(out, path, summary_path, summary, built)
