"""Kalman (RTS) smoothing of per-frame motion for video→video, numpy only.

The official pipeline smooths with pykalman's defaults plus two variances: a random-walk state per flattened value
(identity transition and observation), process noise 1e-5·I, observation noise ``observation_variance``·I, the first
observation as initial mean and identity initial covariance, no transition before the first observation. Because
every covariance is a multiple of the identity, all D values follow the same scalar gain sequence, so the whole
T×D series is smoothed at once.

In v2v the smoothed quantities are the composed expression (T×63) and, when the head pose is animated, the composed
rotation matrix (T×9, not re-orthonormalised).
"""

from __future__ import annotations

import numpy as np

from runtime.options import SMOOTH_PROCESS_VARIANCE


def kalman_smooth(
    series: np.ndarray,
    observation_variance: float = 3e-7,
    process_variance: float = SMOOTH_PROCESS_VARIANCE,
    initial_variance: float = 1.0,
) -> np.ndarray:
    """Posterior mean of the random-walk model given all T observations: T×D (or T×...) in, same shape out."""
    obs = np.asarray(series, dtype=np.float64)
    if obs.ndim < 1 or obs.shape[0] == 0:
        raise ValueError(f"kalman_smooth needs at least one time step, got shape {obs.shape}")
    if observation_variance <= 0 or process_variance < 0 or initial_variance <= 0:
        raise ValueError("kalman_smooth variances must be positive (process may be 0)")
    shape = obs.shape
    z = obs.reshape(shape[0], -1)
    steps = z.shape[0]

    # forward pass: scalar variances are data independent
    p_pred = np.empty(steps)
    p_filt = np.empty(steps)
    m_filt = np.empty_like(z)
    mean = z[0]
    var = float(initial_variance)
    for t in range(steps):
        if t > 0:
            var = p_filt[t - 1] + process_variance
            mean = m_filt[t - 1]
        p_pred[t] = var
        gain = var / (var + observation_variance)
        m_filt[t] = mean + gain * (z[t] - mean)
        p_filt[t] = (1.0 - gain) * var

    # backward (Rauch-Tung-Striebel) pass
    m_smooth = np.empty_like(z)
    m_smooth[-1] = m_filt[-1]
    for t in range(steps - 2, -1, -1):
        back_gain = p_filt[t] / p_pred[t + 1]
        m_smooth[t] = m_filt[t] + back_gain * (m_smooth[t + 1] - m_filt[t])
    return m_smooth.reshape(shape).astype(np.float32)
