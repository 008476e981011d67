"""Tiny trained run folders for the progress, phase, figure and report tests.

``tiny_run()`` trains p=31 on 70% of the pairs for 1,000 epochs (lr 3e-3) with mechgrok's own trainer
(a few seconds on one thread; it groks), once per test process, into a temporary folder.
``tiny_seeds_run()`` adds two more seeds under ``RUN/seeds/`` for the multi-seed figures.
``tiny_run(cfg=NOT_GROKKED)`` stops the same run at 150 epochs: it has memorized (train accuracy
1.0) but not grokked (test accuracy ~0.7), for the captions of a run that has not grokked.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import torch

from mechgrok.config import Config
from mechgrok.training.loop import train

TINY = Config(p=31, frac_train=0.7, d_model=64, d_mlp=256, lr=3e-3, epochs=1000, eval_every=50, checkpoint_every=50)
NOT_GROKKED = TINY.replace(epochs=150)


def _train(cfg: Config, out: Path) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared
    try:
        train(cfg, out, tune_process=False)
    finally:
        torch.set_num_threads(threads)
    return out


@functools.lru_cache(maxsize=None)
def _trained(cfg: Config) -> Path:
    return _train(cfg, Path(tempfile.mkdtemp(prefix="mechgrok-tiny-")) / "run")


def tiny_run(tmp_path: Path | None = None, cfg: Config = TINY) -> Path:
    """A trained tiny run folder; with ``tmp_path``, a private copy there (safe to modify)."""
    src = _trained(cfg)
    if tmp_path is None:
        return src
    dst = Path(tmp_path) / "run"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("progress.*"))  # no cached measures
    return dst


@functools.lru_cache(maxsize=None)
def _seeds_run() -> Path:
    root = Path(tempfile.mkdtemp(prefix="mechgrok-seeds-")) / "run"
    shutil.copytree(_trained(TINY), root)
    for seed in (1, 2):
        _train(TINY.replace(seed=seed, epochs=300), root / "seeds" / f"seed_{seed}")
    return root


def tiny_seeds_run(tmp_path: Path | None = None) -> Path:
    """A tiny run folder with two extra seeds in ``RUN/seeds/seed_1`` and ``seed_2``."""
    src = _seeds_run()
    if tmp_path is None:
        return src
    dst = Path(tmp_path) / "run"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("progress.*"))  # no cached measures
    return dst

