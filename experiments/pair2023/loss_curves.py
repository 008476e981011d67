"""python experiments/pair2023/loss_curves.py --run runs/pair2023 [--out DIR]

The same as ``mechgrok figure loss_curves --run runs/pair2023``; runs from any directory. RUN is the
folder of ``mechgrok reproduce pair2023`` (docs/pair2023.md).

Pearce et al. (PAIR 2023): the tied MLP's train and test loss (in the explorable's units, cross-entropy / 67) and accuracy for each seed, with its input weights E·W_in as heatmaps at a few steps over training.

Writes RUN/figures/loss_curves.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.pair2023.loss_curves.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "loss_curves", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
