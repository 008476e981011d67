"""A small grokked model for tests: p=31, 70% train data, d_model 64, d_mlp 256.

The loop is independent of mechgrok's trainer (full batch AdamW, lr 1e-3, wd 1, betas
(0.9, 0.98), float64 cross-entropy at the last position), so readout and ablation tests do not
depend on it. Gradients come from ``mechgrok.models.fastpath`` (pinned against autograd in its own
tests) when it is there, else from autograd. The model is trained once per test process, and
its weights are cached in the system temp folder so later test processes skip the training
(delete ``mechgrok-test-cache`` there to retrain).
"""

from __future__ import annotations

import fcntl
import functools
import os
import tempfile
from pathlib import Path

import pytest
import torch

from mechgrok.runs import attached

from mechgrok.analysis import circuits
from mechgrok.config import Config
from mechgrok.models.transformer import build_model
from mechgrok.tasks.modular import ModularTask, make_split

P = 31
EPOCHS = 3000


CACHE = Path(tempfile.gettempdir()) / "mechgrok-test-cache"


def _source_hash() -> str:
    """A hash of the mechgrok sources the trained weights depend on, for the cache file's name,
    so that a changed model, task, trainer or fast path retrains instead of reusing stale weights."""
    import hashlib

    package = Path(__file__).resolve().parents[1] / "mechgrok"
    files = [*package.glob("models/**/*.py"), *package.glob("training/**/*.py"), *package.glob("tasks/**/*.py"),
             package / "config.py", package / "scoring.py"]
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def _trained_state(p: int, epochs: int, d_model: int, d_mlp: int, seed: int) -> tuple[Config, dict, object]:
    cfg = Config(p=p, frac_train=0.7, seed=seed, d_model=d_model, d_mlp=d_mlp, epochs=epochs)
    task = ModularTask(p)
    split = make_split(task.n_pairs, cfg.frac_train, cfg.seed)
    model = build_model(cfg, split=split)
    path = CACHE / f"grokked-p{p}-e{epochs}-dm{d_model}-mlp{d_mlp}-s{seed}-torch{torch.__version__}-src{_source_hash()}.pt"
    CACHE.mkdir(exist_ok=True)
    # one test process trains it while the others (pytest-xdist workers) wait, then read the file
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = torch.load(path, weights_only=True)
            model.load_state_dict(state)  # fails, and we retrain, if the model's layout changed
            return cfg, state, split
        except Exception:  # missing, stale or corrupt cache: retrain
            pass
        return _train_and_cache(cfg, model, task, split, epochs, path)


def _train_and_cache(cfg, model, task, split, epochs, path):
    tokens, labels = task.tokens()[split.train], task.labels()[split.train]
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared
    try:
        fast = _fast_path(tokens, labels)
        for _ in range(epochs):
            opt.zero_grad(set_to_none=True)
            if fast is not None:
                fast.loss_and_grad(model)
            else:
                logits = model(tokens)[:, -1].double()
                torch.nn.functional.cross_entropy(logits, labels).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic, so a parallel test process never reads half a file
    return cfg, state, split


def _fast_path(tokens, labels):
    try:
        from mechgrok.models.fastpath import FastPath

        return FastPath(tokens, labels)
    except (ImportError, AttributeError, TypeError):
        return None


def grokked_model(p: int = P, epochs: int = EPOCHS, d_model: int = 64, d_mlp: int = 256, seed: int = 0):
    """A fresh HookedTransformer (attached to its task and split) holding the shared trained weights."""
    cfg, state, split = _trained_state(p, epochs, d_model, d_mlp, seed)
    model = build_model(cfg, split=split)
    model.load_state_dict(state)
    model.eval()
    return model


def write_run_folder(model, run_dir: Path, epoch: int = 0) -> Path:
    """Save ``model`` as a one-checkpoint mechgrok run folder (for tests of run-folder tools)."""
    from mechgrok import runs

    info = attached(model)
    runs.write_config(run_dir, info.config)
    runs.write_split(run_dir, info.split)
    runs.save_checkpoint(runs.checkpoint_path(run_dir, epoch), model, info.config, info.split, epoch)
    return run_dir


# The p=113 run the slow tests analyse: train it with `mechgrok train --out runs/p113`.
P113_RUN = Path(os.environ.get("MECHGROK_P113_RUN", Path(__file__).resolve().parents[1] / "runs" / "p113"))


@functools.lru_cache(maxsize=None)
def p113_run():
    """(model, GridActivations) of the newest checkpoint of the p=113 run, or skip the test."""
    import pytest

    from mechgrok.analysis import circuits
    from mechgrok.runs import load_run

    if not (P113_RUN / "config.json").exists():
        pytest.skip(f"no p=113 run at {P113_RUN}; train one with `mechgrok train --out {P113_RUN}`")
    run = load_run(P113_RUN)
    return run.model, circuits.gather_activations(run.model)


# Shared module-scoped fixtures: import them into a test module to use them.
@pytest.fixture(scope="module")
def model():
    return grokked_model()


@pytest.fixture(scope="module")
def acts(model):
    return circuits.gather_activations(model)


@pytest.fixture(scope="module")
def key(acts):
    return circuits.key_frequencies(acts)
