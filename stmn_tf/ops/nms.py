"""Per-class NMS from single-class NMS kernels, for runtimes without CombinedNonMaxSuppression.

`per_class_nms(boxes, scores, ...)` returns what
`tf.image.combined_non_max_suppression(boxes[:, :, None], scores, max_detections,
max_detections, ...)` returns (the detector's decoding, `TwoStageDetector.decode`), built
from `NonMaxSuppressionV5` (one call per class) and `TopKV2` only. TFLite has both as
builtin ops (NON_MAX_SUPPRESSION_V5, TOPK_V2), but not CombinedNonMaxSuppression, which
needs the Flex delegate.
"""

import tensorflow as tf


def _frame_nms(boxes, scores, max_detections, iou_threshold, score_threshold):
    """One frame: boxes `[R, 4]`, scores `[R, C]` -> (boxes `[M, 4]`, scores `[M]`,
    classes `[M]` int32 0-based, valid int32 `[]`), M = max_detections."""
    num_classes = scores.shape[-1]
    if num_classes is None:
        raise ValueError("per_class_nms needs a static number of classes (scores [.., R, C])")
    selected_scores, selected_index, selected_class = [], [], []
    for c in range(num_classes):  # static C: one builtin NMS per class
        index, class_scores, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=boxes,
            scores=scores[:, c],
            max_output_size=max_detections,
            iou_threshold=iou_threshold,
            score_threshold=score_threshold,
            soft_nms_sigma=0.0,
            pad_to_max_output_size=True,
        )
        valid = tf.range(max_detections) < count
        # Padding rows score -1, below every kept box (scores are >= 0).
        selected_scores.append(tf.where(valid, class_scores, -1.0))
        selected_index.append(index)
        selected_class.append(tf.fill([max_detections], c))
    all_scores = tf.concat(selected_scores, 0)  # [C * M], class-major
    # Sorted by score, ties in class order: combined NMS's order too.
    top_scores, top = tf.math.top_k(all_scores, k=max_detections)
    valid = top_scores > -1.0
    index = tf.gather(tf.concat(selected_index, 0), top)
    out_boxes = tf.where(valid[:, None], tf.gather(boxes, index), 0.0)
    out_scores = tf.where(valid, top_scores, 0.0)
    out_classes = tf.where(valid, tf.gather(tf.concat(selected_class, 0), top), 0)
    return out_boxes, out_scores, out_classes, tf.reduce_sum(tf.cast(valid, tf.int32))


def per_class_nms(boxes, scores, max_detections, iou_threshold, score_threshold):
    """Per-class NMS of N frames, the outputs of combined NMS with one box per RoI.

    Per frame and class: greedy NMS (IoU > `iou_threshold` suppresses, scores
    <= `score_threshold` dropped), at most `max_detections` boxes; then the
    `max_detections` best boxes of all classes, best first, zero padded.

    Args:
      boxes: float32 `[N, R, 4]` normalised yxyx, shared by the classes.
      scores: float32 `[N, R, C]`, C static.
      max_detections: int, M.
      iou_threshold, score_threshold: floats.

    Returns:
      `(boxes [N, M, 4], scores [N, M], classes [N, M] int32 0-based (0 for padding),
      valid_detections [N] int32)`.
    """
    return tf.map_fn(
        lambda args: _frame_nms(args[0], args[1], max_detections, iou_threshold, score_threshold),
        (boxes, scores),
        fn_output_signature=(
            tf.TensorSpec([max_detections, 4], tf.float32),
            tf.TensorSpec([max_detections], tf.float32),
            tf.TensorSpec([max_detections], tf.int32),
            tf.TensorSpec([], tf.int32),
        ),
    )
