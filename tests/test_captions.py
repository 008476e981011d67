"""Captions are readouts (mechgrok/report/figures.py): numbers from this run, the paper's claims
only where this run's numbers hold them up, the paper's numbers from reproduce.nanda2023 alone;
and the figure fixes a reader needs (Fig. 4 colour bars, ticks and key boxes; the phase key)."""

import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from _tiny_run import NOT_GROKKED, tiny_run
from mechgrok import runs
from mechgrok.analysis import ablations, circuits, fourier, progress
from mechgrok.report import figures, html as report
from mechgrok.reproduce import nanda2023

# The paper's conclusions about the formed circuit, as the old captions stated them.
PAPER_CLAIMS = ("are sparse", "is sparse", "matches or beats", "rises as its circuit forms", "matters and the others",
                "write along")


@pytest.fixture(scope="module")
def grokked():
    a = figures.RunAnalysis(tiny_run())
    return a, {name: figures.make_figure(name, a) for name in figures.FIGURES}


@pytest.fixture(scope="module")
def not_grokked():
    a = figures.RunAnalysis(tiny_run(cfg=NOT_GROKKED))
    return a, {name: figures.make_figure(name, a) for name in figures.FIGURES}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# ----------------------------------------------------------------------------- the grokked rule
def test_the_rule_reads_the_newest_checkpoint(grokked, not_grokked):
    for a, expect in ((grokked[0], True), (not_grokked[0], False)):
        acc = ablations.score(a.acts.logits, a.acts.labels, a.acts.split).accuracy_test
        assert a.grokking.grokked is expect
        assert (acc >= figures.GROKKED_TEST_ACCURACY) is expect
        assert a.grokking.epoch == runs.checkpoint_epochs(a.run_dir)[-1]


def test_accuracy_just_below_the_rule_never_prints_as_the_rule():
    g = figures.Grokking(epoch=3000, test_acc=0.98999, train_acc=1.0)
    assert not g.grokked
    assert "has not grokked (test accuracy 0.989 at epoch 3,000" in g.sentence()
    assert figures.Grokking(10, 0.31, 1.0).sentence().startswith("This run has not grokked (test accuracy 0.310")


def test_not_grokked_captions_say_so_and_claim_nothing(not_grokked):
    a, built = not_grokked
    for name, out in built.items():
        assert "has not grokked" in out.caption, name
        for claim in PAPER_CLAIMS:
            assert claim not in out.caption, f"{name} claims {claim!r} on a run that has not grokked"
    # the numbers that show it, not the paper's conclusion
    fig3 = built["fig3_fourier_norms"].caption
    assert "not sparse in the Fourier basis" in fig3
    fig7 = built["fig7_progress_measures"].caption
    assert "circuit formation: not reached" in fig7 and "cleanup: not reached" in fig7


def test_grokked_captions_carry_the_library_numbers(grokked):
    a, built = grokked
    key = circuits.key_frequencies(a.acts, a.rule)
    p, n_freq = a.acts.p, fourier.n_frequencies(a.acts.p)
    fractions = {}
    for m, norms in (("W_E", circuits.embedding_fourier_norms(a.acts.W_E, p)),
                     ("W_L", circuits.neuron_logit_fourier_norms(a.acts.W_L))):
        table = norms.frequency_table()
        fractions[m] = table[table.frequency.isin(key)].fraction.sum()
    fig3 = built["fig3_fourier_norms"].caption
    assert "This run has grokked" in fig3
    assert f"{len(key)} of {n_freq} frequencies are key ({a.rule} rule): {', '.join(map(str, key))}." in fig3
    assert f"{_pct(fractions['W_E'])} of W_E's squared Fourier norm and {_pct(fractions['W_L'])} of W_L's" in fig3
    both = all(f >= figures.SPARSE_FRACTION for f in fractions.values()) and 3 * len(key) <= n_freq
    assert ("Both are sparse in the Fourier basis" in fig3) is both

    sizes = circuits.cluster_sizes(circuits.neuron_clusters(a.acts.neurons, a.threshold))
    clustered = int(sizes.drop(circuits.OTHER_CLUSTER).sum())
    assert f"{clustered} of {a.acts.neurons.shape[1]} neurons" in built["fig5_neuron_clusters"].caption

    restricted = ablations.restricted_loss(a.acts.logits, a.acts.labels, key)
    original = ablations.score(a.acts.logits, a.acts.labels, a.acts.split).loss_all
    fig6 = built["fig6_frequency_ablation"].caption
    assert f"restricted loss of {restricted:.3g}, against the model's {original:.3g}" in fig6
    assert ("matches or beats the model" in fig6) is (restricted <= figures.MATCH_FACTOR * original)

    phases = progress.load_progress(a.run_dir).phases.boundaries
    fig7 = built["fig7_progress_measures"].caption
    for name, epoch in phases.items():
        assert f"{name.removesuffix('_end').replace('_', ' ')}: epoch {epoch:,}" in fig7

    metrics = runs.read_metrics(a.run_dir)
    train_at = int(metrics[metrics.train_acc >= 0.99].epoch.min())
    test_at = int(metrics[metrics.test_acc >= 0.99].epoch.min())
    assert (f"train accuracy reached 0.99 at epoch {train_at:,} and test accuracy at epoch {test_at:,}"
            in built["fig2_loss_curves"].caption)


def test_a_claim_that_fails_on_the_numbers_is_not_made(grokked, monkeypatch):
    """Same grokked run, stricter rules: the captions must drop the claims and say why."""
    a, _ = grokked
    monkeypatch.setattr(figures, "SPARSE_FRACTION", 0.9999)
    monkeypatch.setattr(figures, "MATCH_FACTOR", 1e-6)
    monkeypatch.setattr(figures, "SHARP_FACTOR", 1e12)
    monkeypatch.setattr(figures, "RISE_FACTOR", 1e12)
    fig3 = figures.make_figure("fig3_fourier_norms", a).caption
    assert "Neither is sparse in the Fourier basis" in fig3 and "Both are sparse" not in fig3
    fig6 = figures.make_figure("fig6_frequency_ablation", a).caption
    assert "matches or beats" not in fig6 and "do not account for the model's predictions" in fig6
    assert "does not single out its key frequencies" in fig6
    appendix = figures.make_figure("appendix_excluded_per_frequency", a).caption
    assert "rises as its circuit forms" not in appendix and "not every curve climbs back up" in appendix


def test_a_sub_run_is_described_with_a_minus_b(tmp_path):
    run_dir = tiny_run(tmp_path, cfg=NOT_GROKKED.replace(op="sub"))
    a = figures.RunAnalysis(run_dir)
    for name in ("fig6_frequency_ablation", "appendix_excluded_per_frequency", "appendix_cos_coefficients"):
        caption = figures.make_figure(name, a).caption
        assert "a−b" in caption and "a+b" not in caption, name
    page = report.render_report({"config": runs.read_config(run_dir).to_dict()}, [])
    assert "(a − b) mod 31" in page


def test_sweep_captions_read_the_curves(tmp_path, monkeypatch):
    def curves(field, values):
        rows = []
        for v in values:
            for epoch in range(0, 1001, 100):
                grok = v >= 0.3 and epoch >= (500 if v < 0.6 else 100)
                rows.append({field: v, "epoch": epoch, "train_loss": 0.1, "test_loss": 0.1,
                             "train_acc": 1.0 if epoch >= 100 else 0.5, "test_acc": 1.0 if grok else 0.2})
        return pd.DataFrame(rows)

    monkeypatch.setattr(figures, "frac_train_sweep_curves", lambda run, fracs, epochs, **kw: curves("frac_train", fracs))
    cap = figures.appendix_frac_train_sweep(tmp_path, [0.1, 0.3, 0.8], 1000).caption
    assert "10% train: not grokked within 1,000 epochs (final test accuracy 0.200)" in cap
    assert "30% train: train accuracy 0.99 at epoch 100, test at 500 (400 epochs later)" in cap
    assert "80% train: train accuracy 0.99 at epoch 100, test at 100 (0 epochs later)" in cap
    lo, hi = nanda2023.FRAC_TRAIN_GROKS
    assert f"Paper (Nanda et al. 2023, its p=113 addition mainline run, not this run): {lo:.0%}–{hi:.0%}" in cap

    monkeypatch.setattr(figures, "sweep_curves", lambda run, field, values, epochs, **kw: curves(field, values))
    cap = figures.appendix_weight_decay_sweep(tmp_path, [0.0, 1.0], 1000).caption
    assert "weight decay 0: not grokked within 1,000 epochs" in cap and "weight decay 1: train accuracy" in cap


# ----------------------------------------------------------------------------- the paper's numbers
def test_paper_numbers_come_from_nanda2023(grokked, monkeypatch):
    """Change the published numbers and the captions follow: nothing is copied into the figures."""
    a, _ = grokked
    monkeypatch.setattr(nanda2023, "PHASE_BOUNDARIES", {"memorization_end": 1111, "circuit_formation_end": 2222,
                                                        "cleanup_end": 33333})
    monkeypatch.setattr(nanda2023, "KEY_FREQUENCIES", [3, 5, 8])
    monkeypatch.setattr(nanda2023, "HEADLINE", {**nanda2023.HEADLINE, "neurons explained > threshold (fraction)": 0.123})
    assert "epochs 1,111 / 2,222 / 33,333" in figures.make_figure("fig7_progress_measures", a).caption
    assert "key frequencies 3, 5, 8." in figures.make_figure("fig3_fourier_norms", a).caption
    assert "12.3% of the neurons are clustered" in figures.make_figure("fig5_neuron_clusters", a).caption
    page = report.render_report({"phases_by_seed": [{"seed": "paper", **nanda2023.PHASE_BOUNDARIES}]}, [])
    assert "33,333" in page


REPORT_SOURCES = [Path(figures.__file__), Path(figures.plotting.__file__), Path(report.__file__)]
HARD_CODED = [r"84\.6", r"\b1,?400\b", r"\b9,?400\b", r"\b14,?000\b", r"\b1\.4 ?k\b", r"\b9\.4 ?k\b", r"\b14 ?k\b",
              r"2\.41e-0?7", r"\b433\b", r"0\.979", r"0\.991", r"14, 35", r"35, 41", r"41, 42", r"42, 52",
              r"30 ?[-–] ?50 ?%", r"60 ?%", r"\b44, 93\b", r"40,?000"]


@pytest.mark.parametrize("path", REPORT_SOURCES, ids=lambda p: p.name)
def test_no_paper_number_is_hard_coded(path):
    text = path.read_text()
    found = [pattern for pattern in HARD_CODED if re.search(pattern, text)]
    assert not found, f"{path.name} hard-codes the paper's {found}; take them from mechgrok.reproduce.nanda2023"


# ----------------------------------------------------------------------------- figure fixes
def test_fig4_every_heatmap_has_its_own_colour_bar(grokked):
    a, built = grokked
    fig = built["fig4_activations"].figure
    heatmaps = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heatmaps) == len(set(built["fig4_activations"].tables[""].panel)) >= 7
    layout = fig.layout
    domains = [(layout[t.xaxis.replace("x", "xaxis")].domain, layout[t.yaxis.replace("y", "yaxis")].domain) for t in heatmaps]
    for t, ((x0, x1), (y0, y1)) in zip(heatmaps, domains):
        assert t.showscale is not False and t.colorbar.title.text, t.name
        bar_x = t.colorbar.x
        assert x1 <= bar_x < x1 + 0.03  # just right of its own panel
        assert t.colorbar.len == pytest.approx(y1 - y0) and t.colorbar.y == pytest.approx((y0 + y1) / 2)
        # the bar (x .. x + ~0.02) sits in no other panel that shares its rows
        for (ox0, ox1), (oy0, oy1) in domains:
            if (ox0, ox1, oy0, oy1) != (x0, x1, y0, y1) and oy0 < y1 and y0 < oy1:
                assert not (ox0 < bar_x + 0.02 and bar_x < ox1), t.name


def test_fig4_logit_panel_has_named_ticks_and_boxed_key_terms(grokked):
    a, built = grokked
    fig = built["fig4_activations"].figure
    logit = next(t for t in fig.data if isinstance(t, go.Heatmap) and t.colorbar.title.text == "norm over c")
    names = fourier.component_names(a.acts.p)
    for axis in (fig.layout[logit.xaxis.replace("x", "xaxis")], fig.layout[logit.yaxis.replace("y", "yaxis")]):
        assert axis.showticklabels is not False
        assert list(axis.ticktext) == [names[i] for i in axis.tickvals] and "const" in axis.ticktext
        assert len(axis.tickvals) >= 3
    boxes = [s for s in fig.layout.shapes if s.type == "rect" and s.xref == logit.xaxis]
    assert len(boxes) == len(a.key_frequencies)
    for k, box in zip(sorted(a.key_frequencies), sorted(boxes, key=lambda s: s.x0)):
        c, s = fourier.cos_component(k), fourier.sin_component(k)
        assert box.x0 < c <= s < box.x1 and box.y0 < c <= s < box.y1  # the box holds k's four terms
        assert box.x1 - box.x0 < 3  # and no other frequency's


@pytest.mark.parametrize("run", ["grokked", "not_grokked"])
@pytest.mark.parametrize("name", ["fig7_progress_measures", "appendix_excluded_per_frequency", "appendix_cos_coefficients"])
def test_shaded_phases_have_a_colour_key(name, run, request):
    a, built = request.getfixturevalue(run)
    fig = built[name].figure
    boundaries = a.progress.phases.boundaries
    key = [t for t in fig.data if t.legendgroup == "phases"]
    reached = []  # the phases drawn: up to the first boundary the run never reached
    for phase, end in zip(("memorization", "circuit formation", "cleanup"), boundaries.values()):
        if end is None:
            break
        reached.append(phase)
    assert [t.name.split(" (")[0] for t in key] == reached
    bands = {s.fillcolor for s in fig.layout.shapes if s.type == "rect"}
    assert {t.marker.color for t in key} == bands  # each swatch is its band's colour
    assert all(t.showlegend is not False for t in key)


# ----------------------------------------------------------------------------- report.html
def _cells(page: str, label: str) -> list[str]:
    row = re.search(rf"<tr><td>{re.escape(label)}</td>(.*?)</tr>", page)
    assert row, label
    return re.findall(r"<td>(.*?)</td>", row.group(1))


def test_report_never_writes_one_seed_as_a_bare_zero():
    page = report.render_report({"seeds": [0], "reused_seeds": []}, [])
    assert _cells(page, "seeds") == ["1 (seed 0)"]
    assert _cells(page, "seeds reused from earlier runs") == ["none"]
    page = report.render_report({"seeds": [0, 1, 2], "reused_seeds": [0]}, [])
    assert _cells(page, "seeds") == ["3 (seeds 0, 1, 2)"]
    assert _cells(page, "seeds reused from earlier runs") == ["1 (seed 0)"]


def test_phase_table_writes_every_epoch_the_same_way():
    rows = [{"seed": 0, "memorization_end": 600, "circuit_formation_end": None, "cleanup_end": None},
            {"seed": "paper", **nanda2023.PHASE_BOUNDARIES}]
    page = report.render_report({"phases_by_seed": rows}, [])
    assert _cells(page, "paper") == [f"{v:,}" for v in nanda2023.PHASE_BOUNDARIES.values()]
    assert _cells(page, "0") == ["600", "not reached", "not reached"]


def test_report_status_follows_the_rule():
    page = report.render_report({"final": {"epoch": 3000, "test_acc": 0.31, "train_acc": 1.0}}, [])
    assert "This run has not grokked (test accuracy 0.310 at epoch 3,000" in page
    assert "reproduced" not in page
    page = report.render_report({"final": {"epoch": 3000, "test_acc": 0.999, "train_acc": 1.0}}, [])
    assert "This run has grokked (test accuracy 0.999 at epoch 3,000)" in page


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fig2_names_the_runs_own_loss_precision(tmp_path, dtype):
    from mechgrok.config import Config
    from mechgrok.training.loop import train

    cfg = Config(p=11, frac_train=0.7, d_model=16, d_mlp=32, epochs=20, loss_dtype=dtype)
    train(cfg, tmp_path / "run", tune_process=False)
    caption = figures.make_figure("fig2_loss_curves", tmp_path / "run").caption
    assert f"Loss is {dtype} cross-entropy" in caption
