"""The reproduction report: one self-contained ``report.html`` and a machine-readable ``summary.json``.

``report.html`` holds every figure of :mod:`mechgrok.report.figures`, the summary tables (key
frequencies, phase boundaries beside the paper's, final losses, the §4.4 ablation table beside
the paper's numbers, timings) and plotly.js itself, inlined once in the page head, so the file
opens offline and can be mailed around alone.

:func:`render_page` / :func:`write_page` make the same kind of page for any set of figures (the
PAIR report of :mod:`mechgrok.report.pair2023` uses them): a title, an intro, a summary table,
tables and the figures with their captions, in the same style.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from plotly.offline import get_plotlyjs

from mechgrok import runs
from mechgrok.analysis.phases import BOUNDARY_NAMES, PhaseRules
from mechgrok.report.figures import FigureOutput, Grokking, operation_text
from mechgrok.reproduce import nanda2023

__all__ = ["REPORT_FILE", "SUMMARY_FILE", "render_report", "write_report", "render_page", "write_page", "write_summary",
           "json_safe"]

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 24px 48px; color: #222; }
h1 { margin-top: 28px; } h2 { margin-top: 40px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; } th { background: #f5f5f5; }
td:first-child, th:first-child { text-align: left; }
.caption { color: #555; font-size: 14px; max-width: 900px; } .figure { margin: 24px 0 40px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 12px; font-size: 13px; }
nav { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 13px; }
"""


_FINAL_LABELS = {
    "train_loss": "train loss", "test_loss": "test loss", "train_acc": "train accuracy", "test_acc": "test accuracy",
    "restricted_loss": "restricted loss", "excluded_loss": "excluded loss", "gini_W_E": "Gini of W_E's Fourier norms",
    "gini_W_L": "Gini of W_L's Fourier norms", "sum_sq_weights": "sum of squared weights",
}


def json_safe(value: Any) -> Any:
    """Recursively turn NaN/inf into None and numpy/pandas scalars into Python ones, for JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` (NaN written as null) atomically; return its path."""
    path = Path(run_dir) / SUMMARY_FILE
    runs.atomic_write_text(path, json.dumps(json_safe(summary), indent=2) + "\n")
    return path


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    return html.escape(str(x))


def _table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _kv_table(pairs: Sequence[tuple[str, Any]]) -> str:
    return _table(pd.DataFrame(pairs, columns=["quantity", "value"]).astype(object))


def _seeds(seeds: Sequence[int]) -> str:
    """ "1 (seed 0)", "3 (seeds 0, 1, 2)" or "none": a bare "0" would read as zero seeds."""
    if not seeds:
        return "none"
    return f"{len(seeds)} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"


def _epoch(v: Any) -> str:
    """A phase boundary: an epoch written with thousands commas ("2,500"), or "not reached"."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "not reached"
    return f"{int(v):,}"


def _phase_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    # every boundary is an epoch, so every row (ours and the paper's) writes it the same way;
    # a DataFrame would turn a column holding a None into floats ("1.4e+04")
    return pd.DataFrame([{k: _epoch(v) if k in BOUNDARY_NAMES else v for k, v in row.items()} for row in rows]).astype(object)


def _status(summary: dict[str, Any]) -> str:
    """The report's first words about the run: grokked or not, by figures.Grokking's rule."""
    final = summary.get("final") or {}
    if "test_acc" not in final or "epoch" not in final:
        return ""
    g = Grokking(int(final["epoch"]), float(final["test_acc"]), float(final.get("train_acc", float("nan"))))
    if g.grokked:
        return f'<p class="caption"><b>{html.escape(g.sentence())}</b></p>'
    return (f'<p class="note"><b>{html.escape(g.sentence())}</b> The captions below state what this run shows and '
            "leave out the paper's conclusions about a formed circuit; train it longer to see them.</p>")


def render_report(summary: dict[str, Any], figures: Sequence[FigureOutput], tables: dict[str, pd.DataFrame] | None = None) -> str:
    """The report page as one HTML string: summary tables, then every figure; plotly.js inlined once."""
    tables = tables or {}
    title = summary.get("title", "mechgrok reproduction report")
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts.append('<p class="caption">A run of mechgrok beside Nanda et al., "Progress measures for grokking via '
                 "mechanistic interpretability\" (ICLR 2023): every number is this run's unless labelled as the paper's. "
                 f"Generated {html.escape(summary.get('generated', ''))}.</p>")
    parts.append(_status(summary))
    nav = "".join(f'<a href="#{f.name}">{html.escape(f.name)}</a>' for f in figures)
    parts.append(f"<nav>Figures: {nav}</nav>")

    parts.append("<h2>Summary</h2>")
    cfg = summary.get("config", {})
    run_pairs = [
        ("run folder", summary.get("run_dir")),
        ("task", f"({operation_text(cfg.get('op', 'add'))}) mod {cfg.get('p')}, {cfg.get('frac_train', 0):.0%} of pairs for training"),
        ("epochs asked", summary.get("epochs")),
        ("epochs trained (newest checkpoint)", summary.get("final", {}).get("epoch")),
        ("seeds", _seeds(summary.get("seeds", []))),
        ("seeds reused from earlier runs", _seeds(summary.get("reused_seeds", []))),
        ("key frequencies (rule: " + str(summary.get("key_frequency_rule")) + ")", ", ".join(map(str, summary.get("key_frequencies", [])))),
    ]
    final = {k: v for k, v in summary.get("final", {}).items() if k != "epoch"}
    run_pairs += [(_FINAL_LABELS.get(k, k) + " (final)", v) for k, v in final.items()]
    parts.append(_kv_table(run_pairs))
    for note in summary.get("notes", []):
        parts.append(f'<p class="note">{html.escape(note)}</p>')

    phases = summary.get("phases_by_seed") or []
    if phases:
        parts.append("<h2>Phase boundaries</h2>")
        paper = " / ".join(f"{v:,}" for v in nanda2023.PHASE_BOUNDARIES.values())
        rules = {**asdict(PhaseRules()), **(summary.get("phases") or {}).get("rules", {})}
        parts.append('<p class="caption">Detected on this run by the rules of mechgrok.analysis.phases (end of '
                     "memorization: minimum of excluded loss; end of circuit formation: test loss has fallen "
                     f"{rules['test_drop_fraction']:.0%} of its log-range; end of cleanup: test loss and weight norm "
                     f"within {rules['settle_fraction']:.0%} of their final values); "
                     "\"not reached\" where the run never got there. The paper's row is the paper's own mainline, "
                     f"lines drawn by eye at epochs {paper}.</p>")
        parts.append(_table(_phase_table(phases)))

    for name, df in tables.items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(_table(df.astype(object)))

    timings = summary.get("timings_s", {})
    if timings:
        parts.append("<h2>Timings</h2>")
        parts.append(_kv_table([(k.replace("_", " "), f"{v:.1f} s") for k, v in timings.items()]))

    parts.append("<h2>Figures</h2>")
    parts += [_figure_div(f) for f in figures]
    return _page(title, parts)


def _figure_div(f: FigureOutput) -> str:
    """One figure: its plotly div (plotly.js is in the page head) and its caption."""
    div = f.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f.name,
                           config={"displaylogo": False, "responsive": True})
    return (f'<div class="figure" data-figure="{html.escape(f.name)}">{div}'
            f'<p class="caption"><b>{html.escape(f.name)}.</b> {html.escape(f.caption)}</p></div>')


def _page(title: str, parts: Sequence[str]) -> str:
    """The whole page around ``parts``: the CSS and plotly.js, inlined once, so it opens offline."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body>{''.join(parts)}</body></html>\n"
    )


def _summary_value(value: Any) -> Any:
    """A summary entry as one table cell: lists joined, mappings written "key: value; ...", a
    DataFrame by its size (its rows are in summary.json)."""
    if isinstance(value, pd.DataFrame):
        return f"a table of {len(value):,} row{'s' if len(value) != 1 else ''} (in {SUMMARY_FILE})"
    if isinstance(value, dict):
        if any(isinstance(v, (dict, list, tuple, pd.DataFrame)) for v in value.values()):
            # nested records (one per seed, say) make an unreadable cell: their tables are below
            return f"{len(value):,} entr{'ies' if len(value) != 1 else 'y'}: {', '.join(map(str, value))} (in {SUMMARY_FILE})"
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return value


def _plain(value: Any) -> str:
    """A value inside a summary cell, unescaped (the cell is escaped once, as a whole)."""
    if isinstance(value, (dict, list, tuple, pd.DataFrame)):
        return f"({_summary_value(value)})"
    return value if isinstance(value, str) else html.unescape(_fmt(value))


def render_page(title: str, intro_html: str, figures: Sequence[FigureOutput],
                tables: dict[str, pd.DataFrame] | None = None, summary: dict[str, Any] | None = None) -> str:
    """A report page of any set of figures: title, intro, a summary table, tables, then the figures.

    ``intro_html`` is inserted as it is (the caller escapes what it quotes); ``summary`` is shown
    as a quantity / value table (lists joined, mappings as "key: value"); every table and caption
    is escaped. plotly.js is inlined once, so the file opens offline.
    """
    parts = [f"<h1>{html.escape(title)}</h1>", intro_html]
    nav = "".join(f'<a href="#{html.escape(f.name)}">{html.escape(f.name)}</a>' for f in figures)
    parts.append(f"<nav>Figures: {nav}</nav>")
    if summary:
        parts.append("<h2>Summary</h2>")
        parts.append(_kv_table([(str(k).replace("_", " "), _summary_value(v)) for k, v in summary.items()]))
    for name, df in (tables or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(_table(df.astype(object)))
    parts.append("<h2>Figures</h2>")
    parts += [_figure_div(f) for f in figures]
    return _page(title, parts)


def write_page(out_dir: str | Path, title: str, intro_html: str, figures: Sequence[FigureOutput],
               tables: dict[str, pd.DataFrame] | None = None, summary: dict[str, Any] | None = None) -> Path:
    """Write ``OUT/report.html`` (:func:`render_page`) and ``OUT/summary.json`` atomically; return the page's path.

    ``summary.json`` holds ``summary`` (a DataFrame value as a list of row records) with a
    ``generated`` time stamp and each figure's caption.
    """
    out_dir = Path(out_dir)
    summary = {"generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **(summary or {})}
    records = {k: v.to_dict("records") if isinstance(v, pd.DataFrame) else v for k, v in summary.items()}
    write_summary(out_dir, {**records, "captions": {f.name: f.caption for f in figures}})
    path = out_dir / REPORT_FILE
    runs.atomic_write_text(path, render_page(title, intro_html, figures, tables, summary))
    return path


def write_report(run_dir: str | Path, summary: dict[str, Any], figures: Sequence[FigureOutput],
                 tables: dict[str, pd.DataFrame] | None = None) -> Path:
    """Write ``RUN/report.html`` atomically; return its path."""
    summary = {"generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **summary}
    path = Path(run_dir) / REPORT_FILE
    runs.atomic_write_text(path, render_report(summary, figures, tables))
    return path
