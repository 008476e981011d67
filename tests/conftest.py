import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_global_rng():
    """Tests may seed the global RNG freely; each starts from the same state."""
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    yield
    torch.random.set_rng_state(state)
