"""The trainer: AdamW on the fast exact step, with safe, resumable run folders.

One epoch is one optimizer step on the whole train split (docs/training.md). "Epoch e" means the
state after e steps: the metrics row and the checkpoint for epoch e describe that state, and
epoch 0 is the initialisation. The optimiser and its warm-up live in :mod:`.optim`.

Minibatches (``Config.batch_size > 0``): each step is one optimizer step on ``batch_size``
train examples drawn without replacement by :func:`minibatch_indices`, a pure function of
(seed, step), so a resumed run draws the same batches; the "epoch" column then counts steps,
and a metrics row's train loss and accuracy are over the whole train split (an extra forward
pass every ``eval_every`` steps), not the minibatch's.

Process state is scoped to the call: the torch thread count (``threads``), oneDNN float32
GEMMs, glibc's malloc thresholds and subnormals flushed to zero on every thread
(``tune_process``) are set on entry and put back on exit.

Ctrl-C or SIGTERM lets the current step finish, writes a resume checkpoint and returns with
``interrupted=True``; calling ``train`` again on the same folder resumes from the newest
resume checkpoint and ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import torch
from torch import Tensor

from mechgrok import runs, speed
from mechgrok.config import Config
from mechgrok import registry
from mechgrok.models.fastpath import check_supported
from mechgrok.models.transformer import HookedTransformer
from mechgrok.tasks.base import Split, stream_generator
from mechgrok.tasks.data import modular_split
from mechgrok.tasks.modular import ModularTask
from mechgrok.training.device import resolve_device, to_device
from mechgrok.training.memory import check_fits
from mechgrok.training.optim import load_optimizer_tensors, lr_at, make_optimizer, optimizer_tensors

# Fields that may change between a run and its resumption without changing its trajectory.
RESUMABLE_CHANGES = frozenset({"epochs", "eval_every", "checkpoint_every"})


def minibatch_indices(seed: int, step: int, n_train: int, batch_size: int) -> Tensor:
    """The positions in the train split of step ``step``'s minibatch: ``batch_size`` distinct
    indices in [0, n_train), drawn by a generator seeded from (seed, step) alone
    (``tasks.base.stream_seed``), so any step's batch is known without replaying the ones before.

    >>> minibatch_indices(seed=0, step=5, n_train=100, batch_size=8)   # the same 8 on every call
    """
    if not 0 < batch_size <= n_train:
        raise ValueError(f"batch_size={batch_size} must be in [1, n_train={n_train}]")
    generator = stream_generator(f"modular-minibatch-step{step}", seed)
    return torch.randperm(n_train, generator=generator)[:batch_size]


@dataclass
class TrainResult:
    model: HookedTransformer
    config: Config
    split: Split
    metrics: pd.DataFrame
    epoch: int
    interrupted: bool
    resumed_from: int | None
    elapsed_s: float
    run_dir: Path
    threads: int = 1  # the torch thread count it trained on (a resume is bit-identical at the same count)


class _Stop:
    """Set by SIGINT/SIGTERM; the loop checks it between steps."""

    def __init__(self) -> None:
        self.requested: str | None = None


@contextmanager
def _stop_on_signals() -> Iterator[_Stop]:
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return

    def handler(signum, frame):
        if stop.requested is not None:  # a second Ctrl-C: give up at once (files stay intact)
            raise KeyboardInterrupt
        stop.requested = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train(
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
    """Train ``cfg`` into the run folder ``out_dir``, or resume the run already there.

    ``progress`` shows a tqdm bar with train and test loss and accuracy. ``tune_process``
    applies :mod:`mechgrok.speed`'s settings while training: oneDNN float32 GEMMs, glibc's
    malloc thresholds and subnormals flushed to zero (all put back afterwards). ``threads`` is the torch thread count while
    training (default: the enclosing :func:`mechgrok.speed.torch_threads` block's, else
    :func:`mechgrok.speed.default_threads`; docs/training.md says why); the previous count
    comes back afterwards. A resumed run is bit-identical to an uninterrupted one at the same
    thread count (the counts change how GEMMs split their sums).
    ``on_eval`` is called with each metrics row, ``on_resume`` with the epoch a resumed run
    starts from, before its first step.

    A family without an exact fast step (``ModelFamily.fast_step is None``: Pearce et al.'s
    MLPs, the circle, the sparse-parity MLP) is trained by the stacked trainer as a stack of
    one (:func:`mechgrok.training.stack.train_stack`), into the same kind of run folder, on
    ``device`` ("cpu" or "cuda"). The sequence tasks' family (``sequence_transformer``) trains
    with :func:`mechgrok.training.sequence.train_sequence`, on either device. The transformer's
    fast step runs on either too: on "cuda" with TF32 off (float32 GEMMs stay exact), and
    without the CPU-only process settings.

    One trainer at a time holds a run folder (:func:`mechgrok.runs.lock_run_folder`); a run
    that cannot fit in this machine's memory is refused before anything is written
    (:func:`mechgrok.training.memory.check_fits`). A write that fails (a full disk) raises a
    ``ValueError`` naming the file and the epoch a re-run resumes from; a non-finite loss stops
    the run with the last good checkpoint and resume file kept.
    """
    if not str(out_dir).strip():
        raise ValueError("out_dir is the empty string; pass a run folder, e.g. runs/my-run")
    training = registry.family(cfg.family).training
    if training == "sequence":
        from mechgrok.training.sequence import train_sequence  # imported here: sequence imports this module

        return train_sequence(cfg, out_dir, progress=progress, tune_process=tune_process, threads=threads,
                              on_eval=on_eval, on_resume=on_resume, device=device)
    if training == "stack":
        from mechgrok.training.stack import train_stack  # imported here: stack imports this module

        (result,) = train_stack(
            [cfg], [out_dir], threads=threads, progress=progress, tune_process=tune_process, on_eval=on_eval,
            on_resume=None if on_resume is None else (lambda _run_dir, epoch: on_resume(epoch)), device=device,
        )
        return result
    dev = resolve_device(device)
    check_fits([cfg])
    if cfg.batch_size:  # before the lock, which creates the folder
        _check_batch_size(cfg, len(modular_split(cfg).train))
    with runs.lock_run_folder(Path(out_dir)), speed.torch_threads(threads) as n, speed.tuned_malloc(tune_process), \
            speed.fast_float32_matmul(tune_process and dev.type == "cpu"), \
            speed.flushed_denormals(tune_process and dev.type == "cpu"):
        result = _train(cfg, Path(out_dir), progress, on_eval, on_resume, dev)
    result.threads = n
    return result


def _train(cfg: Config, out_dir: Path, progress: bool, on_eval: Callable[[dict], None] | None,
           on_resume: Callable[[int], None] | None, dev: torch.device = torch.device("cpu")) -> TrainResult:
    task = ModularTask(cfg.p, cfg.op)
    tokens, labels = task.tokens().to(dev), task.labels().to(dev)
    family = registry.family(cfg.family)
    fast_step = family.load_fast_step()  # a family without an exact fast step is refused here, by name

    runs.clear_unfinished_writes(out_dir)  # train() holds the folder's lock
    resume = _existing_run(out_dir, cfg)
    if resume is None:
        split = modular_split(cfg)
        _check_batch_size(cfg, len(split.train))  # before anything is written
        model = to_device(family.build(cfg), dev)
        runs.attach(model, cfg, split)
        check_supported(model)
        optimizer = make_optimizer(model, cfg)
        try:
            runs.write_config(out_dir, cfg)
            runs.write_split(out_dir, split)
        except OSError as err:
            raise runs.write_error(err, out_dir, None) from err
        start, rows, elapsed0, resumed_from = 0, [], 0.0, None
    else:
        ckpt = resume
        if ckpt.epoch > cfg.epochs:
            raise ValueError(
                f"{out_dir} is already trained to epoch {ckpt.epoch}, past epochs={cfg.epochs}; pass "
                f"epochs >= {ckpt.epoch} to go on, or read an earlier epoch with load_run({str(out_dir)!r}, epoch=...)"
            )
        split = ckpt.split
        model = to_device(runs.model_from_state(cfg, ckpt.model_state, split), dev)
        optimizer = make_optimizer(model, cfg)
        load_optimizer_tensors(model, optimizer, {name: t.to(dev) for name, t in ckpt.optimizer_state.items()})
        start, resumed_from = ckpt.epoch, ckpt.epoch
        elapsed0 = float(ckpt.metadata.get("elapsed_s", "0"))
        metrics = runs.read_metrics(out_dir)
        rows = [] if metrics is None else metrics[metrics["epoch"] < start].to_dict("records")
        if start == cfg.epochs and metrics is not None and bool((metrics["epoch"] == start).any()):
            # finished already: hand back what is on disk, rewrite nothing
            return TrainResult(model, cfg, split, metrics, start, False, start, float(metrics.elapsed_s.iloc[-1]), out_dir)
        if cfg != runs.read_config(out_dir):  # only RESUMABLE_CHANGES can differ here
            try:
                runs.write_config(out_dir, cfg)
            except OSError as err:
                raise runs.write_error(err, out_dir, start) from err
        if on_resume is not None:
            on_resume(start)

    train_rows, test_rows = split.train.to(dev), split.test.to(dev)
    train_step = fast_step(tokens[train_rows], labels[train_rows], loss_dtype=cfg.loss_dtype)
    test_eval = fast_step(tokens[test_rows], labels[test_rows], loss_dtype=cfg.loss_dtype)
    n_train, n_test = len(split.train), len(split.test)

    def minibatch_step(step: int):
        """One optimizer step's gradient on step ``step``'s minibatch (docstring of the module); its loss."""
        rows = train_rows[minibatch_indices(cfg.seed, step, n_train, cfg.batch_size).to(dev)]
        loss, _ = fast_step(tokens[rows], labels[rows], loss_dtype=cfg.loss_dtype).loss_and_grad(model, accuracy=False)
        return loss

    on_disk = [resumed_from]  # the epoch of the resume file on disk (None: none yet)

    def save(epoch: int, elapsed: float, weights: bool) -> None:
        # The resume file goes last: it is what a re-run starts from, so a kill or a full disk
        # after any earlier write leaves a folder that resumes from the previous one.
        _check_finite(model, epoch, out_dir, on_disk[0])
        try:
            if weights:
                runs.save_checkpoint_once(runs.checkpoint_path(out_dir, epoch), model, cfg, split, epoch)
            runs.write_metrics(out_dir, rows)
            runs.save_checkpoint(
                out_dir / runs.RESUME_FILE, model, cfg, split, epoch,
                optimizer_state=optimizer_tensors(model, optimizer), extra={"elapsed_s": repr(elapsed)},
            )
        except OSError as err:
            raise runs.write_error(err, out_dir, on_disk[0]) from err
        on_disk[0] = epoch

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=start, unit="epoch", dynamic_ncols=True, mininterval=0.5)

    t0 = time.perf_counter() - elapsed0
    epoch, interrupted = start, False
    with _stop_on_signals() as stop:
        while True:
            is_last = epoch >= cfg.epochs
            log_row = epoch % cfg.eval_every == 0 or is_last
            if cfg.batch_size:  # the row's train loss is the whole split's; the step is the minibatch's
                if log_row:
                    train_loss, train_correct = train_step.loss(model)
                checked = minibatch_step(epoch) if not is_last else train_loss
            else:
                train_loss, train_correct = (train_step.loss(model) if is_last
                                             else train_step.loss_and_grad(model, accuracy=log_row))
                checked = train_loss
            if not math.isfinite(float(checked)):
                raise _diverged(cfg, epoch, f"the train loss is {float(checked)}", out_dir, on_disk[0])
            if log_row:
                test_loss, test_correct = test_eval.loss(model)
                log_metrics_row(rows, epoch, float(train_loss), int(train_correct) / n_train, float(test_loss),
                                int(test_correct) / n_test, time.perf_counter() - t0, on_eval, bar)
            if epoch % cfg.checkpoint_every == 0 or is_last:
                save(epoch, time.perf_counter() - t0, weights=True)
            if is_last:
                break
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
    return TrainResult(
        model=model,
        config=cfg,
        split=split,
        metrics=pd.DataFrame(rows, columns=runs.METRIC_COLUMNS),
        epoch=epoch,
        interrupted=interrupted,
        resumed_from=resumed_from,
        elapsed_s=time.perf_counter() - t0,
        run_dir=out_dir,
    )


def _check_batch_size(cfg: Config, n_train: int) -> None:
    if cfg.batch_size > n_train:
        raise ValueError(
            f"batch_size={cfg.batch_size} exceeds the {n_train} train pairs of p={cfg.p}, frac_train={cfg.frac_train}; "
            f"pass batch_size <= {n_train}, or batch_size=0 for full-batch steps"
        )


def log_metrics_row(rows: list[dict], epoch: int, train_loss: float, train_acc: float, test_loss: float, test_acc: float,
                    elapsed_s: float, on_eval: Callable[[dict], None] | None, bar) -> dict:
    """Append one metrics row (``runs.METRIC_COLUMNS``) to ``rows``, hand it to ``on_eval`` and show
    it on the progress bar (None: no bar); the trainers log every row through here."""
    row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
           "test_acc": test_acc, "elapsed_s": elapsed_s}
    rows.append(row)
    if on_eval is not None:
        on_eval(row)
    if bar is not None:
        bar.set_postfix(train_loss=f"{train_loss:.2e}", test_loss=f"{test_loss:.2e}", test_acc=f"{test_acc:.3f}",
                        refresh=False)
    return row


def config_clash(saved: Config, asked: dict) -> dict[str, tuple]:
    """{field: (saved value, asked value)} of the asked fields that differ from a saved run's and
    cannot change when the run is continued (every field but ``RESUMABLE_CHANGES``)."""
    return {
        f: (getattr(saved, f), value)
        for f, value in asked.items()
        if f not in RESUMABLE_CHANGES and getattr(saved, f) != value
    }


def _existing_run(out_dir: Path, cfg: Config) -> runs.CheckpointFile | None:
    """The resume checkpoint of a compatible run in ``out_dir``; None for a fresh start.

    A fresh start is an absent or empty folder, or one that a kill (or a full disk) stopped
    before its first resume file: only the config, split, epoch-0 checkpoint and metrics,
    which the seeded fresh start writes again, identical. The resume file is cross-checked
    with ``config.json``, the split and the checkpoints before it is trusted
    (:func:`_check_resume`); nothing is written here.
    mechgrok's own unfinished temporary files are ignored (the trainer removes them once it holds
    the folder, :func:`mechgrok.runs.clear_unfinished_writes`).
    """
    # mechgrok's own unfinished writes do not count (the trainer removes them once it holds the folder)
    held = sorted(p.name for p in out_dir.iterdir() if not runs.is_unfinished_write(p.name)) if out_dir.is_dir() else []
    if not held:
        return None
    if not (out_dir / runs.CONFIG_FILE).exists():
        run_files = [name for name in held if name in runs.RUN_FILES + (runs.CHECKPOINT_DIR,)]
        if run_files:
            raise ValueError(
                f"{out_dir} holds a mechgrok run ({', '.join(run_files)}) but no {runs.CONFIG_FILE}; nothing was changed. "
                f"Restore {runs.CONFIG_FILE} from a copy, or from the config its {runs.RESUME_FILE} records: "
                f"mechgrok.runs.write_config(RUN, mechgrok.runs.read_checkpoint_file(RUN/{runs.RESUME_FILE}).config)"
            )
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise ValueError(
            f"{out_dir} exists and is not a mechgrok run folder (it holds {shown}); nothing in it was changed. "
            "Choose another --out"
        )
    saved = runs.read_config(out_dir)
    differs = config_clash(saved, cfg.to_dict())
    if differs:
        detail = ", ".join(f"{f}: saved {old!r}, asked {new!r}" for f, (old, new) in differs.items())
        raise ValueError(
            f"{out_dir} holds a run with a different config ({detail}); "
            "pass the same settings to resume it, or choose another --out for a new run"
        )
    resume_file = out_dir / runs.RESUME_FILE
    if not resume_file.exists():
        if runs.imported_from(out_dir) is None and runs.checkpoint_epochs(out_dir) in ([], [0]):
            return None  # stopped before its first resume file: start afresh (the same files again)
        return _no_resume_error(out_dir)
    try:
        ckpt = runs.read_checkpoint_file(resume_file)
        _check_resume(out_dir, ckpt, saved)
    except ValueError as err:
        raise ValueError(
            f"{err}. {out_dir} cannot be resumed exactly from it, and nothing was changed: its checkpoints "
            f"({runs._epochs_summary(runs.checkpoint_epochs(out_dir))}) are intact and load_run reads them. "
            f"Restore {runs.RESUME_FILE} from a copy, or train anew into another --out"
        ) from None
    return ckpt


def _check_resume(out_dir: Path, ckpt: runs.CheckpointFile, saved: Config) -> None:
    """Raise ``ValueError`` unless the resume file ``ckpt`` is this run's own: its config is
    ``config.json``'s, its split the run's, its weights and optimizer state finite, its
    optimizer has taken ``epoch`` steps, and it agrees with the checkpoint of its epoch."""
    path = ckpt.path
    if ckpt.kind != "resume":
        raise ValueError(f"{path} is a plain checkpoint (metadata kind {ckpt.kind!r}), not a resume file")
    runs.cross_check_config(path, ckpt.config, saved)
    if (out_dir / runs.SPLIT_FILE).exists():
        split = runs.read_split(out_dir)
        if not (torch.equal(split.train, ckpt.split.train) and torch.equal(split.test, ckpt.split.test)):
            raise ValueError(f"{path} and {out_dir / runs.SPLIT_FILE} hold different splits: one of the two was edited "
                             "or comes from another run")
    for kind, tensors in (("weight", ckpt.model_state), ("optimizer state", ckpt.optimizer_state)):
        bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise ValueError(f"{path} holds non-finite (NaN or infinite) {kind} {bad[0]}")
    steps = {float(t) for name, t in ckpt.optimizer_state.items() if name.endswith(".step") and t.numel() == 1}
    if (ckpt.epoch > 0 and steps != {float(ckpt.epoch)}) or (ckpt.epoch == 0 and ckpt.optimizer_state):
        raise ValueError(f"{path} says epoch {ckpt.epoch}, but its optimizer has taken "
                         f"{sorted(int(s) for s in steps) or 'no'} steps; its metadata was edited")
    twin = runs.checkpoint_path(out_dir, ckpt.epoch)
    if twin.exists():
        other = runs.read_checkpoint_file(twin).model_state
        if set(other) != set(ckpt.model_state) or any(not torch.equal(other[k], v) for k, v in ckpt.model_state.items()):
            raise ValueError(f"{path} says epoch {ckpt.epoch}, but its weights differ from {twin}")


def _check_finite(model: torch.nn.Module, epoch: int, out_dir: Path, resume_epoch: int | None) -> None:
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise _diverged(None, epoch, f"weight {bad[0]} is not finite", out_dir, resume_epoch)


def _diverged(cfg: Config | None, epoch: int, what: str, out_dir: Path, resume_epoch: int | None) -> ValueError:
    """The error of a run whose loss or weights became NaN or infinite: nothing of it is written."""
    settings = f" (lr={cfg.lr:g}, weight_decay={cfg.weight_decay:g})" if cfg is not None else ""
    kept = (f"{out_dir} keeps its checkpoints and its resume file at epoch {resume_epoch}" if resume_epoch is not None
            else f"nothing of the run but its config and split was written to {out_dir}")
    return ValueError(f"training diverged at epoch {epoch}: {what}{settings}; it stopped and wrote nothing at this "
                      f"epoch. {kept}. Lower the learning rate (--lr) and train into another --out")


def _no_resume_error(out_dir: Path):
    source = runs.imported_from(out_dir)
    if source is not None:
        raise ValueError(
            f"{out_dir} was imported from {source.get('source', 'a foreign file')}, which holds no optimizer state, so it "
            "cannot be trained further; analyse it as it is, or train a new run with another --out"
        )
    raise ValueError(f"{out_dir} has checkpoints ({runs._epochs_summary(runs.checkpoint_epochs(out_dir))}) but no "
                     f"{runs.RESUME_FILE} (the weights plus optimizer state a run resumes from), so it cannot be resumed "
                     "exactly; nothing was changed, and load_run reads its checkpoints. Restore the resume file from a "
                     "copy, or train into another --out")
