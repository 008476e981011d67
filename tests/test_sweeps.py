"""Sweeps: grid expansion and names, the manifest rule, status, the executors, and a sweep killed with SIGKILL."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mechgrok.config import SCHEMA_VERSION

from mechgrok import runs
from mechgrok.config import Config
from mechgrok.sweeps import (
    MANIFEST_FILE, Sweep, SweepError, open_sweep, plan_chunks, read_manifest, run_state, run_sweep, sweep_results,
    sweep_status,
)
from mechgrok.training.stack import train_stack

# A sparse-parity MLP: 1,000 epochs of a stack of two take about a second on one thread.
BASE = Config(task="parity", family="parity_mlp", n_bits=10, parity_bits=3, n_train=200, n_test=200, d_mlp=16, lr=3e-3,
              beta1=0.99, beta2=0.98, warmup_steps=0, epochs=1000, eval_every=50, checkpoint_every=100, loss_dtype="float32")
AXES = {"weight_decay": [0.01, 0.1], "seed": [0, 1]}
SWEEP = Sweep(BASE, AXES)
# chunk_size=2: every model trains in a batched step of the same shape, so its numbers are the same bits
# whichever executor, task or worker trains it (mechgrok.sweeps.chunks, "Bit for bit").
BITWISE = dict(chunk_size=2)


def metrics_of(folder) -> pd.DataFrame:
    return runs.read_metrics(folder).drop(columns="elapsed_s")


def assert_same_sweeps(a: Path, b: Path, sweep: Sweep = SWEEP) -> None:
    ra, rb = sweep_results(a, sweep), sweep_results(b, sweep)
    pd.testing.assert_frame_equal(ra.drop(columns="folder"), rb.drop(columns="folder"))
    for run in sweep.runs:
        pd.testing.assert_frame_equal(metrics_of(a / run.name), metrics_of(b / run.name))


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file's mtime and bytes (but the driver's lock file, which each run_sweep rewrites)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """SWEEP trained inline, uninterrupted: the folder every other executor and the killed sweep must match."""
    out = tmp_path_factory.mktemp("reference") / "sweep"
    run_sweep(SWEEP, out, executor="inline", **BITWISE)
    return out


# ----------------------------------------------------------------------------- the grid
def test_the_grid_is_the_cartesian_product_last_axis_fastest_with_hive_style_names():
    sweep = Sweep(BASE, {"d_mlp": [16, 32], "n_train": [100], "weight_decay": [0.01, 1], "seed": range(2)})
    assert len(sweep) == 8
    assert [r.name for r in sweep.runs[:3]] == ["d_mlp=16/n_train=100/weight_decay=0.01/seed=0",
                                                "d_mlp=16/n_train=100/weight_decay=0.01/seed=1",
                                                "d_mlp=16/n_train=100/weight_decay=1.0/seed=0"]
    assert sweep.runs[-1].name == "d_mlp=32/n_train=100/weight_decay=1.0/seed=1"
    run = sweep.runs[2]
    assert run.config == BASE.replace(d_mlp=16, n_train=100, weight_decay=1.0, seed=0)
    assert run.values == (("d_mlp", 16), ("n_train", 100), ("weight_decay", 1.0), ("seed", 0))
    # an int for a float field is that float, and numpy scalars are plain values: one value, one name
    assert Sweep(BASE, {"weight_decay": np.array([1, 0.5])[:1], "lr": [np.float64(1e-5)]}).runs[0].name == \
        "weight_decay=1.0/lr=1e-05"
    assert Sweep(BASE, {"family": ["parity_mlp"]}).runs[0].name == "family=parity_mlp"
    assert Sweep.from_dict(json.loads(json.dumps(sweep.to_dict())), 3).runs == sweep.runs


@pytest.mark.parametrize("axes, message", [
    ({"d_mpl": [16]}, "axis 'd_mpl' is not a Config field"),
    ({"mlp": [16]}, "did you mean 'd_mlp'"),
    ({"d_vocab": [3]}, "axis 'd_vocab' is not a Config field"),
    ({"seed": 3}, r"axis seed=3 must be a list of values; pass e.g. seed=\[3\]"),
    ({"family": "parity_mlp"}, "must be a list of values"),
    ({"seed": []}, "axis seed has no values"),
    ({"seed": [1, 1]}, "axis seed lists 1 twice"),
    ({"weight_decay": [1, 1.0]}, "axis weight_decay lists 1.0 twice"),
    ({}, "must be a non-empty dict"),
    ({"d_mlp": [16, 0]}, r"sweep run d_mlp=0: d_mlp=0 must be an integer >= 1"),
    ({"n_train": [100], "parity_bits": [3, 12]}, r"sweep run n_train=100/parity_bits=12: parity_bits=12 exceeds n_bits=10"),
    ({"family": ["mlp"]}, "sweep run family=mlp: family='mlp' trains on task 'modular'"),
])
def test_bad_axes_are_refused_up_front_naming_the_field_and_the_fix(axes, message):
    with pytest.raises(ValueError, match=message):
        Sweep(BASE, axes)


def test_a_base_that_is_not_a_config_is_refused():
    with pytest.raises(ValueError, match="must be a mechgrok Config"):
        Sweep(BASE.to_dict(), AXES)


# ----------------------------------------------------------------------------- the manifest
def test_the_manifest_records_the_sweep_and_a_folder_only_grows(tmp_path):
    out = tmp_path / "sweep"
    open_sweep(out, SWEEP)
    saved = json.loads((out / MANIFEST_FILE).read_text())
    assert saved["format"] == "mechgrok-sweep" and saved["schema_version"] == 1 and saved["config_schema_version"] == SCHEMA_VERSION
    assert saved["axes"] == {"weight_decay": [0.01, 0.1], "seed": [0, 1]} and saved["base"] == BASE.to_dict()
    assert read_manifest(out).runs == SWEEP.runs
    before = (out / MANIFEST_FILE).read_text()

    refusals = [
        (Sweep(BASE.replace(lr=1e-3), AXES), r"base lr: saved 0.003, asked 0.001"),
        (Sweep(BASE, {"seed": [0, 1], "weight_decay": [0.01, 0.1]}), r"axes: saved \['weight_decay', 'seed'\], asked \['seed', 'weight_decay'\]"),
        (Sweep(BASE, {"weight_decay": [0.01, 0.1]}), r"axes: saved \['weight_decay', 'seed'\], asked \['weight_decay'\]"),
        (Sweep(BASE, {"weight_decay": [0.1], "seed": [0, 1, 2]}), r"axis weight_decay drops saved value\(s\) \[0.01\]"),
    ]
    for asked, message in refusals:
        with pytest.raises(ValueError, match=message) as err:
            open_sweep(out, asked)
        assert "Pass the saved settings, or another folder" in str(err.value)
        assert (out / MANIFEST_FILE).read_text() == before  # nothing written

    # an axis value that was already an axis in the base is not a difference of the base
    assert open_sweep(out, Sweep(BASE.replace(seed=7), AXES)) is not None
    grown = Sweep(BASE.replace(epochs=800), {"weight_decay": [0.01, 0.1, 1.0], "seed": [0, 1]})
    open_sweep(out, grown)  # more values and a longer schedule: allowed
    assert read_manifest(out).runs == grown.runs


def test_a_folder_that_holds_something_else_is_not_made_a_sweep(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds notes.txt but no sweep.json"):
        run_sweep(SWEEP, tmp_path, executor="inline")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="is not a sweep folder"):
        sweep_status(tmp_path)


# ----------------------------------------------------------------------------- planning
def test_chunks_group_by_stack_key_and_train_size_and_leave_no_run_alone():
    sweep = Sweep(BASE, {"d_mlp": [16, 32], "n_train": [100, 200], "seed": range(5)})
    chunks = plan_chunks(sweep.runs, workers=2)
    assert [len(c) for c in chunks] == [3, 2] * 4  # each (d_mlp, n_train) group of 5 over 2 workers
    for chunk in chunks:
        assert len({(r.config.d_mlp, r.config.n_train) for r in chunk}) == 1
    assert [r.name for r in chunks[0]] == [f"d_mlp=16/n_train=100/seed={s}" for s in range(3)]
    assert [len(c) for c in plan_chunks(sweep.runs, workers=1, models_per_task=4)] == [5] * 4  # 4 + a lone 1 -> 5
    assert [len(c) for c in plan_chunks(sweep.runs, workers=1)] == [5] * 4


# ----------------------------------------------------------------------------- running and status
def test_a_sweep_trains_every_run_into_its_own_run_folder_and_reports_it(reference):
    results = sweep_results(reference)
    assert results.run.tolist() == [r.name for r in SWEEP.runs]
    assert list(results.columns[:2]) == ["weight_decay", "seed"] and results.weight_decay.tolist() == [0.01, 0.01, 0.1, 0.1]
    assert (results.status == "finished").all() and (results.epoch == 1000).all()
    for run, row in zip(SWEEP.runs, results.itertuples()):
        loaded = runs.load_run(reference / run.name)
        assert loaded.config == run.config and loaded.epoch == 1000
        metrics = runs.read_metrics(reference / run.name)
        assert row.train_loss == metrics.train_loss.iloc[-1] and row.test_acc == metrics.test_acc.iloc[-1]
        assert row.min_train_loss == metrics.train_loss.min() and row.min_test_loss == metrics.test_loss.min()
    status = sweep_status(reference)
    assert (status.status == "finished").all() and status.folder.tolist() == [str(reference / r.name) for r in SWEEP.runs]


def test_a_finished_sweep_run_again_rewrites_nothing(reference, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(reference, out)
    before = snapshot(out)
    chunks = []
    results = run_sweep(SWEEP, out, executor="inline", on_chunk=chunks.append)
    assert chunks == [] and snapshot(out) == before
    pd.testing.assert_frame_equal(results.drop(columns="folder"), sweep_results(reference).drop(columns="folder"))


def test_status_tells_finished_partial_not_started_and_conflict(reference, tmp_path):
    out = tmp_path / "sweep"
    open_sweep(out, SWEEP)
    first, second, third, fourth = SWEEP.runs
    shutil.copytree(reference / first.name, out / first.name)
    train_stack([second.config.replace(epochs=100)], [out / second.name], chunk_size=1)  # a run stopped at epoch 100
    (out / third.name).mkdir(parents=True)
    (out / third.name / ".config.json.x1y2.tmp").write_text("{")  # a kill inside the trainer's first write
    shutil.copytree(reference / first.name, out / fourth.name)  # seed 0's run where seed 1's should be
    status = sweep_status(out).set_index("run")
    assert status.status.tolist() == ["finished", "partial", "not_started", "conflict"]
    assert status.epoch.tolist() == [1000, 100, 0, 0]
    assert "unfinished write" in status.detail[third.name]
    assert "seed: saved 0, asked 1" in status.detail[fourth.name]
    assert run_state(first.config, out / "nowhere").status == "not_started"
    results = sweep_results(out).set_index("run")
    assert results.loc[second.name, "epoch"] == 100 and np.isnan(results.loc[third.name, "train_loss"])

    # a conflict stops the sweep before anything trains
    with pytest.raises(ValueError, match=r"1 run folder\(s\) of .* cannot be trained: .*seed=1: .*seed: saved 0, asked 1"):
        run_sweep(SWEEP, out, executor="inline")
    assert sweep_status(out).status.tolist() == ["finished", "partial", "not_started", "conflict"]


def test_what_a_kill_leaves_half_begun_is_tidied_and_trained(reference, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(reference, out)
    debris, early = SWEEP.runs[0], SWEEP.runs[1]
    shutil.rmtree(out / debris.name)
    (out / debris.name).mkdir()
    (out / debris.name / ".config.json.abc123.tmp").write_text("{")
    # killed between the epoch-0 checkpoint and the first resume file
    (out / early.name / runs.RESUME_FILE).unlink()
    for epoch in runs.checkpoint_epochs(out / early.name)[1:]:
        runs.checkpoint_path(out / early.name, epoch).unlink()
    assert sweep_status(out).status.tolist()[:2] == ["not_started", "not_started"]
    run_sweep(SWEEP, out, executor="inline", **BITWISE)
    assert_same_sweeps(out, reference)


def test_a_family_with_a_fast_step_trains_run_by_run_with_train(tmp_path):
    from mechgrok.training.loop import train

    base = Config(p=11, frac_train=0.5, d_model=16, n_heads=2, d_mlp=32, lr=3e-3, epochs=40, eval_every=10,
                  checkpoint_every=20)
    sweep = Sweep(base, {"frac_train": [0.5, 0.6], "seed": [0, 1]})
    results = run_sweep(sweep, tmp_path / "sweep", executor="inline")
    assert (results.status == "finished").all() and results.run[3] == "frac_train=0.6/seed=1"
    alone = train(sweep.runs[3].config, tmp_path / "alone")
    pd.testing.assert_frame_equal(metrics_of(tmp_path / "sweep" / sweep.runs[3].name), metrics_of(tmp_path / "alone"))
    assert results.test_loss[3] == alone.metrics.test_loss.iloc[-1]


def test_inline_and_process_pool_sweeps_are_the_same_bits(reference, tmp_path):
    done = []
    results = run_sweep(SWEEP, tmp_path / "sweep", executor="process", workers=2, on_chunk=done.append, **BITWISE)
    assert sorted(map(len, done)) == [2, 2]  # two tasks of two runs, one per worker
    assert (results.status == "finished").all()
    assert_same_sweeps(tmp_path / "sweep", reference)


# ----------------------------------------------------------------------------- a sweep killed with SIGKILL
KILLED_SWEEP = (
    "import json, sys\n"
    "from mechgrok.config import Config\n"
    "from mechgrok.sweeps import Sweep, run_sweep\n"
    "base, axes, out, executor = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]\n"
    "if __name__ == '__main__':\n"
    "    run_sweep(Sweep(Config.from_dict(base), axes), out, executor=executor, workers=1, models_per_task=2, chunk_size=2)\n"
)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def kill_midway(out: Path, executor: str) -> list[int]:
    """Start SWEEP in a subprocess (two tasks of two runs, one after the other), SIGKILL it once the
    first task is finished and the second is past its first checkpoint; return the pids its children had."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SWEEP, json.dumps(BASE.to_dict()), json.dumps(AXES), str(out),
                             executor], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the sweep did not get going"
            if (out / MANIFEST_FILE).exists():
                states = [run_state(r.config, out / r.name) for r in SWEEP.runs]
                if [s.status for s in states] == ["finished", "finished", "partial", "partial"] and \
                        min(s.epoch for s in states[2:]) >= 100:
                    break
            time.sleep(0.02)
        children = children_of(proc.pid)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return children


def assert_resumed_like(out: Path, reference: Path, epochs_at_kill: list[int]) -> None:
    """The resumed runs end as if never killed: bit for bit when the kill left both runs of the task at one
    epoch (the task resumes as one batched stack); a kill inside the save that writes their resume files one
    after the other leaves them an epoch apart, and each resumes alone, which rounds like a model trained
    alone (mechgrok.sweeps.chunks, "Bit for bit"): the same to float32 rounding."""
    if len(set(epochs_at_kill)) == 1:
        assert_same_sweeps(out, reference)
        return
    for run in SWEEP.runs:  # measured: 1e-7 to 1e-4 relative in the losses, one example in the accuracies
        got, want = metrics_of(out / run.name), metrics_of(reference / run.name)
        pd.testing.assert_frame_equal(got[["epoch", "train_loss", "test_loss"]], want[["epoch", "train_loss", "test_loss"]],
                                      rtol=1e-3)
        assert (got[["train_acc", "test_acc"]] - want[["train_acc", "test_acc"]]).abs().max().max() <= 0.02


def test_a_sweep_killed_with_sigkill_resumes_without_retraining_a_finished_run(reference, tmp_path):
    out = tmp_path / "sweep"
    kill_midway(out, "inline")
    first, second = SWEEP.runs[:2], SWEEP.runs[2:]
    finished = {r.name: snapshot(out / r.name) for r in first}
    epochs_at_kill = [run_state(r.config, out / r.name).epoch for r in second]
    assert all(100 <= e < 1000 for e in epochs_at_kill)

    resumed = []
    run_sweep(SWEEP, out, executor="inline", models_per_task=2, on_chunk=resumed.append, **BITWISE)
    assert resumed == [[r.name for r in second]]  # only the unfinished task ran again
    assert {r.name: snapshot(out / r.name) for r in first} == finished  # not one byte or mtime changed
    assert (sweep_status(out).status == "finished").all()
    assert_resumed_like(out, reference, epochs_at_kill)


@pytest.mark.slow
def test_a_process_pool_driver_killed_with_sigkill_takes_its_workers_with_it(reference, tmp_path):
    out = tmp_path / "sweep"
    children = kill_midway(out, "process")
    assert children, "the driver had no worker process"
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
              for pid in children):
        assert time.monotonic() < deadline, f"worker(s) {children} outlived their killed driver"
        time.sleep(0.05)
    finished = {r.name: snapshot(out / r.name) for r in SWEEP.runs[:2]}
    epochs_at_kill = [run_state(r.config, out / r.name).epoch for r in SWEEP.runs[2:]]
    run_sweep(SWEEP, out, executor="inline", models_per_task=2, **BITWISE)
    assert {r.name: snapshot(out / r.name) for r in SWEEP.runs[:2]} == finished
    assert_resumed_like(out, reference, epochs_at_kill)


# ----------------------------------------------------------------------------- errors
def test_a_failing_chunk_is_reported_by_run_after_the_others_finish(tmp_path):
    sweep = Sweep(BASE.replace(epochs=20), {"seed": [0, 1]})
    with pytest.raises(SweepError, match=r"1 chunk\(s\) of .* failed .*seed=0: ValueError: device='cuda'") as err:
        run_sweep(sweep, tmp_path / "sweep", executor="inline", device="cuda")
    assert list(err.value.failures) == ["seed=0"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(executor="slurm"), r"executor='slurm' is not one of \['inline', 'process', 'ray'\]"),
    (dict(executor="process", workers=0), "workers=0 must be an integer >= 1"),
    (dict(executor="inline", models_per_task=0), "models_per_task=0 must be an integer >= 1"),
    (dict(executor="process", address="auto"), "apply to executor='ray' only"),
    (dict(executor="inline", threads=0), "threads=0 must be an integer >= 1"),
])
def test_bad_run_sweep_arguments_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_sweep(SWEEP, tmp_path / "sweep", **kwargs)
    assert not (tmp_path / "sweep").exists()


def test_one_driver_at_a_time_trains_a_sweep_folder(tmp_path):
    out = tmp_path / "sweep"
    open_sweep(out, SWEEP)
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"pid 12345 on elsewhere\n")
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match=r"another run_sweep \(pid 12345 on elsewhere\) is training"):
            run_sweep(SWEEP, out, executor="inline")
    finally:
        os.close(fd)
    assert sorted(p.name for p in out.iterdir()) == [".lock", MANIFEST_FILE]
