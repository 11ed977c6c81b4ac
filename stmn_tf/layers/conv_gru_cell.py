"""The ConvGRU cell of Ballas et al. (ICLR 2016), the paper's ablation baseline."""

import keras

from stmn_tf.layers._gated_conv import GatedConvCell


@keras.saving.register_keras_serializable(package="stmn_tf")
class ConvGRUCell(GatedConvCell):
    """A convolutional GRU step (Ballas et al.), optionally with MatchTrans.

    The baseline of the paper's ablation (Table 2): the STMM's wiring with the standard
    GRU non-linearities. With `M` the previous memory (aligned by MatchTrans when
    `align=True`) and `s = input_scale`:

        z   = sigmoid(s * W_z(F_t) + U_z(M))
        r   = sigmoid(s * W_r(F_t) + U_r(M))
        M~  = tanh(s * W(F_t) + U(r * M))
        M_t = (1 - z) * M + z * M~

    The six convolutions are the same `keras.layers.Conv2D` attributes as in
    `STMMCell` (`conv_w`, `conv_z_w`, `conv_r_w` with bias; `conv_u`, `conv_z_u`,
    `conv_r_u` without), so the same weight transfer applies.

    Args:
        filters: int. Channels of the memory.
        kernel_size: int or tuple. Size of the six convolutions. Defaults to 3.
        align: bool. Align the memory with MatchTrans. Defaults to False (Ballas et
            al. have no alignment).
        k, input_scale, implementation, kernel_initializer, recurrent_initializer,
            bias_initializer, affinity_power, centre_features, feature_gradient,
            offset_prior: as in
            `stmn_tf.layers.STMMCell`, with its defaults.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[B, H, W, C]`, the features F_t.
        states: `[memory [B, H, W, filters], prev_features [B, H, W, C]]`.

    Returns:
        `(memory, [memory, inputs])`: the new memory `[B, H, W, filters]` (values in
        (-1, 1)) and the next state.

    Example:

    ```python
    import keras
    import numpy as np
    from stmn_tf.layers import ConvGRUCell

    clip = np.random.rand(2, 3, 8, 8, 16).astype("float32")  # [B, T, H, W, C]
    memory = keras.layers.RNN(ConvGRUCell(4), return_sequences=True)(clip)
    # memory: [2, 3, 8, 8, 4]
    ```
    """

    def __init__(self, filters, kernel_size=3, k=2, align=False, input_scale=1.0,
                 implementation="auto", kernel_initializer="glorot_uniform",
                 recurrent_initializer="glorot_uniform", bias_initializer="zeros",
                 affinity_power=1.0, centre_features=False, feature_gradient=False,
                 offset_prior=False, **kwargs):
        # Only the default of `align` differs from the base (Ballas et al. do not align).
        super().__init__(filters, kernel_size, k, align, input_scale, implementation,
                         kernel_initializer, recurrent_initializer, bias_initializer,
                         affinity_power=affinity_power, centre_features=centre_features,
                         feature_gradient=feature_gradient, offset_prior=offset_prior,
                         **kwargs)

    def _gate(self, x):
        return keras.ops.sigmoid(x)

    def _candidate(self, x):
        return keras.ops.tanh(x)
