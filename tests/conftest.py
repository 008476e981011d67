import os

# One thread per test process: the models here are small, and on a shared 2-core machine a second
# OpenMP thread that waits for a busy core slows every op down many times over. Subprocesses
# (the SIGKILL resume test) inherit the setting, so their numbers match in-process runs bit for bit.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_global_rng():
    """Tests may seed the global RNG freely; each starts from the same state."""
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    yield
    torch.random.set_rng_state(state)
