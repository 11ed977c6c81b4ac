"""per_class_nms against a NumPy per-class greedy NMS and against combined NMS."""

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.ops.nms import per_class_nms


def iou(a, b):
    """yxyx boxes `[4]`, `[K, 4]` -> `[K]`."""
    y1 = np.maximum(a[0], b[:, 0])
    x1 = np.maximum(a[1], b[:, 1])
    y2 = np.minimum(a[2], b[:, 2])
    x2 = np.minimum(a[3], b[:, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def reference(boxes, scores, max_detections, iou_threshold, score_threshold):
    """One frame: greedy NMS per class, then the best `max_detections` of all classes."""
    kept = []  # (score, class, box index)
    for c in range(scores.shape[1]):
        order = [i for i in np.argsort(-scores[:, c], kind="stable") if scores[i, c] > score_threshold]
        selected = []
        for i in order:
            if len(selected) == max_detections:
                break
            if not selected or iou(boxes[i], boxes[selected]).max() <= iou_threshold:
                selected.append(i)
        kept += [(scores[i, c], c, i) for i in selected]
    kept.sort(key=lambda k: (-k[0], k[1]))
    kept = kept[:max_detections]
    out_boxes = np.zeros([max_detections, 4], np.float32)
    out_scores = np.zeros([max_detections], np.float32)
    out_classes = np.zeros([max_detections], np.int32)
    for row, (score, c, i) in enumerate(kept):
        out_boxes[row], out_scores[row], out_classes[row] = boxes[i], score, c
    return out_boxes, out_scores, out_classes, len(kept)


def random_frames(frames, rois, classes, seed):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0.0, 0.7, size=(frames, rois, 2))
    size = rng.uniform(0.05, 0.3, size=(frames, rois, 2))
    boxes = np.concatenate([corner, corner + size], -1).astype(np.float32)
    scores = rng.dirichlet(np.ones(classes + 1), size=(frames, rois))[..., 1:].astype(np.float32)
    return boxes, scores


@pytest.mark.parametrize("max_detections,score_threshold", [(10, 0.001), (40, 0.45)])
def test_per_class_nms_equals_numpy_reference(max_detections, score_threshold):
    boxes, scores = random_frames(3, 60, 4, seed=max_detections)
    actual = [np.asarray(x) for x in per_class_nms(
        tf.constant(boxes), tf.constant(scores), max_detections, 0.3, score_threshold
    )]
    for n in range(3):
        expected = reference(boxes[n], scores[n], max_detections, 0.3, score_threshold)
        np.testing.assert_array_equal(actual[3][n], expected[3])
        np.testing.assert_array_equal(actual[2][n], expected[2])
        np.testing.assert_allclose(actual[1][n], expected[1], atol=1e-7)
        np.testing.assert_allclose(actual[0][n], expected[0], atol=1e-7)
    # 40 boxes at a 0.45 threshold: some frames pad.
    if max_detections == 40:
        assert actual[3].min() < 40


def test_per_class_nms_equals_combined_nms():
    boxes, scores = random_frames(2, 80, 5, seed=1)
    actual = per_class_nms(tf.constant(boxes), tf.constant(scores), 20, 0.3, 0.001)
    combined = tf.image.combined_non_max_suppression(
        boxes[:, :, None], scores, 20, 20, iou_threshold=0.3, score_threshold=0.001,
        clip_boxes=False,
    )
    np.testing.assert_array_equal(actual[3], combined.valid_detections)
    np.testing.assert_array_equal(actual[2], combined.nmsed_classes.numpy().astype(np.int32))
    np.testing.assert_allclose(actual[1], combined.nmsed_scores, atol=1e-7)
    np.testing.assert_allclose(actual[0], combined.nmsed_boxes, atol=1e-7)


def test_per_class_nms_needs_static_classes():
    function = tf.function(
        lambda b, s: per_class_nms(b, s, 5, 0.3, 0.0),
        input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None, None])],
    )
    with pytest.raises(ValueError, match="static number of classes"):
        function.get_concrete_function()
