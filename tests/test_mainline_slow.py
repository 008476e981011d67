"""End-to-end: the paper's mainline run groks (docs/training.md). Minutes, so marked slow."""

import pytest

from mechgrok.config import Config
from mechgrok.training.loop import train


@pytest.mark.slow
def test_paper_settings_grok_before_epoch_20k(tmp_path):
    result = train(Config(epochs=20_000, checkpoint_every=1_000), tmp_path / "mainline")
    metrics = result.metrics
    grokked = metrics[(metrics.test_acc >= 0.99) & (metrics.train_acc == 1.0)]
    assert len(grokked), f"no grokking by epoch 20k; final test accuracy {metrics.test_acc.iloc[-1]:.3f}"
    assert grokked.epoch.min() < 20_000
    assert metrics.train_acc[metrics.epoch >= 1_000].min() == 1.0  # memorised early, stays memorised
    assert metrics.test_loss.max() > 5  # there was a memorisation phase with a high test loss
