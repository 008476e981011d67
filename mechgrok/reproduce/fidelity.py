"""The fidelity study (docs/fidelity.md): the anchor runs' setups over several seeds, and the
differences between them one at a time.

Two kinds of run, each in ``OUT/<setup>/seed_<s>``:

* **Setups** (``SETUPS``): mechgrok's default (preset ``paper``), the original code's run
  (``original``) and the TransformerLens demo's (``tl-demo``) on every seed, read like the
  mainline: phase boundaries, the epochs of test accuracy 0.5 and 0.99, the test-loss peak,
  key frequencies, final losses and the §4.4 numbers.
* **Variants** (``VARIANTS``): the paper default with one of the anchors' settings changed
  (the unembed width, the split generator, the init, the warm-up, the frozen biases), to see
  how far each difference moves the grokking epoch.

Every job trains until its test accuracy first reaches 0.99 and then ``margin`` epochs more
(checked every ``grok_step`` epochs, up to a cap), or to a fixed epoch (``until_grokked=False``):
a study sized for a small machine spends its epochs where the questions are.

Every run is an ordinary run folder trained by ``mechgrok.train``, so a study interrupted at any
point goes on where it stopped, and a finished run is reused. ``summarise(OUT)`` reads every run
folder under ``OUT`` into one table; nothing in it comes from anywhere but those folders.
``write_record`` keeps each run's config, metrics and progress measures beside that table, and
``check_record`` recomputes the table's training numbers, phases and key frequencies from them.

    from mechgrok.reproduce import fidelity
    fidelity.train_study("runs/fidelity", fidelity.setup_jobs(seeds=5, epochs=20_000))
    fidelity.summarise("runs/fidelity")      # one row per run folder
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from mechgrok import runs
from mechgrok.config import Config
from mechgrok.presets import preset_config

__all__ = ["SETUPS", "VARIANTS", "Job", "setup_jobs", "variant_jobs", "train_study", "run_job", "plain_loop",
           "plain_loop_job", "plain_loop_path", "plain_loop_agreement", "summarise", "aggregate", "study_markdown",
           "RECORD_FILES", "write_record", "check_record"]

# setup name: (preset, overrides). The demo evaluates its test loss every epoch; the study does so
# every 10 epochs (``eval_every`` changes nothing but how often a metrics row is written).
SETUPS: dict[str, tuple[str, dict[str, Any]]] = {
    "paper": ("paper", {}),
    "original": ("original", {}),
    "tl-demo": ("tl-demo", {"eval_every": 10}),
}

# variant name: (what differs from the paper default, the fields that make the difference)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "unembed_equals": ("the unembed is p + 1 wide (a logit for `=`, as the original code)", {"unembed_equals": True}),
    "split_python": ("the split is the original code's random.shuffle", {"split": "python"}),
    "init_original": ("the original code's init (its module, order and scales)", {"init": "original"}),
    "init_transformer_lens": ("TransformerLens's init (the demo's)", {"init": "transformer_lens"}),
    "no_warmup": ("no warm-up (the demo's)", {"warmup_steps": 0}),
    "frozen_all_biases": ("every bias frozen at zero, b_in and b_out too (the demo's)", {"frozen_biases": "all"}),
}


@dataclass(frozen=True)
class Job:
    """One run of the study: its config, its folder, and whether it stops at grokking."""

    name: str  # the setup's or the variant's
    seed: int
    config: Config
    folder: Path
    until_grokked: bool = True
    grok_step: int = 1000
    margin: int = 0  # epochs past the grokking epoch (until_grokked)
    measures: bool = False  # compute (and cache) the progress measures once trained, as the summary reads them


def setup_jobs(out: str | Path, seeds: int | Sequence[int] = 5, epochs: int | None = None,
               setups: Sequence[str] = tuple(SETUPS), until_grokked: bool = True, margin: int = 2000,
               grok_step: int = 1000) -> list[Job]:
    """A job per (setup, seed); ``epochs`` caps each preset's (None: the preset's own), and
    ``until_grokked`` stops a run ``margin`` epochs after test accuracy 0.99 (see the module)."""
    def config(name: str, seed: int) -> Config:
        preset, overrides = SETUPS[name]
        cfg = preset_config(preset, seed=seed, **overrides)
        return cfg if epochs is None else cfg.replace(epochs=epochs)

    return _jobs(SETUPS, setups, seeds, config, Path(out), until_grokked, grok_step, margin, measures=True)


def variant_jobs(out: str | Path, seeds: int | Sequence[int] = 3, cap: int = 20_000, grok_step: int = 1000,
                 variants: Sequence[str] = tuple(VARIANTS)) -> list[Job]:
    """A job per (variant, seed): the paper default with the variant's fields, until grokked (or ``cap``)."""
    def config(name: str, seed: int) -> Config:
        return preset_config("paper", seed=seed, **VARIANTS[name][1]).replace(epochs=cap)

    return _jobs(VARIANTS, variants, seeds, config, Path(out) / "variants", True, grok_step, 0)


def _jobs(known: dict, names: Sequence[str], seeds: int | Sequence[int], config: Callable[[str, int], Config],
          parent: Path, until_grokked: bool, grok_step: int, margin: int, measures: bool = False) -> list[Job]:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {list(known)}")
    return [Job(name, seed, config(name, seed), parent / name / f"seed_{seed}", until_grokked, grok_step, margin,
                measures) for name in names for seed in _seeds(seeds)]


def _seeds(seeds: int | Sequence[int]) -> list[int]:
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


# ------------------------------------------------------------------------------ training
def _grok_epoch(folder: Path, threshold: float = 0.99) -> int | None:
    metrics = runs.read_metrics(folder)
    if metrics is None:
        return None
    hit = metrics[metrics.test_acc >= threshold].epoch
    return int(hit.min()) if len(hit) else None


def _trained_epoch(folder: Path) -> int:
    resume = folder / runs.RESUME_FILE
    return runs.read_checkpoint_file(resume).epoch if resume.exists() else 0


def run_job(job: Job) -> dict[str, Any]:
    """Train (or reuse, or extend) one job in this process; what it did, in seconds."""
    from mechgrok.reproduce.pipeline import train_or_reuse

    t0, c0 = time.perf_counter(), time.process_time()
    if not job.until_grokked:
        train_or_reuse(job.config, job.folder, threads=1)
    else:
        # extend by grok_step epochs at a time until test accuracy 0.99 and margin epochs more (or
        # the cap): each extension resumes the same run, bit-identical to one uninterrupted run
        while True:
            grokked, trained = _grok_epoch(job.folder), _trained_epoch(job.folder)
            goal = job.config.epochs if grokked is None else min(job.config.epochs, grokked + job.margin)
            if trained >= goal:
                break
            target = min((trained // job.grok_step + 1) * job.grok_step, goal)
            train_or_reuse(job.config.replace(epochs=target), job.folder, threads=1)
    if job.measures:  # cached in the run folder (recomputed only if the run changed): the summary reads it
        from mechgrok.analysis import progress
        from mechgrok.speed import torch_threads

        with torch_threads(1):
            progress.load_progress(job.folder)
    return {"name": job.name, "seed": job.seed, "folder": str(job.folder), "epoch": _trained_epoch(job.folder),
            "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def train_study(jobs: Sequence[Job | tuple[Job, int]], workers: int | None = None,
                on_done: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Every job, in order, on ``workers`` single-thread processes (default: this machine's usable
    cores); a ``(job, epochs)`` pair is that run's plain-loop check (:func:`plain_loop_job`)."""
    import multiprocessing

    from mechgrok.sweeps.chunks import die_with_parent
    from mechgrok.sweeps.execute import usable_cpus

    workers = min(workers or usable_cpus(), len(jobs)) or 1
    done = []
    if workers == 1:
        for job in jobs:
            done.append(_run(job))
            if on_done:
                on_done(done[-1])
        return done
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        for record in pool.map(_run, jobs):  # taken in order: the first jobs first
            done.append(record)
            if on_done:
                on_done(record)
    return done


def _run(job: Job | tuple[Job, int]) -> dict[str, Any]:
    """A training job, or (job, epochs): that job's plain-loop check."""
    return plain_loop_job(*job) if isinstance(job, tuple) else run_job(job)


def plain_loop(cfg: Config, epochs: int, eval_every: int = 10) -> pd.DataFrame:
    """The same run trained by a plain ``HookedTransformer`` loop: its forward on every position,
    the loss of the last position's logits in ``cfg.loss_dtype`` (over all of them, ``=``'s
    included for a p+1 wide unembed), autograd, the same AdamW and warm-up, from the same init
    and split. The train and test loss and accuracy every ``eval_every`` epochs."""
    import torch

    from mechgrok.models.transformer import build_model
    from mechgrok.tasks.data import modular_split
    from mechgrok.tasks.modular import ModularTask
    from mechgrok.training.optim import lr_at, make_optimizer

    task = ModularTask(cfg.p, cfg.op)
    split = modular_split(cfg)
    model = build_model(cfg, split=split)
    optimizer = make_optimizer(model, cfg)
    tokens, labels = task.tokens(), task.labels()
    dtype = torch.float64 if cfg.loss_dtype == "float64" else torch.float32

    def measure(rows: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            logits = model(tokens[rows])[:, -1]
            loss = torch.nn.functional.cross_entropy(logits.to(dtype), labels[rows])
            return float(loss), float((logits[:, : cfg.p].argmax(-1) == labels[rows]).float().mean())

    rows = []
    for epoch in range(epochs + 1):
        if epoch % eval_every == 0 or epoch == epochs:
            (train_loss, train_acc), (test_loss, test_acc) = measure(split.train), measure(split.test)
            rows.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                         "test_acc": test_acc})
        if epoch == epochs:
            break
        logits = model(tokens[split.train])[:, -1]
        torch.nn.functional.cross_entropy(logits.to(dtype), labels[split.train]).backward()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return pd.DataFrame(rows)


def plain_loop_path(folder: str | Path) -> Path:
    """Where the plain loop of the run in ``folder`` is written: beside it (a run folder holds
    only the trainer's files), ``<setup>/plain_loop_seed_<s>.csv``."""
    folder = Path(folder)
    return folder.parent / f"plain_loop_{folder.name}.csv"


def plain_loop_job(job: Job, epochs: int) -> dict[str, Any]:
    """Write ``plain_loop(job.config, epochs)`` to :func:`plain_loop_path` (skipped if there)."""
    t0, c0 = time.perf_counter(), time.process_time()
    path = plain_loop_path(job.folder)
    if not path.exists() or len(pd.read_csv(path)) == 0 or int(pd.read_csv(path).epoch.iloc[-1]) < epochs:
        from mechgrok import speed

        with speed.torch_threads(1), speed.tuned_malloc(), speed.fast_float32_matmul(), speed.flushed_denormals():
            table = plain_loop(job.config, epochs)
        runs.atomic_write_text(path, table.to_csv(index=False, float_format="%.17g"))
    return {"name": f"{job.name} plain loop", "seed": job.seed, "folder": str(job.folder), "epoch": epochs,
            "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def plain_loop_agreement(folder: str | Path) -> pd.DataFrame:
    """The plain loop's losses beside the run's at the epochs both have, with their ratios."""
    folder = Path(folder)
    plain = pd.read_csv(plain_loop_path(folder))
    fast = runs.read_metrics(folder)
    if fast is None:
        raise ValueError(f"{folder} has no metrics yet: train the run (experiments/fidelity/study.py) before comparing")
    both = plain.merge(fast, on="epoch", suffixes=("_plain", "_fast"))
    for col in ("train_loss", "test_loss"):
        both[f"{col}_ratio"] = both[f"{col}_fast"] / both[f"{col}_plain"]
    return both[["epoch", "train_loss_plain", "train_loss_fast", "train_loss_ratio", "test_loss_plain", "test_loss_fast",
                 "test_loss_ratio", "test_acc_plain", "test_acc_fast"]]


# ----------------------------------------------------------------------------- summaries
def _first_epoch(metrics: pd.DataFrame, column: str, threshold: float) -> int | None:
    hit = metrics[metrics[column] >= threshold].epoch
    return int(hit.min()) if len(hit) else None


def run_row(folder: str | Path, *, full: bool = True) -> dict[str, Any]:
    """One run folder's numbers (``full``: also its progress measures, phases, key frequencies and §4.4)."""
    from mechgrok.analysis import progress
    from mechgrok.analysis.tables import ablation_tables

    folder = Path(folder)
    cfg = runs.read_config(folder)
    metrics = runs.read_metrics(folder)
    last = metrics.iloc[-1]
    peak = metrics.loc[metrics.test_loss.idxmax()]
    row: dict[str, Any] = {
        "folder": str(folder), "seed": cfg.seed, "epochs": int(last.epoch),
        "test_acc_0.5": _first_epoch(metrics, "test_acc", 0.5), "test_acc_0.99": _first_epoch(metrics, "test_acc", 0.99),
        "test_loss_peak": float(peak.test_loss), "test_loss_peak_epoch": int(peak.epoch),
        "final_train_loss": float(last.train_loss), "final_test_loss": float(last.test_loss),
        "final_test_acc": float(last.test_acc),
    }
    if not full:
        return row
    prog = progress.load_progress(folder)
    row.update(prog.phases.boundaries)
    row["key_frequencies"] = " ".join(map(str, prog.key_frequencies))
    model = runs.load_run(folder).model
    tables = ablation_tables(model)
    rules = tables["key_frequencies"].set_index("rule")["frequencies"].to_dict()
    for rule, freqs in rules.items():
        row[f"key_frequencies[{rule}]"] = freqs
    headline = tables["headline"].set_index("quantity")["ours"]
    row["neurons_explained_fraction"] = float(headline["neurons explained > threshold (fraction)"])
    section = tables["section_4_4"].set_index("intervention")["loss"]
    for name, value in section.items():
        row[f"§4.4 {name}"] = float(value)
    row["wl_projection_over_original"] = float(section["MLP output projected onto the 2K W_L directions"]) / float(section["original"])
    freqs = tables["frequencies"]
    single = freqs[freqs.frequency != "all but key"]
    non_key = single[~single.key.astype(bool)]
    if len(non_key):
        worst = non_key.loc[non_key.loss_all.astype(float).idxmax()]
        original = float(section["original"])
        row["worst_non_key_frequency"] = int(worst.frequency)
        row["worst_non_key_loss_change"] = float(worst.loss_all) / original - 1
    return row


def summarise(out: str | Path, *, on_row: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per run folder under ``out`` (setups: every number; variants: the training numbers)."""
    out = Path(out)
    rows = []
    for kind, parent in (("setup", out), ("variant", out / "variants")):
        if not parent.is_dir():
            continue
        for name_dir in sorted(p for p in parent.iterdir() if p.is_dir() and p.name != "variants"):
            for folder in sorted(name_dir.glob("seed_*"), key=lambda p: int(p.name.split("_")[1])):
                if not (folder / runs.METRICS_FILE).exists():
                    continue
                if on_row:
                    on_row(str(folder))
                rows.append({"kind": kind, "name": name_dir.name, **run_row(folder, full=kind == "setup")})
    return pd.DataFrame(rows)


def aggregate(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean, standard deviation, min and max of ``columns`` per (kind, name); n counts the runs
    that reached each quantity (a boundary a run never reached is left out, not zero)."""
    rows = []
    for (kind, name), group in table.groupby(["kind", "name"], sort=False):
        row: dict[str, Any] = {"kind": kind, "name": name, "runs": len(group)}
        for col in columns:
            if col not in group:
                continue
            values = pd.to_numeric(group[col], errors="coerce").dropna()
            row[f"{col} n"] = len(values)
            row[f"{col} mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{col} std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{col} min"] = float(values.min()) if len(values) else math.nan
            row[f"{col} max"] = float(values.max()) if len(values) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ the write-up
def _cell(values: pd.Series, fmt: str = "{:,.0f}") -> str:
    """mean ± sd (min–max) of the values present, and how many of the runs reached it."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "—"
    text = fmt.format(v.mean()) if len(v) == 1 else f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1))} ({fmt.format(v.min())}–{fmt.format(v.max())})"
    return text if len(v) == len(values) else f"{text} [{len(v)} of {len(values)}]"


def study_markdown(table: pd.DataFrame) -> str:
    """The study's tables as markdown: per setup (mean ± sd (min–max) over its seeds, beside the
    paper's), per variant (the grokking epochs), and per run. Every number comes from ``table``."""
    from mechgrok.reproduce import nanda2023

    parts = []
    every_setup = table[table.kind == "setup"]
    # a run stopped before it grokked has no grokking, cleanup or final numbers yet: it is listed, not averaged
    setups = every_setup[every_setup["test_acc_0.99"].notna()]
    rows = ["| quantity | " + " | ".join(f"`{n}` ({(setups.name == n).sum()} seeds)" for n in setups.name.unique()) + " | paper |",
            "|---|" + "---|" * (setups.name.nunique() + 1)]
    paper = {**nanda2023.PHASE_BOUNDARIES, "final_test_loss": None}
    quantities = [("memorization_end", "memorisation ends", "{:,.0f}"), ("circuit_formation_end", "circuit formation ends", "{:,.0f}"),
                  ("cleanup_end", "cleanup ends", "{:,.0f}"), ("test_acc_0.5", "test accuracy 0.5", "{:,.0f}"),
                  ("test_acc_0.99", "test accuracy 0.99", "{:,.0f}"), ("test_loss_peak", "test-loss peak", "{:.2f}"),
                  ("test_loss_peak_epoch", "its epoch", "{:,.0f}"), ("epochs", "epochs trained", "{:,.0f}"),
                  ("final_train_loss", "final train loss", "{:.2e}"), ("final_test_loss", "final test loss", "{:.2e}"),
                  ("neurons_explained_fraction", "neurons above the 0.85 cluster threshold", "{:.3f}"),
                  ("wl_projection_over_original", "loss with the MLP output projected onto W_L's 2K directions ÷ the loss", "{:.2f}"),
                  ("worst_non_key_loss_change", "largest change of the loss from removing one non-key frequency", "{:+.0%}")]
    for col, label, fmt in quantities:
        if col not in setups:
            continue
        cells = [_cell(setups[setups.name == n][col], fmt) for n in setups.name.unique()]
        published = paper.get(col)
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {'' if published is None else f'{published:,}'} |")
    for rule in ("W_L", "original", "clusters", "W_E"):
        col = f"key_frequencies[{rule}]"
        if col in setups:
            cells = ["; ".join(str(x) for x in setups[setups.name == n][col]) for n in setups.name.unique()]
            counts = [_cell(setups[setups.name == n][col].map(lambda s: len(str(s).split())), "{:.1f}") for n in setups.name.unique()]
            rows.append(f"| key frequencies, rule `{rule}` (per seed) | " + " | ".join(cells) + f" | {' '.join(map(str, nanda2023.KEY_FREQUENCIES))} |")
            rows.append(f"| how many, rule `{rule}` | " + " | ".join(counts) + f" | {len(nanda2023.KEY_FREQUENCIES)} |")
    parts.append("\n".join(rows))
    unfinished = every_setup[every_setup["test_acc_0.99"].isna()]
    if len(unfinished):
        parts.append("Not in the means, stopped before test accuracy 0.99: " + "; ".join(
            f"`{r['name']}` seed {r['seed']} at epoch {int(r['epochs']):,} (test accuracy {r['final_test_acc']:.3f})"
            for _, r in unfinished.iterrows()) + ".")

    variants = table[table.kind == "variant"]
    if len(variants):
        base = setups[setups.name == "paper"]["test_acc_0.99"] if "paper" in set(setups.name) else pd.Series(dtype=float)
        rows = ["| variant (the paper default but) | seeds | epoch of test accuracy 0.99, per seed | mean |",
                "|---|---:|---|---:|"]
        if len(base):
            rows.append(f"| nothing (`paper`) | {len(base)} | {', '.join(f'{int(x):,}' for x in base.dropna())} | {base.mean():,.0f} |")
        for name, group in variants.groupby("name", sort=False):
            what = VARIANTS[name][0] if name in VARIANTS else name
            got = ", ".join(f"{int(x):,}" if pd.notna(x) else f"not by {int(e):,}" for x, e in zip(group["test_acc_0.99"], group.epochs))
            mean = pd.to_numeric(group["test_acc_0.99"], errors="coerce").dropna()
            rows.append(f"| {what} | {len(group)} | {got} | {mean.mean():,.0f}{'' if len(mean) == len(group) else ' (grokked runs)'} |")
        parts.append("\n".join(rows))

    parts.append(_section_4_4_markdown(setups))

    cols = ["name", "seed", "epochs", "memorization_end", "circuit_formation_end", "cleanup_end", "test_acc_0.5", "test_acc_0.99",
            "test_loss_peak", "test_loss_peak_epoch", "final_train_loss", "final_test_loss", "key_frequencies"]
    present = [c for c in cols if c in table]
    rows = ["| " + " | ".join(present) + " | folder |", "|" + "---|" * (len(present) + 1)]
    for _, r in table.iterrows():
        cells = []
        for c in present:
            v = r[c] if c != "key_frequencies" or pd.notna(r["test_acc_0.99"]) else None  # not grokked: no circuit yet
            cells.append("—" if v is None or (isinstance(v, float) and math.isnan(v)) else
                         f"{v:.3g}" if isinstance(v, float) and c.endswith(("loss", "peak")) else
                         f"{int(v):,}" if isinstance(v, (int, float)) and c not in ("seed",) else str(v))
        rows.append("| " + " | ".join(cells) + f" | `{r.folder}` |")
    parts.append("\n".join(rows))
    return "\n\n".join(part for part in parts if part) + "\n"


# short column labels of the §4.4 interventions (mechgrok.analysis.ablations.section_4_4_table)
SECTION_4_4_LABELS = {
    "original": "loss",
    "clustered neurons -> single-frequency degree-2 approximation": "neurons → degree-2",
    "neurons: keep only cos/sin(w_k(a+b)) of key frequencies": "neurons: key cos/sin only",
    "MLP output projected onto the 2K W_L directions": "MLP out on W_L",
    "MLP output projected onto the null space of the W_L directions": "MLP out on W_L's null space",
    "logits: keep only the 2D terms of key frequencies": "logits: key 2D terms only",
    "logits: keep only cos/sin(w_k(a+b)) of key frequencies (restricted loss)": "restricted loss",
    "logits: remove cos/sin(w_k(a+b)) of key frequencies": "excluded loss",
}


def _section_4_4_markdown(setups: pd.DataFrame) -> str:
    """Per grokked setup run: the §4.4 losses (on all p² inputs, at the run's last epoch), the
    fraction of neurons above the cluster threshold and the non-key frequency whose removal moves
    the loss most; the paper's values in the first row."""
    from mechgrok.reproduce import nanda2023

    present = [name for name in SECTION_4_4_LABELS if f"§4.4 {name}" in setups]
    if not present:
        return ""
    head = ["name", "seed", *(SECTION_4_4_LABELS[n] for n in present), "neurons > 0.85",
            "worst non-key frequency (loss change)"]
    rows = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]

    def num(v: Any) -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"

    paper = [num(nanda2023.SECTION_4_4.get(n, math.nan)) for n in present]
    rows.append("| Nanda et al. (published) | | " + " | ".join(paper) + f" | {num(nanda2023.HEADLINE.get('neurons explained > threshold (fraction)', math.nan))} | |")
    for _, r in setups.iterrows():
        worst = r.get("worst_non_key_frequency")
        change = "—" if worst is None or pd.isna(worst) else f"{int(worst)} ({r['worst_non_key_loss_change']:+.0%})"
        rows.append(f"| {r['name']} | {r.seed} | " + " | ".join(num(r[f'§4.4 {n}']) for n in present)
                    + f" | {num(r.get('neurons_explained_fraction'))} | {change} |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------ the record
# a run's config and metrics, and its cached progress measures (analysis.progress.MEASURES_FILE and
# META_FILE, spelled out here: importing analysis.progress loads TransformerLens)
RECORD_FILES = (runs.CONFIG_FILE, runs.METRICS_FILE, "progress.csv", "progress.json")
RECORD_TABLE = "study.csv"
# the columns a record recomputes from its files (the rest need the checkpoints it leaves out)
RECORD_TRAINING = ("epochs", "test_acc_0.5", "test_acc_0.99", "test_loss_peak", "test_loss_peak_epoch",
                   "final_train_loss", "final_test_loss", "final_test_acc")
RECORD_PHASES = ("memorization_end", "circuit_formation_end", "cleanup_end")


def write_record(table: pd.DataFrame, out: str | Path, record: str | Path) -> Path:
    """Copy each run's small files (``RECORD_FILES``: config, metrics, progress measures; no
    checkpoints) and its plain loop's table, if any, from under ``out`` to the same place under
    ``record``, and ``table`` beside them as ``study.csv`` (folders relative to ``out``), so the
    published table can be checked against its runs without their checkpoints
    (:func:`check_record`). Returns the table's path."""
    import shutil

    out, record = Path(out), Path(record)
    for folder in table.folder:
        target = record / Path(folder).relative_to(out)
        target.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (Path(folder) / name).exists():
                shutil.copyfile(Path(folder) / name, target / name)
        if plain_loop_path(folder).exists():
            shutil.copyfile(plain_loop_path(folder), plain_loop_path(target))
    path = record / RECORD_TABLE
    table.assign(folder=[str(Path(f).relative_to(out)) for f in table.folder]).to_csv(path, index=False)
    return path


def check_record(record: str | Path) -> list[str]:
    """What in the record's ``study.csv`` its run files do not give back: the training numbers
    (``RECORD_TRAINING``, from each run's config and metrics), and for a setup the phase boundaries
    and key frequencies (from its cached progress measures). An empty list: every number agrees."""
    from mechgrok.analysis import progress

    record = Path(record)
    table = pd.read_csv(record / RECORD_TABLE, dtype={"key_frequencies": str})
    wrong = []

    def differ(folder: str, column: str, published: Any, found: Any) -> None:
        missing = (published is None or pd.isna(published)), (found is None or pd.isna(found))
        if missing == (True, True):
            return
        if any(missing) or not math.isclose(float(published), float(found), rel_tol=1e-9):
            wrong.append(f"{folder}: {column} is {published} in {RECORD_TABLE}, {found} from its files")

    for _, published in table.iterrows():
        folder = record / published.folder
        if not (folder / runs.METRICS_FILE).exists():
            wrong.append(f"{published.folder}: no {runs.METRICS_FILE} in the record")
            continue
        found = run_row(folder, full=False)
        for column in RECORD_TRAINING:
            differ(published.folder, column, published[column], found[column])
        if published.kind == "setup":
            prog = progress.read_progress(folder)
            for column in RECORD_PHASES:
                differ(published.folder, column, published[column], prog.phases.boundaries.get(column))
            key = " ".join(map(str, prog.key_frequencies))
            if str(published.key_frequencies) != key:
                wrong.append(f"{published.folder}: key_frequencies are {published.key_frequencies} in {RECORD_TABLE}, "
                             f"{key} from its files")
    return wrong
