"""Face detection (SCRFD) and landmarks (106 insightface points, 203 LivePortrait points) on ONNX sessions."""

from runtime.faces.landmark106 import Landmark106
from runtime.faces.landmark203 import Landmark203
from runtime.faces.nms import nms
from runtime.faces.scrfd import Face, FaceDetector, decode_scrfd, letterbox, sort_faces

__all__ = ["Face", "FaceDetector", "Landmark106", "Landmark203", "decode_scrfd", "letterbox", "nms", "sort_faces"]
