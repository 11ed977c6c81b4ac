"""The STMM recurrent layer over a clip `[B, T, H, W, C]`."""

import keras

from stmn_tf.layers._gated_conv import GatedConvRNN
from stmn_tf.layers.stmm_cell import STMMCell


@keras.saving.register_keras_serializable(package="stmn_tf")
class STMM(GatedConvRNN):
    """The Spatial-Temporal Memory Module over a clip, one direction (paper Sec. 3.2).

    A `keras.layers.RNN` whose `.cell` is an `STMMCell` (see there for Eqs. 1-4), in
    the way `keras.layers.ConvLSTM2D` wraps its cell, with two differences that matter
    for video: the initial state is built from the input, so T, H and W may all be
    None; and the input convolutions W, W_z, W_r of all T frames run as one
    convolution before the recurrence (they do not depend on the memory), whose
    steps then run as one symbolic loop (`keras.ops.scan`, a `tf.while_loop`).
    Masks are not supported.

    Args:
        filters, kernel_size, k, align, std_multiplier, input_scale, implementation,
            kernel_initializer, recurrent_initializer, bias_initializer,
            affinity_power, centre_features, feature_gradient, offset_prior: the cell's,
            `stmn_tf.layers.STMMCell`, with its defaults.
        return_sequences: bool. Return the memory of every frame, else the last.
            Defaults to True.
        return_state: bool. Also return the final state `[memory, last_features]`.
            Defaults to False.
        go_backwards: bool. Process the clip from the last frame to the first; as in
            `keras.layers.RNN`, the returned sequence is then in processing (reversed)
            order. Defaults to False.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        sequences: `[B, T, H, W, C]`, the features F_1..F_T.
        initial_state: optional. The memory `[B, H, W, filters]`, or
            `[memory, prev_features [B, H, W, C]]` (for instance the states a previous
            call returned with `return_state=True`, to continue a stream). Defaults
            to zero memory with `F_{t-1} = F_t` at the first step.

    Returns:
        `[B, T, H, W, filters]` (`return_sequences`) or `[B, H, W, filters]`; with
        `return_state`, also the final memory `[B, H, W, filters]` and the last frame
        read `[B, H, W, C]`.

    Example:

    ```python
    import keras
    from stmn_tf.layers import STMM

    clips = keras.Input((None, None, None, 16))  # any T, H, W
    memory = STMM(8)(clips)  # [B, T, H, W, 8]
    ```
    """

    def __init__(self, filters, kernel_size=3, k=2, align=True, std_multiplier=3.0,
                 input_scale=1.0, implementation="auto", kernel_initializer="glorot_uniform",
                 recurrent_initializer="glorot_uniform", bias_initializer="zeros",
                 return_sequences=True, return_state=False, go_backwards=False,
                 affinity_power=1.0, centre_features=False, feature_gradient=False,
                 offset_prior=False, **kwargs):
        cell = STMMCell(filters, kernel_size, k, align, std_multiplier, input_scale,
                        implementation, kernel_initializer, recurrent_initializer,
                        bias_initializer, affinity_power=affinity_power,
                        centre_features=centre_features, feature_gradient=feature_gradient,
                        offset_prior=offset_prior, dtype=kwargs.get("dtype"), name="stmm_cell")
        super().__init__(cell, return_sequences, return_state, go_backwards, **kwargs)
