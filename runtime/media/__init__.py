"""Media input/output for the torch-free runtime: probing, images, streamed video read/write with audio."""

from .errors import MediaError
from .images import load_image_rgb, write_image_rgb
from .paths import animation_paths, ensure_writable_folder
from .probe import MediaInfo, probe_media
from .reader import VideoReader
from .writer import VideoWriter, pad_to_even

__all__ = [
    "MediaError",
    "MediaInfo",
    "VideoReader",
    "VideoWriter",
    "animation_paths",
    "ensure_writable_folder",
    "load_image_rgb",
    "pad_to_even",
    "probe_media",
    "write_image_rgb",
]
