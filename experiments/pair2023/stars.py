"""python experiments/pair2023/stars.py --run runs/pair2023 [--out DIR]

The same as ``mechgrok figure stars --run runs/pair2023``; runs from any directory. RUN is the
folder of ``mechgrok reproduce pair2023`` (docs/pair2023.md).

Pearce et al. (PAIR 2023): each frequency group's neurons as (cos, sin) DFT points of their input and output weights, at the end of training and earlier.

Writes RUN/figures/stars.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.pair2023.stars.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "stars", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
