"""python -m experiments.appendix_excluded_per_frequency --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

Appendix: the excluded loss (train inputs) with each key frequency removed alone, over training,
beside the excluded loss with all key frequencies removed and the train and test loss.

Writes RUN/figures/appendix_excluded_per_frequency.html (interactive; opens offline) and the figure's data,
RUN/figures/appendix_excluded_per_frequency.csv (epoch, excluded_loss[k] per key frequency, ...). The logic lives in mechgrok.figures.appendix_excluded_per_frequency.
"""

from __future__ import annotations

import sys

from experiments._figure import figure_main


def main(argv: list[str] | None = None) -> int:
    return figure_main("appendix_excluded_per_frequency", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
