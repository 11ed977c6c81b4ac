"""The RPN's training targets: which anchors are objects, and where their boxes are."""

import keras

from stmn_tf.ops import targets as targets_lib


@keras.saving.register_keras_serializable(package="stmn_tf")
class AnchorLabeler:
    """Labels and samples anchors for the RPN loss (Faster R-CNN Sec. 3.1.2).

    An anchor is positive at IoU >= `positive_iou` with a ground truth (or as a
    ground truth's best anchor), negative below `negative_iou`; `batch_size` anchors
    per frame are sampled, at most `positive_fraction` of them positive. No weights.

    Args:
      batch_size: int. Anchors sampled per frame (256).
      positive_fraction: float. Largest share of positives in the sample (0.5).
      positive_iou: float (0.7). negative_iou: float (0.3).

    Call arguments:
      anchors: `[A, 4]` normalised yxyx.
      gt_boxes: `[N, G, 4]` normalised yxyx; gt_labels: `[N, G]` int, 0 = padding.
      seed: optional `[2]` int stateless seed of the sampling (None: stateful).

    Returns:
      dict: `labels` `[N, A]` int32 (1 positive, 0 negative, -1 not sampled),
      `box_targets` `[N, A, 4]` (`box_ops.RPN_BOX_WEIGHTS`).
    """

    def __init__(self, batch_size=256, positive_fraction=0.5, positive_iou=0.7,
                 negative_iou=0.3):
        if not 0.0 <= negative_iou <= positive_iou <= 1.0:
            raise ValueError(
                f"need 0 <= negative_iou <= positive_iou <= 1, got negative_iou "
                f"{negative_iou} and positive_iou {positive_iou}"
            )
        self.batch_size = int(batch_size)
        self.positive_fraction = float(positive_fraction)
        self.positive_iou = float(positive_iou)
        self.negative_iou = float(negative_iou)

    def __call__(self, anchors, gt_boxes, gt_labels, seed=None):
        return targets_lib.rpn_targets(
            anchors, gt_boxes, gt_labels, self.batch_size, self.positive_fraction,
            self.positive_iou, self.negative_iou, seed=seed,
        )

    def get_config(self):
        return {"batch_size": self.batch_size, "positive_fraction": self.positive_fraction,
                "positive_iou": self.positive_iou, "negative_iou": self.negative_iou}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
