"""python experiments/nanda2023/fig7_progress_measures.py --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

The same as ``mechgrok figure fig7_progress_measures --run RUN``; runs from any directory.

Fig. 7: the progress measures over training with the automatically detected phases: excluded
loss with train and test loss; restricted loss with test loss; Gini coefficients of the W_E and
W_L Fourier norms; the sum of squared weights. Measures are cached in RUN/progress.csv.

Writes RUN/figures/fig7_progress_measures.html (interactive; opens offline) and the figure's data,
RUN/figures/fig7_progress_measures.csv (epoch, the plotted measures, phase). The logic lives in mechgrok.report.figures.fig7_progress_measures.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "fig7_progress_measures", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
