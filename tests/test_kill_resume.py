"""A run, a sweep and a multi-seed reproduction killed, or out of disk, after any write: the same
command resumes bit-identically and loses nothing (docs/training.md, "What a run folder promises").

A kill is injected by wrapping mechgrok.runs.atomic_write_bytes, which every file of a run folder
goes through: after its n-th write completes, it raises an exception no handler catches (a
SIGKILL gives no process a chance to run a handler either), and it leaves the temporary file a
kill in the middle of the next write would leave. A full disk is the OSError(ENOSPC) a write
raises.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mechgrok import runs, tensorfile
from mechgrok.config import Config
from mechgrok.reproduce.pipeline import _train_seeds
from mechgrok.sweeps import Sweep, run_sweep, sweep_status
from mechgrok.training.loop import train

CFG = Config(p=7, frac_train=0.5, d_model=32, d_mlp=64, n_heads=4, epochs=30, eval_every=5, checkpoint_every=5, seed=3)


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in mechgrok catches it."""


def writes_until(monkeypatch, n: int, fail: BaseException | None = None) -> list[Path]:
    """Let ``n`` writes through, then kill (or raise ``fail`` at the next write instead)."""
    real = runs.atomic_write_bytes
    done: list[Path] = []

    def write(path, data):
        if len(done) == n:
            if fail is not None:
                raise fail
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / f".{path.name}.k1ll3d{TMP}").write_bytes(data[: len(data) // 2])  # a write cut short
            raise Killed(f"killed after {n} writes")
        real(path, data)
        done.append(Path(path))

    monkeypatch.setattr(runs, "atomic_write_bytes", write)
    return done


TMP = runs.TMP_SUFFIX


def files_of(folder: Path) -> dict[str, object]:
    """Every file's contents, but the resume file's (its metadata holds the wall time) and metrics'
    (their times). A safetensors file is its metadata and tensors' bytes: the safetensors library
    writes the metadata keys in a random order, so equal files need not be equal bytes."""
    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        if p.relative_to(folder).parts[0] == "seeds":  # a reproduction's later seeds: runs of their own
            continue
        if p.is_file() and p.name not in (runs.RESUME_FILE, runs.METRICS_FILE):
            if p.suffix == ".safetensors":
                tensors, metadata = tensorfile.read_tensors(p)
                out[str(p.relative_to(folder))] = (metadata, {k: t.numpy().tobytes() for k, t in tensors.items()})
            else:
                out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def assert_same_run(a: Path, b: Path) -> None:
    assert files_of(a) == files_of(b)  # config, split and every checkpoint: the same bytes
    ma, mb = runs.read_metrics(a), runs.read_metrics(b)
    assert ma.drop(columns="elapsed_s").equals(mb.drop(columns="elapsed_s"))
    ra, rb = runs.read_checkpoint_file(a / runs.RESUME_FILE), runs.read_checkpoint_file(b / runs.RESUME_FILE)
    assert ra.epoch == rb.epoch
    for name, t in {**ra.model_state, **ra.optimizer_state}.items():
        other = rb.model_state.get(name, rb.optimizer_state.get(name))
        assert other is not None and bool((t == other).all()), name
    assert not [p for p in a.rglob(f"*{TMP}")], "no temporary file is left behind"


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    train(CFG, out, tune_process=False, threads=1)
    return out


@pytest.mark.parametrize("n", range(1, 13))
def test_a_kill_after_any_of_the_first_12_writes_resumes_bit_identically(straight, tmp_path, monkeypatch, n):
    out = tmp_path / "run"
    done = writes_until(monkeypatch, n)
    with pytest.raises(Killed):
        train(CFG, out, tune_process=False, threads=1)
    assert len(done) == n
    monkeypatch.undo()
    result = train(CFG, out, tune_process=False, threads=1)
    assert result.epoch == CFG.epochs and not result.interrupted
    assert_same_run(out, straight)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 11, 12])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_a_full_disk_names_the_file_and_the_epoch_the_rerun_resumes_from(straight, tmp_path, monkeypatch, n, code):
    out = tmp_path / "run"
    writes_until(monkeypatch, n, fail=OSError(code, os.strerror(code)))
    with pytest.raises(ValueError, match="free space") as err:
        train(CFG, out, tune_process=False, threads=1)
    message = str(err.value)
    assert str(out) in message and os.strerror(code) in message
    monkeypatch.undo()
    resumed = []
    train(CFG, out, tune_process=False, threads=1, on_resume=resumed.append)
    if "starts the run afresh" in message:
        assert resumed == []
    else:  # the message said where it resumes from, and it did
        assert f"it resumes from epoch {resumed[0]}" in message
    assert_same_run(out, straight)


def test_the_cli_says_free_space_and_the_resume_epoch(tmp_path, monkeypatch, capsys):
    from mechgrok.cli import main

    out = tmp_path / "run"
    args = ["train", "--p", "7", "--frac-train", "0.5", "--d-model", "32", "--d-mlp", "64", "--epochs", "30",
            "--eval-every", "5", "--checkpoint-every", "5", "--seed", "3", "--no-progress", "--out", str(out)]
    writes_until(monkeypatch, 9, fail=OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "it resumes from epoch 5" in err and str(out) in err
    monkeypatch.undo()
    assert main(args) == 0
    assert capsys.readouterr().out.startswith(f"resuming {out} from epoch 5")


def test_a_second_trainer_on_one_folder_is_refused_at_once(tmp_path):
    out = tmp_path / "run"
    with runs.lock_run_folder(out):
        with pytest.raises(ValueError, match=f"another trainer holds {out}"):
            train(CFG, out, tune_process=False)
    assert list(out.iterdir()) == [], "the refused trainer wrote nothing"
    train(CFG.replace(epochs=5), out, tune_process=False)  # the lock went with its holder
    assert runs.checkpoint_epochs(out) == [0, 5]


# ----------------------------------------------------------------------------- a sweep
SWEEP = Sweep(Config(task="parity", family="parity_mlp", n_bits=8, parity_bits=3, n_train=64, n_test=64, d_mlp=8,
                     lr=3e-3, warmup_steps=0, epochs=40, eval_every=10, checkpoint_every=10, loss_dtype="float32"),
              {"seed": [0, 1]})
BITWISE = dict(chunk_size=1)


@pytest.fixture(scope="module")
def sweep_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    run_sweep(SWEEP, out, executor="inline", **BITWISE)
    return out


@pytest.mark.parametrize("n", [2, 4, 6, 9, 14, 20, 27, 33])
def test_a_sweep_killed_after_any_write_resumes_and_keeps_finished_runs(sweep_reference, tmp_path, monkeypatch, n):
    out = tmp_path / "sweep"
    writes_until(monkeypatch, n)
    with pytest.raises(Killed):
        run_sweep(SWEEP, out, executor="inline", **BITWISE)
    monkeypatch.undo()
    status = sweep_status(out, SWEEP)
    finished = {r.run: files_of(out / r.run) for r in status.itertuples() if r.status == "finished"}
    run_sweep(SWEEP, out, executor="inline", **BITWISE)
    for run in SWEEP.runs:
        assert_same_run(out / run.name, sweep_reference / run.name)
    for name, files in finished.items():  # a finished run is not trained again
        assert files_of(out / name) == files


# ----------------------------------------------------------------------------- several seeds
SEEDS = [(seed, CFG.replace(seed=seed, epochs=10), None) for seed in (0, 1, 2)]


def seed_jobs(out: Path):
    return [(seed, cfg, out if seed == 0 else out / "seeds" / f"seed_{seed}") for seed, cfg, _ in SEEDS]


@pytest.mark.parametrize("n", [3, 7, 9, 10, 12, 16, 20])
def test_a_multi_seed_reproduction_killed_anywhere_resumes_and_keeps_finished_seeds(tmp_path, monkeypatch, n):
    reference = tmp_path / "reference"
    _train_seeds(seed_jobs(reference), 1, False, lambda message: None, 1)
    out = tmp_path / "run"
    writes_until(monkeypatch, n)
    with pytest.raises(Killed):
        _train_seeds(seed_jobs(out), 1, False, lambda message: None, 1)
    monkeypatch.undo()
    finished = {d: files_of(d) for _, cfg, d in seed_jobs(out)
                if (d / runs.RESUME_FILE).exists() and runs.read_checkpoint_file(d / runs.RESUME_FILE).epoch == cfg.epochs}
    trained, plan = _train_seeds(seed_jobs(out), 1, False, lambda message: None, 1)
    assert plan.executor == "sequential"  # parallel=1 asked
    for (seed, _, d), (_, _, ref) in zip(seed_jobs(out), seed_jobs(reference)):
        assert_same_run(d, ref)
        if d in finished:
            assert files_of(d) == finished[d] and trained[seed][0] is False
