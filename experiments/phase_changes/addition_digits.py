"""python experiments/phase_changes/addition_digits.py --run runs/phase-changes [--out DIR]

The same as ``mechgrok figure addition_digits --run runs/phase-changes``; runs from any directory. RUN is
the folder of ``mechgrok reproduce phase-changes`` (docs/phase_changes.md).

Nanda's Alignment Forum post (2022): 5-digit addition on fresh data: each answer digit's test loss over training, each detected phase change marked.

Writes RUN/figures/addition_digits.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.phase_changes.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "addition_digits", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
