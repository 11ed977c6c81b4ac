"""The bidirectional spatial-temporal memory of STMN (paper Sec. 3.1, Fig. 2)."""

import keras

from stmn_tf.layers._gated_conv import project_inputs
from stmn_tf.layers._gated_conv import serialized_arguments
from stmn_tf.layers.conv_gru import ConvGRU
from stmn_tf.layers.stmm import STMM
from stmn_tf.ops.match_trans_tf import check_affinity_power

CELLS = ("stmm", "convgru")


@keras.saving.register_keras_serializable(package="stmn_tf")
class BidirectionalSTMM(keras.layers.Layer):
    """Two memories over a clip, one forward and one backward in time, concatenated.

    `outputs[:, t]` is `[M_fwd_t, M_bwd_t]`: the forward memory after reading frames
    1..t, then the backward memory after reading frames T..t, both at the index of
    frame t (paper Sec. 3.1). In STMN this replaces the static R-FCN's 3x3 conv with
    `2 * filters` outputs, and `stmn_tf.models.weight_transfer` initialises the two
    directions' W, W_z, W_r from that conv's two halves of output channels.

    The W, W_z and W_r convolutions of both directions and all frames run as one
    convolution before the two recurrences (their kernels are concatenated at call
    time; the cells' `Conv2D` layers own the weights). T, H and W may be None.

    Args:
        filters: int. Channels of each direction's memory; the output has
            `2 * filters`. The paper uses 512.
        cell: str. `"stmm"` (STMM, Eqs. 1-4) or `"convgru"` (ConvGRU baseline).
            Defaults to `"stmm"`.
        kernel_size, k, align, std_multiplier (STMM only), input_scale,
            implementation, kernel_initializer, recurrent_initializer,
            bias_initializer, affinity_power: those of `stmn_tf.layers.STMM`, with
            its defaults, given to both directions (`implementation="tf"` for XLA;
            `affinity_power` > 1 sharpens MatchTrans, 1.0 is the authors').
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        sequences: `[B, T, H, W, C]`, the features of a clip.

    Returns:
        `[B, T, H, W, 2 * filters]`: forward memory channels first, then backward.

    Example:

    ```python
    import keras
    from stmn_tf.layers import BidirectionalSTMM

    clips = keras.Input((None, None, None, 16))  # [B, T, H, W, C]
    memory = BidirectionalSTMM(8)(clips)  # [B, T, H, W, 16]
    ```
    """

    # The arguments that the two direction layers take as they are.
    LAYER_ARGUMENTS = ("kernel_size", "k", "align", "input_scale", "implementation",
                       "kernel_initializer", "recurrent_initializer", "bias_initializer",
                       "affinity_power")

    def __init__(self, filters, cell="stmm", kernel_size=3, k=2, align=True, std_multiplier=3.0,
                 input_scale=1.0, implementation="auto", kernel_initializer="glorot_uniform",
                 recurrent_initializer="glorot_uniform", bias_initializer="zeros",
                 affinity_power=1.0, **kwargs):
        super().__init__(**kwargs)
        check_affinity_power(affinity_power)
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        self.filters = filters
        self.cell = cell
        self.std_multiplier = std_multiplier
        arguments = locals()
        for name in self.LAYER_ARGUMENTS:
            setattr(self, name, arguments[name])
        self.input_spec = keras.layers.InputSpec(ndim=5)

    def _memory_layer(self, go_backwards, name):
        kwargs = {arg: getattr(self, arg) for arg in self.LAYER_ARGUMENTS}
        kwargs.update(go_backwards=go_backwards, dtype=self.dtype_policy, name=name)
        if self.cell == "stmm":
            return STMM(self.filters, std_multiplier=self.std_multiplier, **kwargs)
        return ConvGRU(self.filters, **kwargs)

    def build(self, sequences_shape):
        if len(sequences_shape) != 5:
            raise ValueError(
                "BidirectionalSTMM expects inputs of rank 5 [B, T, H, W, C], got "
                f"shape {tuple(sequences_shape)}"
            )
        self.forward_layer = self._memory_layer(False, "forward")
        self.backward_layer = self._memory_layer(True, "backward")
        self.forward_layer.build(sequences_shape)
        self.backward_layer.build(sequences_shape)
        self.built = True

    def call(self, sequences):
        convs = self.forward_layer.cell.input_convs + self.backward_layer.cell.input_convs
        # Both directions' W, W_z, W_r over all frames: one convolution.
        projections = project_inputs(convs, sequences, self.input_scale)  # [B,T,H,W,6F]
        forward_projections, backward_projections = keras.ops.split(projections, 2, -1)
        forward, _, _ = self.forward_layer.recur(
            sequences, forward_projections, reverse=False
        )
        # `recur` writes the backward memory at its frame's index: aligned with the
        # input, no flip needed.
        backward, _, _ = self.backward_layer.recur(
            sequences, backward_projections, reverse=True
        )
        return keras.ops.concatenate([forward, backward], axis=-1)  # [B,T,H,W,2F]

    def step(self, features, state):
        """One frame of a stream, causally: the forward memory carried, the backward
        memory on the current frame alone.

        Online there is no future: the backward memory at frame t of a clip that ends
        at t has read frame t only (its first step: zero memory, `F_{t-1} = F_t`).
        So the output for frame t equals `call` on the clip that starts at the
        state's zero and ends at t, at its last frame.

        Args:
          features: `[B, H, W, C]`, F_t.
          state: `[memory [B, H, W, filters], prev_features [B, H, W, C]]` of the
            forward direction (all zeros start a video, see `GatedConvRNN.step`).

        Returns:
          `(outputs, state)`: `[B, H, W, 2 * filters]` (forward channels first) and
          the forward direction's next state.
        """
        forward, state = self.forward_layer.step(features, state)
        backward, _ = self.backward_layer.step(
            features, [keras.ops.zeros_like(forward), features]
        )
        return keras.ops.concatenate([forward, backward], axis=-1), state

    def compute_output_shape(self, sequences_shape):
        return tuple(sequences_shape[:-1]) + (2 * self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, cell=self.cell, std_multiplier=self.std_multiplier)
        config.update(serialized_arguments(self, self.LAYER_ARGUMENTS))
        return config
