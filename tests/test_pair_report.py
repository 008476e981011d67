"""The PAIR figures and report (mechgrok/report/pair2023.py, the generic page of mechgrok/report/html.py).

Tiny real runs of every family, trained once per module by the stacked trainer. Each figure
builds; its caption carries numbers recomputed here from the runs (or changes when the data
change); wrong inputs are refused; the report is one self-contained page that draws every figure
in headless Chromium.
"""

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mechgrok import Config, runs
from mechgrok.analysis import circuits, constructions, parity, waves
from mechgrok.report import PAIR_FIGURE_NAMES, pair2023 as P
from mechgrok.report.figures import FigureOutput
from mechgrok.training.stack import train_stack
from test_report import CHROMIUM, PLOTLY_HEADER, figure_chunks, render_in_chromium

MLP = Config(p=23, family="mlp", d_model=32, d_mlp=24, pairs="unordered", frac_train=0.6, lr=1e-2, warmup_steps=0,
             epochs=600, eval_every=20, checkpoint_every=100, loss_scale="per_output")
SMALL = Config(p=11, family="mlp", d_model=16, d_mlp=8, pairs="unordered", frac_train=0.5, lr=1e-2, warmup_steps=0,
               epochs=300, eval_every=20, checkpoint_every=100, loss_scale="per_output")
PARITY = Config(task="parity", family="parity_mlp", n_bits=10, parity_bits=3, n_train=200, n_test=300, d_mlp=16, lr=1e-2,
                weight_decay=1e-4, decay="l1", beta1=0.99, beta2=0.98, warmup_steps=0, epochs=600, eval_every=10,
                checkpoint_every=100)
CIRCLE = Config(p=23, family="circle", d_model=2, d_mlp=5, pairs="unordered", frac_train=0.3, lr=1e-2, weight_decay=1e-3,
                warmup_steps=0, epochs=600, eval_every=20, checkpoint_every=200, loss_scale="per_output")
VARIANTS = ("mlp", "mlp_unfactored", "mlp_collapsed_in", "mlp_collapsed_out")
RUNS = {
    "mlp_0": MLP, "mlp_1": MLP.replace(seed=1), "no_wd": SMALL.replace(weight_decay=0.0),
    **{family: SMALL.replace(family=family) for family in VARIANTS},
    "parity": PARITY, **{f"circle_{s}": CIRCLE.replace(seed=s) for s in range(3)},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pair_runs")
    threads = torch.get_num_threads()
    try:
        # one call: configs that differ only in seed / weight decay share a stack
        train_stack(list(RUNS.values()), [root / name for name in RUNS], threads=1, tune_process=False)
    finally:
        torch.set_num_threads(threads)
    return {name: root / name for name in RUNS}


@pytest.fixture(scope="module")
def built(trained) -> dict[str, FigureOutput]:
    """Every figure, once."""
    return {
        "loss_curves": P.loss_curves([trained["mlp_0"], trained["mlp_1"]]),
        "neuron_waves": P.neuron_waves(trained["mlp_0"]),
        "parity_weights": P.parity_weights(trained["parity"]),
        "regime_diagram": P.regime_diagram(sweep_results()),
        "circle": P.circle([trained[f"circle_{s}"] for s in range(3)]),
        "constructions": P.constructions(neurons=range(2, 9), moduli=(7, 11, 67)),
        "stars": P.stars(trained["mlp_0"]),
        "logit_waves": P.logit_waves(trained["mlp_0"]),
        "variants": P.variants([trained[f] for f in VARIANTS]),
        "no_weight_decay": P.no_weight_decay(trained["no_wd"]),
    }


def sweep_results(seed: int = 0) -> pd.DataFrame:
    """A slice of a sweep with random regimes: 2 hidden sizes × 2 train sizes × 3 weight decays × 9 seeds."""
    rng = np.random.default_rng(seed)
    rows = [dict(n_train=n, d_mlp=h, weight_decay=w, seed=s, regime=str(rng.choice(["fail", "memorize", "generalize", "grok"])),
                 min_train_loss=1e-6, min_test_loss=1e-4)
            for h in (16, 32) for n in (750, 1000) for w in (0.01, 0.1, 1.0) for s in range(9)]
    return pd.DataFrame(rows)


def copy_run(src: Path, tmp_path: Path, name: str = "run") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def edit_metrics(run_dir: Path, **columns) -> pd.DataFrame:
    """Overwrite metrics.csv columns with the given arrays (one value per logged row)."""
    m = runs.read_metrics(run_dir)
    for name, values in columns.items():
        m[name] = values
    runs.write_metrics(run_dir, m.to_dict("records"))
    return m


def first_epoch(m: pd.DataFrame, column: str, level: float = 0.99) -> int | None:
    hit = m[m[column] >= level]
    return None if hit.empty else int(hit["epoch"].iloc[0])


def transformer_folder(tmp_path: Path) -> Path:
    """A run folder of the transformer family (a config is all the refusal reads)."""
    path = tmp_path / "transformer"
    path.mkdir()
    runs.write_config(path, Config(p=23))
    return path


# ----------------------------------------------------------------------------- the figures
def test_every_figure_is_named_and_built(built):
    assert list(P.PAIR_FIGURES) == list(PAIR_FIGURE_NAMES) == list(built)
    for name, out in built.items():
        assert out.name == name == P.PAIR_FIGURES[name].__name__
        assert out.figure.data and len(out.tables[""]) > 0 and out.caption


def test_loss_curves_caption_reads_each_seed(built, trained):
    out = built["loss_curves"]
    for name in ("mlp_0", "mlp_1"):
        m = runs.read_metrics(trained[name])
        seed = runs.read_config(trained[name]).seed
        train_at = first_epoch(m, "train_acc")
        assert f"Seed {seed}: train accuracy ≥ 0.99 at step {train_at:,}" in out.caption
        assert f"test loss {m['test_loss'].iloc[-1]:.3g}" in out.caption  # per_output: logged = drawn
    assert "cross-entropy / 23 (the explorable's units)" in out.caption
    axis = out.figure.layout.yaxis.title.text
    assert "cross-entropy / 23" in axis
    steps = sorted(out.tables["weights"]["step"].unique())
    assert steps[0] == 0 and steps[-1] == 600 and set(steps) <= set(runs.checkpoint_epochs(trained["mlp_0"]))
    model = runs.load_run(trained["mlp_0"], epoch=600).model
    norm = (model.W_E @ model.mlp.W_in).norm().item()
    assert f"→ {norm:.3g}." in out.caption  # the final W_input's Frobenius norm


def test_loss_curves_caption_follows_the_data(trained, tmp_path):
    run = copy_run(trained["mlp_0"], tmp_path)
    m = runs.read_metrics(run)
    acc = np.where(m["epoch"] >= 440, 1.0, m["test_acc"])  # as if it generalised at step 440
    edit_metrics(run, test_acc=acc)
    caption = P.loss_curves([run]).caption
    assert "test accuracy ≥ 0.99 at step 440" in caption
    assert f"({440 - first_epoch(m, 'train_acc'):,} steps after train)" in caption


def test_a_mean_loss_run_is_drawn_in_the_explorables_units(trained, tmp_path):
    run = copy_run(trained["mlp_0"], tmp_path)
    runs.write_config(run, runs.read_config(run).replace(loss_scale="mean"))
    m = edit_metrics(run, train_loss=runs.read_metrics(run)["train_loss"] * 23, test_loss=runs.read_metrics(run)["test_loss"] * 23)
    curves = P.loss_curves([run]).tables[""]
    np.testing.assert_allclose(curves["test_loss"], m["test_loss"] / 23)


def test_neuron_waves_groups_match_the_dft(built, trained):
    out = built["neuron_waves"]
    model = runs.load_run(trained["mlp_0"]).model
    W_in = (model.W_E @ model.mlp.W_in).detach()
    freqs = waves.neuron_frequencies(waves.neuron_dft(W_in), waves.neuron_dft(model.W_L.detach().T))
    groups = waves.frequency_groups(freqs)
    listed = "; ".join(f"k={k}: {len(ns)} neuron{'s' if len(ns) > 1 else ''}" for k, ns in groups.items())
    assert listed in out.caption and f"{len(groups)} frequency group" in out.caption
    assert sorted(out.tables[""]["neuron"]) == list(range(24))
    assert out.tables[""]["fraction_at_frequency"].between(0, 1).all()
    assert len(out.figure.data) == 24  # one line per neuron
    assert "Explorable (Pearce et al. 2023, about its own runs, not these)" in out.caption


@pytest.mark.parametrize("builder", [P.neuron_waves, P.stars, P.logit_waves, P.no_weight_decay])
def test_modular_figures_refuse_other_families(builder, trained, tmp_path):
    with pytest.raises(ValueError, match="'transformer' run"):
        builder(transformer_folder(tmp_path))
    with pytest.raises(ValueError, match="'parity_mlp' run"):
        builder(trained["parity"])
    with pytest.raises(ValueError, match="not a mechgrok run folder"):
        builder(tmp_path / "nothing")


def test_run_list_figures_refuse_wrong_inputs(trained, tmp_path):
    with pytest.raises(ValueError, match="'mlp' run"):
        P.circle([trained["mlp_0"]])
    with pytest.raises(ValueError, match="'circle' run"):
        P.loss_curves([trained["circle_0"]])
    with pytest.raises(ValueError, match="a list of run folders"):
        P.loss_curves(trained["mlp_0"])
    with pytest.raises(ValueError, match="compare families with variants"):
        P.loss_curves([trained["mlp"], trained["mlp_unfactored"]])
    with pytest.raises(ValueError, match="one run per family"):
        P.variants([trained["mlp_0"], trained["mlp_1"]])
    with pytest.raises(ValueError, match="'circle' run"):
        P.parity_weights(trained["circle_0"])
    with pytest.raises(ValueError, match="not saved"):
        P.loss_curves([trained["mlp_0"]], steps=[50])
    with pytest.raises(ValueError, match="without weight decay"):
        P.no_weight_decay(trained["mlp"])


def test_parity_weights_caption_holds_the_final_share(built, trained):
    out = built["parity_weights"]
    W = runs.load_run(trained["parity"]).model.mlp.W_in.detach()
    share = parity.parity_weight_share(W, 3)
    bits = parity.distractor_weight(W, 3)
    assert f"carry {100 * share:.1f}% of the first layer's Σw²" in out.caption
    assert f"distractor bits {bits.distractor:.3g} against {bits.parity:.3g}" in out.caption
    m = runs.read_metrics(trained["parity"])
    assert f"test accuracy ≥ 0.99 at step {first_epoch(m, 'test_acc'):,}" in out.caption
    assert list(out.tables[""]["step"]) == runs.checkpoint_epochs(trained["parity"])
    assert (out.tables["weights"]["bit"].max()) == 10  # the bias row is drawn too


def test_parity_weights_finds_a_train_loss_rise(trained, tmp_path):
    run = copy_run(trained["parity"], tmp_path)
    m = runs.read_metrics(run)
    drop = int(m.index[m["test_loss"] < 0.5 * m["test_loss"].cummax()][0])
    train = m["train_loss"].to_numpy().copy()
    train[drop - 3: drop] = train[drop - 4] * np.array([1.2, 1.5, 1.3])  # a bump just before the test loss halves
    edit_metrics(run, train_loss=train)
    out = P.parity_weights(run)
    rise = parity.loss_rise_before_drop(pd.Series(train, index=m["epoch"]), m["test_loss"].set_axis(m["epoch"]))
    assert rise is not None and rise.peak_step == int(m["epoch"][drop - 2])
    assert f"to {rise.train_at_peak:.3g} at step {rise.peak_step:,}" in out.caption
    assert f"+{100 * rise.relative_rise:.1f}%" in out.caption
    assert len(out.figure.layout.shapes) > 0


def test_regime_diagram_counts_and_draws_every_model(built):
    out = built["regime_diagram"]
    results = sweep_results()
    for regime, n in results["regime"].value_counts().items():
        assert f"{regime} {n:,} (" in out.caption
    assert "108 models in 12 cells (9 seeds per cell)" in out.caption
    drawn = sum(sum(y is not None for y in trace.y) for trace in out.figure.data)
    assert drawn == len(results)
    assert out.tables["counts"][["fail", "memorize", "generalize", "grok"]].to_numpy().sum() == len(results)
    changed = results.assign(regime="grok")
    assert "grok 108 (100.0%)" in P.regime_diagram(changed).caption


def test_regime_diagram_refuses_bad_tables():
    with pytest.raises(ValueError, match=r"lack columns \['d_mlp'\]"):
        P.regime_diagram(sweep_results().drop(columns="d_mlp"))
    with pytest.raises(ValueError, match="repeat"):
        P.regime_diagram(pd.concat([sweep_results(), sweep_results().iloc[:1]]))
    with pytest.raises(ValueError, match="outside"):
        P.regime_diagram(sweep_results().assign(regime="slingshot"))
    with pytest.raises(ValueError, match="DataFrame"):
        P.regime_diagram([{"regime": "grok"}])


def test_circle_table_and_caption(built, trained):
    out = built["circle"]
    table = out.tables[""]
    assert list(table["seed"]) == [0, 1, 2]
    for r in table.itertuples():
        model = runs.load_run(trained[f"circle_{r.seed}"]).model
        geo = constructions.circle_geometry(model.mlp.W_in.detach(), model.mlp.W_out.detach())
        assert r.rotation_ratio == pytest.approx(geo.rotation_ratio) and r.collapsed_pairs == geo.collapsed_pairs
        acts = circuits.gather_activations(model)
        test = acts.split.test
        assert r.test_acc == pytest.approx((acts.logits[test].argmax(-1) == acts.labels[test]).double().mean().item())
    k = int((table["test_acc"] >= 1.0).sum())
    assert f"{k} of 3 seeds reached test accuracy 1.0" in out.caption
    best = int(table.sort_values(["test_acc", "gap_error"], ascending=[False, True])["seed"].iloc[0])
    assert f"Drawn: seed {best}" in out.caption


def test_constructions_caption_reads_the_grid(built):
    out = built["constructions"]
    # at M=67 the untrained ReLU construction is exact for N = 5 and 7 of 2..8 (REFERENCE §7)
    assert "At M=67 it is exact for N = 5, 7;" in out.caption
    six = constructions.construction_accuracy(constructions.construction_logits(67, 6, "relu"), 67).accuracy
    assert f"N=6: {math.floor(six * 1000) / 1000:.3f}" in out.caption
    assert "for N = 3, 5–8; the identity fails for N=2" in out.caption and "N=4 (" in out.caption
    assert "The x² construction is exact (accuracy 1.0) for N = 3, 5–8." in out.caption
    assert len(out.tables[""]) == 7 * 3
    with pytest.raises(ValueError, match="must be one of moduli"):
        P.constructions(neurons=(5,), moduli=(11,))


def test_constructions_of_another_modulus():
    out = P.constructions(neurons=(5, 6), moduli=(11, 13), modulus=13)
    assert "At M=13 it is exact for N = 5, 6." in out.caption
    with pytest.raises(ValueError, match="N=0"):
        P.constructions(neurons=(0,), moduli=(13,), modulus=13)


def test_stars_caption_matches_the_points(built, trained):
    out = built["stars"]
    points = out.tables[""]
    steps = sorted(points["step"].unique())
    assert steps[0] == 0 and steps[-1] == 600 and len(steps) == 3
    k, g = next(iter(points[(points["which"] == "in")].groupby("frequency")))
    start = g[g["step"] == 0]["angle"]
    end = g[g["step"] == 600]["angle"]
    r0, r1 = abs(np.exp(1j * start).mean()), abs(np.exp(1j * end).mean())
    assert f"k={k} ({len(end)} neuron{'s' if len(end) > 1 else ''}): input {r0:.2f} → {r1:.2f}" in out.caption
    assert P.phase_resultant([0.0, math.pi]) == pytest.approx(0.0, abs=1e-12)
    assert P.phase_resultant([0.3, 0.3]) == pytest.approx(1.0)


def test_logit_waves_r2_is_the_wave_fit(built, trained):
    out = built["logit_waves"]
    model = runs.load_run(trained["mlp_0"]).model
    acts = circuits.gather_activations(model)
    assert set(out.tables["fits"]["k"]) == set(out.tables[""]["frequency"])
    # one group's fit, recomputed from the activations
    W_in = (model.W_E @ model.mlp.W_in).detach()
    groups = waves.frequency_groups(waves.neuron_frequencies(waves.neuron_dft(W_in), waves.neuron_dft(model.W_L.detach().T)))
    k, idx = next(iter(groups.items()))
    fit = waves.wave_fit(acts.neurons[:, idx].double() @ acts.W_L[idx].double(), k, 23)
    assert f"k={k}: {fit.r2:.3g} ({fit.r2_centred:.3g})" in out.caption
    with pytest.raises(ValueError, match="pairs of residues"):
        P.logit_waves(trained["mlp_0"], inputs=[(1, 30)])


def test_variants_caption_follows_the_data(built, trained, tmp_path):
    out = built["variants"]
    assert "the same settings otherwise" in out.caption
    finals = {f: runs.read_metrics(trained[f]).iloc[-1] for f in VARIANTS}
    below = [f for f in VARIANTS if finals[f]["train_acc"] < 1.0]
    assert f"train accuracy below 1.0 at the end: {', '.join(below) or 'none'}." in out.caption
    run = copy_run(trained["mlp_collapsed_out"], tmp_path)
    m = runs.read_metrics(run)
    edit_metrics(run, test_acc=np.where(m["epoch"] >= 200, 1.0, m["test_acc"]))
    caption = P.variants([trained["mlp"], run]).caption
    assert "Test accuracy reached 0.99: mlp_collapsed_out;" in caption
    assert "mlp_collapsed_out: test accuracy ≥ 0.99 at step 200" in caption


def test_no_weight_decay_says_what_the_data_show(built, trained, tmp_path):
    m = runs.read_metrics(trained["no_wd"])
    peak = m.loc[m["test_acc"].idxmax()]
    assert f"Peak test accuracy {math.floor(peak.test_acc * 1000) / 1000:.3f} at step {int(peak.epoch):,}" in built["no_weight_decay"].caption
    run = copy_run(trained["no_wd"], tmp_path)
    rise_and_fall = np.interp(m["epoch"], [0, 100, 300], [0.0, 0.8, 0.3])  # generalises, then falls back
    edit_metrics(run, test_acc=rise_and_fall, train_acc=np.ones(len(m)))
    caption = P.no_weight_decay(run).caption
    assert "Peak test accuracy 0.800 at step 100" in caption
    assert "started to generalise and then fell back" in caption


def test_pick_steps_spans_the_run():
    m = pd.DataFrame({"step": [0, 100, 200, 300, 400], "train_acc": [0, 1, 1, 1, 1], "test_acc": [0, 0, 0, 1, 1]})
    assert P.pick_steps([0, 100, 200, 300, 400], m, 3) == [0, 300, 400]
    assert P.pick_steps([0, 100, 200, 300, 400], m, 5) == [0, 100, 200, 300, 400]
    assert P.pick_steps([0, 400], m, 5) == [0, 400]
    with pytest.raises(ValueError, match="no checkpoints"):
        P.pick_steps([], m, 3)


# ----------------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def report(built, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pair_report")
    return P.write_pair_report(out, list(built.values()), tables={"circle seeds": built["circle"].tables[""]},
                               summary={"runs": 10, "frequencies": [4, 7], "regimes": sweep_results().iloc[:2]})


def test_report_is_one_self_contained_page(report, built):
    page = report.read_text()
    assert page.count(PLOTLY_HEADER) == 1
    assert not re.search(r"<script[^>]+src=", page)
    markup = re.sub(r"<script.*?</script>", "", page, flags=re.S)
    assert not re.search(r'(src|href)="(https?:)?//', markup)
    for name in PAIR_FIGURE_NAMES:
        assert page.count(f'data-figure="{name}"') == 1
    summary = json.loads((report.parent / "summary.json").read_text())
    assert summary["runs"] == 10 and summary["frequencies"] == [4, 7] and "generated" in summary
    assert summary["regimes"] == sweep_results().iloc[:2].to_dict("records")  # a DataFrame as row records
    assert "a table of 2 rows (in summary.json)" in page and "<h2>circle seeds</h2>" in page
    assert summary["captions"] == {name: f.caption for name, f in built.items()}
    with pytest.raises(ValueError, match="repeat"):
        P.write_pair_report(report.parent, [built["circle"], built["circle"]])


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium); the test installs nothing")
def test_report_draws_every_figure_in_headless_chromium(report, tmp_path):
    dom, log = render_in_chromium(report, tmp_path / "profile")
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if re.search(r"error|uncaught|warn", line, re.I)], "\n".join(console)
    chunks = figure_chunks(dom)
    assert list(chunks) == list(PAIR_FIGURE_NAMES)
    for name, chunk in chunks.items():
        assert 'class="main-svg"' in chunk, f"{name}: plotly drew nothing"
        # lines, markers (scatter points) and heatmap images
        marks = chunk.count('class="js-line"') + chunk.count('class="point"') + chunk.count("<image")
        assert marks > 0, f"{name}: no data drawn"
    assert chunks["regime_diagram"].count('class="point"') == len(sweep_results())
    assert chunks["loss_curves"].count("<image") == 5  # the W_input heatmaps
