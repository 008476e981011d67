"""python experiments/phase_changes/weight_decay.py --run runs/phase-changes [--out DIR]

The same as ``mechgrok figure weight_decay --run runs/phase-changes``; runs from any directory. RUN is
the folder of ``mechgrok reproduce phase-changes`` (docs/phase_changes.md).

Nanda's Alignment Forum post (2022): the grokking epoch against weight decay.

Writes RUN/figures/weight_decay.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.phase_changes.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "weight_decay", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
