"""The post's sequence-task experiments end to end on tiny runs: plan, train, summarise, claims,
figures, the report in headless Chromium, the CLI; the crossover rules; the induction scores."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mechgrok.analysis import crossover
from mechgrok.analysis.induction import detection_patterns, head_scores
from mechgrok.cli import main as cli_main
from mechgrok.models.lens import compute_head_attention_similarity_score
from mechgrok.report import PHASE_FIGURE_NAMES
from mechgrok.reproduce.phase_changes import pipeline, tasks as T
from mechgrok.sweeps import Sweep
from test_report import CHROMIUM, assert_rendered_without_errors, render_in_chromium

SMALL = dict(d_model=16, n_heads=2, d_mlp=32, n_test=50)
PLANS = {"tasks": {
    "addition": Sweep(T.addition_config(n_digits=2, epochs=40, eval_every=2, checkpoint_every=20, **SMALL), {"seed": (0,)}),
    "induction": Sweep(T.induction_config(epochs=20, seq_len=10, repeat_len=3, checkpoint_every=5, **SMALL), {"seed": (0,)}),
    "max_list": Sweep(T.max_list_config(epochs=30, seq_len=5, n_symbols=3, **SMALL), {"seed": (0,)}),
    "crossover": Sweep(T.crossover_config(epochs=30, seq_len=5, n_symbols=3, **SMALL), {"n_train": (5, 40)}),
}}
TASK_FIGURES = ("addition_digits", "induction_heads", "max_list_trigrams", "crossover")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase_changes")
    steps = []
    result = pipeline.reproduce_phase_changes(out, plans=PLANS, executor="inline", threads=1, on_step=steps.append)
    return result, steps


def test_the_tasks_part_trains_summarises_and_decides_every_claim(reproduced):
    result, steps = reproduced
    assert len(steps) == 4 and all("ready" in s for s in steps)
    s = result.summary["tasks"]
    assert set(s) == {"addition", "induction", "max_list", "crossover"}
    assert [r["component"] for r in s["addition"]["phase_changes"]] == ["d0", "d1", "d2"]
    assert s["max_list"]["trigrams"] == 3
    assert {r["n_train"] for r in s["crossover"]["runs"]} >= {5, 40}
    assert set(result.claims) == {
        "addition_digit_phase_changes", "induction_score_jumps_with_loss",
        "max_list_trigram_phase_changes", "crossover_bracketed"}
    assert not result.claims["addition_digit_phase_changes"]  # 3 digits cannot hold 4
    saved = json.loads((result.out / "summary.json").read_text())
    assert saved["claims"] == result.claims and set(saved["captions"]) == set(TASK_FIGURES)


def test_a_second_call_reuses_every_run(reproduced):
    result, _ = reproduced
    before = {p: p.stat().st_mtime_ns for p in result.out.glob("**/resume.safetensors")}
    again = pipeline.reproduce_phase_changes(result.out, plans=PLANS, executor="inline", threads=1)
    assert {p: p.stat().st_mtime_ns for p in result.out.glob("**/resume.safetensors")} == before
    assert again.summary["tasks"]["addition"]["final"] == result.summary["tasks"]["addition"]["final"]


def test_captions_carry_this_runs_numbers(reproduced):
    result, _ = reproduced
    caps = json.loads((result.out / "summary.json").read_text())["captions"]
    s = result.summary["tasks"]
    assert f"{s['addition']['final']['test_acc']:.3f}" in caps["addition_digits"]
    assert f"in {len(s['addition']['digits_with_phase_change'])} of 3 digits" in caps["addition_digits"]
    assert f"{s['induction']['final']['test_loss']:.3g}" in caps["induction_heads"]
    assert "The post, about its own runs" in caps["max_list_trigrams"]
    assert all(f"{r['n_train']}: {r['regime']}" in caps["crossover"] for r in s["crossover"]["runs"])


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt install chromium)")
def test_the_report_renders_every_figure_in_chromium(reproduced, tmp_path):
    result, _ = reproduced
    dom, log = render_in_chromium(result.report, tmp_path / "profile")
    assert_rendered_without_errors(dom, log, TASK_FIGURES)


def test_the_cli_builds_one_figure_from_the_reproduction_folder(reproduced, tmp_path, capsys):
    result, _ = reproduced
    assert set(TASK_FIGURES) <= set(PHASE_FIGURE_NAMES)
    assert cli_main(["figure", "max_list_trigrams", "--run", str(result.out), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "max_list_trigrams.html").exists() and "skip trigrams" in capsys.readouterr().out
    assert cli_main(["reproduce", "phase-changes", "--lr", "0.1"]) == 2
    assert "Nanda et al. reproduction only" in capsys.readouterr().err
    assert cli_main(["reproduce", "--digits", "3"]) == 2
    assert "--digits applies to `mechgrok reproduce phase-changes` only" in capsys.readouterr().err


def _metrics(train: list[float], test: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"epoch": np.arange(len(train)) * 10, "train_acc": train, "test_acc": test})


@pytest.mark.parametrize("train,test,regime", [
    ([0.1, 0.5, 0.8, 0.9], [0.1, 0.2, 0.3, 0.3], "fail"),
    ([0.1, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.3], "memorise"),
    ([0.1, 1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.5, 0.9, 1.0], "grok"),
    ([0.1, 0.7, 1.0, 1.0], [0.1, 0.6, 0.995, 1.0], "generalise"),
])
def test_crossover_regimes_follow_the_documented_rules(train, test, regime):
    assert crossover.classify(_metrics(train, test)) == regime


def test_the_bracket_needs_memorise_below_and_generalise_above_a_grok():
    table = pd.DataFrame({"n_train": [10, 30, 100, 300], "regime": ["memorise", "memorise", "grok", "generalise"]})
    assert crossover.bracket(table) == {"memorise_below": 30, "grok": [100], "generalise_above": 300, "bracketed": True}
    no_grok = table.assign(regime=["memorise", "memorise", "generalise", "generalise"])
    assert not crossover.bracket(no_grok)["bracketed"]
    assert T.next_sizes(no_grok) == [45, 67]  # two sizes spread geometrically inside 30..100
    assert T.next_sizes(table) == []
    with pytest.raises(ValueError, match="unknown regime"):
        crossover.bracket(table.assign(regime="grokked"))


def test_batched_head_scores_equal_transformer_lens_per_sequence():
    torch.manual_seed(0)
    tokens = torch.randint(0, 5, (4, 9))
    patterns = torch.rand(2, 4, 3, 9, 9).tril().double()
    patterns = patterns / patterns.sum(-1, keepdim=True)
    for name, detection in detection_patterns(tokens).items():
        ours = head_scores(patterns, detection)
        theirs = torch.tensor([[np.mean([compute_head_attention_similarity_score(
            patterns[layer, b, head], detection[b].double(), exclude_bos=False, exclude_current_token=False,
            error_measure="mul") for b in range(4)]) for head in range(3)] for layer in range(2)], dtype=torch.float64)
        assert torch.allclose(ours, theirs, atol=1e-12), name


@pytest.mark.parametrize("name", TASK_FIGURES)
def test_every_task_figure_has_a_script_that_writes_it(reproduced, name, capsys):
    import importlib

    module = importlib.import_module(f"experiments.phase_changes.{name}")
    assert module.__doc__.startswith(f"python experiments/phase_changes/{name}.py --run runs/phase-changes")
    assert module.main(["--run", str(reproduced[0].out)]) == 0
    assert (reproduced[0].out / "figures" / f"{name}.html").exists()
    assert f"{name}: " in capsys.readouterr().out


def test_every_phase_figure_has_one_owning_part():
    assert list(pipeline.FIGURE_PARTS) == list(PHASE_FIGURE_NAMES)
    assert set(pipeline.FIGURE_PARTS.values()) == set(pipeline.PARTS)


def test_a_pool_of_workers_trains_the_same_bits_as_this_process(tmp_path):
    from mechgrok.runs import load_run

    plans = {"tasks": {name: PLANS["tasks"][name] for name in ("max_list", "addition")}}
    pooled = pipeline.train_all(tmp_path / "pool", plans, executor="process", workers=2, threads=1)
    inline = pipeline.train_all(tmp_path / "inline", plans, executor="inline", threads=1)
    assert set(pooled) == set(inline) == {"max_list", "addition"}
    assert all(t["cpu_s"] > 0 for t in inline.values())
    for name in plans["tasks"]:
        a, b = load_run(tmp_path / "pool" / name / "seed=0"), load_run(tmp_path / "inline" / name / "seed=0")
        assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items()), name
    with pytest.raises(ValueError, match="executor='ray' is not one of"):
        pipeline.train_all(tmp_path / "x", plans, executor="ray")
