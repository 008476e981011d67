"""The figure experiments (experiments/nanda2023/*.py over mechgrok.report.figures): commands, files, labels."""

import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from _tiny_run import TINY, tiny_run, tiny_seeds_run
from mechgrok.analysis import circuits, fourier, progress
from mechgrok.report import figures
from mechgrok import runs

EXPERIMENTS = list(figures.FIGURES) + ["appendix_frac_train_sweep", "appendix_weight_decay_sweep"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_seeds_run(tmp_path_factory.mktemp("experiments"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_docstring_starts_with_the_command(name):
    module = importlib.import_module(f"experiments.nanda2023.{name}")
    assert module.__doc__.startswith(f"python experiments/nanda2023/{name}.py --run RUN")


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_each_experiment_writes_its_figure_and_data(name, run_dir, capsys):
    module = importlib.import_module(f"experiments.nanda2023.{name}")
    assert module.main(["--run", str(run_dir)]) == 0
    folder = run_dir / figures.FIGURE_DIR
    html = (folder / f"{name}.html").read_text()
    assert "plotly.min.js" in html and "Plotly.newPlot" in html
    assert (folder / "plotly.min.js").exists()  # shared by the figure pages: they open offline
    data = pd.read_csv(folder / f"{name}.csv")
    assert len(data) > 0
    assert f"wrote {folder / (name + '.html')}" in capsys.readouterr().out


def test_experiment_on_a_missing_run_fails_clearly(tmp_path, capsys):
    module = importlib.import_module("experiments.nanda2023.fig3_fourier_norms")
    assert module.main(["--run", str(tmp_path / "nope")]) == 2
    assert "not a mechgrok run folder" in capsys.readouterr().err


def test_an_experiment_script_runs_from_any_directory(run_dir, tmp_path):
    script = Path(__file__).resolve().parents[1] / "experiments" / "nanda2023" / "fig2_loss_curves.py"
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, str(script), "--run", str(run_dir), "--out", str(tmp_path / "out")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "fig2_loss_curves.html").exists()


def test_fig2_shades_bands_over_seeds(run_dir):
    out = figures.make_figure("fig2_loss_curves", run_dir)
    assert sorted(out.tables[""]["seed"].unique()) == [0, 1, 2]
    bands = [t for t in out.figure.data if t.fill == "tonexty"]
    assert len(bands) == 4  # train/test x loss/accuracy
    # the band spans the seeds: its lower edge is the minimum over seeds at each epoch
    wide = out.tables[""].pivot_table(index="epoch", columns="seed", values="test_loss")
    lower = next(t for t in bands if t.legendgroup == "test loss")
    assert list(lower.y) == pytest.approx(list(wide.min(axis=1)))
    # seeds 1 and 2 stop at 300 epochs, seed 0 goes on to 1000: the curves still reach 1000
    assert max(lower.x) == 1000 and wide.loc[300].notna().all() and wide.loc[1000].notna().sum() == 1


def test_fig2_single_seed_has_no_band():
    out = figures.make_figure("fig2_loss_curves", tiny_run())
    assert not [t for t in out.figure.data if t.fill == "tonexty"]


def test_fig3_names_cos_and_sin_correctly(tmp_path):
    """A run whose embedding is a pure cos(w_k a) wave: Fig. 3 puts its norm on "cos k", not "sin k"."""
    src = runs.load_run(tiny_run())
    p, k = src.config.p, 5
    model = src.model
    with torch.no_grad():
        wave = torch.cos(2 * math.pi * k * torch.arange(p, dtype=torch.float64) / p)
        direction = torch.randn(model.cfg.d_model, dtype=torch.float64)
        model.embed.W_E[:p] = torch.outer(wave, direction).float()
    run_dir = tmp_path / "wave"
    runs.write_config(run_dir, src.config)
    runs.write_split(run_dir, src.split)
    runs.save_checkpoint(runs.checkpoint_path(run_dir, 0), model, src.config, src.split, 0)
    table = figures.make_figure("fig3_fourier_norms", run_dir).tables[""].set_index("component")
    assert list(table.index) == fourier.component_names(p)
    assert table.W_E.idxmax() == f"cos {k}"
    assert table.W_E[f"sin {k}"] < 1e-5 * table.W_E[f"cos {k}"]


def test_fig6_and_fig7_data_match_the_library(run_dir):
    a = figures.RunAnalysis(run_dir)
    fig6 = figures.make_figure("fig6_frequency_ablation", a).tables[""]
    assert sorted(fig6[fig6.key].frequency) == a.key_frequencies
    assert len(fig6) == (TINY.p - 1) // 2
    fig7 = figures.make_figure("fig7_progress_measures", a).tables[""]
    prog = progress.load_progress(run_dir)
    pd.testing.assert_series_equal(fig7.test_loss, prog.measures.test_loss)
    mem = prog.phases.memorization_end
    assert set(fig7[fig7.epoch <= mem].phase) == {"memorization"}


def test_fig5_cluster_is_the_largest(run_dir):
    a = figures.RunAnalysis(run_dir)
    out = figures.make_figure("fig5_neuron_clusters", a)
    sizes = circuits.cluster_sizes(a.clusters).drop(circuits.OTHER_CLUSTER)
    wl = out.tables["W_L"]
    assert wl.neuron.nunique() == sizes.max()
    # the cluster's W_L lies on its own frequency: cos k and sin k carry the largest mean |weight|
    k = int(sizes.idxmax())
    top = wl.assign(value=wl.value.abs()).groupby("component").value.mean().nlargest(2).index
    assert set(top) == {f"cos {k}", f"sin {k}"}


def test_frac_train_sweep_trains_one_run_per_fraction(tmp_path, capsys):
    run_dir = tiny_run(tmp_path)
    module = importlib.import_module("experiments.nanda2023.appendix_frac_train_sweep")
    assert module.main(["--run", str(run_dir), "--values", "0.3", "0.8", "--epochs", "100", "--no-progress"]) == 0
    data = pd.read_csv(run_dir / figures.FIGURE_DIR / "appendix_frac_train_sweep.csv")
    assert sorted(data.frac_train.unique()) == [0.3, 0.8]
    for frac in ("0.3", "0.8"):
        cfg = runs.read_config(run_dir / "frac_train_sweep" / f"frac_train_{frac}")
        assert cfg.frac_train == float(frac) and cfg.p == TINY.p and cfg.epochs == 100


def test_weight_decay_sweep_and_bad_fields(tmp_path):
    run_dir = tiny_run(tmp_path)
    module = importlib.import_module("experiments.nanda2023.appendix_weight_decay_sweep")
    assert module.main(["--run", str(run_dir), "--values", "0", "1", "--epochs", "60", "--no-progress"]) == 0
    data = pd.read_csv(run_dir / figures.FIGURE_DIR / "appendix_weight_decay_sweep.csv")
    assert sorted(data.weight_decay.unique()) == [0.0, 1.0]
    assert runs.read_config(run_dir / "weight_decay_sweep" / "weight_decay_0").weight_decay == 0
    with pytest.raises(ValueError, match="cannot be swept"):
        figures.sweep_curves(run_dir, "lr", [1e-3], 10)
