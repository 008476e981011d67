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


@pytest.mark.parametrize("threads", [1, 2])
def test_flushed_denormals_reach_every_thread_and_are_put_back(threads):
    subnormal = torch.full((threads * 200_000,), 1e-39)  # below float32's smallest normal, 2**-126
    with speed.torch_threads(threads):
        assert not speed.flushes_denormals()
        assert bool(((subnormal * 1.0) != 0).all())
        with speed.flushed_denormals() as applied:
            if applied:  # every thread of the team flushes: the whole parallel product is zero
                assert speed.flushes_denormals()
                assert bool(((subnormal * 1.0) == 0).all())
                big = torch.full((512, 512), 1e-20)
                assert bool(((big @ big) == 0).all())  # 1e-40 per term: the GEMM's threads flush too
        assert not speed.flushes_denormals()
        assert bool(((subnormal * 1.0) != 0).all())
        with speed.flushed_denormals(enabled=False) as applied:
            assert applied is False and not speed.flushes_denormals()


def test_flush_denormals_is_applied_on_this_kind_of_machine():
    # x86-64 Linux with torch's libgomp: the probe must find every thread flushing
    import platform

    if platform.machine() not in ("x86_64", "AMD64") or not speed._openmp_library():
        pytest.skip("flush-to-zero on every thread needs x86-64 and torch's libgomp")
    with speed.torch_threads(2), speed.flushed_denormals() as applied:
        assert applied


def test_training_flushes_denormals_only_while_it_runs(tmp_path):
    from mechgrok.config import Config
    from mechgrok.training.loop import train

    seen = []
    train(Config(p=7, frac_train=0.5, epochs=3), tmp_path / "run", on_eval=lambda row: seen.append(speed.flushes_denormals()))
    assert seen and all(seen)
    assert not speed.flushes_denormals()
    seen.clear()
    train(Config(p=7, frac_train=0.5, epochs=3), tmp_path / "plain", tune_process=False,
          on_eval=lambda row: seen.append(speed.flushes_denormals()))
    assert seen and not any(seen)


def test_denormal_mode_forces_either_mode_and_puts_the_outer_one_back():
    with speed.torch_threads(2):
        with speed.flushed_denormals() as applied:
            if not applied:
                pytest.skip("this machine cannot flush subnormals on every thread")
            with speed.denormal_mode(flush=False) as holds:
                assert holds and not speed.flushes_denormals()
            assert speed.flushes_denormals()
        with speed.denormal_mode(flush=True) as holds:
            assert holds and speed.flushes_denormals()
        assert not speed.flushes_denormals()
