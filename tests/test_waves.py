"""Stars and waves (mechgrok/analysis/waves.py): per-neuron DFT against numpy's FFT, frequencies and
groups, star points of the exact circle, group logits, and the wave fit on pure, offset, noisy and
constructed contributions."""

import math

import numpy as np
import pytest
import torch

from mechgrok.analysis import constructions, waves

P = 67
K = (P - 1) // 2
X = torch.arange(P, dtype=torch.float64)


def checked(fn):
    """Run ``fn`` with its jaxtyping annotations checked at runtime."""
    from beartype import beartype
    from jaxtyping import jaxtyped

    return jaxtyped(typechecker=beartype)(fn)


def a_plus_b_minus_c(p):
    r = torch.arange(p, dtype=torch.float64)
    return r[:, None, None] + r[None, :, None] - r[None, None, :]


def multi_frequency_mlp(ks=(4, 7), n=5):
    """A hand-made explorable MLP: one circle of n neurons per frequency k, ReLU, W_out rotating twice as fast.

    Returns the in weights E W_in [p, neuron], the map W_L = W_out Eᵀ [neuron, c], and the
    activations on all p² inputs in grid order [p², neuron].
    """
    w = 2 * math.pi / P
    E = torch.cat([torch.stack([torch.cos(k * w * X), torch.sin(k * w * X)], 1) for k in ks], 1)  # [p, 2·len(ks)]
    _, W_in1, W_out1 = constructions.construction_weights(P, n)
    W_in = torch.block_diag(*[W_in1] * len(ks))  # [2·len(ks), neuron]
    W_out = torch.block_diag(*[W_out1] * len(ks))  # [neuron, 2·len(ks)]
    h = E @ W_in
    acts = torch.relu(h[:, None, :] + h[None, :, :]).reshape(P * P, -1)
    return h, W_out @ E.T, acts


# ----------------------------------------------------------------------------- the DFT
def test_neuron_dft_of_pure_cosines():
    ks = torch.tensor([1, 4, 33], dtype=torch.float64)
    amp = torch.tensor([1.0, 2.5, 0.3], dtype=torch.float64)
    phase = torch.tensor([0.0, 1.2, -2.0], dtype=torch.float64)
    weights = amp * torch.cos(2 * math.pi * ks * X[:, None] / P - phase) + 7.0  # a constant too
    coeffs = waves.neuron_dft(weights)
    assert coeffs.shape == (3, K, 2)
    for n in range(3):
        k = int(ks[n])
        want = amp[n] * math.sqrt(P / 2) * torch.stack([torch.cos(phase[n]), torch.sin(phase[n])])
        assert torch.allclose(coeffs[n, k - 1], want, atol=1e-12)
        others = torch.cat([coeffs[n, : k - 1], coeffs[n, k:]])
        assert others.abs().max() < 1e-12  # the constant is dropped, other frequencies are 0


def test_neuron_dft_matches_numpy_fft():
    weights = torch.randn(P, 6, dtype=torch.float64)
    coeffs = waves.neuron_dft(weights).numpy()
    F = np.fft.fft(weights.numpy(), axis=0)[1 : K + 1].T  # [neuron, k]: Σ_x w(x) e^{-2πikx/p}
    assert np.allclose(coeffs[..., 0], math.sqrt(2 / P) * F.real, atol=1e-12)
    assert np.allclose(coeffs[..., 1], -math.sqrt(2 / P) * F.imag, atol=1e-12)


def test_neuron_dft_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"expected \[p, neuron\]"):
        waves.neuron_dft(torch.zeros(P))
    with pytest.raises(ValueError, match="p=8 must be an odd integer"):
        waves.neuron_dft(torch.zeros(8, 3))


# ----------------------------------------------------------------------------- frequencies and groups
def test_frequencies_are_the_largest_pair():
    weights = torch.stack([
        torch.cos(2 * math.pi * 5 * X / P) + 0.3 * torch.sin(2 * math.pi * 9 * X / P),
        0.2 * torch.cos(2 * math.pi * 5 * X / P) + torch.sin(2 * math.pi * 26 * X / P),
        torch.sin(2 * math.pi * 9 * X / P),
    ], 1)
    freqs = waves.neuron_frequencies(waves.neuron_dft(weights))
    assert freqs.tolist() == [5, 26, 9] and freqs.dtype == torch.int64
    assert waves.frequency_groups(freqs) == {5: [0], 9: [2], 26: [1]}
    assert list(waves.frequency_groups(torch.tensor([7, 4, 7, 4]))) == [4, 7]


def test_out_coefficients_can_decide_the_frequency():
    inp = torch.stack([torch.cos(2 * math.pi * 3 * X / P) + 0.9 * torch.cos(2 * math.pi * 8 * X / P)], 1)
    out = torch.stack([torch.cos(2 * math.pi * 8 * X / P)], 1)
    cin, cout = waves.neuron_dft(inp), waves.neuron_dft(out)
    assert waves.neuron_frequencies(cin).tolist() == [3]
    assert waves.neuron_frequencies(cin, cout).tolist() == [8]
    with pytest.raises(ValueError, match="both must be neuron_dft of the same neurons"):
        waves.neuron_frequencies(cin, waves.neuron_dft(torch.zeros(P, 2)))
    with pytest.raises(ValueError, match=r"expected \[neuron, freq, 2\]"):
        waves.neuron_frequencies(torch.zeros(3, K))


# ----------------------------------------------------------------------------- stars
def test_star_points_of_the_circle_are_the_neuron_angles():
    """The exact circle: in-points at angle iθ, out-points at 2iθ, all on frequency 1 with one norm."""
    N = 5
    E, W_in, W_out = constructions.construction_weights(P, N)
    cin, cout = waves.neuron_dft(E @ W_in), waves.neuron_dft((W_out @ E.T).T)
    groups = waves.frequency_groups(waves.neuron_frequencies(cin, cout))
    assert groups == {1: list(range(N))}
    stars = waves.star_points({"in": cin, "out": cout}, groups)
    assert list(stars.columns) == ["which", "frequency", "neuron", "cos", "sin", "norm", "angle"]
    assert len(stars) == 2 * N and set(stars.which) == {"in", "out"}
    theta = 2 * math.pi / N
    for side, turns in (("in", 1), ("out", 2)):
        rows = stars[stars.which == side]
        want = np.angle(np.exp(1j * turns * theta * rows.neuron.to_numpy()))
        got = rows.angle.to_numpy()
        assert np.abs(np.angle(np.exp(1j * (got - want)))).max() < 1e-12
        assert np.allclose(rows.norm, math.sqrt(P / 2), atol=1e-12)
    one_side = waves.star_points(cin, groups, which="in")
    assert one_side.equals(stars[stars.which == "in"].reset_index(drop=True))


def test_star_points_refuse_groups_from_elsewhere():
    cin = waves.neuron_dft(torch.randn(P, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"group 2 names neurons \[5\], out of range 0..2"):
        waves.star_points(cin, {2: [0, 5]})
    with pytest.raises(ValueError, match="group frequency 40 is out of range 1..33"):
        waves.star_points(cin, {40: [0]})


# ----------------------------------------------------------------------------- group logits
def test_group_logits_split_the_logits():
    neurons = torch.rand(20, 6, dtype=torch.float64)
    W_L = torch.randn(6, P, dtype=torch.float64)
    groups = {3: [0, 4], 5: [1, 2, 3], 9: [5]}
    parts = waves.group_logits(neurons, W_L, groups)
    assert list(parts) == [3, 5, 9]
    assert torch.allclose(sum(parts.values()), neurons @ W_L, atol=1e-12)
    assert torch.allclose(parts[3], neurons[:, 0:1] @ W_L[0:1] + neurons[:, 4:5] @ W_L[4:5], atol=1e-12)
    with pytest.raises(ValueError, match="the same number of neurons"):
        waves.group_logits(neurons, W_L[:5], groups)
    with pytest.raises(ValueError, match=r"names neurons \[6\]"):
        waves.group_logits(neurons, W_L, {3: [6]})


# ----------------------------------------------------------------------------- wave fit
def test_wave_fit_recovers_a_pure_wave():
    k, amp, phase = 5, 3.0, 0.7
    y = amp * torch.cos(2 * math.pi * k * a_plus_b_minus_c(P) / P - phase) + 5.0
    fit = waves.wave_fit(y.reshape(P * P, P), k, P)
    assert fit.amplitude == pytest.approx(amp, abs=1e-10)
    assert fit.phase == pytest.approx(phase, abs=1e-10)
    assert fit.constant == pytest.approx(5.0, abs=1e-10)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12) and fit.r2_centred == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(fit.fitted, y.reshape(P * P, P), atol=1e-10)
    assert list(fit.table().columns) == ["k", "p", "alpha", "beta", "constant", "amplitude", "phase", "r2", "r2_centred"]
    assert waves.wave_fit(y.reshape(P * P, P), k + 1, P).r2 < 1e-10  # the wrong frequency explains nothing


def test_a_per_input_offset_changes_r2_but_not_the_wave():
    k = 4
    wave = 2.0 * torch.cos(2 * math.pi * k * a_plus_b_minus_c(P) / P)
    offset = torch.randn(P, P, 1, dtype=torch.float64)  # a function of (a, b) only
    fit = waves.wave_fit((wave + offset).reshape(P * P, P), k, P)
    assert fit.amplitude == pytest.approx(2.0, abs=1e-10)
    assert fit.r2_centred == pytest.approx(1.0, abs=1e-12)
    assert 0.3 < fit.r2 < 0.95  # the offset is variance the wave does not explain


def test_noise_is_not_a_wave():
    g = torch.Generator().manual_seed(1)
    fit = waves.wave_fit(torch.randn(P * P, P, generator=g, dtype=torch.float64), 3, P)
    assert fit.r2 < 0.01 and fit.r2_centred < 0.01
    assert fit.amplitude < 0.05  # noise of std 1 has ~sqrt(2/p³) of it on any one wave


def test_x2_circle_is_two_thirds_wave():
    """N cos²((a−b)ω/2) cos((a+b−c)ω) = N/2 cos((a+b−c)ω) + N/4 [cos((2a−c)ω) + cos((2b−c)ω)]."""
    M, N = 31, 5
    L = constructions.construction_logits(M, N, "x2").reshape(M * M, M)
    fit = waves.wave_fit(L, 1, M)
    assert fit.amplitude == pytest.approx(N / 2, abs=1e-10) and abs(fit.phase) < 1e-10
    assert fit.r2 == pytest.approx(2 / 3, abs=1e-10)


def test_each_group_of_a_multi_frequency_mlp_computes_its_wave():
    ks = (4, 7)
    h, W_L, acts = multi_frequency_mlp(ks)
    freqs = waves.neuron_frequencies(waves.neuron_dft(h), waves.neuron_dft(W_L.T))
    groups = waves.frequency_groups(freqs)
    assert groups == {4: [0, 1, 2, 3, 4], 7: [5, 6, 7, 8, 9]}
    parts = waves.group_logits(acts, W_L, groups)
    for k in ks:
        own = waves.wave_fit(parts[k], k, P)
        assert own.amplitude > 0.1 and own.r2_centred > 0.5 and abs(own.phase) < 1e-8
        other = waves.wave_fit(parts[k], ks[0] + ks[1] - k, P)
        assert other.r2_centred < 1e-10


def test_wave_fit_refuses_bad_inputs():
    with pytest.raises(ValueError, match=r"expected \[p², c\] = \[49, 7\] for p=7"):
        waves.wave_fit(torch.zeros(7, 7), 1, 7)
    with pytest.raises(ValueError, match="frequency 4 is out of range for p=7"):
        waves.wave_fit(torch.zeros(49, 7), 4, 7)


# ----------------------------------------------------------------------------- annotations
def test_annotations_hold_at_runtime():
    from jaxtyping import TypeCheckError

    weights = torch.randn(P, 4, dtype=torch.float64)
    coeffs = checked(waves.neuron_dft)(weights)
    checked(waves.neuron_frequencies)(coeffs, coeffs)
    checked(waves.group_logits)(torch.rand(9, 4), torch.randn(4, P), {1: [0, 1]})
    with pytest.raises(TypeCheckError):  # in and out must describe the same neurons
        checked(waves.neuron_frequencies)(coeffs, coeffs[:3])
