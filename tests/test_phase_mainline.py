"""The mainline part of the phase-changes reproduction: plan, summarise, claims and figures, on tiny runs."""

import json

import pytest

from mechgrok.reproduce.phase_changes import mainline as M
from mechgrok.report.phase_changes import mainline as F
from mechgrok.sweeps import Sweep, run_sweep

TINY = dict(p=11, d_model=32, d_mlp=64, eval_every=5)


def tiny_plan() -> dict[str, Sweep]:
    """The plan's experiments and axes at p=11, a few dozen steps each."""
    return {
        "slingshots": Sweep(M.mainline_config("slingshots", **TINY, epochs=40, checkpoint_every=10),
                            {"loss_dtype": ("float32", "float64"), "batch_size": (0, 16)}),
        "weight_decay": Sweep(M.mainline_config("weight_decay", **TINY, epochs=30, checkpoint_every=30),
                              {"weight_decay": (0.3, 1.0)}),
        "more_data": Sweep(M.mainline_config("more_data", **TINY, epochs=40, checkpoint_every=40), {"seed": (0,)}),
    }


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("mainline")
    for name, sweep in tiny_plan().items():
        run_sweep(sweep, out / name, executor="inline")
    return out


def test_plan_names_the_experiments_and_keeps_the_mainline_model():
    for full in (False, True):
        plan = M.plan(full)
        assert tuple(plan) == (M.EXPERIMENTS if full else M.EXPERIMENTS[:3])
        for sweep in plan.values():
            for cfg in sweep.configs:
                assert (cfg.family, cfg.task, cfg.d_model, cfg.n_heads, cfg.d_mlp) == ("transformer", "modular", 128, 4, 512)
    default, full = M.plan(), M.plan(True)
    assert {c.loss_dtype for c in default["slingshots"].configs} == {"float32", "float64"}
    assert {c.batch_size for c in default["slingshots"].configs} == {0, M.SLINGSHOT_BATCH}
    assert default["more_data"].base.frac_train == 0.95
    assert full["slingshots"].base.p == full["more_data"].base.p == 113
    assert len(full["weight_decay"]) > len(default["weight_decay"])
    with pytest.raises(ValueError, match="not one of"):
        M.mainline_config("grokking")


def test_summary_is_json_safe_and_read_from_the_runs(out):
    summary = M.summarise(out)
    json.dumps(summary, allow_nan=False)
    sling = summary["slingshots"]["runs"]
    assert set(sling) == {r.name for r in tiny_plan()["slingshots"].runs}
    for run in sling.values():
        assert run["n_spikes"] == len(run["spikes"]) and run["epochs"] == 40
    assert sorted(summary["weight_decay"]["runs"]) == ["0.3", "1.0"]
    (more,) = summary["more_data"]["runs"].values()
    assert more["frac_train"] == 0.95 and isinstance(more["train_loss_phase_changes"], list)
    assert summary["more_data"]["contrast"]["frac_train"] == 0.7 and summary["more_data"]["contrast"]["loss_dtype"] == "float64"
    assert list(summary["excluded_loss"]["runs"]) == ["slingshots/loss_dtype=float64/batch_size=0"]  # no excluded_loss sweep
    (exc,) = summary["excluded_loss"]["runs"].values()
    assert exc["curve"]["epoch"] == [0, 10, 20, 30, 40]
    assert len(exc["curve"]["excluded_loss_train_fit"]) == 5 and exc["key_frequencies"]


def test_claims_follow_their_rules():
    def summary(f32_spikes, f64_spikes, grok, train_changes):
        sling = {f"{d}/{b}": {"loss_dtype": d, "batch_size": b, "n_spikes": n}
                 for (d, b), n in {("float32", 0): f32_spikes, ("float64", 0): f64_spikes, ("float64", 16): 5}.items()}
        wd = {repr(w): {"weight_decay": w, "grok_epoch": g} for w, g in grok.items()}
        return {"slingshots": {"runs": sling}, "weight_decay": {"runs": wd},
                "more_data": {"runs": {"seed=0": {"coinciding_phase_changes": [100] * train_changes}}}}

    good = M.claims(summary(2, 0, {0.3: 900, 1.0: 400, 3.0: 200}, 1))
    assert good == {"float32_slingshots": True, "lower_weight_decay_groks_later": True,
                    "more_data_train_loss_phase_change": True}
    assert not M.claims(summary(0, 0, {}, 0))["float32_slingshots"]
    assert not M.claims(summary(2, 1, {}, 0))["float32_slingshots"]  # a float64 full-batch spike breaks it
    assert M.claims(summary(2, 0, {0.3: None, 1.0: 400, 3.0: 200}, 0))["lower_weight_decay_groks_later"]  # never = later
    assert not M.claims(summary(2, 0, {0.3: 300, 1.0: 400, 3.0: 200}, 0))["lower_weight_decay_groks_later"]
    assert not M.claims(summary(2, 0, {0.3: None, 1.0: None, 3.0: 200}, 0))["lower_weight_decay_groks_later"]
    assert not M.claims(summary(2, 0, {}, 0))["more_data_train_loss_phase_change"]


def test_every_figure_builds_with_a_caption_from_the_runs(out):
    figures = M.build_figures(out)
    assert [f.name for f in figures] == list(F.MAINLINE_FIGURES)
    by_name = {f.name: f for f in figures}
    summary = M.summarise(out)
    for run in summary["slingshots"]["runs"].values():
        label = f"{run['loss_dtype']}, {'full batch' if run['batch_size'] == 0 else 'minibatch 16'}"
        said = f"{label}: {run['n_spikes']} spike" if run["n_spikes"] else f"{label}: no spike in 40 steps"
        assert said in by_name["slingshots"].caption
    for wd, run in summary["weight_decay"]["runs"].items():
        assert f"weight decay {float(wd):g}: " in by_name["weight_decay"].caption
    assert "The post (Nanda 2022, about its own runs, not these)" in by_name["more_data"].caption
    table = by_name["excluded_loss"].tables[""]
    assert list(table["epoch"]) == [0, 10, 20, 30, 40]
    for f in figures:
        f.figure.to_json()  # a valid plotly figure


def test_coinciding_phase_changes_are_at_most_one_window_apart():
    train = [{"step": 100, "start": 50, "end": 150}, {"step": 900, "start": 850, "end": 950}]
    assert F.coinciding(train, [{"step": 180}]) == [100]
    assert F.coinciding(train, [{"step": 201}, {"step": 2000}]) == []
    assert F.coinciding(train, []) == []


def test_figures_refuse_other_families(tmp_path):
    from mechgrok import Config, train

    train(Config(p=11, family="mlp", d_model=16, d_mlp=8, epochs=2, eval_every=1, checkpoint_every=2), tmp_path / "mlp")
    with pytest.raises(ValueError, match="mainline transformer"):
        F.slingshots([tmp_path / "mlp"])
    with pytest.raises(ValueError, match="list of run folders"):
        F.weight_decay(tmp_path / "mlp")


# ----------------------------------------------------------------------------- the claims, at the default sizes
def _claims_of(tmp_path, names):
    """Train the default plan's experiments ``names`` (a process pool), and summarise what claims need."""
    plan = M.plan()
    for name in names:
        run_sweep(plan[name], tmp_path / name, executor="process")
    summary = {}
    if "slingshots" in names:
        sweep, folders = M.experiment_runs(tmp_path, "slingshots")
        summary["slingshots"] = {"runs": {r.name: M.slingshot_readout(f) for r, f in zip(sweep.runs, folders)}}
    if "weight_decay" in names:
        sweep, folders = M.experiment_runs(tmp_path, "weight_decay")
        summary["weight_decay"] = {"runs": {repr(r.config.weight_decay): M.weight_decay_readout(f)
                                            for r, f in zip(sweep.runs, folders)}}
    if "more_data" in names:
        sweep, folders = M.experiment_runs(tmp_path, "more_data")
        summary["more_data"] = {"runs": {r.name: M.more_data_readout(f) for r, f in zip(sweep.runs, folders)}}
    return summary


@pytest.mark.slow
def test_float32_shows_slingshots_and_float64_none(tmp_path):
    summary = _claims_of(tmp_path, ["slingshots"])
    runs = summary["slingshots"]["runs"]
    assert runs["loss_dtype=float32/batch_size=0"]["n_spikes"] >= 1
    assert runs["loss_dtype=float64/batch_size=0"]["n_spikes"] == 0
    assert runs["loss_dtype=float32/batch_size=0"]["min_train_loss"] < 1e-6  # it got down to the float32 floor


@pytest.mark.slow
def test_lower_weight_decay_groks_later(tmp_path):
    summary = _claims_of(tmp_path, ["weight_decay"])
    runs = sorted(summary["weight_decay"]["runs"].values(), key=lambda r: r["weight_decay"])
    epochs = [r["grok_epoch"] for r in runs]
    assert None not in epochs and epochs == sorted(epochs, reverse=True) and len(set(epochs)) == len(epochs)


@pytest.mark.slow
def test_95_percent_of_the_data_gives_a_train_loss_phase_change(tmp_path):
    summary = _claims_of(tmp_path, ["more_data"])
    (run,) = summary["more_data"]["runs"].values()
    assert len(run["coinciding_phase_changes"]) >= 1  # train and test loss change together
