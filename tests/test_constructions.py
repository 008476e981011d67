"""Appendix A's constructed circle (mechgrok/analysis/constructions.py): the construction against an
independent numpy sum, the x² identity and where it breaks, accuracy with ties, the ReLU wrinkles,
and the circle readouts of a trained model on exact, perturbed and collapsed circles."""

import math

import numpy as np
import pytest
import torch

from mechgrok.analysis import constructions as C


def checked(fn):
    """Run ``fn`` with its jaxtyping annotations checked at runtime."""
    from beartype import beartype
    from jaxtyping import jaxtyped

    return jaxtyped(typechecker=beartype)(fn)


def appendix_sum(M, N, activation):
    """l_c = Σ_i act(cos(aω − iθ) + cos(bω − iθ)) cos(cω − 2iθ), the appendix's sum, in numpy."""
    w, t = 2 * np.pi / M, 2 * np.pi / N
    a = np.arange(M)[:, None, None, None]
    b = np.arange(M)[None, :, None, None]
    c = np.arange(M)[None, None, :, None]
    i = np.arange(N)[None, None, None, :]
    pre = np.cos(a * w - i * t) + np.cos(b * w - i * t)
    post = np.maximum(pre, 0) if activation == "relu" else pre**2
    return (post * np.cos(c * w - 2 * i * t)).sum(-1)


def grid(M):
    r = torch.arange(M, dtype=torch.float64)
    return r[:, None, None], r[None, :, None], r[None, None, :]


# ----------------------------------------------------------------------------- the construction
def test_circle_embedding_is_the_circle():
    M = 11
    E = C.circle_embedding(M, normalise=False)
    angles = torch.atan2(E[:, 1], E[:, 0])
    assert torch.allclose(E.norm(dim=1), torch.ones(M, dtype=torch.float64), atol=1e-15)
    steps = torch.remainder(torch.diff(angles), 2 * math.pi)
    assert torch.allclose(steps, torch.full((M - 1,), 2 * math.pi / M, dtype=torch.float64), atol=1e-12)
    assert angles[0] == 0
    En = C.circle_embedding(M)
    assert torch.allclose(En.norm(dim=0), torch.ones(2, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(En * math.sqrt(M / 2), E, atol=1e-14)  # both columns have norm sqrt(M/2)


def test_weights_give_the_appendix_cosines():
    M, N = 13, 5
    E, W_in, W_out = C.construction_weights(M, N)
    assert (E.shape, W_in.shape, W_out.shape) == ((M, 2), (2, N), (N, 2))
    a, _, _ = grid(M)
    i = torch.arange(N, dtype=torch.float64)
    w, t = 2 * math.pi / M, 2 * math.pi / N
    assert torch.allclose(E @ W_in, torch.cos(a[:, :, 0] * w - i * t), atol=1e-14)  # cos(aω − iθ)
    assert torch.allclose((W_out @ E.T).T, torch.cos(a[:, :, 0] * w - 2 * i * t), atol=1e-14)  # cos(cω − 2iθ)


@pytest.mark.parametrize("activation", ["relu", "x2"])
@pytest.mark.parametrize("M, N", [(7, 5), (12, 6), (17, 3)])
def test_logits_equal_the_appendix_sum(M, N, activation):
    L = C.construction_logits(M, N, activation)
    assert L.shape == (M, M, M) and L.dtype == torch.float64
    assert np.abs(L.numpy() - appendix_sum(M, N, activation)).max() < 1e-12


def test_logits_dtype_and_bad_activation():
    assert C.construction_logits(7, 5, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match=r"activation='tanh' is not one of \('relu', 'x2'\)"):
        C.construction_logits(7, 5, "tanh")


@pytest.mark.parametrize("bad", [2, 0, True, 7.0])
def test_bad_modulus_is_refused(bad):
    with pytest.raises(ValueError, match=f"M={bad!r} must be an integer >= 3"):
        C.circle_embedding(bad)


def test_bad_neuron_count_is_refused():
    with pytest.raises(ValueError, match="N=0 must be an integer >= 1"):
        C.construction_weights(7, 0)


# ----------------------------------------------------------------------------- the x² identity
@pytest.mark.parametrize("M", [7, 11, 12, 67])
@pytest.mark.parametrize("N", [3, 5, 6, 7, 8, 16, 24])
def test_x2_construction_is_the_closed_form(M, N):
    err = (C.construction_logits(M, N, "x2") - C.x2_closed_form(M, N)).abs().max().item()
    assert err < 1e-12


@pytest.mark.parametrize("M", [7, 12, 67])
def test_x2_identity_fails_for_two_and_four_neurons_by_the_terms_that_do_not_cancel(M):
    """N | 2 leaves 2N cos²(·)cos(cω); N | 4 leaves N cos²(·)cos((a+b+c)ω) (module docstring)."""
    a, b, c = grid(M)
    w = 2 * math.pi / M
    envelope = torch.cos((a - b) * w / 2) ** 2
    for N in (2, 4):
        gap = C.construction_logits(M, N, "x2") - C.x2_closed_form(M, N)
        extra = envelope * N * torch.cos((a + b + c) * w)
        if N == 2:
            extra = extra + envelope * 2 * N * torch.cos(c * w)
        assert gap.abs().max() > 0.5  # the identity really fails
        assert (gap - extra).abs().max() < 1e-12  # and by exactly the derived terms


@pytest.mark.parametrize("M", [7, 11, 67])
@pytest.mark.parametrize("N", [3, 5, 8])
def test_x2_construction_is_exact_for_odd_modulus(M, N):
    acc = C.construction_accuracy(C.construction_logits(M, N, "x2"), M)
    assert acc.accuracy == 1.0 and acc.n_ties == 0 and acc.min_gap > 0


@pytest.mark.parametrize("activation", ["x2", "relu"])
@pytest.mark.parametrize("M", [12, 16])
def test_even_modulus_ties_where_a_minus_b_is_half_the_modulus(M, activation):
    L = C.construction_logits(M, 5, activation)
    a, b, _ = grid(M)
    half = (((a - b) % M) == M // 2)[:, :, 0]
    assert L[half].abs().max() < 1e-12  # E[a] + E[b] = 0 there: every logit is 0
    acc = C.construction_accuracy(L, M)
    assert acc.n_ties == M == int(half.sum())
    assert acc.accuracy_excluding_ties == 1.0
    assert acc.accuracy == pytest.approx(1 - 1 / M)


# ----------------------------------------------------------------------------- accuracy
def test_accuracy_on_hand_made_logits():
    M = 5
    r = torch.arange(M)
    right = torch.nn.functional.one_hot((r[:, None] + r[None, :]) % M, M).double()
    acc = C.construction_accuracy(right, M)
    assert (acc.accuracy, acc.n_ties, acc.min_gap, acc.n_cells) == (1.0, 0, 1.0, 25)
    wrong = torch.nn.functional.one_hot((r[:, None] + r[None, :] + 1) % M, M).double()
    assert C.construction_accuracy(wrong, M).accuracy == 0.0
    tied = right.clone()
    tied[1, 2] = 0.0  # all logits equal in one cell
    tied[3, 3, 0] = 0.999  # one cell right by a small margin
    acc = C.construction_accuracy(tied, M)
    assert acc.n_ties == 1 and acc.accuracy == pytest.approx(24 / 25)
    assert acc.accuracy_excluding_ties == 1.0 and acc.min_gap == pytest.approx(0.001)
    flat = C.construction_accuracy(tied.reshape(M * M, M), M)  # grid order a*M + b
    assert flat == acc
    assert len(acc.table()) == 1 and acc.table().loc[0, "n_ties"] == 1


def test_accuracy_argmax_is_taken_in_float64():
    """Two logits 1e-9 apart: float32 would round them to a tie."""
    M = 3
    r = torch.arange(M)
    L = torch.zeros(M, M, M, dtype=torch.float64)
    L[..., :] = 1.0
    L[r[:, None], r[None, :], (r[:, None] + r[None, :]) % M] = 1.0 + 1e-9
    acc = C.construction_accuracy(L, M, tie_tolerance=1e-12)
    assert acc.accuracy == 1.0 and acc.min_gap == pytest.approx(1e-9, rel=1e-6)


def test_accuracy_refuses_a_wrong_shape():
    with pytest.raises(ValueError, match=r"expected \[a, b, c\] = \[7, 7, 7\]"):
        C.construction_accuracy(torch.zeros(5, 5, 5), 7)
    with pytest.raises(ValueError, match="tie_tolerance=2"):
        C.construction_accuracy(torch.zeros(5, 5, 5), 5, tie_tolerance=2)


# ----------------------------------------------------------------------------- the ReLU wrinkles
def test_relu_accuracy_grid_at_67():
    """The prototype's numbers (REFERENCE §7), which follow from the formula alone."""
    table = C.relu_accuracy_grid([3, 5, 6, 7, 8, 16, 24], [67])
    assert list(table.columns) == ["neurons", "modulus", "accuracy", "accuracy_excluding_ties", "n_ties", "n_cells", "min_gap"]
    acc = dict(zip(table.neurons, table.accuracy))
    for N in (5, 7, 16, 24):
        assert acc[N] == 1.0
    assert acc[3] == pytest.approx(0.02, abs=0.01)
    assert acc[6] == pytest.approx(0.19, abs=0.01)
    assert acc[8] == pytest.approx(0.64, abs=0.01)
    assert (table.modulus == 67).all() and (table.n_cells == 67 * 67).all()


def test_relu_grid_covers_every_pair():
    table = C.relu_accuracy_grid([4, 5], [7, 12])
    assert list(zip(table.neurons, table.modulus)) == [(4, 7), (4, 12), (5, 7), (5, 12)]
    five_twelve = table[(table.neurons == 5) & (table.modulus == 12)].iloc[0]
    assert five_twelve.n_ties >= 12  # the a−b ≡ 6 cells


# ----------------------------------------------------------------------------- a trained circle
@pytest.mark.parametrize("N", [5, 6, 8, 24])
def test_geometry_of_the_exact_construction(N):
    _, W_in, W_out = C.construction_weights(67, N)
    g = C.circle_geometry(W_in, W_out)
    assert g.rotation_ratio == pytest.approx(2.0, abs=1e-12)
    assert g.rotation_residual < 1e-12
    assert g.gap_error < 1e-12
    assert g.in_norm_spread < 1e-12 and g.out_norm_spread < 1e-12
    assert g.collapsed_pairs == 0
    assert g.in_gaps.sum().item() == pytest.approx(2 * math.pi)
    table = g.table()
    assert len(table) == N and (np.diff(table.in_angle) > 0).all()
    assert sorted(table.neuron) == list(range(N))
    assert g.summary().loc[0, "rotation_ratio"] == pytest.approx(2.0)


def test_geometry_ignores_neuron_order_rotation_and_scale():
    N = 7
    _, W_in, W_out = C.construction_weights(67, N)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    assert perm.tolist() != list(range(N))
    rot = lambda x: torch.tensor([[math.cos(x), -math.sin(x)], [math.sin(x), math.cos(x)]], dtype=torch.float64)  # noqa: E731
    g = C.circle_geometry(3.0 * rot(0.4) @ W_in[:, perm], 0.5 * W_out[perm] @ rot(1.1).T)
    assert g.rotation_ratio == pytest.approx(2.0, abs=1e-12)
    assert g.gap_error < 1e-12 and g.in_norm_spread < 1e-12
    assert g.in_norms.mean().item() == pytest.approx(3.0) and g.out_norms.mean().item() == pytest.approx(0.5)


def test_mirrored_output_circle_reads_minus_two():
    _, W_in, W_out = C.construction_weights(67, 5)
    mirrored = W_out * torch.tensor([1.0, -1.0], dtype=torch.float64)
    assert C.circle_geometry(W_in, mirrored).rotation_ratio == pytest.approx(-2.0, abs=1e-12)


def test_three_neurons_alias_the_ratio():
    """For N = 3, ψ = 2φ and ψ = −φ are the same points; the unwrapped slope reads −1 (documented)."""
    _, W_in, W_out = C.construction_weights(67, 3)
    assert C.circle_geometry(W_in, W_out).rotation_ratio == pytest.approx(-1.0, abs=1e-12)


def test_perturbed_circle_is_close_but_not_exact():
    N = 5
    _, W_in, W_out = C.construction_weights(67, N)
    g = torch.Generator().manual_seed(0)
    noisy = C.circle_geometry(W_in + 0.05 * torch.randn(2, N, generator=g, dtype=torch.float64),
                              W_out + 0.05 * torch.randn(N, 2, generator=g, dtype=torch.float64))
    assert 1.8 < noisy.rotation_ratio < 2.2 and noisy.rotation_ratio != pytest.approx(2.0, abs=1e-6)
    assert 0 < noisy.gap_error < 0.5 and noisy.in_norm_spread > 1e-4 and noisy.rotation_residual > 1e-4
    assert noisy.collapsed_pairs == 0


def test_collapsed_neurons_are_counted():
    N = 5
    _, W_in, W_out = C.construction_weights(67, N)
    W_in, W_out = W_in.clone(), W_out.clone()
    W_in[:, 1] = W_in[:, 0] * 1.01 + 0.001  # neuron 1 sits on neuron 0
    W_out[1] = W_out[0]
    g = C.circle_geometry(W_in, W_out)
    assert g.collapsed_pairs == 1
    assert g.gap_error > 0.9 * 2 * math.pi / N  # the gap it left is about two even gaps
    W_in[:, 3] = W_in[:, 2]
    assert C.circle_geometry(W_in, W_out).collapsed_pairs == 2
    assert C.circle_geometry(W_in, W_out, collapse_fraction=0).collapsed_pairs == 0


def test_geometry_refuses_wrong_shapes():
    _, W_in, W_out = C.construction_weights(67, 5)
    with pytest.raises(ValueError, match=r"W_in has shape \(5, 2\); expected \[2, neuron\]"):
        C.circle_geometry(W_in.T, W_out)
    with pytest.raises(ValueError, match=r"W_out has shape \(2, 5\); expected \[neuron, 2\] = \[5, 2\]"):
        C.circle_geometry(W_in, W_out.T)


# ----------------------------------------------------------------------------- annotations
def test_annotations_hold_at_runtime():
    from jaxtyping import TypeCheckError

    E, W_in, W_out = checked(C.construction_weights)(11, 5)
    checked(C.circle_embedding)(11)
    checked(C.construction_logits)(11, 5)
    checked(C.x2_closed_form)(11, 5)
    checked(C.circle_geometry)(W_in, W_out)
    with pytest.raises(TypeCheckError):  # W_out must have as many neurons as W_in
        checked(C.circle_geometry)(W_in, torch.zeros(4, 2, dtype=torch.float64))
