"""python experiments/nanda2023/appendix_cos_coefficients.py --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

The same as ``mechgrok figure appendix_cos_coefficients --run RUN``; runs from any directory.

Appendix: the coefficients alpha_k of the fit logits ~ sum_k alpha_k cos(w_k(a+b-c)), for each of
the final model's key frequencies, at every checkpoint.

Writes RUN/figures/appendix_cos_coefficients.html (interactive; opens offline) and the figure's data,
RUN/figures/appendix_cos_coefficients.csv (epoch, cos_coefficient[k] per key frequency). The logic lives in mechgrok.report.figures.appendix_cos_coefficients.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "appendix_cos_coefficients", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
