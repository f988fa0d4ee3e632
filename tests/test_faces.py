"""SCRFD decoding, NMS, letterboxing and landmark crop geometry against independent references."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from runtime.faces import Face, FaceDetector, Landmark106, Landmark203, decode_scrfd, letterbox, nms, sort_faces

STRIDES = (8, 16, 32)


# ---------------------------------------------------------------------------------------------------------------
# straightforward loop references
# ---------------------------------------------------------------------------------------------------------------
def ref_iou_plus_one(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter)


def ref_nms(boxes, scores, thresh) -> list[int]:
    remaining = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    while remaining:
        best = remaining.pop(0)
        kept.append(best)
        remaining = [i for i in remaining if ref_iou_plus_one(boxes[best], boxes[i]) <= thresh]
    return kept


def ref_decode(groups, in_h, in_w, det_scale, thresh, nms_thresh):
    """groups: {stride: (scores N×1, dist N×4, kps N×10)} with 2 anchors per cell."""
    cand = []
    for stride, (scores, dist, kps) in groups.items():
        rows, cols = in_h // stride, in_w // stride
        for y in range(rows):
            for x in range(cols):
                for a in range(2):
                    i = (y * cols + x) * 2 + a
                    if scores[i, 0] < thresh:
                        continue
                    cx, cy = x * stride, y * stride
                    d = dist[i] * stride
                    box = [
                        (cx - d[0]) / det_scale,
                        (cy - d[1]) / det_scale,
                        (cx + d[2]) / det_scale,
                        (cy + d[3]) / det_scale,
                    ]
                    pts = [
                        ((cx + kps[i, 2 * k] * stride) / det_scale, (cy + kps[i, 2 * k + 1] * stride) / det_scale)
                        for k in range(5)
                    ]
                    cand.append((float(scores[i, 0]), box, pts))
    keep = ref_nms([c[1] for c in cand], [c[0] for c in cand], nms_thresh)
    return [cand[i] for i in keep]


def place_faces(in_h, in_w, faces):
    """Synthetic raw outputs: each face = (stride, cell_x, cell_y, anchor, score, box_xyxy, kps 5×2) in input px."""
    groups = {}
    for s in STRIDES:
        n = (in_h // s) * (in_w // s) * 2
        groups[s] = (np.zeros((n, 1), np.float32), np.zeros((n, 4), np.float32), np.zeros((n, 10), np.float32))
    rng = np.random.default_rng(3)
    for s in STRIDES:  # background noise below any threshold used here
        groups[s][0][:, 0] = rng.uniform(0, 0.1, size=groups[s][0].shape[0])
        groups[s][1][:] = rng.uniform(0, 3, size=groups[s][1].shape)
    for stride, gx, gy, anchor, score, box, kps in faces:
        cols = in_w // stride
        i = (gy * cols + gx) * 2 + anchor
        cx, cy = gx * stride, gy * stride
        groups[stride][0][i, 0] = score
        groups[stride][1][i] = [
            (cx - box[0]) / stride,
            (cy - box[1]) / stride,
            (box[2] - cx) / stride,
            (box[3] - cy) / stride,
        ]
        groups[stride][2][i] = ((np.asarray(kps, np.float32) - [cx, cy]) / stride).reshape(-1)
    return groups


def flat_outputs(groups):
    return [groups[s][0] for s in STRIDES] + [groups[s][1] for s in STRIDES] + [groups[s][2] for s in STRIDES]


def kps_for(box):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return [
        (x1 + 0.3 * w, y1 + 0.4 * h),
        (x1 + 0.7 * w, y1 + 0.4 * h),
        (x1 + 0.5 * w, y1 + 0.6 * h),
        (x1 + 0.35 * w, y1 + 0.8 * h),
        (x1 + 0.65 * w, y1 + 0.8 * h),
    ]


FACES = [
    (32, 5, 4, 0, 0.97, (100.0, 60.0, 260.0, 250.0)),  # big face
    (16, 10, 8, 1, 0.90, (104.0, 64.0, 262.0, 246.0)),  # near-duplicate of the big one → suppressed
    (8, 40, 30, 0, 0.80, (300.0, 220.0, 350.0, 280.0)),  # small face
    (8, 41, 30, 1, 0.60, (330.0, 225.0, 380.0, 285.0)),  # overlaps the small one partly (IoU < 0.4) → kept
    (16, 3, 25, 0, 0.12, (20.0, 380.0, 80.0, 450.0)),  # below det_thresh 0.15 → dropped
    (32, 12, 1, 1, 0.50, (360.0, 10.0, 420.0, 70.0)),  # another face
]


@pytest.fixture()
def synthetic():
    faces = [f + (kps_for(f[5]),) for f in FACES]
    return place_faces(480, 448, faces)


# ---------------------------------------------------------------------------------------------------------------
def test_nms_matches_loop_reference():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, size=(60, 2))
    wh = rng.uniform(10, 80, size=(60, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.permutation(60).astype(np.float32) / 60
    for thresh in (0.2, 0.4, 0.7):
        kept = nms(boxes, scores, thresh).tolist()
        assert kept == ref_nms(boxes.tolist(), scores.tolist(), thresh)
        assert 1 < len(kept) < 60


def test_decode_matches_loop_reference(synthetic):
    det_scale = 0.625
    got = decode_scrfd(flat_outputs(synthetic), (480, 448), det_scale, 0.15, 0.4)
    want = ref_decode(synthetic, 480, 448, det_scale, 0.15, 0.4)
    assert len(got) == len(want) == 4  # duplicate suppressed, low score dropped
    for face, (score, box, pts) in zip(got, want, strict=True):
        assert face.score == pytest.approx(score)
        np.testing.assert_allclose(face.bbox, box, atol=1e-3)
        np.testing.assert_allclose(face.kps, pts, atol=1e-3)
    # the boxes we planted come back (scaled to the original image), best score first
    expected = [FACES[0], FACES[2], FACES[3], FACES[5]]
    for face, planted in zip(got, expected, strict=True):
        np.testing.assert_allclose(face.bbox, np.asarray(planted[5]) / det_scale, atol=1e-3)
        np.testing.assert_allclose(face.kps, np.asarray(kps_for(planted[5])) / det_scale, atol=1e-3)


def test_decode_reads_shapes_not_order_or_batch_axis(synthetic):
    ref = decode_scrfd(flat_outputs(synthetic), (480, 448), 1.0, 0.15, 0.4)
    shuffled = flat_outputs(synthetic)
    order = np.random.default_rng(1).permutation(9)
    permuted = [shuffled[i][None] for i in order]  # also with a leading batch axis of 1
    got = decode_scrfd(permuted, (480, 448), 1.0, 0.15, 0.4)
    assert [f.score for f in got] == [f.score for f in ref]
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a.bbox, b.bbox)


def test_decode_thresholds(synthetic):
    assert len(decode_scrfd(flat_outputs(synthetic), (480, 448), 1.0, 0.99, 0.4)) == 0
    low = decode_scrfd(flat_outputs(synthetic), (480, 448), 1.0, 0.11, 0.4)
    assert 0.12 in [pytest.approx(f.score) for f in low]
    # NMS off (threshold 1): the near-duplicate survives
    assert len(decode_scrfd(flat_outputs(synthetic), (480, 448), 1.0, 0.15, 1.0)) == 5


def test_decode_rejects_wrong_outputs(synthetic):
    outs = flat_outputs(synthetic)
    with pytest.raises(ValueError, match="stride levels"):
        decode_scrfd(outs[:8], (480, 448), 1.0, 0.5, 0.4)
    with pytest.raises(ValueError, match="do not fit"):
        decode_scrfd(outs, (512, 512), 1.0, 0.5, 0.4)
    with pytest.raises(ValueError, match="N×1 scores"):
        decode_scrfd(outs[:8] + [np.zeros((10, 7), np.float32)], (480, 448), 1.0, 0.5, 0.4)


def test_letterbox_numbers():
    img = np.full((600, 1000, 3), 200, np.uint8)
    canvas, scale = letterbox(img, (512, 512))
    assert canvas.shape == (512, 512, 3)
    assert scale == pytest.approx(307 / 600)  # new size 512×int(307.2), scale from the height
    assert canvas[:307, :512].min() == 200 and canvas[307:].max() == 0
    tall = np.full((1000, 300, 3), 50, np.uint8)
    canvas, scale = letterbox(tall, (512, 512))
    assert scale == pytest.approx(512 / 1000)
    assert canvas[:, :153].min() == 50 and canvas[:, 153:].max() == 0  # int(512 / (1000/300)) = 153


class FakeSession:
    """Records the fed input and returns prepared outputs (the interface the runtime expects of ORT sessions)."""

    def __init__(self, input_name, input_shape, outputs, output_names=None):
        self._inputs = [SimpleNamespace(name=input_name, shape=input_shape)]
        names = output_names or [f"o{i}" for i in range(len(outputs))]
        self._outputs = [SimpleNamespace(name=n, shape=list(o.shape)) for n, o in zip(names, outputs, strict=True)]
        self.outputs = outputs
        self.fed = None

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def run(self, names, feed):
        self.fed = next(iter(feed.values()))
        return list(self.outputs)


def test_detector_input_colour_and_mapping():
    in_h = in_w = 512
    box_in = (64.0, 96.0, 192.0, 256.0)
    groups = place_faces(in_h, in_w, [(32, 4, 5, 0, 0.9, box_in, kps_for(box_in))])
    sess = FakeSession("input.1", [1, 3, "?", "?"], flat_outputs(groups))
    img = np.zeros((600, 1000, 3), np.uint8)
    img[..., 0] = 255  # pure red in RGB
    faces = FaceDetector(sess, det_thresh=0.5).detect(img)
    blob = sess.fed
    assert blob.shape == (1, 3, 512, 512) and blob.dtype == np.float32
    assert blob[0, 0, 10, 10] == pytest.approx(127.5 / 128)  # R first: RGB fed, as insightface's swapRB does
    assert blob[0, 2, 10, 10] == pytest.approx(-127.5 / 128)
    assert blob[0, 0, 400, 10] == pytest.approx(-127.5 / 128)  # padding below the 307-row content
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].bbox, np.asarray(box_in) * 600 / 307, rtol=1e-5)


def test_sort_faces_directions():
    mk = lambda x1, y1, x2, y2: Face(np.array([x1, y1, x2, y2], np.float32), 0.9, None)  # noqa: E731
    a, b, c = mk(0, 0, 10, 10), mk(50, 5, 90, 45), mk(20, 30, 40, 50)
    assert sort_faces([a, b, c]) == [b, c, a]
    assert sort_faces([a, b, c], "small-large") == [a, c, b]
    assert sort_faces([b, c, a], "left-right") == [a, c, b]
    assert sort_faces([a, b, c], "bottom-top") == [c, b, a]
    assert sort_faces([a, b, c], "distance-from-retarget-face", np.array([31.0, 41.0])) == [c, b, a]
    with pytest.raises(ValueError, match="unknown face ordering"):
        sort_faces([a], "biggest")


def test_landmark106_crop_and_inverse():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    bbox = np.array([100.0, 80.0, 180.0, 200.0])  # centre (140, 140), longer side 120 → crop side 180 px
    pred = rng.uniform(-0.9, 0.9, size=(1, 212)).astype(np.float32)
    sess = FakeSession("data", ["None", 3, 192, 192], [pred])
    pts = Landmark106(sess).predict(img, bbox)
    # output units: (p + 1) · 96 in the 192 crop, crop pixel = (orig − centre) · 192/180 + 96
    want = pred.reshape(-1, 2) * 96 * (180 / 192) + [140.0, 140.0]
    np.testing.assert_allclose(pts, want, atol=1e-3)
    # the crop fed to the network: crop pixel (96, 96) is image pixel (140, 140), RGB unnormalised
    np.testing.assert_allclose(sess.fed[0, :, 96, 96], img[140, 140].astype(np.float32), atol=1.0)
    assert sess.fed.shape == (1, 3, 192, 192)


def seed_face(center=(200.0, 220.0), angle=0.0) -> np.ndarray:
    """A 5-point seed (eyes, nose, mouth corners), rotated by ``angle`` about ``center``."""
    base = np.array([[-30, -20], [30, -20], [0, 10], [-25, 40], [25, 40]], dtype=np.float64)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return base @ rot.T + center


def test_landmark203_upright_geometry():
    img = np.random.default_rng(1).integers(0, 256, size=(400, 400, 3), dtype=np.uint8)
    out = np.random.default_rng(2).uniform(0, 1, size=(1, 406)).astype(np.float32)
    sess = FakeSession("input", [1, 3, 224, 224], [np.zeros((1, 214)), np.zeros((1, 262)), out])
    pts = Landmark203(sess).predict(img, seed_face())
    # upright seed: extents x 170..230, y 200..260 → side 60 · 1.5 = 90, centre (200, 230) − 0.1 · 90 in y = 221
    want = (out.reshape(-1, 2) * 224 - 112) * (90 / 224) + [200.0, 221.0]
    np.testing.assert_allclose(pts, want, atol=1e-3)
    assert sess.fed.shape == (1, 3, 224, 224) and 0 <= sess.fed.min() and sess.fed.max() <= 1
    np.testing.assert_allclose(sess.fed[0, :, 112, 112], img[221, 200] / 255.0, atol=1 / 255)


def test_landmark203_follows_roll():
    out = np.random.default_rng(2).uniform(0, 1, size=(1, 406)).astype(np.float32)
    sess = FakeSession("input", [1, 3, 224, 224], [np.zeros((1, 214)), np.zeros((1, 262)), out])
    img = np.zeros((400, 400, 3), np.uint8)
    model = Landmark203(sess)
    upright = model.predict(img, seed_face())
    theta = 0.4
    rolled = model.predict(img, seed_face(angle=theta))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    np.testing.assert_allclose(rolled, (upright - [200.0, 220.0]) @ rot.T + [200.0, 220.0], atol=1e-2)


def test_landmark203_rejects_unknown_seed():
    sess = FakeSession("input", [1, 3, 224, 224], [np.zeros((1, 406))])
    with pytest.raises(ValueError, match="unsupported landmark count 7"):
        Landmark203(sess).predict(np.zeros((64, 64, 3), np.uint8), np.zeros((7, 2)))
