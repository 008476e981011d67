"""python experiments/pair2023/regime_diagram.py --run runs/pair2023 [--out DIR]

The same as ``mechgrok figure regime_diagram --run runs/pair2023``; runs from any directory. RUN is the
folder of ``mechgrok reproduce pair2023`` (docs/pair2023.md).

Pearce et al. (PAIR 2023): every regime-sweep model's regime (fail, memorize, generalize, grok): train size x weight decay, one panel per hidden size, one square per seed.

Writes RUN/figures/regime_diagram.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.pair2023.regime_diagram.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "regime_diagram", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
