"""python experiments/pair2023/circle.py --run runs/pair2023 [--out DIR]

The same as ``mechgrok figure circle --run runs/pair2023``; runs from any directory. RUN is the
folder of ``mechgrok reproduce pair2023`` (docs/pair2023.md).

Pearce et al. (PAIR 2023): the trained five-neuron circle: W_in's and W_out's neurons on the (cos, sin) plane, and every seed's accuracy and geometry.

Writes RUN/figures/circle.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.pair2023.circle.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "circle", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
