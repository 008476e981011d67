"""experiments/benchmarks/gpu_check.py: the GPU check script runs, small, on the CPU and writes its figures."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / "gpu_check.py"


def test_the_gpu_check_runs_on_the_cpu_and_writes_its_json(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--device", "cpu", "--seeds", "2",
                           "--epochs", "20", "--p", "17"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["config"]["p"] == 17
    assert report["exactness"]["within_1e-5"] is True
    assert report["one_seed"]["ms_per_epoch"] > 0 and report["stack"]["seeds"] == 2
    assert report["stack"]["ms_per_seed_epoch"] == report["stack"]["ms_per_epoch_all_seeds"] / 2
    target = report["to_target_epoch"]
    assert target["label"].startswith("extrapolated") and target["epoch"] == 15_000
    assert target["seconds"] == report["stack"]["ms_per_epoch_all_seeds"] * 15_000 / 1000
    assert (tmp_path / "stack" / "seed_1" / "config.json").exists()  # real run folders


def test_the_gpu_check_refuses_a_missing_device_with_the_fix(tmp_path, capsys):
    import importlib.util

    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # in this process: the imports are paid once
    assert module.main(["--out", str(tmp_path), "--epochs", "20"]) == 2
    assert "pass --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()
