"""A small configuration that groks in seconds.

p=31 with 70% of the pairs and lr 3e-3: over seeds 0-4, test accuracy first reached 0.99 at
epochs 560, 1400, 1000, 480 and 320, so 2,000 epochs leave a margin (1,200 for seed 0, the
default suite's).
"""

import pytest

from mechgrok.config import Config
from mechgrok.training.loop import train

SMALL_GROKKING = Config(p=31, frac_train=0.7, lr=3e-3, epochs=2_000, checkpoint_every=1_000)


@pytest.mark.parametrize("seed", [0])
def test_small_config_groks(tmp_path, seed, epochs=1_200):
    result = train(SMALL_GROKKING.replace(seed=seed, epochs=epochs), tmp_path / "run")
    last = result.metrics.iloc[-1]
    assert last.train_acc == 1.0
    assert last.test_acc >= 0.99
    first = result.metrics[result.metrics.test_acc >= 0.99].epoch.min()
    early = result.metrics[result.metrics.epoch == 100].iloc[0]
    assert early.test_acc < 0.9, "it generalises late, not at once: that is grokking"
    assert first > 100


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_small_config_groks_over_seeds(tmp_path, seed):
    test_small_config_groks(tmp_path, seed, epochs=SMALL_GROKKING.epochs)
