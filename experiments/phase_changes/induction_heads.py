"""python experiments/phase_changes/induction_heads.py --run runs/phase-changes [--out DIR]

The same as ``mechgrok figure induction_heads --run runs/phase-changes``; runs from any directory. RUN is
the folder of ``mechgrok reproduce phase-changes`` (docs/phase_changes.md).

Nanda's Alignment Forum post (2022): repeated subsequences: the test loss and every head's previous-token and induction scores over training.

Writes RUN/figures/induction_heads.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.phase_changes.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "induction_heads", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
