"""The saliency-inside-boxes ratio (stmn_tf/evaluation/saliency.py) against NumPy
references written here."""

import numpy as np
import pytest

from stmn_tf.evaluation import saliency
from stmn_tf.inference.video import prepared_frame


def reference_split(values, boxes, padded_size, image_size, original_size):
    """Cell by cell: the cell's canvas box, its centre, back to the original frame."""
    hf, wf = values.shape
    inside, outside = [], []
    for i in range(hf):
        for j in range(wf):
            top, bottom = i * padded_size[0] / hf, (i + 1) * padded_size[0] / hf
            left, right = j * padded_size[1] / wf, (j + 1) * padded_size[1] / wf
            cy, cx = (top + bottom) / 2, (left + right) / 2
            if cy >= image_size[0] or cx >= image_size[1]:
                continue  # padding
            y, x = cy / image_size[0] * original_size[0], cx / image_size[1] * original_size[1]
            hit = any(b[0] <= x < b[2] and b[1] <= y < b[3] for b in boxes)
            (inside if hit else outside).append(values[i, j])
    return inside, outside


@pytest.mark.parametrize("padded_size,image_size,original_size,map_size", [
    ((128, 128), (128, 128), (128, 128), (8, 8)),
    ((128, 128), (72, 128), (1080, 1920), (8, 8)),  # letterboxed: bottom rows are padding
    ((96, 160), (90, 160), (360, 640), (6, 10)),
])
def test_ratio_matches_cell_by_cell_reference(padded_size, image_size, original_size, map_size):
    rng = np.random.default_rng(0)
    ratio = saliency.SaliencyRatio()
    inside, outside = [], []
    for _ in range(4):
        values = rng.uniform(0, 5, map_size)
        h, w = original_size
        corners = rng.uniform(0, 1, (3, 2, 2)) * [w, h]
        boxes = np.concatenate([corners.min(1), corners.max(1)], 1)  # xyxy
        ratio.add(values, boxes, padded_size, image_size, original_size)
        a, b = reference_split(values, boxes, padded_size, image_size, original_size)
        inside += a
        outside += b
    result = ratio.result()
    assert result["inside_cells"] == len(inside) and result["outside_cells"] == len(outside)
    assert result["inside_cells"] > 0 and result["frames"] == 4
    np.testing.assert_allclose(result["inside_mean"], np.mean(inside))
    np.testing.assert_allclose(result["outside_mean"], np.mean(outside))
    np.testing.assert_allclose(result["ratio"], np.mean(inside) / np.mean(outside))


def test_a_map_that_lights_up_the_boxes_has_their_contrast():
    values = np.ones((8, 8))
    values[2:4, 5:8] = 4.0  # cells of rows 2-3, columns 5-7
    boxes = [[80, 32, 128, 64]]  # xyxy pixels: exactly those cells at stride 16
    ratio = saliency.SaliencyRatio()
    ratio.add(values, boxes, (128, 128), (128, 128), (128, 128))
    assert ratio.result()["ratio"] == pytest.approx(4.0)
    assert ratio.result()["inside_cells"] == 6


def test_no_boxes_gives_no_ratio_and_bad_maps_are_rejected():
    ratio = saliency.SaliencyRatio()
    ratio.add(np.ones((4, 4)), np.zeros((0, 4)), (64, 64), (64, 64), (64, 64))
    assert ratio.result()["ratio"] is None and ratio.result()["outside_cells"] == 16
    with pytest.raises(ValueError, match="saliency must be"):
        ratio.add(np.ones((1, 4, 4)), [], (64, 64), (64, 64), (64, 64))


@pytest.mark.parametrize("num_frames,window,stride", [(23, 7, 2), (5, 11, 10), (30, 4, 1)])
def test_clips_cover_every_frame_once_within_its_subsequence(num_frames, window, stride):
    clips = saliency.saliency_clips(num_frames, window, stride)
    assert sorted(p for clip in clips for p in clip) == list(range(num_frames))
    for clip in clips:
        assert 1 <= len(clip) <= window
        assert all(b - a == stride for a, b in zip(clip, clip[1:]))


class BlockMeanModel:
    """Saliency = the mean brightness of each 16x16 block of each frame."""

    def __init__(self):
        self.clip_lengths = []

    def saliency(self, images):
        images = np.asarray(images)  # [1, T, Hp, Wp, 3]
        self.clip_lengths.append(images.shape[1])
        b, t, h, w, _ = images.shape
        return images.mean(-1).reshape(b, t, h // 16, 16, w // 16, 16).mean((3, 5))


def test_evaluate_saliency_over_videos_matches_a_pixel_reference():
    rng = np.random.default_rng(1)
    videos, inside, outside = [], [], []
    for video in range(2):
        for index in range(9):
            image = np.full((64, 64, 3), 10.0, np.float32)
            x0, y0 = (int(v) for v in rng.integers(0, 3, 2) * 16)
            image[y0:y0 + 32, x0:x0 + 16] = 200.0  # the object fills 2 x 1 cells
            boxes = np.array([[x0, y0, x0 + 16, y0 + 32]], np.float64)
            frame = prepared_frame(image, (64, 64), (64, 64), index,
                                   groundtruth={"boxes": boxes})
            videos.append((f"v{video}", frame))
            inside += [200.0, 200.0]
            outside += [10.0] * 14
    model = BlockMeanModel()
    result = saliency.evaluate_saliency(model, videos, window=3, stride=2)
    assert result["videos"] == 2 and result["frames"] == 18
    assert model.clip_lengths == [3, 2, 3, 1] * 2  # sub-sequences of 5 and 4 frames
    np.testing.assert_allclose(result["ratio"], np.mean(inside) / np.mean(outside))
