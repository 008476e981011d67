"""How `mechgrok reproduce --seeds N` trains its seeds (reproduce.pipeline.plan_training), and the
device argument of the pipeline, the progress measures and the figures."""

import pytest
import torch

import mechgrok
from mechgrok import cli, runs
from mechgrok.analysis import progress
from mechgrok.config import Config
from mechgrok.report import figures
from mechgrok.reproduce import pipeline
from mechgrok.reproduce.pipeline import TrainingPlan, _train_seeds, plan_training, seed_dir

from _tiny_run import tiny_run

NO_CUDA = not torch.cuda.is_available()
CFG = Config(p=23, frac_train=0.5, d_model=32, n_heads=4, d_mlp=64, lr=3e-3, epochs=12, eval_every=4, checkpoint_every=6)


def _cores(monkeypatch, n):
    monkeypatch.setattr("mechgrok.sweeps.execute.usable_cpus", lambda: n)


def test_the_cpu_gets_one_single_thread_process_per_usable_core(monkeypatch):
    _cores(monkeypatch, 4)
    plan = plan_training(5, "cpu", None, 1)
    assert (plan.executor, plan.workers, plan.threads) == ("processes", 4, 1) and "4 usable cores" in plan.reason
    assert plan_training(3, "cpu", None, 1).workers == 3  # never more processes than seeds
    assert plan_training(5, "cpu", None, 2).workers == 2  # cores / threads each
    _cores(monkeypatch, 1)
    assert plan_training(5, "cpu", None, 1).executor == "sequential"
    _cores(monkeypatch, 8)
    assert plan_training(1, "cpu", None, 1).executor == "sequential"


def test_parallel_overrides_the_probe_and_cuda_stacks_every_seed(monkeypatch):
    _cores(monkeypatch, 8)
    assert plan_training(5, "cpu", 1, 1).executor == "sequential"
    plan = plan_training(5, "cpu", 2, 1)
    assert (plan.executor, plan.workers) == ("processes", 2) and "parallel=2" in plan.reason
    plan = plan_training(64, "cuda", None, 1)
    assert (plan.executor, plan.workers, plan.device) == ("stack", 64, "cuda")
    assert plan.to_dict()["executor"] == "stack" and plan.to_dict()["seeds_to_train"] == 64
    with pytest.raises(ValueError, match="parallel=2 trains separate CPU processes.*drop --parallel"):
        plan_training(4, "cuda", 2, 1)


def _jobs(out, seeds=(0, 1, 2)):
    return [(s, CFG.replace(seed=s), seed_dir(out, s, 0)) for s in seeds]


def test_the_stack_executor_trains_each_seed_as_train_would_and_reuses_finished_ones(tmp_path, monkeypatch):
    # the GPU's executor, run on the CPU: the same code path as --device cuda
    monkeypatch.setattr(pipeline, "plan_training", lambda n, device, parallel, threads: TrainingPlan(
        "stack", device, n, 1, n, "forced for the test"))
    said = []
    results, plan = _train_seeds(_jobs(tmp_path / "stack"), None, False, said.append, 1, "cpu")
    assert plan.executor == "stack" and [trained for trained, _ in results.values()] == [True] * 3
    assert any("in one stack on cpu" in m for m in said)
    for seed, cfg, run_dir in _jobs(tmp_path / "stack"):
        alone = mechgrok.train(cfg, tmp_path / f"alone{seed}")
        run = mechgrok.load_run(run_dir)
        assert run.epoch == cfg.epochs and torch.equal(run.split.train, alone.split.train)
        for name, w in alone.model.named_parameters():
            got = run.model.get_parameter(name).detach().double()
            assert float((got - w.detach().double()).norm()) <= 1e-5 * float(w.detach().double().norm()) + 1e-12, name
    # a second call finds every seed finished and trains nothing
    results, plan = _train_seeds(_jobs(tmp_path / "stack"), None, False, said.append, 1, "cpu")
    assert [trained for trained, _ in results.values()] == [False] * 3 and plan.to_train == 0


def test_the_stack_executor_extends_a_shorter_run(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "plan_training", lambda n, device, parallel, threads: TrainingPlan(
        "stack", device, n, 1, n, "forced for the test"))
    short = [(s, c.replace(epochs=6), d) for s, c, d in _jobs(tmp_path / "run", (0, 1))]
    _train_seeds(short, None, False, lambda m: None, 1, "cpu")
    said = []
    results, _ = _train_seeds(_jobs(tmp_path / "run", (0, 1)), None, False, said.append, 1, "cpu")
    assert all(trained for trained, _ in results.values())
    assert sum("resuming" in m and "from epoch 6" in m for m in said) == 2
    assert runs.read_checkpoint_file(seed_dir(tmp_path / "run", 1, 0) / runs.RESUME_FILE).epoch == 12


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_a_missing_cuda_is_refused_with_the_fix_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"CUDA is not available.*pass --device cpu"):
        pipeline.reproduce(tmp_path / "r", config=CFG, seeds=2, device="cuda")
    assert not (tmp_path / "r").exists()
    assert cli.main(["reproduce", "--p", "11", "--epochs", "2", "--out", str(tmp_path / "c"), "--device", "cuda"]) == 2
    assert "pass --device cpu" in capsys.readouterr().err and not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="pass --device cpu"):
        progress.compute_measures(tiny_run(), device="cuda")
    with pytest.raises(ValueError, match="pass --device cpu"):
        figures.RunAnalysis(tiny_run(), device="cuda")


def test_the_cli_passes_device_and_leaves_parallel_to_the_machine(monkeypatch, tmp_path):
    calls = []

    def fake(out, **kwargs):
        calls.append(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(pipeline, "reproduce", fake)
    assert cli.main(["reproduce", "--out", str(tmp_path), "--seeds", "3", "--no-progress"]) == 2
    assert calls[-1]["parallel"] is None and calls[-1]["device"] == "cpu"
    assert cli.main(["reproduce", "--out", str(tmp_path), "--seeds", "3", "--device", "cuda", "--no-progress"]) == 2
    assert calls[-1]["device"] == "cuda"


def test_the_progress_measures_on_a_device_come_back_on_the_cpu(tmp_path):
    run = tiny_run()
    epochs = runs.checkpoint_epochs(run)[-2:]
    on_cpu, key = progress.compute_measures(run, epochs=epochs)
    again, key2 = progress.compute_measures(run, epochs=epochs, device="cpu")
    assert key == key2 and on_cpu.equals(again)
    with pytest.raises(ValueError, match="device='tpu'"):
        progress.compute_measures(run, epochs=epochs, device="tpu")
    assert figures.RunAnalysis(run, device="cpu").acts.logits.device.type == "cpu"


def test_summary_json_records_the_executor(tmp_path):
    import json
    import shutil

    from _tiny_run import TINY

    out = tmp_path / "run"
    shutil.copytree(tiny_run(), out)
    said = []
    result = pipeline.reproduce(out, config=TINY, seeds=1, parallel=1, on_step=said.append)
    training = json.loads(result.summary_path.read_text())["training"]
    assert training == result.summary["training"]
    assert training["executor"] == "sequential" and training["seeds_to_train"] == 0 and training["device"] == "cpu"
    assert "parallel=1 asked" in training["reason"] and any("reused the finished run" in m for m in said)
