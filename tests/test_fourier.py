"""The Fourier basis, its row order, transforms and projections (mechgrok/fourier.py)."""

import math

import pytest
import torch
from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

from mechgrok.analysis import fourier
from mechgrok.tasks.modular import ModularTask

P = 31


def checked(fn):
    """Run ``fn`` with its jaxtyping annotations checked at runtime."""
    return jaxtyped(typechecker=beartype)(fn)


@pytest.mark.parametrize("p", [3, 5, 31, 113])
def test_basis_is_orthonormal(p):
    F = fourier.fourier_basis(p)
    assert F.shape == (p, p)
    assert torch.allclose(F @ F.T, torch.eye(p, dtype=F.dtype), atol=1e-12)
    assert torch.allclose(F.T @ F, torch.eye(p, dtype=F.dtype), atol=1e-12)


def test_row_order_matches_names():
    """Row 2k-1 is cos(w_k x) and row 2k is sin(w_k x), exactly as component_names says."""
    F = fourier.fourier_basis(P)
    names = fourier.component_names(P)
    assert len(names) == P and names[0] == "const"
    x = torch.arange(P, dtype=torch.float64)
    assert torch.allclose(F[0], torch.full((P,), 1 / math.sqrt(P), dtype=torch.float64))
    for k in fourier.frequencies(P):
        c, s = fourier.cos_component(k), fourier.sin_component(k)
        assert names[c] == f"cos {k}" and names[s] == f"sin {k}"
        w = 2 * math.pi * k / P
        # independent check by value: cos is even (x -> -x), sin is odd, and the frequency is k
        assert torch.allclose(F[c], torch.cos(w * x) * math.sqrt(2 / P), atol=1e-12)
        assert torch.allclose(F[s], torch.sin(w * x) * math.sqrt(2 / P), atol=1e-12)
        assert F[s][0] == 0 and F[c][0] > 0


def test_1d_round_trip_and_synthetic_signal():
    x = torch.randn(4, P, dtype=torch.float64)
    assert torch.allclose(fourier.inverse_fourier_1d(fourier.fourier_1d(x)), x, atol=1e-12)
    k, phase = 7, 0.3
    wave = torch.cos(2 * math.pi * k * torch.arange(P, dtype=torch.float64) / P + phase)
    coeffs = fourier.fourier_1d(wave)
    nonzero = (coeffs.abs() > 1e-9).nonzero().flatten().tolist()
    assert nonzero == [fourier.cos_component(k), fourier.sin_component(k)]
    # cos(wx + φ) = cos φ cos wx - sin φ sin wx
    ratio = coeffs[fourier.sin_component(k)] / coeffs[fourier.cos_component(k)]
    assert ratio.item() == pytest.approx(-math.tan(phase), rel=1e-9)


def test_1d_keeps_dtype():
    x = torch.randn(3, P)
    assert fourier.fourier_1d(x).dtype == torch.float32


def test_2d_round_trip_and_matches_matrix_form():
    X = torch.randn(P, P, 5, dtype=torch.float64)
    coeffs = fourier.fourier_2d(X)
    assert torch.allclose(fourier.inverse_fourier_2d(coeffs), X, atol=1e-11)
    F = fourier.fourier_basis(P)
    for ch in range(5):
        assert torch.allclose(coeffs[..., ch], F @ X[..., ch] @ F.T, atol=1e-12)


def test_grid_order_is_task_pair_order():
    pairs = ModularTask(P).pairs()
    grid = fourier.to_grid(pairs, P)
    a, b = torch.meshgrid(torch.arange(P), torch.arange(P), indexing="ij")
    assert torch.equal(grid[..., 0], a) and torch.equal(grid[..., 1], b)
    assert torch.equal(fourier.from_grid(grid), pairs)
    with pytest.raises(ValueError, match="grid order"):
        fourier.to_grid(pairs[:-1], P)


@pytest.mark.parametrize("k, phase", [(1, 0.0), (5, 1.1), (15, -2.0)])
def test_synthetic_sum_wave_found_at_exactly_k(k, phase):
    """cos(2πk(a+b)/p + φ) lives only in the four products cos/sin k ⊗ cos/sin k."""
    s = (torch.arange(P)[:, None] + torch.arange(P)[None, :]).double()
    X = torch.cos(2 * math.pi * k * s / P + phase)
    coeffs = fourier.fourier_2d(X)
    c, si = fourier.cos_component(k), fourier.sin_component(k)
    big = {(int(i), int(j)) for i, j in (coeffs.abs() > 1e-9).nonzero()}
    expected = {(c, c), (si, si)} if phase == 0 else {(c, c), (c, si), (si, c), (si, si)}
    assert big == expected
    names = fourier.component_names_2d(P)
    assert names[c][si] == f"a: cos {k}, b: sin {k}"
    # cos(x+y+φ) = cosφ (cos x cos y - sin x sin y) - sinφ (sin x cos y + cos x sin y)
    assert coeffs[c, c] == pytest.approx(-coeffs[si, si].item(), abs=1e-9)
    assert coeffs[c, si] == pytest.approx(coeffs[si, c].item(), abs=1e-9)
    # over the a axis alone the wave is also at frequency k only
    assert (fourier.frequency_norms(coeffs) > 1e-9).nonzero().flatten().tolist() == [k - 1]


def test_sum_directions_are_unit_and_match_basis_formula():
    F = fourier.fourier_basis(P)
    for k in (1, 4, 15):
        d = fourier.sum_directions(P, k)
        c, s = F[fourier.cos_component(k)], F[fourier.sin_component(k)]
        cos_dir = (torch.outer(c, c) - torch.outer(s, s)) / math.sqrt(2)
        sin_dir = (torch.outer(s, c) + torch.outer(c, s)) / math.sqrt(2)
        assert torch.allclose(d[0], cos_dir, atol=1e-12)
        assert torch.allclose(d[1], sin_dir, atol=1e-12)


def test_difference_directions_match_basis_formula():
    """sign=-1: cos(w(a-b)) = cos_a cos_b + sin_a sin_b, sin(w(a-b)) = sin_a cos_b - cos_a sin_b."""
    F = fourier.fourier_basis(P)
    a, b = torch.meshgrid(torch.arange(P), torch.arange(P), indexing="ij")
    for k in (1, 4, 15):
        d = fourier.sum_directions(P, k, sign=-1)
        c, s = F[fourier.cos_component(k)], F[fourier.sin_component(k)]
        assert torch.allclose(d[0], (torch.outer(c, c) + torch.outer(s, s)) / math.sqrt(2), atol=1e-12)
        assert torch.allclose(d[1], (torch.outer(s, c) - torch.outer(c, s)) / math.sqrt(2), atol=1e-12)
        # the directions of a-b are orthogonal to those of a+b
        assert (d.flatten(1) @ fourier.sum_directions(P, k).flatten(1).T).abs().max() < 1e-12
        # and they are the waves of a-b, up to their norm
        wave = torch.cos(2 * math.pi * k * (a - b).double() / P)
        assert torch.allclose(d[0], wave / wave.norm(), atol=1e-12)
    # the default is addition, exactly
    assert torch.equal(fourier.sum_directions(P, 4), fourier.sum_directions(P, 4, sign=+1))


@pytest.mark.parametrize("sign", [+1, -1])
@pytest.mark.parametrize("terms, per_k", [("sum", 2), ("all", 8)])
def test_frequency_directions_2d_orthonormal(terms, per_k, sign):
    D = fourier.frequency_directions_2d(P, [2, 9, 3], terms=terms, sign=sign)
    assert D.shape == (3 * per_k, P * P)
    assert torch.allclose(D @ D.T, torch.eye(3 * per_k, dtype=D.dtype), atol=1e-12)
    # orthogonal to the constant, so "keep" can add the mean back separately
    assert D.sum(dim=1).abs().max() < 1e-10


@pytest.mark.parametrize("sign", [+1, -1])
def test_all_terms_contain_sum_directions(sign):
    sum_d = fourier.frequency_directions_2d(P, [6], "sum", sign)
    all_d = fourier.frequency_directions_2d(P, [6], "all", sign)
    assert torch.allclose(fourier.project_onto(sum_d.T, all_d), sum_d.T, atol=1e-12)
    # the eight terms do not depend on the sign
    assert torch.equal(all_d, fourier.frequency_directions_2d(P, [6], "all"))


@pytest.mark.parametrize("bad", [0, 2, -2, True, "sub", None])
def test_a_bad_sign_is_refused(bad):
    with pytest.raises(ValueError, match="sign=.*op='add'.*op='sub'"):
        fourier.check_sign(bad)
    with pytest.raises(ValueError, match="sign="):
        fourier.frequency_directions_2d(P, [1], "sum", bad)


def test_projection_and_removal():
    x = torch.randn(P * P, 3, dtype=torch.float64)
    D = fourier.frequency_directions_2d(P, [1, 2], "all")
    proj = fourier.project_onto(x, D)
    rest = fourier.remove_span(x, D)
    assert torch.allclose(proj + rest, x, atol=1e-12)
    assert (D @ rest).abs().max() < 1e-10  # nothing of the span is left
    assert torch.allclose(fourier.project_onto(proj, D), proj, atol=1e-12)  # idempotent
    # a non-orthonormal spanning set gives the same projection
    mixed = torch.stack([D[0] + D[1], D[1], *D[2:]])
    assert torch.allclose(fourier.project_onto(x, mixed), proj, atol=1e-10)
    assert torch.equal(fourier.project_onto(x, D[:0]), torch.zeros_like(x))


def test_check_frequencies():
    assert fourier.check_frequencies([5, 1, 5], 31) == [1, 5]
    assert fourier.check_frequencies(torch.tensor([3, 2]), 31) == [2, 3]
    assert fourier.check_frequencies(4, 31) == [4]
    with pytest.raises(ValueError, match=r"frequency 16 .* 1\.\.15"):
        fourier.check_frequencies([16], 31)
    with pytest.raises(ValueError, match=r"frequency 0 .* 1\.\.15"):
        fourier.check_frequencies([0], 31)
    with pytest.raises(ValueError, match=r"frequency 2\.0 is not an integer"):
        fourier.check_frequencies([2.0], 31)
    with pytest.raises(ValueError, match="odd"):
        fourier.fourier_basis(30)
    with pytest.raises(ValueError, match="terms='sum'"):
        fourier.frequency_directions_2d(31, [1], "products")


def test_annotations_hold_at_runtime():
    x = torch.randn(2, P, dtype=torch.float64)
    checked(fourier.fourier_1d)(x)
    checked(fourier.fourier_2d)(torch.randn(P, P, 4))
    checked(fourier.frequency_norms)(torch.randn(P, 3))
    checked(fourier.frequency_directions_2d)(P, [1, 2], "all")
    with pytest.raises(TypeCheckError):
        checked(fourier.project_onto)(torch.randn(P * P, 2), torch.randn(3, P * P + 1))
