"""The frozen golden reference (tests/golden/): the paper model's numbers, unchanged by a refactor.

On the CPU and torch version that wrote the reference, every number must match bit for bit.
Elsewhere, other kernels round differently, so the numbers are compared to a tolerance and the
key frequencies must still agree. Regenerate with ``python -m tests.golden.make_golden``.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tests.golden._api import GOLDEN_CONFIG
from tests.golden.make_golden import HERE, compute, cpu_model

META = json.loads((HERE / "meta.json").read_text())
EXACT = META["cpu"] == cpu_model() and META["torch"] == torch.__version__


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return compute(tmp_path_factory.mktemp("golden") / "run")
    finally:
        torch.set_num_threads(threads)


def _same(ours: pd.DataFrame, frozen: pd.DataFrame) -> None:
    assert list(ours.columns) == list(frozen.columns)
    assert len(ours) == len(frozen)
    for col in frozen.columns:
        if pd.api.types.is_numeric_dtype(frozen[col]):
            a, b = ours[col].to_numpy(dtype=float), frozen[col].to_numpy(dtype=float)
            if EXACT:
                assert ((a == b) | ((a != a) & (b != b))).all(), f"column {col} changed: {a} vs {b}"
            else:
                pd.testing.assert_series_equal(ours[col].astype(float), frozen[col].astype(float),
                                               check_names=False, rtol=5e-2, atol=1e-6)
        else:
            assert ours[col].astype(str).tolist() == frozen[col].astype(str).tolist(), f"column {col} changed"


def test_config_is_the_recorded_one():
    assert META["config"] == GOLDEN_CONFIG


def test_metrics(golden):
    _same(golden["metrics"].drop(columns="elapsed_s"), pd.read_csv(HERE / "metrics.csv"))


def test_final_weights(golden):
    frozen = load_file(str(HERE / "final_weights.safetensors"))
    assert set(golden["weights"]) == set(frozen)
    for name, tensor in frozen.items():
        if EXACT:
            assert torch.equal(golden["weights"][name], tensor), f"{name} changed"
        else:
            torch.testing.assert_close(golden["weights"][name], tensor, rtol=5e-2, atol=1e-3)


def test_key_frequencies(golden):
    assert golden["key_frequencies"] == META["key_frequencies"]


def test_progress_measures(golden):
    _same(golden["measures"], pd.read_csv(HERE / "progress.csv"))


def test_section_4_4(golden):
    _same(golden["section_4_4"], pd.read_csv(HERE / "section_4_4.csv"))
