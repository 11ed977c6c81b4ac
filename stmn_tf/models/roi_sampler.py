"""The second stage's training RoIs (R-FCN / Fast R-CNN sampling)."""

import keras

from stmn_tf.ops import targets as targets_lib


@keras.saving.register_keras_serializable(package="stmn_tf")
class RoISampler:
    """Samples the RoIs the R-FCN head is trained on, and their targets.

    Foreground: best IoU >= `foreground_iou`; background: best IoU in
    [`background_iou_low`, `background_iou_high`); up to `num_rois *
    foreground_fraction` foreground per frame, the ground truths among the
    candidates (py-faster-rcnn). `ohem_rois` > 0 keeps, in the head's loss, only the
    that many RoIs of the sample with the highest loss (online hard example mining,
    as R-FCN's OHEM option). No weights.

    Args:
      num_rois: int. RoIs per frame (300, the paper's). foreground_fraction: 0.25.
      foreground_iou: 0.5. background_iou_high: 0.5. background_iou_low: 0.0.
      ohem_rois: int. 0 = off.

    Call arguments:
      rois: `[N, P, 4]` normalised yxyx proposals; valid: `[N, P]` bool.
      gt_boxes: `[N, G, 4]`; gt_labels: `[N, G]` int, 1..C, 0 = padding.
      seed: optional `[2]` int stateless seed of the sampling (None: stateful).

    Returns:
      dict: `rois` `[N, R, 4]`, `labels` `[N, R]` int32 (0 background), `valid` and
      `foreground` `[N, R]` float32, `box_targets` `[N, R, 4]`
      (`box_ops.HEAD_BOX_WEIGHTS`), R = num_rois.
    """

    def __init__(self, num_rois=300, foreground_fraction=0.25, foreground_iou=0.5,
                 background_iou_high=0.5, background_iou_low=0.0, ohem_rois=0):
        if num_rois < 1:
            raise ValueError(f"num_rois must be >= 1, got {num_rois}")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        if not 0 <= ohem_rois <= num_rois:
            raise ValueError(f"ohem_rois must be in [0, num_rois = {num_rois}], got {ohem_rois}")
        self.num_rois = int(num_rois)
        self.foreground_fraction = float(foreground_fraction)
        self.foreground_iou = float(foreground_iou)
        self.background_iou_high = float(background_iou_high)
        self.background_iou_low = float(background_iou_low)
        self.ohem_rois = int(ohem_rois)

    def __call__(self, rois, valid, gt_boxes, gt_labels, seed=None):
        return targets_lib.sample_rois(
            rois, valid, gt_boxes, gt_labels, self.num_rois, self.foreground_fraction,
            self.foreground_iou, self.background_iou_high, self.background_iou_low,
            seed=seed,
        )

    def get_config(self):
        return {"num_rois": self.num_rois, "foreground_fraction": self.foreground_fraction,
                "foreground_iou": self.foreground_iou,
                "background_iou_high": self.background_iou_high,
                "background_iou_low": self.background_iou_low, "ohem_rois": self.ohem_rois}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
