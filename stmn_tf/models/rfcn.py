"""The static R-FCN detector that STMN starts from."""

import keras
import tensorflow as tf

from stmn_tf.models.detector import TwoStageDetector


@keras.saving.register_keras_serializable(package="stmn_tf")
class RFCN(TwoStageDetector):
    """Static R-FCN on a stride-16 ResNet (R-FCN, Dai et al., as the paper's Sec. 4 uses it); a clip is B*T independent images.

    Backbone -> features `F_t` (3x3 dilated conv 2048->512 + ReLU, 1x1 conv
    512->1024 + ReLU) -> 3x3 conv 1024->1024 + ReLU (`head_conv`, the layer that STMN
    replaces by its memory) -> R-FCN head (1x1 conv 1024->512, PS-RoI average pooling
    of C+1 class maps and 4 box maps, voting). The RPN sits on `F_t`.

    Args:
      num_classes: int. Foreground classes C.
      head_channels: int. Channels of `head_conv`. Defaults to 1024.
      backbone_depth: int. ResNet depth (50, 101, 152). Defaults to 101.
      backbone_blocks, backbone_filters, backbone_stem_filters: optional overrides
        of the ResNet's shape (a tiny ResNet for tests: blocks `(1, 1, 1, 1)`).
      frozen_stages: int. ResNet stages not trained (conv1, conv2). Defaults to 2.
      backbone_weights: optional path of a local keras.applications ResNet
        `.weights.h5`, loaded by layer name (never downloaded).
      backbone_norm: str. `"frozen_bn"` (R-FCN, default) or `"group_norm"` (a
        backbone trained from scratch, as the tiny one).
      feature_reduce_channels, feature_channels, feature_dilation: the features
        `F_t` (512, 1024, 6).
      rfcn_channels: int. The head's 1x1 conv (512). ps_roi_bins: int (7).
      rpn_channels, anchor_scales (pixels), anchor_ratios (height / width),
      rpn_pre_nms_top_n_train/test, rpn_post_nms_top_n_train/test, rpn_nms_iou,
      rpn_min_size, rpn_batch_size, rpn_positive_fraction, rpn_positive_iou,
      rpn_negative_iou: the RPN.
      num_rois (300 per frame), foreground_fraction (0.25), foreground_iou (0.5),
      background_iou_high (0.5), background_iou_low (0.0), ohem_rois (0 = off):
      RoI sampling and the head's loss.
      score_threshold, nms_iou (0.3, R-FCN's), max_detections: post-processing.

    Call arguments:
      inputs: dict with `images` `[B, T, H, W, 3]` RGB in [0, 255] (and optionally
        `proposals` `[B, T, P, 4]`), or the images tensor.

    Returns:
      the `predict_step` dict: `detection_boxes` `[B, T, N, 4]` normalised ymin,
      xmin, ymax, xmax, `detection_scores` `[B, T, N]`, `detection_classes`
      `[B, T, N]` 1..C, `num_detections` `[B, T]`.

    Example:
    >>> model = RFCN(num_classes=2, **TINY_KWARGS)  # tests/models/synthetic.py
    >>> out = model(np.zeros((1, 2, 64, 64, 3), "float32"))
    >>> tuple(out["detection_boxes"].shape)
    (1, 2, 20, 4)
    """

    def __init__(self, num_classes, head_channels=1024, **kwargs):
        self.head_channels = head_channels
        super().__init__(num_classes, **kwargs)

    def _build_head_features(self):
        self.head_conv = keras.layers.Conv2D(
            self.head_channels, 3, padding="same", activation="relu", name="head_conv"
        )

    def head_features(self, features, training=False):
        """`[B, T, h, w, C]` -> `[B, T, h, w, head_channels]`, frame by frame."""
        shape = tf.shape(features)
        out = self.head_conv(self._flatten(features))
        return self._unflatten(out, shape[0], shape[1])

    def get_config(self):
        config = super().get_config()
        config["head_channels"] = self.head_channels
        return config
