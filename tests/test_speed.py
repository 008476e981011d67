import pytest
import torch

from mechgrok import speed


def test_fast_matmul_is_kept_only_if_float32_accurate():
    before = torch.get_float32_matmul_precision()
    try:
        enabled = speed.enable_fast_float32_matmul()
        assert torch.get_float32_matmul_precision() == ("medium" if enabled else before)
        assert speed.probe_matmul_error() < 1e-5  # either way, GEMMs stay float32-accurate
        # a tolerance no GEMM can meet makes it put the old setting back
        torch.set_float32_matmul_precision(before)
        assert not speed.enable_fast_float32_matmul(tolerance=0.0)
        assert torch.get_float32_matmul_precision() == before
    finally:
        torch.set_float32_matmul_precision(before)


def test_tune_malloc_reports_a_bool():
    assert isinstance(speed.tune_malloc(), bool)


def test_training_restores_the_matmul_precision(tmp_path):
    from mechgrok.config import Config
    from mechgrok.training.loop import train

    before = torch.get_float32_matmul_precision()
    train(Config(p=7, frac_train=0.5, epochs=3), tmp_path / "run")
    assert torch.get_float32_matmul_precision() == before
    with speed.fast_float32_matmul() as enabled:
        assert torch.get_float32_matmul_precision() == ("medium" if enabled else before)
    assert torch.get_float32_matmul_precision() == before


def test_torch_threads_restores_and_nests(monkeypatch):
    monkeypatch.delenv("MECHGROK_THREADS", raising=False)
    before = torch.get_num_threads()
    with speed.torch_threads(2) as n:
        assert n == 2 == torch.get_num_threads() == speed.resolve_threads()
        with speed.torch_threads() as inner:  # None inherits the enclosing explicit count
            assert inner == 2
        with speed.torch_threads(1):
            assert speed.resolve_threads() == 1
        assert speed.resolve_threads() == 2
    assert torch.get_num_threads() == before
    assert speed.resolve_threads() == speed.default_threads() == 1


def test_mechgrok_threads_overrides_the_default(monkeypatch):
    monkeypatch.setenv("MECHGROK_THREADS", "3")
    assert speed.default_threads() == 3 and speed.resolve_threads(2) == 2
    monkeypatch.setenv("MECHGROK_THREADS", "many")
    with pytest.raises(ValueError, match="MECHGROK_THREADS='many' must be an integer >= 1"):
        speed.default_threads()
