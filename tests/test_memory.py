"""A long driving video is streamed: memory stays flat between frame 60 and frame 300.

The networks are swapped for numpy stand-ins (300 frames through the real warp graph would take ~25 min on a
CPU); decoding, prefetching, batching, motion composition, paste-back, the async writer and H.264 encoding all run
for real, and those are what could hold on to frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import runtime.api
from runtime.api import LivePortrait
from runtime.media import VideoReader, VideoWriter
from runtime.motion import NUM_KP, KpInfo
from runtime.stages import Stages
from tests.test_pipeline import SOURCE, cheap_images

FRAMES = 300
CHECKPOINTS = (60, FRAMES)
CANONICAL_KP = np.random.default_rng(0).uniform(-0.4, 0.4, (1, NUM_KP, 3)).astype(np.float32)


def vm_rss_mb() -> float:
    """Resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cheap_motion(stages: Stages, images_256: np.ndarray) -> KpInfo:
    """Motion stand-in: canonical keypoints fixed, a small head yaw that follows the frame brightness."""
    n = len(images_256)
    yaw = np.asarray(images_256, np.float32).reshape(n, -1).mean(axis=1, keepdims=True) / 25.0
    zeros = np.zeros((n, 1), np.float32)
    return KpInfo(scale=np.full((n, 1), 1.5, np.float32), t=np.zeros((n, 3), np.float32),
                  exp=np.zeros((n, NUM_KP, 3), np.float32), kp=np.repeat(CANONICAL_KP, n, axis=0),
                  pitch=zeros, yaw=yaw, roll=zeros)


def test_long_video_streams_in_constant_memory(models_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    driving = tmp_path / "long.mp4"
    y, x = np.mgrid[0:128, 0:128]
    with VideoWriter(driving, 25) as writer:
        for i in range(FRAMES):
            writer.write(np.stack([(x + 3 * i) % 256, y * 2, np.full_like(x, i % 256)], -1).astype(np.uint8))
    source = SOURCE  # 512² output frames: keeping the 240 frames between the checkpoints would hold 180 MB

    rss: dict[int, float] = {}

    class MeasuringWriter(VideoWriter):
        def write(self, rgb: np.ndarray) -> None:
            super().write(rgb)
            if self.frames_written in CHECKPOINTS:
                rss[self.frames_written] = vm_rss_mb()

    monkeypatch.setattr(runtime.api, "VideoWriter", MeasuringWriter)
    monkeypatch.setattr(Stages, "motion", cheap_motion)
    monkeypatch.setattr(Stages, "warp_decode", lambda self, feature, kp_s, kp_d: cheap_images(kp_d))
    engine = LivePortrait(models_dir, device="cpu")
    result = engine.animate(source, driving, output_dir=tmp_path / "out", batch_size=4, write_concat=False,
                            progress=False)
    assert result.frames == FRAMES
    assert set(rss) == set(CHECKPOINTS)
    growth = rss[FRAMES] - rss[60]
    print(f"VmRSS after frame 60: {rss[60]:.1f} MB, after frame {FRAMES}: {rss[FRAMES]:.1f} MB (+{growth:.1f} MB)")
    assert growth < 40, f"memory grew by {growth:.1f} MB over {FRAMES - 60} frames: frames are being kept"
    with VideoReader(result.paths[0]) as reader:
        assert reader.frame_count == FRAMES and (reader.width, reader.height) == (512, 512)
