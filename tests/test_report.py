"""report.html / summary.json (mechgrok/report/html.py, mechgrok/reproduce/pipeline.py), and the report in headless Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from _tiny_run import TINY, tiny_seeds_run
import plotly.graph_objects as go

from mechgrok.report import figures, html as report
from mechgrok.analysis import progress
from mechgrok import runs
from mechgrok.reproduce import nanda2023
from mechgrok.reproduce.pipeline import reproduce, seed_dir

PLOTLY_HEADER = "plotly.js v"  # the banner at the top of the bundled plotly.min.js


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """`reproduce` on a copy of the tiny 3-seed run: every seed is already trained, so it reuses them."""
    out = tiny_seeds_run(tmp_path_factory.mktemp("reproduce"))
    steps = []
    result = reproduce(out, epochs=300, seeds=3, config=TINY, on_step=steps.append)
    return result, steps


def test_reproduce_reuses_finished_seeds_and_writes_everything(reproduced):
    result, steps = reproduced
    out = result.run_dir
    assert sum("reused" in s for s in steps) == 3
    assert all(result.summary["timings_s"][f"train_seed_{s}"] == 0 for s in (0, 1, 2))
    assert result.report == out / report.REPORT_FILE and result.report.exists()
    for name in figures.FIGURES:
        assert (out / figures.FIGURE_DIR / f"{name}.html").exists()
        assert len(pd.read_csv(out / figures.FIGURE_DIR / f"{name}.csv")) > 0
    for seed in (0, 1, 2):
        assert (seed_dir(out, seed) / progress.MEASURES_FILE).exists()
    assert (out / "analysis" / "section_4_4.csv").exists()  # the ablation table experiment ran


def test_summary_agrees_with_the_measures(reproduced):
    result, _ = reproduced
    s = json.loads(result.summary_path.read_text())
    prog = progress.load_progress(result.run_dir)
    assert s["key_frequencies"] == prog.key_frequencies
    assert {k: s["phases"][k] for k in nanda2023.PHASE_BOUNDARIES} == prog.phases.boundaries
    assert s["paper_phases"] == nanda2023.PHASE_BOUNDARIES
    last = prog.measures.iloc[-1]
    assert s["final"]["epoch"] == last.epoch
    for col in ("test_loss", "restricted_loss", "excluded_loss", "train_acc"):
        assert s["final"][col] == pytest.approx(last[col], rel=1e-12)
    assert [r["seed"] for r in s["phases_by_seed"]] == [0, 1, 2, "paper"]
    rows = {r["intervention"]: r for r in s["ablation_table"]}
    assert rows["original"]["paper_loss"] == pytest.approx(2.41e-7)
    n_train, n_test = (len(runs.read_split(result.run_dir).train), len(runs.read_split(result.run_dir).test))
    loss_all = (n_train * last.train_loss + n_test * last.test_loss) / (n_train + n_test)
    assert rows["original"]["loss"] == pytest.approx(loss_all, rel=1e-3)  # HookedTransformer vs fast path: rounding
    assert set(s["timings_s"]) >= {"progress_measures", "figures", "ablation_table", "total"}
    assert s["seeds"] == [0, 1, 2] and s["reused_seeds"] == [0, 1, 2]


def test_report_is_self_contained(reproduced):
    result, _ = reproduced
    page = result.report.read_text()
    assert page.count(PLOTLY_HEADER) == 1  # plotly.js inlined exactly once
    assert not re.search(r"<script[^>]+src=", page)  # no script fetched: opens offline
    markup = re.sub(r"<script.*?</script>", "", page, flags=re.S)  # the HTML around the scripts
    assert not re.search(r'(src|href)="(https?:)?//', markup)  # no stylesheet, image or font from the network
    for name in figures.FIGURES:
        assert page.count(f'data-figure="{name}"') == 1
    assert "14,000" in page and "2.41e-07" in page  # the paper's numbers sit beside ours


def test_json_safe_writes_nan_as_null(tmp_path):
    path = report.write_summary(tmp_path, {"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": 2}})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None], "c": {"d": 2}}


def test_reproduce_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="seeds=0"):
        reproduce(tmp_path / "x", seeds=0)
    with pytest.raises(ValueError, match="parallel=0"):
        reproduce(tmp_path / "x", parallel=0)
    # a finished run with other settings is not silently reused
    out = tiny_seeds_run(tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        reproduce(out, epochs=300, config=TINY.replace(lr=1e-3))


# ----------------------------------------------------------------------------- headless Chromium
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"]


def render_in_chromium(page: Path, profile: Path) -> tuple[str, str]:
    """(DOM after plotly has drawn, Chromium's log with the page's console messages)."""
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def figure_chunks(dom: str) -> dict[str, str]:
    starts = [(m.group(1), m.end()) for m in re.finditer(r'<div class="figure" data-figure="([^"]+)">', dom)]
    ends = [s for _, s in starts[1:]] + [len(dom)]
    return {name: dom[s:e] for (name, s), e in zip(starts, ends)}


def assert_rendered_without_errors(dom: str, log: str, names) -> None:
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if re.search(r"error|uncaught|warn", line, re.I)]
    assert not errors, "\n".join(errors)
    chunks = figure_chunks(dom)
    assert list(chunks) == list(names)
    for name, chunk in chunks.items():
        assert 'class="main-svg"' in chunk, f"{name}: plotly drew nothing"
        # data marks: line/marker paths of scatters (markers-only traces draw <path class="point">), bar paths, heatmap images
        marks = len(re.findall(r'<path class="js-line" d="M', chunk)) + chunk.count('<image') + len(
            re.findall(r'<g class="point"><path d="M', chunk)) + len(re.findall(r'<path class="point" transform="translate', chunk))
        assert marks > 0, f"{name}: no data drawn"


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium); the test installs nothing")
def test_report_renders_in_headless_chromium(reproduced, tmp_path):
    result, _ = reproduced
    dom, log = render_in_chromium(result.report, tmp_path / "profile")
    assert_rendered_without_errors(dom, log, figures.FIGURES)
    chunks = figure_chunks(dom)
    # as drawn, not only as specified: one colour bar per Fig. 4 heatmap, and the phases' colour key
    fig4 = next(f for f in result.figures if f.name == "fig4_activations")
    n_heatmaps = sum(isinstance(t, go.Heatmap) for t in fig4.figure.data)
    assert len(re.findall(r'class="cb\w+ colorbar"', chunks["fig4_activations"])) == n_heatmaps >= 7
    for name in ("fig7_progress_measures", "appendix_excluded_per_frequency", "appendix_cos_coefficients"):
        assert "shaded: detected phases" in chunks[name] and "memorization (epochs" in chunks[name], name


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium); the test installs nothing")
def test_the_checker_catches_a_broken_page(reproduced, tmp_path):
    """The Chromium check is honest: a page with a JS error, or a figure without data, fails it."""
    result, _ = reproduced
    page = result.report.read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("</body>", "<script>notAFunction();</script></body>"))
    dom, log = render_in_chromium(broken, tmp_path / "profile1")
    with pytest.raises(AssertionError, match="notAFunction"):
        assert_rendered_without_errors(dom, log, figures.FIGURES)
    # a figure without traces draws axes but no data
    empty = tmp_path / "empty.html"
    shown = figures.FigureOutput("fig_with_data", result.figures[0].figure, {}, "")
    blank = figures.FigureOutput("fig_without_data", go.Figure(), {}, "")
    empty.write_text(report.render_report({}, [shown, blank]))
    dom, log = render_in_chromium(empty, tmp_path / "profile2")
    with pytest.raises(AssertionError, match="fig_without_data: no data drawn"):
        assert_rendered_without_errors(dom, log, ["fig_with_data", "fig_without_data"])


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_mainline_report_renders(tmp_path):
    page = Path(__file__).resolve().parents[1] / "runs" / "mainline" / report.REPORT_FILE
    if not page.exists():
        pytest.skip(f"no {page}; run `make reproduce` first")
    dom, log = render_in_chromium(page, tmp_path / "profile")
    assert_rendered_without_errors(dom, log, figures.FIGURES)


@pytest.mark.slow
def test_parallel_seeds_match_sequential_ones(tmp_path):
    """Seeds trained in worker processes are the same runs as seeds trained one after another."""
    cfg = TINY.replace(epochs=100)
    a = reproduce(tmp_path / "seq", epochs=100, seeds=2, config=cfg)
    b = reproduce(tmp_path / "par", epochs=100, seeds=2, config=cfg, parallel=2)
    for seed in (0, 1):
        ma = runs.read_metrics(seed_dir(a.run_dir, seed)).drop(columns="elapsed_s")
        mb = runs.read_metrics(seed_dir(b.run_dir, seed)).drop(columns="elapsed_s")
        pd.testing.assert_frame_equal(ma, mb)
    assert a.summary["key_frequencies"] == b.summary["key_frequencies"]


def test_cli_reproduce_passes_its_flags(monkeypatch, tmp_path, capsys):
    """`mechgrok reproduce` maps its flags onto reproduce(); --paper means 40,000 epochs."""
    import mechgrok.reproduce.pipeline as rep
    from mechgrok import cli

    calls = []

    def fake(out, **kwargs):
        calls.append((out, kwargs))
        raise ValueError("stop here")

    monkeypatch.setattr(rep, "reproduce", fake)
    assert cli.main(["reproduce", "--out", str(tmp_path), "--seeds", "3", "--parallel", "2", "--no-progress"]) == 2
    assert calls[-1][0] == str(tmp_path)
    assert calls[-1][1]["epochs"] == rep.DEFAULT_EPOCHS and calls[-1][1]["seeds"] == 3 and calls[-1][1]["parallel"] == 2
    assert cli.main(["reproduce", "--paper"]) == 2
    assert calls[-1][1]["epochs"] == rep.PAPER_EPOCHS == 40_000
    assert "stop here" in capsys.readouterr().err


def test_the_library_never_imports_experiments():
    """reproduce and every figure come from the package itself, so a wheel without experiments/ works."""
    root = Path(__file__).resolve().parents[1] / "mechgrok"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import experiments" not in text and "from experiments" not in text, path
