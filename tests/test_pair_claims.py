"""Pearce et al.'s claims, checked on runs trained here (the explorable's settings, mechgrok.reproduce.pair2023).

The fast ones run in the default suite; the ones that need the explorable's full lengths are
marked slow (``make test-slow``). Each asserts what the explorable states, read from the runs by
the analyses, so a regression in the trainer, the families or the readouts fails it.
"""

import pytest
import torch

from mechgrok import runs
from mechgrok.analysis import constructions, parity, regimes, waves
from mechgrok.reproduce import pair2023 as P
from mechgrok.report.figures import first_epoch_reaching as first_step
from mechgrok.reproduce.pair_pipeline import frequency_readout
from mechgrok.training.stack import train_stack


def test_sparse_parity_with_l1_generalises_and_prunes_the_distractors(tmp_path):
    """λ from 1e-5 to 1e-3 generalises within 3k steps and leaves the 27 distractor bits' weights near 0;
    λ = 3e-3 prunes too much to fit (measured: test accuracy 0.99 at steps 740-1,130; distractor
    mean |w| ~1e-4 against 0.26-0.41 on the parity bits; λ = 3e-3 ends near 0.70)."""
    lams = (1e-5, 1e-4, 1e-3, 3e-3)
    dirs = [tmp_path / f"l1={lam}" for lam in lams]
    results = train_stack([P.parity_config(0, weight_decay=lam) for lam in lams], dirs)
    for lam, result, folder in zip(lams, results, dirs):
        W_in = runs.load_run(folder).model.mlp.W_in.detach().double()
        bits = parity.distractor_weight(W_in, 3)
        reached = first_step(result.metrics, "test_acc")
        if lam <= 1e-3:
            assert reached is not None and reached <= 3_000, (lam, reached)
            assert bits.distractor < 1e-2 * bits.parity, (lam, bits)
            assert parity.parity_weight_share(W_in, 3) > 0.99
        else:
            assert reached is None  # pruned too hard to fit even the train set
            assert result.metrics.train_acc.iloc[-1] < 0.99


@pytest.mark.slow
def test_the_main_mlp_groks_on_two_of_three_seeds_within_50k_steps(tmp_path):
    """The explorable's main model (measured by the default reproduction, docs/pair2023.md: two of
    the three seeds reach test accuracy 0.99 before step 50k); its neurons fall into frequency
    groups whose logit contributions fit cos(2πk(a+b−c)/67)."""
    dirs = [tmp_path / f"seed={s}" for s in (0, 1, 2)]
    results = train_stack([P.main_config(s) for s in (0, 1, 2)], dirs)
    grokked = [d for d, r in zip(dirs, results) if first_step(r.metrics, "test_acc") is not None]
    assert len(grokked) >= 2
    for folder in grokked:
        readout = frequency_readout(folder)
        assert 2 <= len(readout["frequencies"]) <= 8
        assert min(readout["wave_r2_centred"].values()) > 0.5, readout


@pytest.mark.slow
def test_the_regime_slice_shows_all_four_regimes(tmp_path):
    """Train 1,000 × hidden 16 × the five weight decays × 9 seeds, 20k steps: the explorable's rules
    find every regime, ordered along weight decay as the explorable describes."""
    from mechgrok.reproduce.pair_pipeline import regime_order_agreement, regime_rows
    from mechgrok.sweeps import Sweep, run_sweep

    sweep = Sweep(P.sweep_base(), P.SLICE_AXES)
    run_sweep(sweep, tmp_path, executor="process")
    rows = regime_rows(sweep, tmp_path)
    assert set(rows.regime) == set(regimes.REGIMES)
    table = regimes.regime_table(rows, ["n_train", "d_mlp", "weight_decay"])
    assert bool(regime_order_agreement(table).follows_order.all())


@pytest.mark.slow
def test_the_five_neuron_circle_solves_a_plus_b_on_most_seeds(tmp_path):
    """The constructed circle (measured here: 8 of 10 seeds reach test accuracy 1.0); a solved one has
    nearly equal norms, evenly spaced neurons and W_out turning twice as fast as W_in."""
    dirs = [tmp_path / f"seed={s}" for s in range(10)]
    results = train_stack([P.circle_config(s) for s in range(10)], dirs)
    solved = [d for d, r in zip(dirs, results) if r.metrics.test_acc.iloc[-1] >= 1.0]
    assert len(solved) >= 5
    for folder in solved:
        model = runs.load_run(folder).model
        geometry = constructions.circle_geometry(model.mlp.W_in.detach().double(), model.mlp.W_out.detach().double())
        assert abs(abs(geometry.rotation_ratio) - 2) < 0.2
        assert geometry.in_norm_spread < 0.2 and geometry.collapsed_pairs == 0


def test_the_x2_construction_is_exact_where_the_derivation_allows():
    """N = 3 and N >= 5: the logits equal N cos²((a−b)ω/2) cos((a+b−c)ω) to 1e-12 and the argmax is
    a+b mod M (away from the ties of even M); N = 2 and 4 are not exact."""
    for M in (11, 12, 67):
        for N in (2, 3, 4, 5, 7, 16):
            logits = constructions.construction_logits(M, N, "x2")
            error = (logits - constructions.x2_closed_form(M, N)).abs().max().item()
            score = constructions.construction_accuracy(logits, M)
            if N in (2, 4):
                assert error > 1e-3
            else:
                assert error < 1e-12
                assert score.accuracy_excluding_ties == 1.0
                assert score.n_ties == (M if M % 2 == 0 else 0)


def test_stars_and_waves_find_the_frequency_of_a_planted_circle():
    """A neuron whose input weights are cos(2πk·x/67 − φ) is put in group k, at its own phase:
    the star of five such neurons is the five phases."""
    p, k = 67, 7
    x = torch.arange(p, dtype=torch.float64)
    phases = torch.linspace(0, 2 * torch.pi, 6, dtype=torch.float64)[:-1]
    weights = torch.stack([torch.cos(2 * torch.pi * k * x / p - phi) for phi in phases], dim=1)
    coeffs = waves.neuron_dft(weights)
    freqs = waves.neuron_frequencies(coeffs)
    assert freqs.tolist() == [k] * 5
    cos, sin = coeffs[:, k - 1, 0], coeffs[:, k - 1, 1]
    gap = torch.remainder(torch.atan2(sin, cos) - phases + torch.pi, 2 * torch.pi) - torch.pi  # on the circle
    torch.testing.assert_close(gap, torch.zeros(5, dtype=torch.float64), atol=1e-9, rtol=0)
