"""The MatchTrans layer."""

import keras

from stmn_tf.ops.match_trans_op import check_feature_gradient
from stmn_tf.ops.match_trans_op import match_trans
from stmn_tf.ops.match_trans_tf import check_affinity_power


@keras.saving.register_keras_serializable(package="stmn_tf")
class MatchTrans(keras.layers.Layer):
    """MatchTrans: aligns the memory of frame t-1 to frame t (paper Sec. 3.3).

    For each position, the ReLU'd cosine affinities between `F_t(x, y)` and the
    in-bounds neighbours `F_{t-1}(x+i, y+j)`, `i, j in [-k, k]`, are normalised to sum
    1 and used to average the memory `M_{t-1}` over the same window. This follows the
    authors' code rather than the paper's Eq. 5 (cosine instead of dot product, ReLU
    before normalisation, out-of-bounds neighbours skipped; see
    `stmn_tf.ops.match_trans`). No gradient flows to the features through the
    coefficients, only to the memory. The layer has no weights.

    With `affinity_power` p the affinities are `max(0, cos)^p` before the
    normalisation (the identity fallback below 1e-7 applies to the powered sum).
    Features after a ReLU are non-negative, so every cosine is positive and with
    p = 1 the window's weights are nearly uniform: a box blur of the memory, not an
    alignment. p > 1 keeps their order and puts the weight on the best matches.

    Args:
        k: int. Window radius; the window is `(2k+1) x (2k+1)`. Defaults to 2.
        implementation: str. `"custom_op"` (the compiled op), `"tf"` (standard
            TensorFlow ops, XLA-compilable) or `"auto"` (the op when its library
            loads, else `"tf"`). Defaults to `"auto"`.
        affinity_power: float, finite, > 0. The power p above. Defaults to 1.0,
            the authors' formula.
        centre_features: bool. The cosine reads each frame's features minus their
            mean over the frame's positions (`stmn_tf.ops.match_trans`), so that what
            all positions share does not make every pair alike. Defaults to False,
            the authors' formula.
        feature_gradient: bool. Differentiate through the coefficients to both
            frames' features too (the pure-TF MatchTrans only: `"auto"` then takes it,
            `"custom_op"` is refused). Defaults to False, the authors' memory-only
            gradient.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: list `[features, prev_features, prev_memory]` with `features` and
            `prev_features` `[B, H, W, C]` and `prev_memory` `[B, H, W, D]`.

    Returns:
        The aligned memory, `[B, H, W, D]`.

    Example:

    ```python
    import numpy as np
    from stmn_tf.layers import MatchTrans

    features = np.random.rand(1, 6, 6, 8).astype("float32")
    memory = np.random.rand(1, 6, 6, 4).astype("float32")
    # Identical frames: every position mostly keeps its own memory.
    aligned = MatchTrans(k=1)([features, features, memory])  # [1, 6, 6, 4]
    ```
    """

    def __init__(self, k=2, implementation="auto", affinity_power=1.0, centre_features=False,
                 feature_gradient=False, **kwargs):
        super().__init__(**kwargs)
        check_affinity_power(affinity_power)
        if not isinstance(centre_features, bool):
            raise ValueError(f"centre_features must be True or False, got {centre_features!r}")
        check_feature_gradient(feature_gradient, implementation)
        self.k = k
        self.implementation = implementation
        self.affinity_power = affinity_power
        self.centre_features = centre_features
        self.feature_gradient = feature_gradient

    def call(self, inputs):
        features, prev_features, prev_memory = inputs
        return match_trans(
            features,
            prev_features,
            prev_memory,
            k=self.k,
            implementation=self.implementation,
            affinity_power=self.affinity_power,
            centre_features=self.centre_features,
            feature_gradient=self.feature_gradient,
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({"k": self.k, "implementation": self.implementation,
                       "affinity_power": self.affinity_power,
                       "centre_features": self.centre_features,
                       "feature_gradient": self.feature_gradient})
        return config
