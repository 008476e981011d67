"""python -m experiments.fig7_progress_measures --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

Fig. 7: the progress measures over training with the automatically detected phases: excluded
loss with train and test loss; restricted loss with test loss; Gini coefficients of the W_E and
W_L Fourier norms; the sum of squared weights. Measures are cached in RUN/progress.csv.

Writes RUN/figures/fig7_progress_measures.html (interactive; opens offline) and the figure's data,
RUN/figures/fig7_progress_measures.csv (epoch, the plotted measures, phase). The logic lives in mechgrok.figures.fig7_progress_measures.
"""

from __future__ import annotations

import sys

from experiments._figure import figure_main


def main(argv: list[str] | None = None) -> int:
    return figure_main("fig7_progress_measures", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
