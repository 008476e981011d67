"""The figures of the Alignment Forum post's reproduction, one module per part (the parts of
:mod:`mechgrok.reproduce.phase_changes`): run folders and a part's summary in, a
:class:`mechgrok.report.figures.FigureOutput` out, every caption computed from the runs."""

from __future__ import annotations


import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mechgrok.report.figures import FigureOutput
from mechgrok.report.html import SUMMARY_FILE, write_page, write_summary

__all__ = ["write_report"]


def write_report(out_dir: str | Path, figures: Sequence[FigureOutput], summary: dict[str, Any], claims: dict[str, bool],
                 claim_texts: dict[str, str] | None = None) -> Path:
    """Write ``OUT/report.html`` (one self-contained page: the claims table, then every figure) and
    ``OUT/summary.json`` (the parts' summaries, the claims and every caption); return the page's path."""
    if not figures:
        raise ValueError("write_report needs at least one figure (a FigureOutput of mechgrok.report.phase_changes)")
    names = [f.name for f in figures]
    if len(set(names)) != len(names):
        raise ValueError(f"figure names repeat: {names}; each figure must appear once")
    texts = claim_texts or {}
    table = pd.DataFrame([{"claim": claim, "what it says": texts.get(claim, ""), "holds in these runs": "yes" if held else "no"}
                          for claim, held in claims.items()])
    held = sum(claims.values())
    intro = ('<p class="caption">Runs of mechgrok beside Nanda, "A Mechanistic Interpretability Analysis of Grokking" '
             '(Alignment Forum, 2022): phase changes in toy tasks, slingshots, weight decay, more data and a 2-layer MLP. '
             f"Every number is these runs'; each claim of the post is decided by a documented rule on them: {held} of "
             f"{len(claims)} hold. Figures: {html.escape(', '.join(names))}.</p>")
    page = write_page(out_dir, "mechgrok: the Alignment Forum post's phase changes, reproduced", intro, figures,
                      {"claims": table}, summary)
    saved = json.loads((Path(out_dir) / SUMMARY_FILE).read_text())
    write_summary(out_dir, {**saved, "claims": claims})  # the page shows them as the claims table
    return page
