"""python -m experiments.appendix_cos_coefficients --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

Appendix: the coefficients alpha_k of the fit logits ~ sum_k alpha_k cos(w_k(a+b-c)), for each of
the final model's key frequencies, at every checkpoint.

Writes RUN/figures/appendix_cos_coefficients.html (interactive; opens offline) and the figure's data,
RUN/figures/appendix_cos_coefficients.csv (epoch, cos_coefficient[k] per key frequency). The logic lives in mechgrok.figures.appendix_cos_coefficients.
"""

from __future__ import annotations

import sys

from experiments._figure import figure_main


def main(argv: list[str] | None = None) -> int:
    return figure_main("appendix_cos_coefficients", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
