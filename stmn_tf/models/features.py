"""The features `F_t` on top of the backbone (the authors' R-FCN on ResNet-101)."""

import keras


@keras.saving.register_keras_serializable(package="stmn_tf")
class DetectorFeatures(keras.layers.Layer):
    """3x3 dilated conv + ReLU, then 1x1 conv + ReLU: the features `F_t`.

    The authors' R-FCN reduces conv5 (2048) to 512 channels with a 3x3 conv of
    dilation 6 and expands to 1024 with a 1x1 conv; STMN's memory reads these.

    Args:
      reduce_channels: int. Channels of the 3x3 conv. Defaults to 512.
      channels: int. Output channels. Defaults to 1024.
      dilation: int. Dilation of the 3x3 conv. Defaults to 6.

    Call arguments:
      inputs: `[N, h, w, C5]` conv5 features (stride 16).

    Returns:
      `[N, h, w, channels]`, non-negative.

    Example:
    >>> layer = DetectorFeatures(reduce_channels=8, channels=16)
    >>> tuple(layer(np.zeros((2, 5, 7, 32), "float32")).shape)
    (2, 5, 7, 16)
    """

    def __init__(self, reduce_channels=512, channels=1024, dilation=6, **kwargs):
        super().__init__(**kwargs)
        self.reduce_channels = reduce_channels
        self.channels = channels
        self.dilation = dilation
        self.reduce_conv = keras.layers.Conv2D(
            reduce_channels, 3, padding="same", dilation_rate=dilation,
            activation="relu", dtype=self.dtype_policy, name="reduce_conv",
        )
        self.expand_conv = keras.layers.Conv2D(
            channels, 1, activation="relu", dtype=self.dtype_policy, name="expand_conv"
        )

    def build(self, input_shape):
        self.reduce_conv.build(input_shape)
        self.expand_conv.build(tuple(input_shape[:-1]) + (self.reduce_channels,))
        self.built = True

    def call(self, inputs):
        return self.expand_conv(self.reduce_conv(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.channels,)

    def get_config(self):
        config = super().get_config()
        config.update(
            reduce_channels=self.reduce_channels, channels=self.channels, dilation=self.dilation
        )
        return config
