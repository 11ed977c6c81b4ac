"""The STMM cell (paper Sec. 3.2, Eqs. 1-4, with MatchTrans of Sec. 3.3)."""

import keras

from stmn_tf.layers._gated_conv import GatedConvCell
from stmn_tf.ops.bn_star_op import bn_star


@keras.saving.register_keras_serializable(package="stmn_tf")
class STMMCell(GatedConvCell):
    """One step of the Spatial-Temporal Memory Module, as the authors built it.

    With `M` the memory of the previous step aligned to frame t by MatchTrans (or left
    as it is when `align=False`) and `s = input_scale`:

        z   = BN*(ReLU(s * W_z(F_t) + U_z(M)))        # Eq. 1
        r   = BN*(ReLU(s * W_r(F_t) + U_r(M)))        # Eq. 2
        M~  = ReLU(s * W(F_t) + U(r * M))             # Eq. 3
        M_t = (1 - z) * M + z * M~                    # Eq. 4

    All six convolutions are `kernel_size` x `kernel_size` with `same` padding and are
    `keras.layers.Conv2D` attributes: `conv_w`, `conv_z_w`, `conv_r_w` (with bias, they
    read F_t) and `conv_u`, `conv_z_u`, `conv_r_u` (no bias, they read the memory).
    `s` multiplies the W convolutions' outputs, bias included (the authors used 20 to
    undo a feature scaling of their ResNet). ReLU instead of sigmoid/tanh keeps the
    memory in the range of the static detector's conv that W, W_z and W_r are
    initialised from (Sec. 3.2, see `stmn_tf.models.weight_transfer`).

    The state is `[memory [B, H, W, filters], prev_features [B, H, W, C]]`. Inside a
    plain `keras.layers.RNN` the initial state is zero memory and zero previous
    features (MatchTrans then falls back to the identity, which with zero memory is the
    paper's first step) and needs a static H and W; call that RNN on tensors (eagerly
    or in a `tf.function`: `keras.layers.RNN` cannot infer the symbolic output shape
    of a convolutional cell). `stmn_tf.layers.STMM` is the layer for functional
    models, handles any T, H, W and computes the W convolutions of all frames at once.

    Args:
        filters: int. Channels of the memory. The paper uses 512 per direction.
        kernel_size: int or tuple. Size of the six convolutions. Defaults to 3.
        k: int. MatchTrans window radius. Defaults to 2.
        align: bool. Align the memory with MatchTrans. Defaults to True.
        std_multiplier: float. K of BN*. Defaults to 3.0.
        input_scale: float. `s`. Defaults to 1.0.
        implementation: str. MatchTrans implementation, `"auto"`, `"custom_op"` or
            `"tf"` (use `"tf"` for XLA). Defaults to `"auto"`.
        kernel_initializer: initializer of W, W_z, W_r. Defaults to
            `"glorot_uniform"`.
        recurrent_initializer: initializer of U, U_z, U_r. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer of the W biases. Defaults to `"zeros"`.
        affinity_power: float, finite, > 0. MatchTrans' coefficients become
            `max(0, cos)^p / sum max(0, cos)^p` over the window. With non-negative
            (ReLU'd) features every cosine is positive and p = 1 gives nearly
            uniform weights, a blur of the memory; p > 1 concentrates them on the
            best matches. Defaults to 1.0, the authors' formula.
        centre_features: bool. MatchTrans' cosine reads each frame's features minus
            their mean over the frame's positions, so that what all positions share
            does not make every pair alike (`stmn_tf.ops.match_trans`). Defaults to
            False, the authors' formula.
        feature_gradient: bool. The loss's gradient also reaches both frames'
            features through MatchTrans' coefficients, so that they can learn to
            match (the pure-TF MatchTrans only: `"auto"` then takes it,
            `"custom_op"` is refused). Defaults to False, the authors' memory-only
            gradient.
        offset_prior: bool. MatchTrans learns a log-weight per window offset (a
            weight `offset_prior` of `(2k+1)^2` values, zeros at first) that
            multiplies the affinities before the normalisation
            (`stmn_tf.ops.match_trans`), so that training learns how far objects
            move between frames (the pure-TF MatchTrans only, as
            `feature_gradient`). Defaults to False, the authors' formula.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[B, H, W, C]`, the features F_t.
        states: `[memory [B, H, W, filters], prev_features [B, H, W, C]]`.

    Returns:
        `(memory, [memory, inputs])`: the new memory `[B, H, W, filters]`, which is
        also the output, and the next state.

    Example:

    ```python
    import keras
    import numpy as np
    from stmn_tf.layers import STMMCell

    clip = np.random.rand(2, 3, 8, 8, 16).astype("float32")  # [B, T, H, W, C]
    memory = keras.layers.RNN(STMMCell(4), return_sequences=True)(clip)
    # memory: [2, 3, 8, 8, 4]
    ```
    """

    ARGUMENTS = GatedConvCell.ARGUMENTS + ("std_multiplier",)

    def __init__(self, filters, kernel_size=3, k=2, align=True, std_multiplier=3.0,
                 input_scale=1.0, implementation="auto", kernel_initializer="glorot_uniform",
                 recurrent_initializer="glorot_uniform", bias_initializer="zeros",
                 affinity_power=1.0, centre_features=False, feature_gradient=False,
                 offset_prior=False, **kwargs):
        super().__init__(filters, kernel_size, k, align, input_scale, implementation,
                         kernel_initializer, recurrent_initializer, bias_initializer,
                         affinity_power=affinity_power, centre_features=centre_features,
                         feature_gradient=feature_gradient, offset_prior=offset_prior,
                         **kwargs)
        self.std_multiplier = std_multiplier

    def _gate(self, x):
        # BN* instead of a sigmoid: gates in [0, 1] from ReLU'd activations (Sec. 3.2).
        return bn_star(keras.ops.relu(x), self.std_multiplier)

    def _candidate(self, x):
        return keras.ops.relu(x)

    def get_config(self):
        config = super().get_config()
        config.update({"std_multiplier": self.std_multiplier})
        return config
