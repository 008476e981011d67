"""Progress measures (Nanda et al. §5; docs/concepts.md) at every checkpoint of a run.

One row per saved checkpoint, one column per measure:

=============================  =================================================================
column                         meaning
=============================  =================================================================
epoch                          the checkpoint's epoch
train_loss, test_loss          float64 cross-entropy of the p task logits on each split
train_acc, test_acc            argmax accuracy on each split
restricted_loss                the logits projected onto cos/sin(w_k(a+b)) (a-b for op='sub') of
                               the key frequencies, plus each class's mean logit; loss on all p² inputs
excluded_loss                  the logits minus that projection; loss on the train inputs
excluded_loss_train_fit        the same with the directions' coefficients fitted by least squares on
                               the train inputs only (with a per-class constant), so no test
                               logit enters it (``ablations.excluded_loss_train_fit``)
excluded_loss[k]               the same with only key frequency k removed
test_restricted_ratio          test_loss / restricted_loss
gini_W_E, gini_W_L             Gini coefficient of the norms of the p-1 non-constant Fourier
                               components of W_E (over the residue axis, ``=`` row dropped) and
                               of W_L = W_out @ W_U (over the logit axis)
sum_sq_weights                 Σ of squared entries of every parameter
sum_sq_weights[name]           the same for one parameter (TransformerLens names)
cos_coefficient[k]             α_k of the fit logits ≈ Σ_k α_k cos(w_k(a+b-c)) (a-b-c for op='sub')
=============================  =================================================================

Valid tasks: modular arithmetic with op='add' (directions of a+b) or op='sub' (a-b); the sign
and the labels come from the run's task (``ModularTask.fourier_combination``), and every other
operation is refused with a ``ValueError`` (``require_fourier``).

The key frequencies are fixed from the run's final checkpoint (``circuits.key_frequencies``,
rule ``W_L`` by default) and reused at every checkpoint, as in the paper.

Speed: the logits over all p² inputs come from :class:`mechgrok.models.fastpath.FastPath` (the
trainer's exact last-position forward) and every projection is one matmul against the
precomputed orthonormal directions of ``fourier.frequency_directions_2d``; the results equal
``ablations.restricted_loss`` / ``excluded_loss`` and ``circuits.logit_cos_fit`` (pinned in
``tests/test_progress.py``).

The table is cached in the run folder as ``progress.csv`` with ``progress.json`` (the key
frequencies, the rule, and a fingerprint of the checkpoint files); :func:`load_progress`
recomputes it when it is missing or stale.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechgrok import runs, speed
from mechgrok.analysis import circuits, fourier
from mechgrok.analysis.phases import Phases, detect_phases
from mechgrok.models.fastpath import FastPath
from mechgrok.models.transformer import build_model
from mechgrok.scoring import task_logits
from mechgrok.tasks.base import Split
from mechgrok.tasks.modular import ModularTask, require_fourier

__all__ = [
    "MEASURES_FILE",
    "META_FILE",
    "MEASURES_VERSION",
    "read_progress",
    "gini",
    "fourier_ginis",
    "sum_squared_weights",
    "LogitMeasurer",
    "measure_checkpoint",
    "final_key_frequencies",
    "compute_measures",
    "Progress",
    "load_progress",
    "is_stale",
    "frequency_columns",
    "parameter_columns",
    "to_long",
]

MEASURES_FILE = "progress.csv"
META_FILE = "progress.json"
# Bump when a measure's definition changes: cached tables of another version are recomputed.
# 3: op='sub' runs use their own labels and cos/sin(w(a-b)) (version 2 measured them as addition).
# 4: the column excluded_loss_train_fit (the excluded loss fitted on the train inputs only).
MEASURES_VERSION = 4


# ----------------------------------------------------------------------------- weight measures
def gini(values: Float[Tensor, "*rest n"]) -> Float[Tensor, "*rest"]:
    """Gini coefficient (Hurley & Rickard 2009) of non-negative values along the last axis.

    For sorted c_1 <= ... <= c_N: G = 1 - 2 Σ_i (c_i / ||c||_1) (N - i + 1/2) / N. It is 0 when
    all values are equal and 1 - 1/N when one value holds everything (float64).

    >>> gini(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    tensor(0.7500, dtype=torch.float64)
    """
    c = values.double()
    if c.shape[-1] == 0:
        raise ValueError("gini needs at least one value on the last axis")
    if bool((c < 0).any()):
        raise ValueError("gini is defined for non-negative values (norms); take .abs() or norms first")
    c, _ = c.sort(dim=-1)
    n = c.shape[-1]
    i = torch.arange(1, n + 1, dtype=torch.float64)
    total = c.sum(-1, keepdim=True)
    share = c / torch.where(total > 0, total, torch.ones_like(total))
    return 1 - 2 * (share * (n - i + 0.5) / n).sum(-1)


def fourier_ginis(W_E: Float[Tensor, "d_vocab d_model"], W_L: Float[Tensor, "neuron c"], p: int) -> dict[str, float]:
    """Gini of the norms of the p-1 non-constant Fourier components of W_E and of W_L.

    The constant component is left out: it is a shared offset (W_E) or a per-neuron logit bias
    that softmax ignores (W_L), not a frequency.
    """
    e = circuits.embedding_fourier_norms(W_E, p).component[1:]
    w = circuits.neuron_logit_fourier_norms(W_L).component[1:]
    return {"gini_W_E": gini(e).item(), "gini_W_L": gini(w).item()}


def sum_squared_weights(state: dict[str, Tensor]) -> dict[str, float]:
    """``sum_sq_weights`` (all parameters) and ``sum_sq_weights[name]`` per parameter (float64)."""
    per = {f"sum_sq_weights[{name}]": float(t.double().square().sum()) for name, t in sorted(state.items())}
    return {"sum_sq_weights": math.fsum(per.values()), **per}


# ----------------------------------------------------------------------------- logit measures
def _row_losses(logits64: Float[Tensor, "batch c"], labels: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
    """Per-input float64 cross-entropy (mean it for the loss): log Σ_j exp(x_j - m) + (m - x_label).

    The same numbers as ``-log_softmax(x)[label]`` (to ~1e-14), about twice as fast on CPU. When
    the label holds the max, m - x_label is exactly 0, so a loss of 1e-7 keeps full precision.
    """
    m = logits64.amax(-1, keepdim=True)
    sum_exp = (logits64 - m).exp_().sum(-1)
    return sum_exp.log_() + (m[:, 0] - logits64.gather(-1, labels[:, None])[:, 0])


def _fourier_task(task: object, analysis: str) -> int:
    """The task's Fourier sign, with a pointed error for the old ``p`` argument."""
    if isinstance(task, int) and not isinstance(task, bool):
        raise ValueError(
            f"{analysis} takes the run's task, not p={task}: pass ModularTask(p, op) (runs.attached(model).task), "
            "so the labels and directions are those of the run's operation"
        )
    return require_fourier(task, analysis)


class LogitMeasurer:
    """The logit-based measures of one model, for a fixed task, split and key frequencies.

    Valid for op='add' and op='sub' (``task`` is the run's ``ModularTask``; others raise
    ``ValueError``). The labels are the task's. Directions are built once: the unit
    cos/sin(w_k(a ± b)) vectors over the grid (``fourier.frequency_directions_2d`` with the
    task's sign), which are orthonormal and orthogonal to constants, so a projection is one
    matmul and "plus each class's mean" needs no centring first.

    >>> m = LogitMeasurer(ModularTask(p, "sub"), split, key_freqs=[14, 35, 41, 42, 52])
    >>> m(logits)["restricted_loss"]      # logits: [p², p] over all inputs in grid order
    """

    def __init__(self, task: ModularTask, split: Split, key_freqs: Iterable[int]):
        self.sign = _fourier_task(task, "LogitMeasurer")
        self.task = task
        p = self.p = task.p
        self.key_freqs = fourier.check_frequencies(key_freqs, p)
        if not self.key_freqs:
            raise ValueError("key_freqs is empty; pass the model's key frequencies (circuits.key_frequencies)")
        self.labels = task.labels()
        if len(split.train) + len(split.test) != p * p:
            raise ValueError(f"the split covers {len(split.train) + len(split.test)} inputs, but p={p} has {p * p}")
        self.train, self.test = split.train, split.test
        self.D = fourier.frequency_directions_2d(p, self.key_freqs, "sum", self.sign)  # [2K, p²], float64
        self.D_train = self.D[:, self.train].contiguous()
        # least squares on the train rows: [1, D_train.T] coef = L_train, solved once as a pseudo-inverse
        design = torch.cat([torch.ones(len(self.train), 1, dtype=torch.float64), self.D_train.T], dim=1)
        self.train_fit = torch.linalg.pinv(design)[1:].contiguous()  # [2K, n_train]: the directions' rows
        c = torch.arange(p, dtype=torch.float64)
        w = torch.tensor([2 * math.pi * k / p for k in self.key_freqs], dtype=torch.float64)[:, None]
        self.cos_c, self.sin_c = torch.cos(w * c), torch.sin(w * c)  # [K, p]

    def __call__(self, logits: Float[Tensor, "batch d_vocab_out"]) -> dict[str, float]:
        p, train, test, labels = self.p, self.train, self.test, self.labels
        L = task_logits(logits, p).double()
        if L.shape[0] != p * p:
            raise ValueError(f"logits must cover all p²={p * p} inputs in grid order, got {L.shape[0]} rows")
        out: dict[str, float] = {}
        row_loss = _row_losses(L, labels)  # one log-softmax serves both splits
        correct = (L.argmax(-1) == labels).double()
        for name, idx in (("train", train), ("test", test)):
            out[f"{name}_loss"] = row_loss[idx].mean().item()
            out[f"{name}_acc"] = correct[idx].mean().item()
        coef = self.D @ L  # [2K, p]: each class's logits along each direction
        out["restricted_loss"] = _row_losses(L.mean(0) + self.D.T @ coef, labels).mean().item()
        L_train, labels_train = L[train], labels[train]
        out["excluded_loss"] = _row_losses(L_train - self.D_train.T @ coef, labels_train).mean().item()
        fitted = self.train_fit @ L_train  # [2K, p]: coefficients from the train rows alone
        out["excluded_loss_train_fit"] = _row_losses(L_train - self.D_train.T @ fitted, labels_train).mean().item()
        for i, k in enumerate(self.key_freqs):
            rows = slice(2 * i, 2 * i + 2)
            excluded = L_train - self.D_train[rows].T @ coef[rows]
            out[f"excluded_loss[{k}]"] = _row_losses(excluded, labels_train).mean().item()
        out["test_restricted_ratio"] = out["test_loss"] / out["restricted_loss"]
        # α_k = <L, cos(w_k(s-c))> / <cos, cos> for s = a ± b, with cos(w(s-c)) = cos(ws)cos(wc) + sin(ws)sin(wc);
        # the unit directions are cos(ws)/sqrt(p²/2), and Σ_{a,b,c} cos² = p³/2.
        along = coef.view(len(self.key_freqs), 2, p)
        dots = (along[:, 0] * self.cos_c).sum(-1) + (along[:, 1] * self.sin_c).sum(-1)
        alpha = dots * math.sqrt(p * p / 2) / (p**3 / 2)
        for k, a in zip(self.key_freqs, alpha.tolist()):
            out[f"cos_coefficient[{k}]"] = a
        return out


def measure_checkpoint(
    logits: Float[Tensor, "batch d_vocab_out"],
    state: dict[str, Tensor],
    task: ModularTask,
    split: Split,
    key_freqs: Iterable[int],
) -> dict[str, float]:
    """Every measure of one checkpoint: its logits over all p² inputs (grid order) and its weights.

    ``task`` is the run's (``runs.attached(model).task``): op='add' or op='sub', whose labels and
    directions are used; other operations raise ``ValueError``. ``state`` maps TransformerLens
    parameter names to tensors (``runs.state_tensors(model)``).
    """
    out = LogitMeasurer(task, split, key_freqs)(logits)
    out.update(_weight_measures(state, task.p))
    return out


def _weight_measures(state: dict[str, Tensor], p: int) -> dict[str, float]:
    W_L = circuits.neuron_logit_map(state["blocks.0.mlp.W_out"].double(), state["unembed.W_U"].double(), p)
    return {**fourier_ginis(state["embed.W_E"], W_L, p), **sum_squared_weights(state)}


# ----------------------------------------------------------------------------- over a run
def final_key_frequencies(run_dir: Path, rule: str = circuits.DEFAULT_KEY_FREQUENCY_RULE) -> list[int]:
    """The key frequencies of a run's newest checkpoint, by ``rule`` (``circuits.KEY_FREQUENCY_RULES``)."""
    run = runs.load_run(run_dir)
    return circuits.key_frequencies(circuits.gather_activations(run.model), rule)


def compute_measures(
    run_dir: str | Path,
    key_freqs: Sequence[int] | None = None,
    *,
    rule: str = circuits.DEFAULT_KEY_FREQUENCY_RULE,
    epochs: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
    fast_matmul: bool = True,
    tune_malloc: bool = True,
    flush_denormals: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[pd.DataFrame, list[int]]:
    """Every measure at every saved checkpoint (or at ``epochs``) of a run folder; no caching.

    Valid for runs of op='add' and op='sub' (the run's own labels and directions); other
    operations raise ``ValueError``. ``key_freqs`` default to those of the newest checkpoint by ``rule``. ``dtype`` is the
    precision of the forward pass (float64 reproduces HookedTransformer to ~1e-13).
    ``fast_matmul`` lets float32 GEMMs use oneDNN inside this call when that keeps float32
    accuracy (``mechgrok.speed``); the previous setting is restored afterwards.
    ``tune_malloc`` applies ``speed.tuned_malloc`` within this call (as the trainer does): without
    it glibc page-faults every large temporary back in, and the forward pass is about twice as slow.
    ``flush_denormals`` flushes subnormal floats to zero within this call, as the trainer does
    (``speed.flushed_denormals``): a late checkpoint's many subnormal weights are slow on some CPUs.
    ``device`` ("cpu" or "cuda") runs each checkpoint's forward pass over the p² inputs there
    (float32 GEMMs exact: no TF32); the logits come back to the CPU, where the float64 measures
    are taken, so the table is the same on either device up to the forward's rounding.
    Returns (table, key frequencies).
    """
    from mechgrok.training.device import resolve_device, to_device  # a device this torch lacks: the fix
    from mechgrok.training.stack import matmul_precision

    dev = resolve_device(device)
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG_FILE).exists():
        raise ValueError(f"{run_dir} is not a mechgrok run folder (no {runs.CONFIG_FILE}); train one with `mechgrok train --out {run_dir}`")
    cfg = runs.read_config(run_dir)
    if cfg.task != "modular" or cfg.family != "transformer":
        raise ValueError(f"the progress measures are computed for the transformer family on modular arithmetic; "
                         f"{run_dir} is a {cfg.family} run on task {cfg.task!r}. Its figures: docs/pair2023.md")
    task = ModularTask(cfg.p, cfg.op)
    require_fourier(task, "compute_measures")
    saved = runs.checkpoint_epochs(run_dir)
    if not saved:
        raise ValueError(f"{run_dir} has no checkpoints yet; train it with `mechgrok train --out {run_dir}`")
    if epochs is None:
        epochs = saved
    missing = sorted(set(epochs) - set(saved))
    if missing:
        raise ValueError(f"{run_dir} has no checkpoint at epochs {missing[:5]}; saved epochs run {saved[0]}..{saved[-1]}")
    if key_freqs is None:
        key_freqs = final_key_frequencies(run_dir, rule)
    split = runs.read_split(run_dir)
    measurer = LogitMeasurer(task, split, key_freqs)
    forward = FastPath(task.tokens().to(dev), task.labels().to(dev))
    model = to_device(build_model(cfg), dev)  # one model; each checkpoint's weights are copied in
    if dtype != torch.float32:
        model = model.to(dtype)
    rows = []
    with torch.no_grad(), speed.tuned_malloc(tune_malloc and dev.type == "cpu"), \
            matmul_precision(dev, fast_matmul and dtype == torch.float32), \
            speed.flushed_denormals(flush_denormals and dev.type == "cpu"):
        for epoch in epochs:
            state = runs.read_checkpoint_file(runs.checkpoint_path(run_dir, epoch)).model_state
            model.load_state_dict(state, strict=False)
            row: dict[str, Any] = {"epoch": epoch}
            row.update(measurer(forward.logits(model).cpu()))
            row.update(_weight_measures(state, cfg.p))
            rows.append(row)
    return pd.DataFrame(rows), list(measurer.key_freqs)


# ----------------------------------------------------------------------------- caching
def _fingerprint(run_dir: Path) -> list[list[int]]:
    """(epoch, size, mtime_ns) of every checkpoint file: changes when any is added or rewritten."""
    out = []
    for epoch in runs.checkpoint_epochs(run_dir):
        st = runs.checkpoint_path(run_dir, epoch).stat()
        out.append([epoch, st.st_size, st.st_mtime_ns])
    return out


def _read_meta(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / META_FILE
    if not path.exists() or not (Path(run_dir) / MEASURES_FILE).exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_stale(run_dir: str | Path, rule: str = circuits.DEFAULT_KEY_FREQUENCY_RULE) -> bool:
    """Whether ``progress.csv`` is missing, or was computed from other checkpoints, rule or version."""
    meta = _read_meta(Path(run_dir))
    return (
        meta is None
        or meta.get("version") != MEASURES_VERSION
        or meta.get("rule") != rule
        or meta.get("checkpoints") != _fingerprint(Path(run_dir))
    )


@dataclass(frozen=True)
class Progress:
    """A run's progress measures, the key frequencies they use, and the detected phases."""

    measures: pd.DataFrame
    key_frequencies: list[int]
    rule: str
    phases: Phases
    computed_s: float
    recomputed: bool


def load_progress(
    run_dir: str | Path, *, rule: str = circuits.DEFAULT_KEY_FREQUENCY_RULE, recompute: bool = False,
    device: str | torch.device = "cpu",
) -> Progress:
    """The run's measures from ``progress.csv``, recomputed (and rewritten) if missing or stale.

    ``device`` is where a recomputation runs its forward passes (:func:`compute_measures`); the
    table is on the CPU either way.

    >>> prog = load_progress("runs/mainline")
    >>> prog.measures[["epoch", "restricted_loss", "excluded_loss"]], prog.phases.boundaries
    """
    run_dir = Path(run_dir)
    if rule not in circuits.KEY_FREQUENCY_RULES:
        raise ValueError(f"rule={rule!r} is not one of {sorted(circuits.KEY_FREQUENCY_RULES)}")
    recomputed = recompute or is_stale(run_dir, rule)
    if recomputed:
        fingerprint = _fingerprint(run_dir)
        t0 = time.perf_counter()
        measures, key = compute_measures(run_dir, rule=rule, epochs=[e for e, _, _ in fingerprint], device=device)
        seconds = time.perf_counter() - t0
        buffer = io.StringIO()
        measures.to_csv(buffer, index=False, float_format="%.17g")
        runs.atomic_write_text(run_dir / MEASURES_FILE, buffer.getvalue())
        meta = {"version": MEASURES_VERSION, "rule": rule, "key_frequencies": key, "computed_s": seconds,
                "checkpoints": fingerprint}
        runs.atomic_write_text(run_dir / META_FILE, json.dumps(meta) + "\n")
        return Progress(measures, key, rule, detect_phases(measures), seconds, True)
    return read_progress(run_dir)


def read_progress(run_dir: str | Path) -> Progress:
    """The measures cached in ``progress.csv`` and ``progress.json`` as they were written, not
    checked against the checkpoints (:func:`load_progress` checks and recomputes): for a copy of a
    run folder that kept the tables but not the checkpoints."""
    run_dir = Path(run_dir)
    meta = _read_meta(run_dir)
    if meta is None:
        raise ValueError(f"{run_dir} has no readable {MEASURES_FILE} and {META_FILE}; "
                         f"mechgrok.analysis.progress.load_progress({str(run_dir)!r}) computes them from its checkpoints")
    measures = pd.read_csv(run_dir / MEASURES_FILE)
    measures = measures.astype({c: float for c in measures.columns if c != "epoch"})  # all-zero columns read as int
    return Progress(measures, list(meta["key_frequencies"]), meta["rule"], detect_phases(measures),
                    float(meta["computed_s"]), False)


# ----------------------------------------------------------------------------- table helpers
def frequency_columns(measures: pd.DataFrame, measure: str) -> dict[int, str]:
    """{k: column} of a per-frequency measure, e.g. ``frequency_columns(df, "excluded_loss")``."""
    prefix = f"{measure}["
    return {int(c[len(prefix):-1]): c for c in measures.columns if c.startswith(prefix) and c[len(prefix):-1].isdigit()}


def parameter_columns(measures: pd.DataFrame) -> dict[str, str]:
    """{parameter name: column} of the per-parameter sums of squared weights."""
    prefix = "sum_sq_weights["
    return {c[len(prefix):-1]: c for c in measures.columns if c.startswith(prefix)}


def to_long(measures: pd.DataFrame) -> pd.DataFrame:
    """The table in long form: epoch, measure, key (frequency or parameter, else ""), value."""
    long = measures.melt(id_vars="epoch", var_name="column", value_name="value")
    parts = long["column"].str.extract(r"^(?P<measure>[^\[]+)(?:\[(?P<key>[^\]]+)\])?$")
    return pd.DataFrame({"epoch": long["epoch"], "measure": parts["measure"], "key": parts["key"].fillna(""),
                         "value": long["value"]})
