"""The network stages of the pipeline as plain numpy-in / numpy-out calls on the loaded graphs.

On CUDA the source's feature volume (8 MB a frame) is uploaded once and stays on the GPU, repeated to the batch
size, so per-frame traffic is only keypoints in and the decoded image out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.motion import KpInfo
from runtime.sessions import GraphRunner, ModelSet


def to_network_input(images_rgb: np.ndarray) -> np.ndarray:
    """N×256×256×3 uint8 RGB → N×3×256×256 float32 in [0, 1]."""
    x = np.asarray(images_rgb, dtype=np.float32) / 255.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def to_uint8_images(images: np.ndarray) -> np.ndarray:
    """N×3×H×W float in [0, 1] → N×H×W×3 uint8 (clip, scale, truncate as the official parse_output)."""
    x = np.clip(np.asarray(images, dtype=np.float32).transpose(0, 2, 3, 1), 0.0, 1.0)
    return (x * 255.0).astype(np.uint8)


class Stages:
    """Motion, appearance, warp+decode and the three MLPs, on one ModelSet."""

    def __init__(self, models: ModelSet) -> None:
        self.models = models
        self._paste_runner: GraphRunner | None = None
        self._paste_checked = False

    def motion(self, images_256: np.ndarray) -> KpInfo:
        """Motion graph on N 256² RGB crops → KpInfo (angles in degrees)."""
        out = self.models.run("motion_extractor", {"image": to_network_input(images_256)})
        return KpInfo.from_outputs(out)

    def appearance(self, image_256: np.ndarray) -> SourceFeature:
        """Appearance graph on one or more 256² RGB crops; the result stays on the GPU on CUDA."""
        batch = image_256[None] if image_256.ndim == 3 else image_256
        out = self.models.run("appearance_feature_extractor", {"image": to_network_input(batch)},
                              keep_on_device=("feature_3d",))
        return SourceFeature(out["feature_3d"])

    def warp_decode(self, feature: SourceFeature, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
        """Generate N 512² RGB uint8 images from one source feature (or N of them) and N keypoint pairs."""
        feeds = _warp_feeds(feature, kp_source, kp_driving)
        if getattr(self.models, "split", False):  # two halves: the decoder may run at reduced precision
            warped = self.models.run("warping", feeds)["warped"]
            return to_uint8_images(self.models.run("spade_decoder", {"warped": warped})["image"])
        return to_uint8_images(self.models.run("warping_spade", feeds)["image"])

    def warp_decode_on_device(self, feature: SourceFeature, kp_source: np.ndarray, kp_driving: np.ndarray) -> Any:
        """As warp_decode, but the raw N×3×512×512 float image stays on the GPU on CUDA (for paste_back.onnx)."""
        feeds = _warp_feeds(feature, kp_source, kp_driving)
        return self.models.run("warping_spade", feeds, keep_on_device=("image",))["image"]

    def paste_runner(self) -> GraphRunner | None:
        """paste_back.onnx on CUDA when the models folder has it (loaded once); None means paste back with numpy."""
        if not self._paste_checked:
            from runtime.paste_back_gpu import load_paste_runner

            self._paste_runner = load_paste_runner(self.models)
            self._paste_checked = True
        return self._paste_runner

    def _mlp(self, graph: str, feat: np.ndarray) -> np.ndarray:
        return self.models.run(graph, {"feat": np.ascontiguousarray(feat, np.float32)})["delta"]

    def stitching(self, feat: np.ndarray) -> np.ndarray:
        return self._mlp("stitching", feat)

    def eye(self, feat: np.ndarray) -> np.ndarray:
        return self._mlp("eye_retargeting", feat)

    def lip(self, feat: np.ndarray) -> np.ndarray:
        return self._mlp("lip_retargeting", feat)


def _warp_feeds(feature: SourceFeature, kp_source: np.ndarray, kp_driving: np.ndarray) -> dict[str, Any]:
    """Warping-graph inputs: the feature repeated to the batch, one source keypoint set per driving one."""
    kp_source = np.ascontiguousarray(np.broadcast_to(kp_source, kp_driving.shape), dtype=np.float32)
    return {"feature_3d": feature.batch(len(kp_driving)), "kp_driving": np.ascontiguousarray(kp_driving, np.float32),
            "kp_source": kp_source}


class SourceFeature:
    """A source's 1×32×16×64×64 feature (numpy, or an OrtValue on the GPU), repeated to batch sizes on demand."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self._batches: dict[int, Any] = {}

    @property
    def on_device(self) -> bool:
        return not isinstance(self.value, np.ndarray)

    def numpy(self) -> np.ndarray:
        return self.value if isinstance(self.value, np.ndarray) else self.value.numpy()

    def batch(self, n: int) -> Any:
        """The feature repeated n times (cached per n; uploaded once per n on the GPU)."""
        if n not in self._batches:
            base = self.numpy()
            if base.shape[0] == n:
                self._batches[n] = self.value
            else:
                if base.shape[0] != 1:
                    raise ValueError(f"a feature batch of {base.shape[0]} cannot be repeated to {n}")
                data = np.ascontiguousarray(np.repeat(base, n, axis=0))
                if self.on_device:
                    import onnxruntime as ort

                    data = ort.OrtValue.ortvalue_from_numpy(data, "cuda", 0)
                self._batches[n] = data
        return self._batches[n]
