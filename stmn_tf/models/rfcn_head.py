"""The R-FCN head (Dai et al. 2016): position-sensitive score maps, PS-RoI pooling, voting."""

import keras
import tensorflow as tf

from stmn_tf.ops.ps_roi_pooling import ps_roi_average_pool


@keras.saving.register_keras_serializable(package="stmn_tf")
class RFCNHead(keras.layers.Layer):
    """1x1 conv to `channels`, position-sensitive class and box maps, pooled per RoI.

    As the authors' R-FCN: `1x1 conv 1024->512 -> PS-RoI average pooling (7x7 bins)` for
    `num_classes + 1` classes and 4 class-agnostic box deltas; the `bins x bins`
    pooled values are averaged ("voting", R-FCN Sec. 2).

    Args:
      num_classes: int. Foreground classes C.
      channels: int. Output channels of the 1x1 conv. Defaults to 512.
      bins: int. PS-RoI bins per side. Defaults to 7.
      feature_stride: int. Stride of the input map in pixels. Defaults to 16.

    Call arguments:
      features: `[N, h, w, C_in]`.
      rois: `[N, R, 4]` normalised ymin, xmin, ymax, xmax.
      image_size: `[2]` int, the image height and width in pixels.

    Returns:
      `(class_logits [N, R, C+1], box_deltas [N, R, 4])`: class 0 is background;
      deltas dy, dx, dh, dw relative to the RoI, scaled by `HEAD_BOX_WEIGHTS`.

    Example:
    >>> head = RFCNHead(num_classes=2, channels=8, bins=3)
    >>> logits, deltas = head(np.ones((1, 4, 4, 16), "float32"),
    ...                       np.array([[[0., 0., .5, .5]]], "float32"), np.array([64, 64]))
    >>> tuple(logits.shape), tuple(deltas.shape)
    ((1, 1, 3), (1, 1, 4))
    """

    def __init__(self, num_classes, channels=512, bins=7, feature_stride=16, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.channels = channels
        self.bins = bins
        self.feature_stride = feature_stride
        self.reduce_conv = keras.layers.Conv2D(
            channels, 1, dtype=self.dtype_policy, name="reduce_conv"
        )
        init = keras.initializers.RandomNormal(stddev=0.01)  # py-R-FCN's init
        self.class_conv = keras.layers.Conv2D(
            bins * bins * (num_classes + 1), 1, kernel_initializer=init,
            dtype=self.dtype_policy, name="class_conv",
        )
        self.box_conv = keras.layers.Conv2D(
            bins * bins * 4, 1, kernel_initializer=init, dtype=self.dtype_policy, name="box_conv"
        )

    def build(self, features_shape, rois_shape=None, image_size_shape=None):
        self.reduce_conv.build(features_shape)
        hidden = tuple(features_shape[:-1]) + (self.channels,)
        self.class_conv.build(hidden)
        self.box_conv.build(hidden)
        self.built = True

    def score_maps(self, features):
        """`[N, h, w, C_in]` -> `(class maps [N, h, w, K*K*(C+1)], box maps [N, h, w, K*K*4])`."""
        x = self.reduce_conv(features)
        return self.class_conv(x), self.box_conv(x)

    def pool(self, class_maps, box_maps, rois, image_size):
        """PS-RoI pooling and voting of precomputed maps (see the class docstring)."""
        size = tf.cast(tf.convert_to_tensor(image_size), tf.float32)
        scale = tf.concat([size, size], axis=0) / float(self.feature_stride)
        rois_feature = tf.cast(rois, tf.float32) * scale  # feature-map cells
        k = self.bins
        class_logits = keras.ops.mean(
            ps_roi_average_pool(class_maps, rois_feature, k, self.num_classes + 1), axis=(2, 3)
        )
        box_deltas = keras.ops.mean(ps_roi_average_pool(box_maps, rois_feature, k, 4), axis=(2, 3))
        return class_logits, box_deltas

    def call(self, features, rois, image_size):
        class_maps, box_maps = self.score_maps(features)
        return self.pool(class_maps, box_maps, rois, image_size)

    def compute_output_shape(self, features_shape, rois_shape, image_size_shape=None):
        n, r = rois_shape[:2]
        return (n, r, self.num_classes + 1), (n, r, 4)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, channels=self.channels, bins=self.bins,
            feature_stride=self.feature_stride,
        )
        return config
