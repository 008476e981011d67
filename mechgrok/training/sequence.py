"""The general sequence trainer: a ``HookedTransformer`` on any task, the loss read at chosen positions.

The Alignment Forum post's tasks (:mod:`mechgrok.tasks.sequence`) train here, on the family
``sequence_transformer``: a plain forward and autograd (no fast path), AdamW with the run's lr,
weight decay, betas and warm-up (:mod:`.optim`), and the loss

    mean over the scored labels of -log_softmax(logits[:, loss_positions])[label]

computed in the run's ``loss_dtype`` (float64 by default), unscored labels (``IGNORE``) left out.

One step is one optimiser step. Its batch is the whole train set (``batch_size=0``), a minibatch
of it drawn from the stream ``"<task>-minibatch-<step>"`` (``batch_size > 0``), or, with
``data='fresh'``, ``batch_size`` new examples (:func:`mechgrok.tasks.data.fresh_batch`, "infinite
data"). Every batch is a function of (config, step), so a resumed run draws the same batches and
ends bit-identical to an uninterrupted one.

The run folder is the mainline's (:mod:`mechgrok.runs`): config, split, checkpoints, resume
file, ``metrics.csv`` (train loss and accuracy: the whole train set for a fixed set, the step's
batch for fresh data; test: the whole test set; accuracy per scored token), plus
``components.csv``: every ``eval_every`` steps, each loss component's train and test loss
(one answer digit of addition, one skip trigram of max of a list), the curves whose phase
changes :mod:`mechgrok.analysis.phase_changes` finds.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechgrok import registry, runs, scoring, speed
from mechgrok.config import Config
from mechgrok.tasks.base import stream_generator
from mechgrok.tasks.data import RunData, fresh_batch, run_data
from mechgrok.tasks.sequence import IGNORE, SequenceTask
from mechgrok.training.loop import TrainResult, _check_finite, _diverged, _existing_run, _stop_on_signals, log_metrics_row
from mechgrok.training.device import resolve_device, to_device
from mechgrok.training.memory import check_fits
from mechgrok.training.optim import load_optimizer_tensors, lr_at, make_optimizer, optimizer_tensors

__all__ = ["COMPONENTS_FILE", "train_sequence", "sequence_loss", "component_losses", "read_components", "component_curves", "batch_at"]

COMPONENTS_FILE = runs.COMPONENTS_FILE
COMPONENT_COLUMNS = ["epoch", "component", "train_loss", "test_loss"]


def sequence_loss(
    logits: Float[Tensor, "batch loss_pos d_vocab_out"], labels: Int[Tensor, "batch loss_pos"], loss_dtype: str = "float64"
) -> tuple[Tensor, Tensor, Tensor]:
    """(mean loss over the scored labels, number of them predicted right, number scored)."""
    scored = labels != IGNORE
    logp = logits.to(scoring.loss_dtype(loss_dtype)).log_softmax(-1)
    picked = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    n = scored.sum()
    loss = -(picked * scored).sum() / n.clamp(min=1)
    correct = ((logits.argmax(-1) == labels) & scored).sum()
    return loss, correct, n


@torch.no_grad()
def component_losses(
    logits: Float[Tensor, "batch loss_pos d_vocab_out"], labels: Int[Tensor, "batch loss_pos"],
    components: Int[Tensor, "batch loss_pos"], n_components: int, loss_dtype: str = "float64",
) -> Tensor:
    """The mean loss of each component's scored labels ([n_components]; NaN for a component with none)."""
    logp = logits.to(scoring.loss_dtype(loss_dtype)).log_softmax(-1)
    nll = -logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    keep = components != IGNORE
    index = components.clamp(min=0)[keep]
    total = torch.zeros(n_components, dtype=nll.dtype, device=nll.device).index_add_(0, index, nll[keep])
    count = torch.zeros(n_components, dtype=nll.dtype, device=nll.device).index_add_(0, index, torch.ones_like(nll[keep]))
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def batch_at(cfg: Config, data: RunData, step: int) -> tuple[Tensor, Tensor]:
    """The (tokens, labels) that step ``step`` of a run of ``cfg`` trains on (module docstring)."""
    if cfg.data == "fresh":
        return fresh_batch(cfg, step)
    train = data.split.train
    if cfg.batch_size == 0:
        return data.tokens[train], data.labels[train]
    order = torch.randperm(len(train), generator=stream_generator(f"{cfg.task}-minibatch-{step}", cfg.seed))
    rows = train[order[: cfg.batch_size]]
    return data.tokens[rows], data.labels[rows]


def read_components(run_dir: str | Path) -> pd.DataFrame | None:
    """A run's ``components.csv`` (epoch, component, train_loss, test_loss), or None if it has none."""
    path = Path(run_dir) / COMPONENTS_FILE
    if not path.exists():
        return None
    frame = pd.read_csv(path, dtype={"component": str})
    missing = [c for c in COMPONENT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; it was edited or damaged. Re-train the run into a new folder")
    return frame


def component_curves(run_dir: str | Path, split: str = "test") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{component: (steps, loss)} from a run's components.csv, in the task's order (``split``: train or test)."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} must be 'train' or 'test'")
    frame = read_components(run_dir)
    if frame is None:
        raise ValueError(f"{run_dir} has no {COMPONENTS_FILE}; it is not a sequence-task run (mechgrok.training.sequence)")
    column = f"{split}_loss"
    curves = {}
    for name, part in frame.groupby("component", sort=False):
        part = part.dropna(subset=[column]).sort_values("epoch")
        curves[str(name)] = (part["epoch"].to_numpy(float), part[column].to_numpy(float))
    return curves


def _write_components(run_dir: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=COMPONENT_COLUMNS).to_csv(buffer, index=False)
    runs.atomic_write_text(run_dir / COMPONENTS_FILE, buffer.getvalue())


def _check(cfg: Config, data: RunData) -> None:
    if registry.family(cfg.family).training != "sequence":
        raise ValueError(f"family={cfg.family!r} does not train with the sequence trainer; use mechgrok.train(cfg, out_dir)")
    if not isinstance(data.task, SequenceTask):
        raise ValueError(f"task={cfg.task!r} is not a sequence task; the sequence trainer trains addition, induction and max_list")
    if cfg.decay != "l2" or cfg.loss_scale != "mean":
        raise ValueError(
            f"decay={cfg.decay!r}, loss_scale={cfg.loss_scale!r}: the sequence trainer offers AdamW's weight decay on the "
            "mean loss only; pass decay='l2', loss_scale='mean'"
        )
    if cfg.data == "fixed" and cfg.batch_size > cfg.n_train:
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the train set (n_train={cfg.n_train}); pass batch_size <= n_train, "
                         "or 0 for the full batch")


def train_sequence(
    cfg: Config,
    out_dir: str | Path,
    *,
    progress: bool = False,
    tune_process: bool = True,
    threads: int | None = None,
    on_eval: Callable[[dict], None] | None = None,
    on_resume: Callable[[int], None] | None = None,
    device: str = "cpu",
) -> TrainResult:
    """Train ``cfg`` (a sequence task) into ``out_dir``, or resume the run there; the keywords are
    :func:`mechgrok.train`'s. ``device`` may be "cpu" or "cuda" (TF32 stays off)."""
    data = run_data(cfg)
    _check(cfg, data)
    dev = resolve_device(device)
    check_fits([cfg])
    with runs.lock_run_folder(Path(out_dir)), speed.torch_threads(threads) as n, speed.tuned_malloc(tune_process), \
            speed.fast_float32_matmul(tune_process and dev.type == "cpu"), \
            speed.flushed_denormals(tune_process and dev.type == "cpu"):
        result = _train(cfg, Path(out_dir), data, dev, progress, on_eval, on_resume)
    result.threads = n
    return result


def _train(cfg: Config, out_dir: Path, data: RunData, dev: torch.device, progress: bool,
           on_eval: Callable[[dict], None] | None, on_resume: Callable[[int], None] | None) -> TrainResult:
    family = registry.family(cfg.family)
    task: SequenceTask = data.task
    positions = torch.tensor(task.loss_positions, device=dev)
    names = task.component_names
    runs.clear_unfinished_writes(out_dir)  # train_sequence holds the folder's lock
    resume = _existing_run(out_dir, cfg)
    if resume is None:
        split = data.split
        model = family.build(cfg)
        runs.attach(model, cfg, split)
        to_device(model, dev)
        optimizer = make_optimizer(model, cfg)
        try:
            runs.write_config(out_dir, cfg)
            runs.write_split(out_dir, split)
        except OSError as err:
            raise runs.write_error(err, out_dir, None) from err
        start, rows, parts, elapsed0, resumed_from = 0, [], [], 0.0, None
    else:
        if resume.epoch > cfg.epochs:
            raise ValueError(
                f"{out_dir} is already trained to epoch {resume.epoch}, past epochs={cfg.epochs}; pass "
                f"epochs >= {resume.epoch} to go on, or read an earlier epoch with load_run({str(out_dir)!r}, epoch=...)"
            )
        split = resume.split
        model = to_device(runs.model_from_state(cfg, resume.model_state, split), dev)
        optimizer = make_optimizer(model, cfg)
        load_optimizer_tensors(model, optimizer, {k: v.to(dev) for k, v in resume.optimizer_state.items()})
        start = resumed_from = resume.epoch
        elapsed0 = float(resume.metadata.get("elapsed_s", "0"))
        metrics = runs.read_metrics(out_dir)
        rows = [] if metrics is None else metrics[metrics["epoch"] < start].to_dict("records")
        saved_parts = read_components(out_dir)
        parts = [] if saved_parts is None else saved_parts[saved_parts["epoch"] < start].to_dict("records")
        if start == cfg.epochs and metrics is not None and bool((metrics["epoch"] == start).any()):
            return TrainResult(model, cfg, split, metrics, start, False, start, float(metrics.elapsed_s.iloc[-1]), out_dir)
        if cfg != runs.read_config(out_dir):  # only RESUMABLE_CHANGES can differ here
            try:
                runs.write_config(out_dir, cfg)
            except OSError as err:
                raise runs.write_error(err, out_dir, start) from err
        if on_resume is not None:
            on_resume(start)

    train_x, train_y = data.tokens[split.train].to(dev), data.labels[split.train].to(dev)
    test_x, test_y = data.tokens[split.test].to(dev), data.labels[split.test].to(dev)
    test_c = task.components(test_x, test_y)
    train_c = task.components(train_x, train_y)

    def forward(tokens: Tensor) -> Tensor:
        return model(tokens)[:, positions]

    on_disk = [resumed_from]  # the epoch of the resume file on disk (None: none yet)

    def save(epoch: int, elapsed: float, weights: bool) -> None:
        # as mechgrok.train's: the resume file last, so a kill or a full disk after any earlier
        # write leaves a folder that resumes from the previous one; existing checkpoints are kept
        _check_finite(model, epoch, out_dir, on_disk[0])
        try:
            if weights:
                runs.save_checkpoint_once(runs.checkpoint_path(out_dir, epoch), model, cfg, split, epoch)
            runs.write_metrics(out_dir, rows)
            _write_components(out_dir, parts)
            optimizer_state = {k: v.cpu() for k, v in optimizer_tensors(model, optimizer).items()}
            runs.save_checkpoint(out_dir / runs.RESUME_FILE, model, cfg, split, epoch,
                                 optimizer_state=optimizer_state, extra={"elapsed_s": repr(elapsed)})
        except OSError as err:
            raise runs.write_error(err, out_dir, on_disk[0]) from err
        on_disk[0] = epoch

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=start, unit="step", dynamic_ncols=True, mininterval=0.5)
    t0 = time.perf_counter() - elapsed0
    epoch, interrupted = start, False
    full_batch = cfg.data == "fixed" and cfg.batch_size == 0
    with _stop_on_signals() as stop:
        while True:
            is_last = epoch >= cfg.epochs
            log_row = epoch % cfg.eval_every == 0 or is_last
            x, y = (train_x, train_y) if full_batch else (t.to(dev) for t in batch_at(cfg, data, epoch))
            with torch.set_grad_enabled(not is_last):
                logits = forward(x)
                loss, correct, scored = sequence_loss(logits, y, cfg.loss_dtype)
            if not torch.isfinite(loss):
                raise _diverged(cfg, epoch, f"the train loss is {float(loss)}", out_dir, on_disk[0])
            if log_row:
                with torch.no_grad():
                    if cfg.data == "fixed" and not full_batch:  # minibatches: report the whole train set
                        logits = forward(train_x)
                        loss_all, correct, scored = sequence_loss(logits, train_y, cfg.loss_dtype)
                        train_loss, comp_x, comp_y, comp_c = loss_all, logits, train_y, train_c
                    else:
                        train_loss, comp_x, comp_y = loss, logits, y
                        comp_c = train_c if full_batch else task.components(x, y)
                    train_parts = component_losses(comp_x, comp_y, comp_c, len(names), cfg.loss_dtype)
                    test_logits = forward(test_x)
                    test_loss, test_correct, test_scored = sequence_loss(test_logits, test_y, cfg.loss_dtype)
                    test_parts = component_losses(test_logits, test_y, test_c, len(names), cfg.loss_dtype)
                parts.extend({"epoch": epoch, "component": name, "train_loss": float(a), "test_loss": float(b)}
                             for name, a, b in zip(names, train_parts.tolist(), test_parts.tolist()))
                log_metrics_row(rows, epoch, float(train_loss.detach()), int(correct) / max(int(scored), 1),
                                float(test_loss), int(test_correct) / max(int(test_scored), 1), time.perf_counter() - t0,
                                on_eval, bar)
            if epoch % cfg.checkpoint_every == 0 or is_last:
                save(epoch, time.perf_counter() - t0, weights=True)
            if is_last:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, epoch)
            optimizer.step()
            epoch += 1
            if bar is not None:
                bar.update(1)
            if stop.requested:
                save(epoch, time.perf_counter() - t0, weights=False)
                interrupted = True
                break
    if bar is not None:
        bar.close()
    model.zero_grad(set_to_none=True)
    return TrainResult(model=model, config=cfg, split=split, metrics=pd.DataFrame(rows, columns=runs.METRIC_COLUMNS),
                       epoch=epoch, interrupted=interrupted, resumed_from=resumed_from,
                       elapsed_s=time.perf_counter() - t0, run_dir=out_dir)
