"""python experiments/pair2023/no_weight_decay.py --run runs/pair2023 [--out DIR]

The same as ``mechgrok figure no_weight_decay --run runs/pair2023``; runs from any directory. RUN is the
folder of ``mechgrok reproduce pair2023`` (docs/pair2023.md).

Pearce et al. (PAIR 2023): the tied MLP trained without weight decay: it starts to generalise, then memorises (what this run does is in the caption).

Writes RUN/figures/no_weight_decay.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.pair2023.no_weight_decay.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "no_weight_decay", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
