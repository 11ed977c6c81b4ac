"""The BN* layer."""

import keras

from stmn_tf.ops.bn_star_op import bn_star


@keras.saving.register_keras_serializable(package="stmn_tf")
class BNStar(keras.layers.Layer):
    """BN*: squashes non-negative activations into [0, 1] (paper Sec. 3.2, Fig. 3).

    The upper bound `ub = mean + K * std` is computed from the positive entries of the
    whole input (batch, space and channels; unbiased std) on every call, and the
    output is `clip(x, 0, ub) / ub`. There are no weights and no running statistics,
    so training and inference compute the same thing. `ub` is a constant for the
    gradient, and it is 1 when there are fewer than two positive entries or the
    statistics are not finite. The statistics are computed in float32 under mixed
    precision.

    Args:
        std_multiplier: float. K, the number of standard deviations above the mean
            where the output saturates at 1. Defaults to 3.0.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of any shape, e.g. `[B, H, W, C]`.

    Returns:
        A tensor of the shape of `inputs`, values in [0, 1].

    Example:

    ```python
    import numpy as np
    from stmn_tf.layers import BNStar

    gates = BNStar()(np.random.rand(2, 8, 8, 16).astype("float32"))
    assert float(gates.numpy().min()) >= 0.0 and float(gates.numpy().max()) <= 1.0
    ```
    """

    def __init__(self, std_multiplier=3.0, **kwargs):
        super().__init__(**kwargs)
        self.std_multiplier = std_multiplier

    def call(self, inputs):
        return bn_star(inputs, std_multiplier=self.std_multiplier)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"std_multiplier": self.std_multiplier})
        return config
