"""python experiments/nanda2023/fig2_loss_curves.py --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

The same as ``mechgrok figure fig2_loss_curves --run RUN``; runs from any directory.

Fig. 2 of Nanda et al.: train and test loss (log scale) and accuracy over training. When the run
folder holds more seeds (RUN/seeds/seed_<s>/, from `mechgrok reproduce --seeds N`), each curve is
the median over seeds with a shaded min-max band.

Writes RUN/figures/fig2_loss_curves.html (interactive; opens offline) and the figure's data,
RUN/figures/fig2_loss_curves.csv (columns seed, epoch, train/test loss and accuracy). The logic lives in mechgrok.report.figures.fig2_loss_curves.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "fig2_loss_curves", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
