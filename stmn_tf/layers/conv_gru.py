"""The ConvGRU recurrent layer over a clip `[B, T, H, W, C]`."""

import keras

from stmn_tf.layers._gated_conv import GatedConvRNN
from stmn_tf.layers.conv_gru_cell import ConvGRUCell


@keras.saving.register_keras_serializable(package="stmn_tf")
class ConvGRU(GatedConvRNN):
    """A convolutional GRU over a clip (Ballas et al.), the paper's ablation baseline.

    A `keras.layers.RNN` whose `.cell` is a `ConvGRUCell` (sigmoid gates, tanh
    candidate, MatchTrans optional), run like `stmn_tf.layers.STMM`: any T, H, W, the
    input convolutions of all frames in one convolution, the steps in one symbolic
    loop. Masks are not supported.

    Args:
        filters, kernel_size, k, align, input_scale, implementation,
            kernel_initializer, recurrent_initializer, bias_initializer,
            affinity_power, centre_features, feature_gradient, offset_prior: the cell's,
            `stmn_tf.layers.ConvGRUCell`, with its defaults (no alignment).
        return_sequences: bool. Return the memory of every frame, else the last.
            Defaults to True.
        return_state: bool. Also return the final state `[memory, last_features]`.
            Defaults to False.
        go_backwards: bool. Process the clip from the last frame to the first (the
            returned sequence is then in processing order, as in `keras.layers.RNN`).
            Defaults to False.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        sequences: `[B, T, H, W, C]`.
        initial_state: optional memory `[B, H, W, filters]` or
            `[memory, prev_features [B, H, W, C]]`. Defaults to zero memory.

    Returns:
        `[B, T, H, W, filters]` (`return_sequences`) or `[B, H, W, filters]`; with
        `return_state`, also the final memory and the last frame read.

    Example:

    ```python
    import keras
    from stmn_tf.layers import ConvGRU

    clips = keras.Input((None, None, None, 16))
    memory = ConvGRU(8)(clips)  # [B, T, H, W, 8]
    ```
    """

    def __init__(self, filters, kernel_size=3, k=2, align=False, input_scale=1.0,
                 implementation="auto", kernel_initializer="glorot_uniform",
                 recurrent_initializer="glorot_uniform", bias_initializer="zeros",
                 return_sequences=True, return_state=False, go_backwards=False,
                 affinity_power=1.0, centre_features=False, feature_gradient=False,
                 offset_prior=False, **kwargs):
        cell = ConvGRUCell(filters, kernel_size, k, align, input_scale, implementation,
                           kernel_initializer, recurrent_initializer, bias_initializer,
                           affinity_power=affinity_power, centre_features=centre_features,
                           feature_gradient=feature_gradient, offset_prior=offset_prior,
                           dtype=kwargs.get("dtype"),
                           name="conv_gru_cell")
        super().__init__(cell, return_sequences, return_state, go_backwards, **kwargs)
