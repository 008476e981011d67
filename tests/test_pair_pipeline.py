"""The PAIR reproduction end to end (mechgrok/reproduce/pair_pipeline.py), on tiny sweeps.

The real pipeline — sweeps trained by the inline executor, summarised from the run folders,
every figure, the report — with each experiment shrunk to seconds. The summary's numbers are
checked against the run folders they were read from; a second call reuses every run.
"""

import json

import pandas as pd
import pytest

from mechgrok import Config, runs
from mechgrok.analysis import regimes
from mechgrok.report import PAIR_FIGURE_NAMES
from mechgrok.reproduce import pair2023 as P
from mechgrok.reproduce.pair_pipeline import EXPERIMENTS, plan, regime_order_agreement, reproduce_pair
from mechgrok.sweeps import Sweep

MLP = Config(p=11, family="mlp", d_model=16, d_mlp=8, pairs="unordered", frac_train=0.5, lr=1e-2, warmup_steps=0,
             epochs=200, eval_every=20, checkpoint_every=100, loss_scale="per_output", loss_dtype="float32")
CIRCLE = MLP.replace(family="circle", d_model=2, d_mlp=5, frac_train=0.3, weight_decay=1e-3)
PARITY = Config(task="parity", family="parity_mlp", n_bits=8, parity_bits=3, n_train=100, n_test=100, d_mlp=8, lr=1e-2,
                weight_decay=1e-4, decay="l1", beta1=0.99, beta2=0.98, warmup_steps=0, epochs=200, eval_every=20,
                checkpoint_every=100, loss_dtype="float32")


def tiny_plan() -> dict[str, Sweep]:
    return {
        "main": Sweep(MLP, {"seed": (0, 1)}),
        "variants": Sweep(MLP, {"family": P.VARIANT_FAMILIES}),
        "no_weight_decay": Sweep(MLP.replace(weight_decay=0.0), {"seed": (0,)}),
        "circle": Sweep(CIRCLE, {"seed": (0, 1)}),
        "parity": Sweep(PARITY, {"weight_decay": (1e-4, 1e-3)}),
        "regimes": Sweep(PARITY.replace(decay="l2", eval_every=50), {"n_train": (100,), "d_mlp": (8,),
                                                                     "weight_decay": (0.01, 1.0), "seed": (0, 1)}),
    }


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("pair")
    return reproduce_pair(out, executor="inline", sweeps=tiny_plan())


def test_the_default_plan_is_the_explorables(reproduced):
    sweeps = plan()
    assert list(sweeps) == list(EXPERIMENTS)
    assert len(sweeps["regimes"]) == 45 and len(plan(full=True)["regimes"]) == 1125
    main = sweeps["main"].runs[0].config
    assert (main.p, main.d_model, main.d_mlp, main.frac_train, main.pairs, main.epochs) == (67, 500, 24, 0.4, "unordered", 50_000)
    assert (main.lr, main.weight_decay, main.betas, main.loss_scale, main.loss_dtype) == (1e-3, 1.0, (0.9, 0.98), "per_output", "float32")
    circle = sweeps["circle"].runs[0].config
    assert (circle.d_mlp, circle.lr, circle.weight_decay, circle.frac_train, circle.epochs) == (5, 1e-2, 1e-3, 0.3, 15_000)
    regime = sweeps["regimes"].runs[0].config
    assert (regime.decay, regime.lr, regime.betas, regime.epochs, regime.eval_every, regime.n_test) == (
        "l2", 3e-3, (0.99, 0.98), 20_000, 100, 5_000)
    assert {run.config.family for run in sweeps["variants"].runs} == set(P.VARIANT_FAMILIES)


def test_report_and_summary_are_written(reproduced):
    page = reproduced.report.read_text()
    for name in PAIR_FIGURE_NAMES:
        assert f'data-figure="{name}"' in page
    summary = json.loads(reproduced.summary_path.read_text())
    expect = [seed for seed, m in reproduced.summary["main"].items() if m["test_acc_step"] is not None]
    assert summary["main_grokked"] == expect
    assert summary["regime_counts"] == reproduced.summary["regime_counts"]


def test_summary_numbers_come_from_the_run_folders(reproduced):
    out, s = reproduced.out, reproduced.summary
    for seed, m in s["main"].items():
        metrics = runs.read_metrics(out / "main" / f"seed={seed}")
        hit = metrics.loc[metrics.test_acc >= 0.99, "epoch"]
        assert m["test_acc_step"] == (int(hit.iloc[0]) if len(hit) else None)
        assert m["final_test_loss"] == pytest.approx(metrics.test_loss.iloc[-1])
        assert sum(m["group_sizes"].values()) == 8  # every neuron in one frequency group
    rows = s["regime_rows"]
    assert len(rows) == 4
    for _, row in rows.iterrows():
        metrics = runs.read_metrics(out / "regimes" / f"n_train=100/d_mlp=8/weight_decay={row.weight_decay!r}/seed={row.seed}")
        assert row.regime == regimes.classify_regime(metrics.train_loss.to_numpy(), metrics.test_loss.to_numpy())
    assert sum(s["regime_counts"].values()) == 4
    solved = [seed for seed, c in s["circle"].items() if c["final_test_acc"] >= 1.0]
    assert s["circle_solved"] == solved


def test_a_second_call_reuses_every_run(reproduced):
    out = reproduced.out
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    again = reproduce_pair(out, executor="inline", sweeps=tiny_plan())
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == stamps
    assert again.summary["regime_counts"] == reproduced.summary["regime_counts"]


def test_regime_order_agreement_reads_the_dominant_regimes():
    table = pd.DataFrame({"n_train": [1000] * 4, "d_mlp": [16] * 4, "weight_decay": [0.01, 0.1, 0.3, 1.0],
                          "dominant": ["memorize", "grok", "generalize", "fail"]})
    assert bool(regime_order_agreement(table).follows_order.iloc[0])
    table["dominant"] = ["grok", "memorize", "generalize", "fail"]
    assert not bool(regime_order_agreement(table).follows_order.iloc[0])


def test_sweeps_must_name_every_experiment(tmp_path):
    with pytest.raises(ValueError, match="sweeps must name the experiments"):
        reproduce_pair(tmp_path, sweeps={"main": tiny_plan()["main"]})


@pytest.mark.parametrize("name", PAIR_FIGURE_NAMES)
def test_every_figure_has_a_script_that_writes_it(reproduced, name, capsys):
    import importlib

    module = importlib.import_module(f"experiments.pair2023.{name}")
    assert module.__doc__.startswith(f"python experiments/pair2023/{name}.py --run runs/pair2023")
    assert module.main(["--run", str(reproduced.out)]) == 0
    assert (reproduced.out / "figures" / f"{name}.html").exists()
    assert f"{name}: " in capsys.readouterr().out  # the caption is printed


def test_a_pair_figure_refuses_the_nanda_flags_and_a_missing_folder(tmp_path, capsys):
    from mechgrok.cli import main

    assert main(["figure", "circle", "--run", str(tmp_path), "--rule", "W_E"]) == 2
    assert "--rule and --threshold apply to the Nanda et al. figures" in capsys.readouterr().err
    assert main(["figure", "circle", "--run", str(tmp_path)]) == 2
    assert "holds no circle experiment yet" in capsys.readouterr().err
