import pytest
import torch


@pytest.fixture(autouse=True)
def _leave_global_rng_alone():
    """Library code must not touch the global RNG: every test checks that."""
    state = torch.random.get_rng_state()
    yield
    assert torch.equal(state, torch.random.get_rng_state()), "the global torch RNG was changed"
