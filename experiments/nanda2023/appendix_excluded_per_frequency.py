"""python experiments/nanda2023/appendix_excluded_per_frequency.py --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

The same as ``mechgrok figure appendix_excluded_per_frequency --run RUN``; runs from any directory.

Appendix: the excluded loss (train inputs) with each key frequency removed alone, over training,
beside the excluded loss with all key frequencies removed and the train and test loss.

Writes RUN/figures/appendix_excluded_per_frequency.html (interactive; opens offline) and the figure's data,
RUN/figures/appendix_excluded_per_frequency.csv (epoch, excluded_loss[k] per key frequency, ...). The logic lives in mechgrok.report.figures.appendix_excluded_per_frequency.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "appendix_excluded_per_frequency", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
