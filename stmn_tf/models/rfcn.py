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
      head_conv: the 3x3 conv + ReLU between `F_t` and the R-FCN head
        (`keras.layers.Conv2D`, `same` padding; 1024 channels in the paper).
      **kwargs: the parts `backbone`, `features`, `rpn_head`, `proposal_generator`,
        `anchor_labeler`, `roi_sampler`, `rfcn_head`, `decoder` (see
        `TwoStageDetector`), and `keras.Model` arguments.

    Call arguments:
      inputs: dict with `images` `[B, T, H, W, 3]` RGB in [0, 255] (and optionally
        `proposals` `[B, T, P, 4]`), or the images tensor.

    Returns:
      the `predict_step` dict: `detection_boxes` `[B, T, N, 4]` normalised ymin,
      xmin, ymax, xmax, `detection_scores` `[B, T, N]`, `detection_classes`
      `[B, T, N]` 1..C, `num_detections` `[B, T]`.

    Example:
    >>> model = build_rfcn(tiny_model_config("rfcn", num_classes=2))  # models.builders
    >>> out = model(np.zeros((1, 2, 64, 64, 3), "float32"))
    >>> tuple(out["detection_boxes"].shape)
    (1, 2, 20, 4)
    """

    HEAD_PART = ("head_conv", "head_conv")

    def __init__(self, head_conv, **kwargs):
        # kwargs: the parts, by name, and the keras.Model arguments (TwoStageDetector's).
        super().__init__(**kwargs)
        self.head_conv = head_conv
        self.build_by_running()

    @property
    def head_channels(self):
        """Channels of `head_conv` (what STMN's memory replaces)."""
        return self.head_conv.filters

    def head_features(self, features, training=False):
        """`[B, T, h, w, C]` -> `[B, T, h, w, head_channels]`, frame by frame."""
        shape = tf.shape(features)
        out = self.head_conv(self._flatten(features))
        return self._unflatten(out, shape[0], shape[1])
