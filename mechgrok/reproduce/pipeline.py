"""The whole reproduction in one call: what ``mechgrok reproduce`` and ``make reproduce`` run.

1. Train the run's config (default ``Config()``, the paper's p=113 mainline, docs/training.md;
   any p, fraction, seed, operation or loss precision works the same) for each seed, or reuse a
   run that already reached the asked epochs. The executor fits the machine (:func:`plan_training`):
   all seeds in one stacked program on a GPU, else independent single-thread processes, one per
   usable core. Seed ``s0`` (the config's seed) lives in ``OUT/``; further seeds in
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

__all__ = ["DEFAULT_EPOCHS", "PAPER_EPOCHS", "seed_dir", "train_or_reuse", "write_ablation_tables", "reproduce", "ReproduceResult",
           "TrainingPlan", "plan_training"]

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
    if _reached(cfg, run_dir):
        return False, 0.0
    from mechgrok.training.loop import train

    t0 = time.perf_counter()
    result = train(cfg, run_dir, progress=progress_bar, threads=threads, on_resume=on_resume)
    if result.interrupted:
        raise KeyboardInterrupt(f"training of {run_dir} was interrupted at epoch {result.epoch}")
    return True, time.perf_counter() - t0


def _reached(cfg: Config, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run of ``cfg`` that reached ``cfg.epochs`` (a ``ValueError`` if
    it is a finished run of other settings)."""
    done = runs.checkpoint_epochs(run_dir)
    resume = run_dir / runs.RESUME_FILE
    # Reached: its resume file (written last at every save) is at the epochs asked or past them,
    # or it is an imported run, which has no resume file. A kill between the final checkpoint and
    # the final resume file leaves a run the trainer must finish (its last metrics row is missing).
    reached = bool(done) and done[-1] >= cfg.epochs and (
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
    return reached


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


@dataclass(frozen=True)
class TrainingPlan:
    """How the seeds of a reproduction train, and why (recorded in ``summary.json``).

    ``executor``: ``"stack"`` (every seed in one stacked program, :func:`mechgrok.training.stack.train_stack`),
    ``"processes"`` (``workers`` independent processes at once, each on ``threads`` threads) or
    ``"sequential"`` (one seed after another in this process). ``to_train``: the seeds not
    already finished (a finished run is reused whatever the executor).
    """

    executor: str
    device: str
    workers: int
    threads: int
    to_train: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"executor": self.executor, "device": self.device, "workers": self.workers, "threads": self.threads,
                "seeds_to_train": self.to_train, "reason": self.reason}


def plan_training(n_seeds: int, device: str, parallel: int | None, threads: int | None) -> TrainingPlan:
    """The best executor for ``n_seeds`` seeds to train on this machine (docs/training.md):

    * ``device`` cuda: one stacked program of all of them on the GPU (TF32 stays off);
    * the CPU, ``parallel`` None: as many independent single-thread processes at once as this
      process has usable cores (its affinity mask), since on a shared core count two
      single-thread processes give about 1.2x the throughput of one two-thread process; one
      core or one seed: one after another;
    * ``parallel`` given: that many processes at once (1: one after another).
    """
    from mechgrok import speed
    from mechgrok.sweeps.execute import usable_cpus

    n_threads = speed.resolve_threads(threads)
    if device != "cpu":
        if parallel is not None:
            raise ValueError(f"parallel={parallel} trains separate CPU processes, but device={device!r} trains every "
                             "seed in one stacked program on the GPU; drop --parallel (parallel=None)")
        return TrainingPlan("stack", device, n_seeds, n_threads, n_seeds,
                            f"device {device}: all {n_seeds} seed(s) to train in one stacked program (TF32 off)")
    if parallel is not None:
        if parallel <= 1 or n_seeds <= 1:
            return TrainingPlan("sequential", device, 1, n_threads, n_seeds,
                                f"parallel={parallel} asked{'' if n_seeds > 1 else f', {n_seeds} seed(s) to train'}")
        return TrainingPlan("processes", device, min(parallel, n_seeds), n_threads, n_seeds, f"parallel={parallel} asked")
    cores = usable_cpus()
    workers = min(n_seeds, max(1, cores // n_threads))
    if workers <= 1:
        why = (f"{n_seeds} seed(s) to train" if n_seeds <= 1
               else f"{cores} usable core(s) for {n_threads}-thread trainers")
        return TrainingPlan("sequential", device, 1, n_threads, n_seeds, f"{why}: one after another")
    return TrainingPlan("processes", device, workers, n_threads, n_seeds,
                        f"{cores} usable cores: {workers} independent {n_threads}-thread processes at once (two "
                        "single-thread processes give ~1.2x the throughput of one two-thread process)")


def _claim_folders(jobs: list[tuple[int, Config, Path]]) -> None:
    """Later seeds live inside the first seed's folder. Claim every fresh folder with its config
    first, so the first seed's trainer never finds its folder already holding ``seeds/``."""
    for _, cfg, run_dir in jobs:
        if not (run_dir / runs.CONFIG_FILE).exists() and (not run_dir.exists() or not any(run_dir.iterdir())):
            runs.write_config(run_dir, cfg)


def _train_seeds(jobs: list[tuple[int, Config, Path]], parallel: int | None, progress_bar: bool,
                 say: Callable[[str], None], threads: int | None,
                 device: str = "cpu") -> tuple[dict[int, tuple[bool, float]], TrainingPlan]:
    """Train every seed by :func:`plan_training`'s executor; returns ({seed: (trained, seconds)}, the plan)."""
    results: dict[int, tuple[bool, float]] = {}
    pending = []
    for seed, cfg, run_dir in jobs:
        if _reached(cfg, run_dir):
            results[seed] = (False, 0.0)
        else:
            pending.append((seed, cfg, run_dir))
    plan = plan_training(len(pending), device, parallel, threads)
    if pending:
        say(f"training {len(pending)} seed(s) by {plan.executor}: {plan.reason}")
    if plan.executor == "stack" and pending:
        from mechgrok.training.stack import train_stack

        _claim_folders(pending)
        say(f"training seeds {[s for s, _, _ in pending]} in one stack on {device}")
        t0 = time.perf_counter()
        where = {run_dir: seed for seed, _, run_dir in pending}
        out = train_stack([cfg for _, cfg, _ in pending], [run_dir for _, _, run_dir in pending], device=device,
                          threads=threads, progress=progress_bar, chunk_size=len(pending),
                          on_resume=lambda run_dir, epoch: say(f"seed {where[run_dir]}: resuming {run_dir} from epoch {epoch}"))
        seconds = time.perf_counter() - t0
        stopped = [r for r in out if r.interrupted]
        if stopped:
            raise KeyboardInterrupt(f"training of the stack of {len(out)} seeds was interrupted at epoch {stopped[0].epoch}")
        for (seed, _, _), r in zip(pending, out):
            results[seed] = (r.stack_size > 0, seconds)  # every seed of the stack took the stack's time
    elif plan.executor == "processes":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _claim_folders(pending)
        say(f"training seeds {[s for s, _, _ in pending]} {plan.workers} at a time, {plan.threads} thread(s) each")
        # threads resolved here (plan.threads), not in the workers: a worker process knows neither the
        # caller's torch_threads block nor, under spawn, anything but its arguments
        with ProcessPoolExecutor(max_workers=plan.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {seed: pool.submit(_train_in_worker, cfg.to_dict(), str(run_dir), plan.threads)
                       for seed, cfg, run_dir in pending}
            for seed, future in futures.items():
                results[seed] = future.result()
    else:
        for seed, cfg, run_dir in pending:
            say(f"seed {seed}: training {cfg.epochs:,} epochs into {run_dir} (or reusing it)")
            results[seed] = train_or_reuse(
                cfg, run_dir, progress_bar=progress_bar, threads=threads,
                on_resume=lambda epoch, seed=seed, run_dir=run_dir: say(f"seed {seed}: resuming {run_dir} from epoch {epoch}"))
    return {seed: results[seed] for seed, _, _ in jobs}, plan


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
    parallel: int | None = None,
    threads: int | None = None,
    device: str = "cpu",
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
    config that pins ``split_seed`` or ``model_seed`` moves them with the seed. ``threads`` is
    the torch thread count of training (default :func:`mechgrok.speed.resolve_threads`). The
    seeds train by the executor :func:`plan_training` picks for the machine, recorded in
    ``summary["training"]``: with ``device="cuda"`` all in one stacked program on the GPU; on
    the CPU as many independent processes at once as this process has usable cores, each on
    ``threads`` threads, unless ``parallel`` (processes at once; 1: one after another) is given.
    ``device`` also runs the progress measures' forward passes. ``on_step`` hears about each
    step, including a resumption and the executor chosen.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r} must be an integer >= 1 (the number of seeds to train)")
    if parallel is not None and (isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1):
        raise ValueError(f"parallel={parallel!r} must be an integer >= 1 (seeds trained at once), or None to pick "
                         "by the machine's cores")
    from mechgrok.training.stack import resolve_device

    device = str(resolve_device(device))  # a device this machine lacks is refused before anything is written
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
    trained_seeds, plan = _train_seeds(jobs, parallel, progress_bar, say, threads, device)
    for seed, (trained, seconds) in trained_seeds.items():
        timings[f"train_seed_{seed}"] = seconds
        if not trained:
            reused.append(seed)
            say(f"seed {seed}: reused the finished run in {seed_dir(out, seed, base.seed)}")

    t0 = time.perf_counter()
    phase_rows, progresses = [], {}
    for seed in seed_list:
        run_dir = seed_dir(out, seed, base.seed)
        say(f"seed {seed}: progress measures at every checkpoint")
        prog = progress.load_progress(run_dir, rule=rule, device=device)
        progresses[seed] = prog
        phase_rows.append({"seed": seed, **prog.phases.boundaries, "key_frequencies": " ".join(map(str, prog.key_frequencies)),
                           "notes": "; ".join(prog.phases.notes)})
    phase_rows.append({"seed": "paper", **nanda2023.PHASE_BOUNDARIES,
                       "key_frequencies": " ".join(map(str, nanda2023.KEY_FREQUENCIES)), "notes": "by eye"})
    timings["progress_measures"] = time.perf_counter() - t0

    analysis = figures.RunAnalysis(out, rule=rule, device=device)
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
        "training": plan.to_dict(),
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
