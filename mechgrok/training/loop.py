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
GEMMs and glibc's malloc thresholds (``tune_process``) are set on entry and put back on exit.

Ctrl-C or SIGTERM lets the current step finish, writes a resume checkpoint and returns with
``interrupted=True``; calling ``train`` again on the same folder resumes from the newest
resume checkpoint and ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

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
from mechgrok.tasks.base import Split, make_split, stream_generator
from mechgrok.tasks.modular import ModularTask
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
    applies :mod:`mechgrok.speed`'s settings while training: oneDNN float32 GEMMs and glibc's
    malloc thresholds (both put back afterwards). ``threads`` is the torch thread count while
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
    fast step runs on the CPU only.
    """
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
    if str(device) != "cpu":
        raise ValueError(f"device={device!r}: the {cfg.family} family's exact fast step runs on the CPU only; "
                         "pass device='cpu' (the families without a fast step, e.g. family='mlp', train on cuda)")
    with speed.torch_threads(threads) as n, speed.tuned_malloc(tune_process), speed.fast_float32_matmul(tune_process):
        result = _train(cfg, Path(out_dir), progress, on_eval, on_resume)
    result.threads = n
    return result


def _train(cfg: Config, out_dir: Path, progress: bool, on_eval: Callable[[dict], None] | None,
           on_resume: Callable[[int], None] | None) -> TrainResult:
    task = ModularTask(cfg.p, cfg.op)
    tokens, labels = task.tokens(), task.labels()
    family = registry.family(cfg.family)
    fast_step = family.load_fast_step()  # a family without an exact fast step is refused here, by name

    resume = _existing_run(out_dir, cfg)
    if resume is None:
        split = make_split(task.n_pairs, cfg.frac_train, cfg.seed)
        _check_batch_size(cfg, len(split.train))  # before anything is written
        model = family.build(cfg)
        runs.attach(model, cfg, split)
        check_supported(model)
        optimizer = make_optimizer(model, cfg)
        out_dir.mkdir(parents=True, exist_ok=True)
        runs.write_config(out_dir, cfg)
        runs.write_split(out_dir, split)
        start, rows, elapsed0, resumed_from = 0, [], 0.0, None
    else:
        ckpt = resume
        if ckpt.epoch > cfg.epochs:
            raise ValueError(
                f"{out_dir} is already trained to epoch {ckpt.epoch}, past epochs={cfg.epochs}; pass "
                f"epochs >= {ckpt.epoch} to go on, or read an earlier epoch with load_run({str(out_dir)!r}, epoch=...)"
            )
        split = ckpt.split
        model = runs.model_from_state(cfg, ckpt.model_state, split)
        optimizer = make_optimizer(model, cfg)
        load_optimizer_tensors(model, optimizer, ckpt.optimizer_state)
        start, resumed_from = ckpt.epoch, ckpt.epoch
        elapsed0 = float(ckpt.metadata.get("elapsed_s", "0"))
        metrics = runs.read_metrics(out_dir)
        rows = [] if metrics is None else metrics[metrics["epoch"] < start].to_dict("records")
        if start == cfg.epochs and metrics is not None and bool((metrics["epoch"] == start).any()):
            # finished already: hand back what is on disk, rewrite nothing
            return TrainResult(model, cfg, split, metrics, start, False, start, float(metrics.elapsed_s.iloc[-1]), out_dir)
        if cfg != runs.read_config(out_dir):  # only RESUMABLE_CHANGES can differ here
            runs.write_config(out_dir, cfg)
        if on_resume is not None:
            on_resume(start)

    train_step = fast_step(tokens[split.train], labels[split.train], loss_dtype=cfg.loss_dtype)
    test_eval = fast_step(tokens[split.test], labels[split.test], loss_dtype=cfg.loss_dtype)
    n_train, n_test = len(split.train), len(split.test)

    def minibatch_step(step: int) -> None:
        """One optimizer step's gradient on step ``step``'s minibatch (docstring of the module)."""
        rows = split.train[minibatch_indices(cfg.seed, step, n_train, cfg.batch_size)]
        fast_step(tokens[rows], labels[rows], loss_dtype=cfg.loss_dtype).loss_and_grad(model, accuracy=False)

    def save(epoch: int, elapsed: float, weights: bool) -> None:
        if weights:
            runs.save_checkpoint(runs.checkpoint_path(out_dir, epoch), model, cfg, split, epoch)
        runs.write_metrics(out_dir, rows)
        runs.save_checkpoint(
            out_dir / runs.RESUME_FILE, model, cfg, split, epoch,
            optimizer_state=optimizer_tensors(model, optimizer), extra={"elapsed_s": repr(elapsed)},
        )

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
                if not is_last:
                    minibatch_step(epoch)
            elif is_last:
                train_loss, train_correct = train_step.loss(model)
            else:
                train_loss, train_correct = train_step.loss_and_grad(model, accuracy=log_row)
            if log_row:
                test_loss, test_correct = test_eval.loss(model)
                row = {
                    "epoch": epoch,
                    "train_loss": float(train_loss),
                    "train_acc": int(train_correct) / n_train,
                    "test_loss": float(test_loss),
                    "test_acc": int(test_correct) / n_test,
                    "elapsed_s": time.perf_counter() - t0,
                }
                rows.append(row)
                if on_eval is not None:
                    on_eval(row)
                if bar is not None:
                    bar.set_postfix(train_loss=f"{row['train_loss']:.2e}", test_loss=f"{row['test_loss']:.2e}",
                                    test_acc=f"{row['test_acc']:.3f}", refresh=False)
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


def config_clash(saved: Config, asked: dict) -> dict[str, tuple]:
    """{field: (saved value, asked value)} of the asked fields that differ from a saved run's and
    cannot change when the run is continued (every field but ``RESUMABLE_CHANGES``)."""
    return {
        f: (getattr(saved, f), value)
        for f, value in asked.items()
        if f not in RESUMABLE_CHANGES and getattr(saved, f) != value
    }


def _existing_run(out_dir: Path, cfg: Config) -> runs.CheckpointFile | None:
    """The resume checkpoint of a compatible run in ``out_dir``; None for a fresh folder."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return None
    if not (out_dir / runs.CONFIG_FILE).exists():
        raise ValueError(
            f"{out_dir} exists and is not a mechgrok run folder; choose another --out, or empty it yourself"
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
        return None if not runs.checkpoint_epochs(out_dir) else _no_resume_error(out_dir)
    return runs.read_checkpoint_file(resume_file)


def _no_resume_error(out_dir: Path):
    source = runs.imported_from(out_dir)
    if source is not None:
        raise ValueError(
            f"{out_dir} was imported from {source.get('source', 'a foreign file')}, which holds no optimizer state, so it "
            "cannot be trained further; analyse it as it is, or train a new run with another --out"
        )
    raise ValueError(f"{out_dir} has checkpoints but no {runs.RESUME_FILE}; it cannot be resumed exactly. Use another --out.")
