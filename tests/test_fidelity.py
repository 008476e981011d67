"""The fidelity study's machinery (mechgrok.reproduce.fidelity) on small runs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from mechgrok import runs
from mechgrok.config import Config
from mechgrok.presets import preset_config
from mechgrok.reproduce import fidelity

SMALL = Config(p=31, frac_train=0.7, d_model=64, d_mlp=256, lr=3e-3, epochs=3000, checkpoint_every=100)


def test_jobs_are_the_presets_per_seed_in_their_folders(tmp_path):
    jobs = fidelity.setup_jobs(tmp_path, seeds=2, epochs=16_000)
    assert [(j.name, j.seed) for j in jobs] == [(n, s) for n in fidelity.SETUPS for s in (0, 1)]
    by = {(j.name, j.seed): j for j in jobs}
    assert by["original", 1].config == preset_config("original", seed=1).replace(epochs=16_000)
    assert by["tl-demo", 1].config.model_seed == 1000 and by["tl-demo", 1].config.eval_every == 10
    assert by["paper", 0].folder == tmp_path / "paper" / "seed_0"
    assert all(j.measures for j in jobs)  # a setup's measures are computed as it finishes
    variants = fidelity.variant_jobs(tmp_path, seeds=[4], cap=9000, variants=["unembed_equals"])
    (v,) = variants
    assert v.config == Config(seed=4, unembed_equals=True, epochs=9000) and v.until_grokked and v.margin == 0
    assert not v.measures
    assert v.folder == tmp_path / "variants" / "unembed_equals" / "seed_4"
    with pytest.raises(ValueError, match="not one of"):
        fidelity.setup_jobs(tmp_path, setups=["nope"])
    with pytest.raises(ValueError, match="not one of"):
        fidelity.variant_jobs(tmp_path, variants=["nope"])


def test_a_job_trains_until_grokked_plus_margin_then_is_reused(tmp_path):
    from mechgrok.analysis import progress

    job = fidelity.Job("small", 0, SMALL, tmp_path / "small" / "seed_0", until_grokked=True, grok_step=100, margin=200,
                       measures=True)
    record = fidelity.run_job(job)
    assert not progress.is_stale(job.folder)  # its measures cached for the summary
    metrics = runs.read_metrics(job.folder)
    grokked = int(metrics[metrics.test_acc >= 0.99].epoch.min())
    assert record["epoch"] == grokked + 200 < SMALL.epochs  # stopped there, not at the cap
    assert metrics.epoch.iloc[-1] == grokked + 200
    again = fidelity.run_job(job)
    assert again["epoch"] == record["epoch"] and again["cpu_s"] < record["cpu_s"]  # nothing trained again
    # the summary reads the folder: the same grokking epoch, phases and the §4.4 numbers
    table = fidelity.summarise(tmp_path)
    (row,) = table.to_dict("records")
    assert row["kind"] == "setup" and row["name"] == "small" and row["test_acc_0.99"] == grokked
    assert row["epochs"] == grokked + 200 and row["final_test_acc"] >= 0.99
    assert row["test_loss_peak"] >= row["final_test_loss"]
    assert 0 < row["neurons_explained_fraction"] <= 1
    # §4.4's unablated loss is over all p² inputs: the train and test losses, weighted by their sizes
    n_train = len(runs.read_split(job.folder).train)
    on_all = (row["final_train_loss"] * n_train + row["final_test_loss"] * (SMALL.p**2 - n_train)) / SMALL.p**2
    assert row["§4.4 original"] == pytest.approx(on_all, rel=1e-4)
    assert row["key_frequencies"] and set(row).issuperset({"memorization_end", "cleanup_end", "key_frequencies[original]"})
    assert row["wl_projection_over_original"] == pytest.approx(
        row["§4.4 MLP output projected onto the 2K W_L directions"] / row["§4.4 original"])
    # the write-up's tables carry the run's own numbers and name its folder
    md = fidelity.study_markdown(table)
    assert f"| test accuracy 0.99 | {grokked:,} |" in md and str(job.folder) in md
    assert f"| small | 0 | {row['§4.4 original']:.3g} | " in md  # its §4.4 losses, beside the published ones
    # the record: the run's small files beside the table, which they give back; a changed number is caught
    record = tmp_path / "record"
    written = fidelity.write_record(table, tmp_path, record)
    assert sorted(p.name for p in (record / "small" / "seed_0").iterdir()) == sorted(fidelity.RECORD_FILES)
    assert set(fidelity.RECORD_FILES) >= {progress.MEASURES_FILE, progress.META_FILE}  # the names progress writes
    assert fidelity.check_record(record) == []
    published = pd.read_csv(written)
    assert published.folder.tolist() == ["small/seed_0"]
    published.loc[0, "test_acc_0.99"] += 10
    published.loc[0, "cleanup_end"] = None
    published.to_csv(written, index=False)
    wrong = fidelity.check_record(record)
    assert len(wrong) == 2 and "test_acc_0.99" in wrong[0] and "cleanup_end" in wrong[1]


def test_the_plain_loop_follows_the_fast_path(tmp_path):
    cfg = SMALL.replace(epochs=30, eval_every=10)
    from mechgrok.training.loop import train

    fast = train(cfg, tmp_path / "run").metrics
    plain = fidelity.plain_loop(cfg, 30)
    assert list(plain.epoch) == [0, 10, 20, 30]
    merged = plain.merge(fast, on="epoch", suffixes=("_plain", "_fast"))
    # epoch 0 is the same model: equal to float32 rounding; later only rounding apart
    assert merged.train_loss_fast.iloc[0] == pytest.approx(merged.train_loss_plain.iloc[0], rel=1e-5)
    assert ((merged.test_loss_fast / merged.test_loss_plain - 1).abs() < 1e-2).all()
    assert not merged.train_loss_fast.equals(merged.train_loss_plain)


def test_the_plain_loop_check_is_written_beside_its_run_and_compared(tmp_path):
    cfg = SMALL.replace(epochs=20, eval_every=10)
    job = fidelity.Job("small", 0, cfg, tmp_path / "small" / "seed_0")
    fidelity.plain_loop_job(job, 20)
    assert fidelity.plain_loop_path(job.folder) == tmp_path / "small" / "plain_loop_seed_0.csv"
    assert fidelity.plain_loop_path(job.folder).exists() and not job.folder.exists()  # the run folder is the trainer's
    with pytest.raises(ValueError, match="no metrics yet"):
        fidelity.plain_loop_agreement(job.folder)
    fidelity.run_job(fidelity.Job("small", 0, cfg, job.folder, until_grokked=False))
    both = fidelity.plain_loop_agreement(job.folder)
    assert list(both.epoch) == [0, 10, 20] and both.train_loss_ratio.iloc[0] == pytest.approx(1, abs=1e-6)
    assert fidelity.summarise(tmp_path).folder.tolist() == [str(job.folder)]  # the csv beside it is not a run


def test_aggregate_counts_only_the_runs_that_reached_a_quantity():
    table = pd.DataFrame([
        {"kind": "setup", "name": "a", "x": 1.0, "cleanup_end": 100},
        {"kind": "setup", "name": "a", "x": 3.0, "cleanup_end": None},
        {"kind": "variant", "name": "b", "x": 5.0, "cleanup_end": 50},
    ])
    agg = fidelity.aggregate(table, ["x", "cleanup_end", "absent"]).set_index("name")
    assert agg.loc["a", "x mean"] == 2.0 and agg.loc["a", "x std"] == pytest.approx(math.sqrt(2))
    assert agg.loc["a", "cleanup_end n"] == 1 and agg.loc["a", "cleanup_end mean"] == 100
    assert agg.loc["b", "runs"] == 1 and math.isnan(agg.loc["b", "x std"])
    assert "absent mean" not in agg.columns


RECORD = Path(__file__).resolve().parents[1] / "experiments" / "fidelity" / "record"


def test_the_published_study_is_its_recorded_runs():
    """docs/fidelity.md's per-run table is the record's study.csv, and the record's run files give
    back its numbers (the training numbers, phases and key frequencies)."""
    assert fidelity.check_record(RECORD) == []
    table = pd.read_csv(RECORD / "study.csv", dtype={"key_frequencies": str})
    table["folder"] = "runs/fidelity/" + table.folder
    expected = fidelity.study_markdown(table)
    docs = (RECORD.parents[2] / "docs" / "fidelity.md").read_text()
    run_rows = [line for line in docs.splitlines() if line.startswith("| ") and "`runs/fidelity/" in line]
    assert len(run_rows) == len(table)
    assert all(line in expected.splitlines() for line in run_rows)
    for setup in ("original", "tl-demo"):  # the plain loops beside the anchors' seed 0: the same model at epoch 0
        both = fidelity.plain_loop_agreement(RECORD / setup / "seed_0")
        assert both.epoch.iloc[-1] >= 1500 and both.train_loss_ratio.iloc[0] == pytest.approx(1, abs=1e-6)
