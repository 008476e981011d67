"""python experiments/pair2023/logit_waves.py --run runs/pair2023 [--out DIR]

The same as ``mechgrok figure logit_waves --run runs/pair2023``; runs from any directory. RUN is the
folder of ``mechgrok reproduce pair2023`` (docs/pair2023.md).

Pearce et al. (PAIR 2023): each frequency group's contribution to the logits with its fitted cos(2 pi k (a+b-c) / 67) wave.

Writes RUN/figures/logit_waves.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.pair2023.logit_waves.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "logit_waves", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
