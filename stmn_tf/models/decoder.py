"""The R-FCN head's outputs -> detections (R-FCN's test procedure)."""

import keras
import tensorflow as tf

from stmn_tf.ops import box_ops
from stmn_tf.ops.nms import per_class_nms

NMS_IMPLEMENTATIONS = ("combined", "per_class")


@keras.saving.register_keras_serializable(package="stmn_tf")
class DetectionDecoder:
    """Softmax scores, class-agnostic boxes decoded from the RoIs, per-class NMS.

    No weights. `max_detections` is the padded output size (and the per-class cap).
    `nms_implementation` is a tracing choice, not a setting of the model (like the
    MatchTrans implementation; the exports set it while they trace): `"combined"`
    (`CombinedNonMaxSuppression`) or `"per_class"` (`stmn_tf.ops.nms`: the same outputs
    from one single-class NMS per class, which TFLite has as builtins).

    Args:
      score_threshold: float. Detections scoring below it are dropped (0.001).
      nms_iou: float. Per-class NMS IoU threshold (0.3, R-FCN's).
      max_detections: int. Detections per frame (100).

    Call arguments:
      class_logits: `[N, R, C + 1]`, background first.
      box_deltas: `[N, R, 4]` encoded against the RoIs (`box_ops.HEAD_BOX_WEIGHTS`).
      rois: `[N, R, 4]` normalised yxyx; valid: `[N, R]` bool (not padding).

    Returns:
      dict over the N frames: `detection_boxes` `[N, D, 4]` normalised yxyx,
      `detection_scores` `[N, D]`, `detection_classes` `[N, D]` int32 1..C,
      `num_detections` `[N]` int32 (entries past it are padding), D = max_detections.
    """

    def __init__(self, score_threshold=0.001, nms_iou=0.3, max_detections=100):
        if max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        if not 0.0 <= nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in [0, 1], got {nms_iou}")
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        self.nms_implementation = "combined"

    def __call__(self, class_logits, box_deltas, rois, valid):
        scores = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[..., 1:]
        scores = scores * tf.cast(valid, tf.float32)[..., None]  # [N, R, C]
        boxes = box_ops.clip_boxes_normalized(
            box_ops.decode_boxes_yxyx(box_deltas, tf.cast(rois, tf.float32),
                                      box_ops.HEAD_BOX_WEIGHTS)
        )
        if self.nms_implementation not in NMS_IMPLEMENTATIONS:
            raise ValueError(f"nms_implementation must be one of {NMS_IMPLEMENTATIONS}, got "
                             f"{self.nms_implementation!r}")
        if self.nms_implementation == "per_class":
            nms_boxes, nms_scores, nms_classes, count = per_class_nms(
                boxes, scores, self.max_detections, self.nms_iou, self.score_threshold)
        else:
            nmsed = tf.image.combined_non_max_suppression(
                boxes[:, :, None, :],
                scores,
                max_output_size_per_class=self.max_detections,
                max_total_size=self.max_detections,
                iou_threshold=self.nms_iou,
                score_threshold=self.score_threshold,
                clip_boxes=False,
            )
            nms_boxes, nms_scores = nmsed.nmsed_boxes, nmsed.nmsed_scores
            nms_classes, count = nmsed.nmsed_classes, nmsed.valid_detections
        return {
            "detection_boxes": nms_boxes,
            "detection_scores": nms_scores,
            "detection_classes": tf.cast(nms_classes, tf.int32) + 1,
            "num_detections": count,
        }

    def get_config(self):
        return {"score_threshold": self.score_threshold, "nms_iou": self.nms_iou,
                "max_detections": self.max_detections}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
