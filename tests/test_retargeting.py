"""Eye / lip open ratios measured on hand-placed 203-point landmarks."""

import numpy as np
import pytest

from runtime.retargeting import combined_eye_ratio, combined_lip_ratio, eye_close_ratio, lip_close_ratio


def face(left_open: float, right_open: float, lip_open: float) -> np.ndarray:
    lmk = np.zeros((203, 2), dtype=np.float32)
    lmk[0], lmk[12] = (10, 50), (30, 50)  # left eye corners, width 20
    lmk[6], lmk[18] = (20, 50 - left_open / 2), (20, 50 + left_open / 2)
    lmk[24], lmk[36] = (60, 50), (100, 50)  # right eye corners, width 40
    lmk[30], lmk[42] = (80, 50 - right_open / 2), (80, 50 + right_open / 2)
    lmk[48], lmk[66] = (30, 100), (80, 100)  # mouth corners, width 50
    lmk[90], lmk[102] = (55, 100 - lip_open / 2), (55, 100 + lip_open / 2)
    return lmk


def test_ratios_single_face() -> None:
    lmk = face(left_open=5, right_open=8, lip_open=10)
    eye = eye_close_ratio(lmk)
    lip = lip_close_ratio(lmk)
    assert eye.shape == (1, 2) and lip.shape == (1, 1)
    np.testing.assert_allclose(eye[0], [5 / 20, 8 / 40], rtol=1e-5)
    np.testing.assert_allclose(lip[0, 0], 10 / 50, rtol=1e-5)


def test_ratios_batched_and_closed() -> None:
    batch = np.stack([face(5, 8, 10), face(0, 0, 0), face(20, 40, 50)])
    eye = eye_close_ratio(batch)
    lip = lip_close_ratio(batch)
    np.testing.assert_allclose(eye, [[0.25, 0.2], [0, 0], [1, 1]], atol=1e-5)
    np.testing.assert_allclose(lip[:, 0], [0.2, 0, 1], atol=1e-5)


def test_ratio_is_scale_invariant() -> None:
    lmk = face(5, 8, 10)
    np.testing.assert_allclose(eye_close_ratio(lmk * 3.7), eye_close_ratio(lmk), rtol=1e-5)
    np.testing.assert_allclose(lip_close_ratio(lmk * 0.4), lip_close_ratio(lmk), rtol=1e-5)


def test_combined_features_layout() -> None:
    src_eye = np.array([[0.3, 0.35]], np.float32)
    drv_eye = np.array([[0.1, 0.9], [0.2, 0.8]], np.float32)
    eye = combined_eye_ratio(src_eye, drv_eye)
    # upstream uses only the driving left-eye ratio as the target
    np.testing.assert_allclose(eye, [[0.3, 0.35, 0.1], [0.3, 0.35, 0.2]])
    lip = combined_lip_ratio(np.array([[0.05]]), np.array([[0.0], [0.4]]))
    np.testing.assert_allclose(lip, [[0.05, 0.0], [0.05, 0.4]])
    assert eye.dtype == np.float32 and lip.dtype == np.float32


def test_bad_landmarks_named() -> None:
    with pytest.raises(ValueError, match="203-point"):
        eye_close_ratio(np.zeros((68, 2)))
