"""Box coding, IoU and anchors on hand-made cases."""

import numpy as np
import pytest

from stmn_tf.ops import box_ops
from stmn_tf.ops.anchors import anchor_shapes
from stmn_tf.ops.anchors import generate_anchors


def test_encode_hand_computed():
    anchor = np.array([[0.0, 0.0, 0.2, 0.4]], "float32")  # centre (0.1, 0.2), 0.2 x 0.4
    box = np.array([[0.1, 0.1, 0.3, 0.9]], "float32")  # centre (0.2, 0.5), 0.2 x 0.8
    got = box_ops.encode_boxes_yxyx(box, anchor).numpy()
    np.testing.assert_allclose(got, [[0.5, 0.75, 0.0, np.log(2.0)]], atol=1e-5)
    got = box_ops.encode_boxes_yxyx(box, anchor, box_ops.HEAD_BOX_WEIGHTS).numpy()
    np.testing.assert_allclose(got, [[5.0, 7.5, 0.0, 5 * np.log(2.0)]], atol=1e-4)


@pytest.mark.parametrize("weights", [None, box_ops.HEAD_BOX_WEIGHTS])
def test_decode_inverts_encode(rng, weights):
    def boxes(n):
        lo = rng.uniform(0, 0.6, (n, 2))
        return np.concatenate([lo, lo + rng.uniform(0.05, 0.4, (n, 2))], -1).astype("float32")

    targets, anchors = boxes(50), boxes(50)
    deltas = box_ops.encode_boxes_yxyx(targets, anchors, weights)
    decoded = box_ops.decode_boxes_yxyx(deltas, anchors, weights).numpy()
    np.testing.assert_allclose(decoded, targets, atol=1e-5)


def test_pairwise_iou_hand_computed():
    a = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]], "float32")
    b = np.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.6, 0.6, 1, 1]], "float32")
    got = box_ops.pairwise_iou_yxyx(a, b).numpy()
    # overlap of the second pair: 0.25^2 = 1/16; union 2 * 1/4 - 1/16 = 7/16.
    np.testing.assert_allclose(got, [[1.0, 1.0 / 7.0, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)


def test_conversions():
    boxes = np.array([[0.1, 0.2, 0.3, 0.4]], "float32")
    np.testing.assert_allclose(box_ops.boxes_yxyx_to_xyxy(boxes).numpy(), [[0.2, 0.1, 0.4, 0.3]])
    np.testing.assert_allclose(
        box_ops.normalized_yxyx_to_pixel_xyxy(boxes, 100, 200), [[40, 10, 80, 30]], rtol=1e-6
    )
    # A 50 x 100 frame resized to 32 x 64 at the top left of a 64 x 64 canvas: the
    # canvas' y is twice the frame's; a box in the padding is clipped to the frame.
    canvas = np.array([[0.25, 0.5, 0.5, 1.0], [0.6, 0.0, 0.9, 0.5]], "float32")
    np.testing.assert_allclose(
        box_ops.canvas_yxyx_to_frame_xyxy(canvas, (64, 64), (32, 64), (50, 100)),
        [[50, 25, 100, 50], [0, 50, 50, 50]], rtol=1e-6)


def test_anchor_shapes_keep_area():
    heights, widths = anchor_shapes([16, 32], [0.5, 2.0])
    np.testing.assert_allclose(np.array(heights) * np.array(widths), [256, 1024, 256, 1024])
    np.testing.assert_allclose(np.array(heights) / np.array(widths), [0.5, 0.5, 2.0, 2.0])


def test_anchors_hand_computed():
    # A 2x3 map of stride 16 on a 32x48 image, one square anchor of 16 px.
    got = generate_anchors(2, 3, 32, 48, 16, [16.0], [1.0]).numpy()
    assert got.shape == (6, 4)
    # Position (y=1, x=2): centre (24, 40) px -> box (16, 32, 32, 48) px.
    np.testing.assert_allclose(got[1 * 3 + 2], [16 / 32, 32 / 48, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(got[0], [0.0, 0.0, 0.5, 16 / 48], atol=1e-6)
    # Order (y, x, anchor): with 2 anchors, rows 0 and 1 share the centre.
    two = generate_anchors(2, 3, 32, 48, 16, [8.0, 16.0], [1.0]).numpy()
    np.testing.assert_allclose((two[0, :2] + two[0, 2:]) / 2, (two[1, :2] + two[1, 2:]) / 2)
