"""The RTS smoother must equal the exact posterior mean of the same Gaussian random-walk model."""

import numpy as np
import pytest

from runtime.smoothing import kalman_smooth


def closed_form_posterior_mean(z: np.ndarray, q: float, r: float, p0: float) -> np.ndarray:
    """Solve (J + I/r) x = b densely: J is the random-walk prior precision with x_0 ~ N(z_0, p0)."""
    steps = z.shape[0]
    prec = np.zeros((steps, steps))
    prec[0, 0] += 1.0 / p0
    for t in range(1, steps):
        prec[t, t] += 1.0 / q
        prec[t - 1, t - 1] += 1.0 / q
        prec[t, t - 1] -= 1.0 / q
        prec[t - 1, t] -= 1.0 / q
    prec += np.eye(steps) / r
    rhs = z / r
    rhs[0] += z[0] / p0  # prior mean = first observation
    return np.linalg.solve(prec, rhs)


@pytest.mark.parametrize(("q", "r", "p0"), [(0.1, 0.5, 1.0), (1e-5, 3e-7, 1.0), (0.02, 0.3, 0.05)])
def test_rts_matches_dense_posterior(q: float, r: float, p0: float) -> None:
    rng = np.random.default_rng(0)
    z = np.cumsum(rng.normal(scale=0.3, size=(40, 5)), axis=0) + rng.normal(scale=0.2, size=(40, 5))
    got = kalman_smooth(z, observation_variance=r, process_variance=q, initial_variance=p0)
    want = closed_form_posterior_mean(z, q, r, p0)
    assert got.shape == z.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(z).max())


def test_strong_smoothing_actually_smooths() -> None:
    rng = np.random.default_rng(1)
    z = np.sin(np.linspace(0, 3, 60))[:, None] + rng.normal(scale=0.2, size=(60, 1))
    out = kalman_smooth(z, observation_variance=1.0, process_variance=1e-3)
    assert np.abs(np.diff(out, axis=0)).mean() < 0.3 * np.abs(np.diff(z, axis=0)).mean()


def test_default_strength_barely_moves_motion() -> None:
    """Upstream default (obs 3e-7 vs process 1e-5) is a light touch: values stay within noise of the input."""
    rng = np.random.default_rng(2)
    z = rng.normal(scale=0.01, size=(30, 21, 3))
    out = kalman_smooth(z)
    assert out.shape == (30, 21, 3) and out.dtype == np.float32
    # deviation is a few percent of the frame-to-frame motion, but not zero
    assert np.abs(out - z).mean() < 0.15 * np.abs(np.diff(z, axis=0)).mean()
    assert not np.allclose(out, z, atol=1e-7)


def test_constant_and_single_step() -> None:
    z = np.full((10, 4), 0.25)
    np.testing.assert_allclose(kalman_smooth(z, 0.1), z, atol=1e-7)
    one = np.array([[1.0, -2.0]])
    np.testing.assert_allclose(kalman_smooth(one), one, atol=1e-6)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="time step"):
        kalman_smooth(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="variances"):
        kalman_smooth(np.zeros((3, 3)), observation_variance=0.0)
