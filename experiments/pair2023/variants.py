"""python experiments/pair2023/variants.py --run runs/pair2023 [--out DIR]

The same as ``mechgrok figure variants --run runs/pair2023``; runs from any directory. RUN is the
folder of ``mechgrok reproduce pair2023`` (docs/pair2023.md).

Pearce et al. (PAIR 2023): the unfactored and collapsed variants' loss and accuracy beside the tied MLP's.

Writes RUN/figures/variants.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.pair2023.variants.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "variants", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
