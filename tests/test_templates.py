"""Motion templates: pickle-free .npz round trip, refusal of untrusted pickles, conversion of the official layout."""

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runtime.motion import KpInfo, MotionComposer, transform_keypoints
from runtime.options import AnimationOptions
from runtime.templates import (
    FORMAT_VERSION,
    Template,
    UntrustedPickleError,
    load_template,
    save_template,
)


def sample_info(n: int, seed: int = 0) -> KpInfo:
    rng = np.random.default_rng(seed)
    return KpInfo(
        scale=rng.uniform(1, 2, (n, 1)),
        t=rng.normal(size=(n, 3)) * 0.05,
        exp=rng.normal(size=(n, 21, 3)) * 0.02,
        kp=rng.uniform(-0.5, 0.5, (n, 21, 3)),
        pitch=rng.uniform(-20, 20, (n, 1)),
        yaw=rng.uniform(-20, 20, (n, 1)),
        roll=rng.uniform(-20, 20, (n, 1)),
    )


def sample_template(n: int = 4) -> Template:
    rng = np.random.default_rng(1)
    return Template.from_kp_info(
        sample_info(n), eye_ratio=rng.uniform(0, 0.4, (n, 2)), lip_ratio=rng.uniform(0, 0.5, (n, 1)), fps=29.97
    )


def upstream_dict(info: KpInfo, legacy_keys: bool = False) -> dict:
    """The official make_motion_template layout: per-frame dicts of 1×… float32 arrays."""
    n = len(info)
    x_s = transform_keypoints(info)
    motion = []
    for i in range(n):
        item = {
            "scale": info.scale[i : i + 1],
            ("R_d" if legacy_keys else "R"): info.rot[i : i + 1],
            "exp": info.exp[i : i + 1],
            "t": info.t[i : i + 1],
        }
        if not legacy_keys:
            item.update(kp=info.kp[i : i + 1], x_s=x_s[i : i + 1])
        motion.append(item)
    eyes = [np.full((1, 2), 0.1 * i, np.float32) for i in range(n)]
    lips = [np.full((1, 1), 0.2 * i, np.float32) for i in range(n)]
    out = {"n_frames": n, "output_fps": 30, "motion": motion}
    out.update({"c_d_eyes_lst": eyes, "c_d_lip_lst": lips} if legacy_keys else {"c_eyes_lst": eyes, "c_lip_lst": lips})
    return out


def test_npz_round_trip(tmp_path: Path) -> None:
    tpl = sample_template()
    path = save_template(tmp_path / "drive", tpl)
    assert path.name == "drive.npz"
    back = load_template(path)
    assert back.n_frames == 4 and back.fps == pytest.approx(29.97)
    for name in ("scale", "R", "exp", "t", "kp", "x_s", "eye_ratio", "lip_ratio"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tpl, name))
    # nothing in the file needs pickle
    with np.load(path, allow_pickle=False) as data:
        assert int(data["format_version"]) == FORMAT_VERSION
        assert all(data[k].dtype != object for k in data.files)


def test_template_drives_composer_like_live_extraction() -> None:
    src = sample_info(1, seed=5)
    drv = sample_info(6, seed=6)
    tpl = Template.from_kp_info(drv, np.zeros((6, 2)), np.zeros((6, 1)), fps=25)
    o = AnimationOptions(flag_stitching=False)
    live = MotionComposer(src, o).compose(drv)
    from_tpl = MotionComposer(src, o).compose(tpl.to_kp_info())
    np.testing.assert_allclose(from_tpl, live, atol=1e-6)


def test_pickle_refused_without_trust(tmp_path: Path) -> None:
    path = tmp_path / "d0.pkl"
    path.write_bytes(pickle.dumps(upstream_dict(sample_info(3))))
    with pytest.raises(UntrustedPickleError, match="--trust-pickle") as err:
        load_template(path)
    assert "arbitrary code" in str(err.value)


@pytest.mark.parametrize("legacy", [False, True])
def test_trusted_upstream_pickle_is_converted(tmp_path: Path, legacy: bool) -> None:
    info = sample_info(3, seed=9)
    path = tmp_path / "d0.pkl"
    path.write_bytes(pickle.dumps(upstream_dict(info, legacy_keys=legacy)))
    tpl = load_template(path, trust_pickle=True)
    assert tpl.n_frames == 3 and tpl.fps == 30.0
    np.testing.assert_allclose(tpl.R, info.rot)
    np.testing.assert_allclose(tpl.exp, info.exp)
    np.testing.assert_allclose(tpl.eye_ratio[:, 0], [0.0, 0.1, 0.2], atol=1e-7)
    np.testing.assert_allclose(tpl.lip_ratio[:, 0], [0.0, 0.2, 0.4], atol=1e-7)
    if legacy:
        assert tpl.kp is None and tpl.x_s is None
    else:
        np.testing.assert_allclose(tpl.x_s, transform_keypoints(info), atol=1e-6)
    # converting then saving gives a safe file with the same content
    safe = load_template(save_template(tmp_path / "d0.npz", tpl))
    np.testing.assert_array_equal(safe.exp, tpl.exp)


def test_bad_files_are_explained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_template(tmp_path / "missing.npz")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="not a motion template"):
        load_template(txt)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a liveportrait-onnx"):
        load_template(other)
    # a future version is refused by number
    path = save_template(tmp_path / "v.npz", sample_template())
    with np.load(path) as data:
        content = {k: data[k] for k in data.files}
    content["format_version"] = np.array(FORMAT_VERSION + 1)
    np.savez(path, **content)
    with pytest.raises(ValueError, match="version 2"):
        load_template(path)
    assert zipfile.is_zipfile(path)


def test_inconsistent_arrays_rejected(tmp_path: Path) -> None:
    tpl = sample_template(4)
    with pytest.raises(ValueError, match="number of frames"):
        Template(scale=tpl.scale[:3], R=tpl.R, exp=tpl.exp, t=tpl.t, eye_ratio=tpl.eye_ratio, lip_ratio=tpl.lip_ratio)
    path = tmp_path / "bad.pkl"
    bad = upstream_dict(sample_info(2))
    bad["n_frames"] = 5
    path.write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match="n_frames=5"):
        load_template(path, trust_pickle=True)
