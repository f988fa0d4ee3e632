"""X-Pose (UniPose, Swin-T), the animal keypoint detector, in our own traceable PyTorch."""

from .unipose import XPose

__all__ = ["XPose"]
