"""python experiments/pair2023/parity_weights.py --run runs/pair2023 [--out DIR]

The same as ``mechgrok figure parity_weights --run runs/pair2023``; runs from any directory. RUN is the
folder of ``mechgrok reproduce pair2023`` (docs/pair2023.md).

Pearce et al. (PAIR 2023): the sparse-parity model's first-layer weights over training, the share of their norm on the three parity bits, and the train-loss rise before it generalises.

Writes RUN/figures/parity_weights.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.pair2023.parity_weights.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "parity_weights", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
