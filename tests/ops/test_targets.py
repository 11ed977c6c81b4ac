"""RPN anchor targets and RoI sampling on hand-made cases."""

import numpy as np
import tensorflow as tf

from stmn_tf.ops import box_ops
from stmn_tf.ops import targets


def test_rpn_targets_hand_made():
    anchors = np.array(
        [
            [0.0, 0.0, 0.5, 0.5],  # IoU 1 with gt 0 -> positive
            [0.0, 0.0, 0.5, 0.6],  # IoU 0.833 with gt 0 -> positive
            [0.5, 0.5, 1.0, 1.0],  # IoU 0 -> negative
            [0.0, 0.25, 0.5, 0.75],  # IoU 1/3 with gt 0 -> ignored (between 0.3 and 0.7)
            [0.6, 0.0, 0.9, 0.2],  # the best anchor of gt 1 (IoU 0.5) -> positive
        ],
        "float32",
    )
    gt = np.array([[[0.0, 0.0, 0.5, 0.5], [0.6, 0.0, 0.9, 0.4], [0, 0, 0, 0]]], "float32")
    labels = np.array([[1, 2, 0]], "int32")
    out = targets.rpn_targets(anchors, gt, labels, batch_size=256)
    np.testing.assert_array_equal(out["labels"].numpy(), [[1, 1, 0, -1, 1]])
    # The targets of a positive anchor decode to its ground truth.
    decoded = box_ops.decode_boxes_yxyx(out["box_targets"][0, 4], anchors[4]).numpy()
    np.testing.assert_allclose(decoded, gt[0, 1], atol=1e-5)


def test_rpn_targets_without_groundtruth_are_all_negative():
    anchors = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], "float32")
    out = targets.rpn_targets(anchors, np.zeros((1, 2, 4), "float32"), np.zeros((1, 2), "int32"))
    np.testing.assert_array_equal(out["labels"].numpy(), [[0, 0]])


def test_rpn_sampling_caps_positives():
    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 0.05, (400, 2))
    anchors = np.concatenate([lo, lo + 0.5], -1).astype("float32")  # all near the gt
    gt = np.array([[[0.0, 0.0, 0.52, 0.52]]], "float32")
    out = targets.rpn_targets(anchors, gt, np.array([[1]]), batch_size=64, positive_fraction=0.25)
    labels = out["labels"].numpy()
    assert (labels == 1).sum() == 16
    assert (labels == 0).sum() == 0  # no negatives available: fewer samples, not others


def test_sample_rois_hand_made():
    proposals = np.array(
        [[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.55], [0.5, 0.5, 1, 1], [0.7, 0.7, 1, 1]]],
        "float32",
    )
    valid = np.array([[True, True, True, False]])
    gt = np.array([[[0.0, 0.0, 0.5, 0.5], [0, 0, 0, 0]]], "float32")
    labels = np.array([[3, 0]], "int32")
    out = targets.sample_rois(proposals, valid, gt, labels, num_rois=6, foreground_fraction=0.5)
    got = {k: v.numpy()[0] for k, v in out.items()}
    # Candidates: 3 valid proposals + the gt: fg = {p0, p1, gt} (3 = cap), bg = {p2}.
    assert got["valid"].sum() == 4 and got["foreground"].sum() == 3
    assert sorted(got["labels"][got["valid"] > 0].tolist()) == [0, 3, 3, 3]
    fg = got["foreground"] > 0
    decoded = box_ops.decode_boxes_yxyx(
        got["box_targets"][fg], got["rois"][fg], box_ops.HEAD_BOX_WEIGHTS
    ).numpy()
    np.testing.assert_allclose(decoded, np.repeat(gt[0, :1], 3, 0), atol=1e-5)
    # Padding rows: invalid, zero boxes, background.
    assert np.all(got["rois"][got["valid"] == 0] == 0) and np.all(got["labels"][got["valid"] == 0] == 0)


def test_sample_rois_fraction():
    tf.random.set_seed(1)
    rng = np.random.default_rng(1)
    lo = rng.uniform(0, 0.5, (1, 500, 2))
    proposals = np.concatenate([lo, lo + 0.3], -1).astype("float32")
    gt = np.array([[[0.1, 0.1, 0.4, 0.4]]], "float32")
    out = targets.sample_rois(
        proposals, np.ones((1, 500), bool), gt, np.array([[1]]), num_rois=40,
        foreground_fraction=0.25, foreground_iou=0.3,
    )
    fg = out["foreground"].numpy()
    assert out["valid"].numpy().sum() == 40
    assert fg.sum() == 10
