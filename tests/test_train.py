import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from mechgrok import runs, speed
from mechgrok.config import Config
from mechgrok.models.fastpath import FastPath
from mechgrok.speed import fast_float32_matmul
from mechgrok.tasks.modular import ModularTask
from mechgrok.training.loop import lr_at, train

SMALL = Config(p=13, frac_train=0.5, epochs=240, eval_every=10, checkpoint_every=50, seed=1)


def same_metrics(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    cols = [c for c in a.columns if c != "elapsed_s"]
    return a[cols].equals(b[cols])


def same_files(dir_a, dir_b) -> bool:
    epochs = runs.checkpoint_epochs(dir_a)
    assert epochs == runs.checkpoint_epochs(dir_b)
    for epoch in epochs:
        a = runs.read_checkpoint_file(runs.checkpoint_path(dir_a, epoch)).model_state
        b = runs.read_checkpoint_file(runs.checkpoint_path(dir_b, epoch)).model_state
        if any(not torch.equal(a[k], b[k]) for k in a):
            return False
    return True


def test_run_folder_contents(tmp_path):
    result = train(SMALL, tmp_path / "run")
    folder = tmp_path / "run"
    assert runs.read_config(folder) == SMALL
    assert runs.checkpoint_epochs(folder) == [0, 50, 100, 150, 200, 240]
    metrics = runs.read_metrics(folder)
    assert list(metrics.columns) == runs.METRIC_COLUMNS
    assert metrics.epoch.tolist() == list(range(0, 240, 10)) + [240]
    assert result.epoch == 240 and not result.interrupted
    split = runs.read_split(folder)
    assert torch.equal(split.train, result.split.train)


def test_reported_losses_come_from_the_hooked_transformer_forward(tmp_path):
    result = train(SMALL, tmp_path / "run")
    loaded = runs.load_run(tmp_path / "run")
    tokens, labels = loaded.task.tokens(), loaded.task.labels()
    logits = loaded.model(tokens[loaded.split.test])[:, -1]
    test_loss = torch.nn.functional.cross_entropy(logits.double(), labels[loaded.split.test]).item()
    last = result.metrics.iloc[-1]
    assert abs(test_loss - last.test_loss) < 1e-5 * max(1, test_loss)
    acc = (logits.argmax(-1) == labels[loaded.split.test]).float().mean().item()
    assert acc == pytest.approx(last.test_acc)


def test_warmup_schedule():
    cfg = Config(lr=1e-3, warmup_steps=10)
    assert lr_at(cfg, 0) == 0 and lr_at(cfg, 5) == pytest.approx(5e-4) and lr_at(cfg, 10) == lr_at(cfg, 500) == 1e-3
    assert lr_at(cfg.replace(warmup_steps=0), 0) == 1e-3


def test_interrupt_and_resume_is_bit_identical(tmp_path):
    straight = train(SMALL, tmp_path / "straight")

    def interrupt_at_epoch_120(row):
        if row["epoch"] == 120:
            os.kill(os.getpid(), signal.SIGINT)

    first = train(SMALL, tmp_path / "resumed", on_eval=interrupt_at_epoch_120)
    assert first.interrupted and first.epoch == 121
    assert runs.read_checkpoint_file(tmp_path / "resumed" / runs.RESUME_FILE).epoch == 121
    second = train(SMALL, tmp_path / "resumed")
    assert second.resumed_from == 121 and not second.interrupted
    for (name, a), b in zip(straight.model.named_parameters(), second.model.parameters()):
        assert torch.equal(a, b), name
    assert same_metrics(straight.metrics, second.metrics)
    assert same_metrics(runs.read_metrics(tmp_path / "straight"), runs.read_metrics(tmp_path / "resumed"))
    assert same_files(tmp_path / "straight", tmp_path / "resumed")


def test_sigkill_and_resume_is_bit_identical(tmp_path):
    cfg = SMALL.replace(epochs=600, checkpoint_every=100)
    args = [sys.executable, "-m", "mechgrok.cli", "train", "--no-progress", "--p", "13", "--frac-train", "0.5",
            "--seed", "1", "--epochs", "600", "--checkpoint-every", "100"]
    killed = subprocess.Popen(args + ["--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    resume = tmp_path / "killed" / runs.RESUME_FILE
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a mid-run resume checkpoint exists
        if resume.exists() and 0 < runs.read_checkpoint_file(resume).epoch < 600:
            break
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    epoch_at_kill = runs.read_checkpoint_file(resume).epoch
    assert 0 < epoch_at_kill < 600

    done = subprocess.run(args + ["--out", str(tmp_path / "killed")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"resuming {tmp_path / 'killed'} from epoch ")  # said first, not at the end
    straight = train(cfg, tmp_path / "straight")
    assert same_metrics(straight.metrics, runs.read_metrics(tmp_path / "killed"))
    assert same_files(tmp_path / "straight", tmp_path / "killed")


def test_extending_epochs_continues_the_run(tmp_path):
    train(SMALL.replace(epochs=100), tmp_path / "run")
    longer = train(SMALL, tmp_path / "run")
    straight = train(SMALL, tmp_path / "straight")
    assert longer.resumed_from == 100
    assert same_metrics(longer.metrics, straight.metrics)


def test_refuses_other_config_and_foreign_folder(tmp_path):
    train(SMALL.replace(epochs=20), tmp_path / "run")
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    with pytest.raises(ValueError, match="seed: saved 1, asked 2"):
        train(SMALL.replace(seed=2), tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a mechgrok run folder"):
        train(SMALL, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


def test_fastpath_loss_matches_training_metric(tmp_path):
    result = train(SMALL.replace(epochs=30), tmp_path / "run")
    task = ModularTask(13)
    with fast_float32_matmul():  # the trainer's own settings, so the numbers are bit-identical
        loss, _ = FastPath(task.tokens()[result.split.train], task.labels()[result.split.train]).loss(result.model)
    assert loss.item() == result.metrics.iloc[-1].train_loss


def test_finished_run_is_reused_untouched(tmp_path):
    first = train(SMALL.replace(epochs=40), tmp_path / "run")
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    again = train(SMALL.replace(epochs=40), tmp_path / "run")
    assert again.epoch == 40 and again.resumed_from == 40
    assert same_metrics(first.metrics, again.metrics)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()} == stamps
    with pytest.raises(ValueError, match="already trained to epoch 40"):
        train(SMALL.replace(epochs=30), tmp_path / "run")


def test_threads_apply_inside_training_and_are_restored(tmp_path):
    before = torch.get_num_threads()
    seen = []
    # few epochs wherever there are two threads: on a busy 2-core machine they can be many times slower
    result = train(SMALL.replace(epochs=2, eval_every=1), tmp_path / "a", threads=2,
                   on_eval=lambda row: seen.append(torch.get_num_threads()))
    assert set(seen) == {2} and result.threads == 2
    assert torch.get_num_threads() == before
    # threads=None inherits an enclosing explicit torch_threads block (a sweep's trainers, say) ...
    with speed.torch_threads(2):
        torch.set_num_threads(1)  # ... even if something in between changed the live count
        assert train(SMALL.replace(epochs=1), tmp_path / "b").threads == 2
        assert torch.get_num_threads() == 1
    # ... and outside one it is default_threads()
    assert train(SMALL.replace(epochs=1), tmp_path / "c").threads == speed.default_threads()
    with pytest.raises(ValueError, match="threads=0 must be an integer >= 1"):
        train(SMALL, tmp_path / "d", threads=0)


def test_resume_is_bit_identical_on_two_threads(tmp_path):
    cfg = SMALL.replace(epochs=16, eval_every=2, checkpoint_every=4)
    straight = train(cfg, tmp_path / "straight", threads=2)

    def interrupt_at_epoch_6(row):
        if row["epoch"] == 6:
            os.kill(os.getpid(), signal.SIGINT)

    assert train(cfg, tmp_path / "resumed", threads=2, on_eval=interrupt_at_epoch_6).interrupted
    resumed = train(cfg, tmp_path / "resumed", threads=2)
    assert resumed.resumed_from == 7
    assert same_metrics(straight.metrics, resumed.metrics)
    assert same_files(tmp_path / "straight", tmp_path / "resumed")


def test_on_resume_is_called_before_the_first_step(tmp_path):
    train(SMALL.replace(epochs=20), tmp_path / "run")
    events = []
    train(SMALL.replace(epochs=40), tmp_path / "run", on_resume=lambda e: events.append(("resume", e)),
          on_eval=lambda row: events.append(("eval", row["epoch"])))
    assert events[0] == ("resume", 20) and events[1] == ("eval", 20)
    events.clear()
    train(SMALL.replace(epochs=40), tmp_path / "run", on_resume=lambda e: events.append(("resume", e)))
    assert events == []  # a finished run trains nothing, so nothing resumes


def test_float32_loss_is_really_float32_and_differs_only_by_rounding(tmp_path):
    cfg = SMALL.replace(epochs=200, checkpoint_every=100)
    r64 = train(cfg, tmp_path / "f64")
    r32 = train(cfg.replace(loss_dtype="float32"), tmp_path / "f32")
    m64, m32 = r64.metrics, r32.metrics
    assert runs.read_config(tmp_path / "f32").loss_dtype == "float32"
    losses = ("train_loss", "test_loss")
    # every loss the float32 run reports is a float32 number; the float64 run's are not
    for col in losses:
        assert all(float(np.float32(x)) == x for x in m32[col])
        assert not any(float(np.float32(x)) == x for x in m64[col])
    # epoch 0 is the same initialisation, so there the two differ by the loss's rounding alone
    for col in losses:
        assert m64[col].iloc[0] != m32[col].iloc[0]
        assert m32[col].iloc[0] == pytest.approx(m64[col].iloc[0], rel=1e-6)
    # both train, and late in training the trajectories differ only by accumulated rounding (a few
    # percent by epoch 200: training amplifies a difference in the last bit of the loss's gradient)
    for m in (m64, m32):
        assert m.train_loss.iloc[-1] < 1e-2 * m.train_loss.iloc[0] and m.train_acc.iloc[-1] == 1.0
    late = m64.epoch >= 150
    for col in losses:
        assert np.allclose(m32[col][late], m64[col][late], rtol=5e-2, atol=0)
        assert not np.array_equal(m32[col][late], m64[col][late])
    # the reported final loss is exactly a float32 cross-entropy of the trained model's logits
    task = ModularTask(cfg.p)
    tokens, labels = task.tokens()[r32.split.train], task.labels()[r32.split.train]
    with fast_float32_matmul():  # the trainer's own settings, so the logits are bit-identical
        logits = FastPath(tokens, labels).logits(r32.model)
    as32 = -torch.log_softmax(logits.float(), -1).gather(1, labels[:, None]).mean()
    as64 = -torch.log_softmax(logits.double(), -1).gather(1, labels[:, None]).mean()
    assert as32.item() == m32.train_loss.iloc[-1] != as64.item()
