"""Every case of the hostile-input battery (tests/_battery.py, issue 10) ends in a clear error:
a ValueError (or CLI exit 2) that names the file, field or flag, with no file of the run changed,
and every bomb refused in well under a second."""

from __future__ import annotations

import pytest

from _battery import CASES, classify


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_battery_case_is_refused_clearly_and_changes_nothing(tmp_path, name):
    outcome = classify(name, tmp_path)
    assert outcome.kind == "clear", f"{name}: {outcome.kind}: {outcome.message}"
    if name.startswith(("pth_", "ckpt_header", "ckpt_huge", "ckpt_too_big")):
        assert outcome.seconds < 1.0, f"{name} took {outcome.seconds:.2f} s to refuse"
