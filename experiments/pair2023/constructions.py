"""python experiments/pair2023/constructions.py --run runs/pair2023 [--out DIR]

The same as ``mechgrok figure constructions --run runs/pair2023``; runs from any directory. RUN is the
folder of ``mechgrok reproduce pair2023`` (docs/pair2023.md).

Pearce et al. (PAIR 2023): the constructed circle without training: the ReLU construction's accuracy over neurons x modulus, and the x^2 construction's identity error and accuracy.

Writes RUN/figures/constructions.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.pair2023.constructions.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "constructions", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
