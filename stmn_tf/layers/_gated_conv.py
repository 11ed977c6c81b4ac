"""What the STMM and the ConvGRU share: six convolutions, an optional MatchTrans, and a
recurrence whose input convolutions run for all frames at once.

Both units update a spatial memory with the same wiring (paper Eqs. 1-4, Ballas et al.
for ConvGRU); only the gate and candidate non-linearities differ, so the subclasses
override `_gate` and `_candidate`.
"""

import keras

from stmn_tf.ops.match_trans_op import IMPLEMENTATIONS
from stmn_tf.ops.match_trans_op import check_feature_gradient
from stmn_tf.ops.match_trans_op import check_learned_offset_prior
from stmn_tf.ops.match_trans_op import match_trans
from stmn_tf.ops.match_trans_tf import check_affinity_power

# The custom op has float16/32/64 kernels; other dtypes (bfloat16) are aligned in float32.
_MATCH_TRANS_DTYPES = ("float16", "float32", "float64")


def project_inputs(convs, features, scale=1.0):
    """`s * [conv_1(F), conv_2(F), ...]` in ONE convolution with the kernels concatenated.

    The W, W_z and W_r convolutions of Eqs. 1-3 read only the input features, so they
    need not sit inside the recurrence: one convolution over all frames (and both
    directions) replaces 3 * T (or 6 * T) small ones. The `Conv2D` layers stay the
    owners of the weights; their kernels are only concatenated at call time.

    Args:
      convs: built `keras.layers.Conv2D` layers with the same kernel size, `same`
        padding, stride 1 and a bias.
      features: `[B, H, W, C]` or `[B, T, H, W, C]`.
      scale: float. `s`, multiplying the convolutions' outputs (bias included).

    Returns:
      `[B, H, W, N]` or `[B, T, H, W, N]` with `N` the sum of the convs' filters, in
      the order of `convs`.
    """
    dtype = features.dtype
    kernel = keras.ops.concatenate(
        [keras.ops.cast(conv.kernel, dtype) for conv in convs], axis=-1
    )  # [kh, kw, C, N]
    bias = keras.ops.concatenate(
        [keras.ops.cast(conv.bias, dtype) for conv in convs], axis=-1
    )  # [N]
    sequence = len(features.shape) == 5
    if sequence:
        shape = keras.ops.shape(features)
        batch, steps = shape[0], shape[1]
        # [B, T, H, W, C] -> [B * T, H, W, C]: the frames are independent here.
        features = keras.ops.reshape(
            features, (-1, shape[2], shape[3], features.shape[-1])
        )
    out = keras.ops.conv(features, kernel, padding="same", data_format="channels_last")
    # TF's CPU convolution returns the input's channel count for an empty batch; the
    # reshape states the output channels (a no-op otherwise).
    out_hw = keras.ops.shape(out)
    out = keras.ops.reshape(out, (-1, out_hw[1], out_hw[2], kernel.shape[-1]))
    out = out + bias
    if scale != 1.0:
        out = out * keras.ops.cast(scale, dtype)
    if sequence:
        out_shape = keras.ops.shape(out)
        out = keras.ops.reshape(
            out, (batch, steps, out_shape[1], out_shape[2], out.shape[-1])
        )  # [B, T, H, W, N]
    return out


# The offset prior's weight is its log-weights over this (`offset_log_prior`).
OFFSET_PRIOR_SCALE = 10.0


class GatedConvCell(keras.layers.Layer):
    """Base of `STMMCell` and `ConvGRUCell` (see their docstrings).

    State: `[memory [B, H, W, filters], prev_features [B, H, W, C]]`.
    """

    # The constructor arguments, in order; the recurrent layers expose them too.
    ARGUMENTS = ("filters", "kernel_size", "k", "align", "input_scale", "implementation",
                 "kernel_initializer", "recurrent_initializer", "bias_initializer",
                 "affinity_power", "centre_features", "feature_gradient", "offset_prior")

    def __init__(
        self,
        filters,
        kernel_size=3,
        k=2,
        align=True,
        input_scale=1.0,
        implementation="auto",
        kernel_initializer="glorot_uniform",
        recurrent_initializer="glorot_uniform",
        bias_initializer="zeros",
        affinity_power=1.0,
        centre_features=False,
        feature_gradient=False,
        offset_prior=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_affinity_power(affinity_power)
        if not isinstance(centre_features, bool):
            raise ValueError(f"centre_features must be True or False, got {centre_features!r}")
        check_feature_gradient(feature_gradient, implementation)
        check_learned_offset_prior(offset_prior, implementation)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be a positive integer, got {filters!r}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
            )
        # Every argument under its own name; ARGUMENTS is also what get_config writes.
        arguments = locals()
        for name in GatedConvCell.ARGUMENTS:
            setattr(self, name, arguments[name])
        # Like ConvLSTMCell: the state shapes depend on the input's spatial size, so
        # they are not given as integers (the recurrent layers build them from the
        # input; see `get_initial_state` for the plain `keras.layers.RNN` path).
        self.state_size = -1
        self.output_size = -1
        self.input_dim = None
        self.spatial_shape = (None, None)

    def _conv(self, name, use_bias, initializer):
        return keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            padding="same",
            data_format="channels_last",
            use_bias=use_bias,
            kernel_initializer=initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, inputs_shape, states_shape=None):
        if len(inputs_shape) != 4:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank 4 [B, H, W, C], got "
                f"shape {tuple(inputs_shape)}"
            )
        if inputs_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__}: the channel dimension of the inputs must be "
                f"known, got shape {tuple(inputs_shape)}"
            )
        self.input_dim = int(inputs_shape[-1])
        self.spatial_shape = tuple(inputs_shape[1:3])
        # W, W_z, W_r read F_t (with bias); U, U_z, U_r read the memory (no bias).
        self.conv_w = self._conv("conv_w", True, self.kernel_initializer)
        self.conv_z_w = self._conv("conv_z_w", True, self.kernel_initializer)
        self.conv_r_w = self._conv("conv_r_w", True, self.kernel_initializer)
        self.conv_u = self._conv("conv_u", False, self.recurrent_initializer)
        self.conv_z_u = self._conv("conv_z_u", False, self.recurrent_initializer)
        self.conv_r_u = self._conv("conv_r_u", False, self.recurrent_initializer)
        for conv in self.input_convs:
            conv.build((None, None, None, self.input_dim))
        for conv in (self.conv_u, self.conv_z_u, self.conv_r_u):
            conv.build((None, None, None, self.filters))
        self.offset_prior_weight = None
        if self.offset_prior and self.align:
            # MatchTrans' log-weight per window offset, (dy + k) * (2k + 1) + dx + k,
            # over OFFSET_PRIOR_SCALE; zeros: the authors' coefficients until training
            # moves them.
            self.offset_prior_weight = self.add_weight(
                name="offset_prior", shape=((2 * self.k + 1) ** 2,), initializer="zeros")
        self.built = True

    def offset_log_prior(self):
        """MatchTrans' learned log-weights `[(2k+1)^2]` (None without `offset_prior`).

        The weight holds them over OFFSET_PRIOR_SCALE: a gradient step moves the
        log-weights OFFSET_PRIOR_SCALE^2 times as far as a weight used as it is
        (Caffe's lr_mult). Their gradient is a sum of small terms of both signs over
        every position and frame; a plain weight moved only 0.17 in 200 steps of the
        tiny STMN at its learning rate, far too slow for the few thousand steps of a
        fine-tuning.
        """
        weight = getattr(self, "offset_prior_weight", None)  # None before build
        return None if weight is None else weight * OFFSET_PRIOR_SCALE

    def set_offset_log_prior(self, values):
        """Sets the log-weights that `offset_log_prior` returns."""
        self.offset_prior_weight.assign(keras.ops.convert_to_tensor(values) / OFFSET_PRIOR_SCALE)

    @property
    def input_convs(self):
        """`[conv_w, conv_z_w, conv_r_w]`, the order of `input_projections`' channels."""
        return [self.conv_w, self.conv_z_w, self.conv_r_w]

    def input_projections(self, features):
        """`s * [W(F), W_z(F), W_r(F)]`: `[..., H, W, C]` -> `[..., H, W, 3 * filters]`."""
        return project_inputs(self.input_convs, features, self.input_scale)

    def _gate(self, x):
        raise NotImplementedError("abstract: STMMCell and ConvGRUCell define the gate")

    def _candidate(self, x):
        raise NotImplementedError("abstract: STMMCell and ConvGRUCell define the candidate")

    def _align_memory(self, features, prev_features, memory):
        if not self.align:
            return memory
        dtype = memory.dtype
        if dtype not in _MATCH_TRANS_DTYPES:
            features, prev_features, memory = (
                keras.ops.cast(t, "float32") for t in (features, prev_features, memory)
            )
        aligned = match_trans(
            features, prev_features, memory, k=self.k, implementation=self.implementation,
            affinity_power=self.affinity_power, centre_features=self.centre_features,
            feature_gradient=self.feature_gradient,
            offset_prior=self.offset_log_prior(),
        )
        return keras.ops.cast(aligned, dtype)

    def step(self, features, prev_features, projections, memory):
        """One update of the memory given the precomputed input projections.

        Args:
          features: `[B, H, W, C]`, F_t.
          prev_features: `[B, H, W, C]`, F_{t-1}.
          projections: `[B, H, W, 3 * filters]`, `input_projections(F_t)`.
          memory: `[B, H, W, filters]`, M_{t-1}.

        Returns:
          M_t, `[B, H, W, filters]`.
        """
        # Sec. 3.3: M_{t-1} is replaced by its aligned version in all of Eqs. 1-4.
        aligned = self._align_memory(features, prev_features, memory)
        x_w, x_z, x_r = keras.ops.split(projections, 3, axis=-1)
        z = self._gate(x_z + self.conv_z_u(aligned))  # Eq. 1
        r = self._gate(x_r + self.conv_r_u(aligned))  # Eq. 2
        candidate = self._candidate(x_w + self.conv_u(r * aligned))  # Eq. 3
        return (1.0 - z) * aligned + z * candidate  # Eq. 4

    def call(self, inputs, states, training=None):
        memory, prev_features = states[0], states[1]
        projections = self.input_projections(inputs)
        memory = self.step(inputs, prev_features, projections, memory)
        return memory, [memory, inputs]

    def get_initial_state(self, batch_size=None):
        """Zero memory and zero previous features, for a plain `keras.layers.RNN`.

        Zero previous features make MatchTrans fall back to the identity, so with zero
        memory this equals the paper's first step (zero memory, `F_{t-1} = F_t`).
        """
        height, width = self.spatial_shape
        if height is None or width is None:
            raise ValueError(
                f"{type(self).__name__} inside a plain keras.layers.RNN needs a static "
                "height and width to build its initial state; use stmn_tf.layers.STMM, "
                "ConvGRU or BidirectionalSTMM for inputs with H, W = None"
            )
        return [
            keras.ops.zeros(
                (batch_size, height, width, self.filters), dtype=self.compute_dtype
            ),
            keras.ops.zeros(
                (batch_size, height, width, self.input_dim), dtype=self.compute_dtype
            ),
        ]

    def compute_output_shape(self, inputs_shape, states_shape=None):
        output_shape = tuple(inputs_shape[:-1]) + (self.filters,)
        return output_shape, [output_shape, tuple(inputs_shape)]

    def get_config(self):
        config = super().get_config()
        config.update(serialized_arguments(self, GatedConvCell.ARGUMENTS))
        return config


def serialized_arguments(layer, names):
    """`{name: value}` of a layer's constructor arguments, initializers serialised."""
    config = {name: getattr(layer, name) for name in names}
    config.update({name: serialized_initializers(layer)[name] for name in names
                   if name.endswith("_initializer")})
    return config


def serialized_initializers(layer):
    """The three initializer arguments of a gated conv layer, as `get_config` stores them."""
    return {
        name: keras.initializers.serialize(keras.initializers.get(getattr(layer, name)))
        for name in ("kernel_initializer", "recurrent_initializer", "bias_initializer")
    }


class GatedConvRNN(keras.layers.RNN):
    """Base of `STMM` and `ConvGRU`: the recurrence of a `GatedConvCell` over
    `[B, T, H, W, C]` (see their docstrings)."""

    def __init__(
        self, cell, return_sequences=True, return_state=False, go_backwards=False, **kwargs
    ):
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            **kwargs,
        )
        # The cell's arguments, readable on the layer as on the cell (`STMM(8).k`).
        for name in cell.ARGUMENTS:
            setattr(self, name, getattr(cell, name))
        # Clips are whole sequences; masks are not supported.
        self.supports_masking = False
        self.input_spec = keras.layers.InputSpec(ndim=5)

    def build(self, sequences_shape, initial_state_shape=None):
        if len(sequences_shape) != 5:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank 5 [B, T, H, W, C], got "
                f"shape {tuple(sequences_shape)}"
            )
        # The cell must not take its spatial size from the first input: H and W vary.
        step_shape = (sequences_shape[0], None, None, sequences_shape[-1])
        if not self.cell.built:
            self.cell.build(step_shape)
        self.built = True

    def recur(self, sequences, projections, initial_state=None, reverse=False):
        """Runs the memory over time as one symbolic loop.

        Args:
          sequences: `[B, T, H, W, C]`, the features F_1..F_T.
          projections: `[B, T, H, W, 3 * filters]`, the cell's input projections of
            every frame (computed outside the loop, see `project_inputs`).
          initial_state: None (zero memory, `F_{t-1} = F_t` at the first step), the
            memory `[B, H, W, filters]`, or `[memory, prev_features [B, H, W, C]]`.
          reverse: bool. Run from the last frame to the first.

        Returns:
          `(outputs, memory, last_features)`: `outputs` `[B, T, H, W, filters]` with
          `outputs[:, t]` the memory after frame t (in input order also when
          `reverse`), the final memory `[B, H, W, filters]`, and the last frame read
          `[B, H, W, C]` (to continue a stream with `initial_state`).
        """
        shape = keras.ops.shape(sequences)
        first = sequences[:, -1] if reverse else sequences[:, 0]
        prev_features = None
        if initial_state is None:
            memory = keras.ops.zeros(
                (shape[0], shape[2], shape[3], self.cell.filters), dtype=sequences.dtype
            )
        else:
            if not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]
            memory = keras.ops.cast(initial_state[0], sequences.dtype)
            if len(initial_state) > 1:
                prev_features = keras.ops.cast(initial_state[1], sequences.dtype)
        if prev_features is None:
            prev_features = first  # the paper's first step: F_{t-1} = F_t

        steps = shape[1]
        start = steps - 1 if reverse else 0
        direction = -1 if reverse else 1

        def body(carry, projection):
            memory, t = carry
            # Frames are read in the loop by index rather than fed as scan inputs: no
            # time-major copy of the features, and keras.ops.scan (TF) takes only one
            # input sequence when T is None.
            features = keras.ops.take(sequences, t, axis=1)  # [B, H, W, C]
            prev = features
            if self.cell.align:
                previous = keras.ops.take(
                    sequences, keras.ops.clip(t - direction, 0, steps - 1), axis=1
                )
                prev = keras.ops.where(t == start, prev_features, previous)
            memory = self.cell.step(features, prev, projection, memory)
            return (memory, t + direction), (memory, t)

        # A tf.while_loop in TensorFlow: any T in one graph. With reverse=True the
        # outputs are still written at their frame's index.
        projections = keras.ops.moveaxis(projections, 1, 0)  # [T, B, H, W, 3F]
        start_index = keras.ops.cast(start, "int32")
        (memory, _), (outputs, _) = keras.ops.scan(
            body, (memory, start_index), projections, reverse=reverse
        )
        outputs = keras.ops.moveaxis(outputs, 0, 1)  # [B, T, H, W, filters]
        last_features = sequences[:, 0] if reverse else sequences[:, -1]
        return outputs, memory, last_features

    def step(self, features, state):
        """One frame of a stream: the memory after it, and the state for the next one.

        What `recur` computes at each frame, for a video that arrives frame by frame.
        A zero `state` starts a video: zero previous features make MatchTrans keep the
        (zero) memory, which is the paper's first step.

        Args:
          features: `[B, H, W, C]`, F_t.
          state: `[memory [B, H, W, filters], prev_features [B, H, W, C]]`.

        Returns:
          `(memory, [memory, features])`: M_t `[B, H, W, filters]` and the next state.
        """
        memory, prev_features = state
        memory = self.cell.step(
            features, prev_features, self.cell.input_projections(features), memory
        )
        return memory, [memory, features]

    def call(self, sequences, initial_state=None, mask=None, training=False):
        projections = self.cell.input_projections(sequences)  # [B, T, H, W, 3F]
        outputs, memory, last_features = self.recur(
            sequences, projections, initial_state, reverse=self.go_backwards
        )
        if self.return_sequences:
            if self.go_backwards:
                # keras.layers.RNN's convention: outputs in processing order.
                outputs = keras.ops.flip(outputs, axis=1)
            output = outputs
        else:
            output = memory
        if self.return_state:
            return output, memory, last_features
        return output

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, steps, height, width, channels = sequences_shape
        state_shape = (batch, height, width, self.cell.filters)
        if self.return_sequences:
            output_shape = (batch, steps, height, width, self.cell.filters)
        else:
            output_shape = state_shape
        if self.return_state:
            return output_shape, state_shape, (batch, height, width, channels)
        return output_shape

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        for key in ("cell", "stateful", "unroll", "zero_output_for_mask"):
            config.pop(key, None)
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        config.update(cell_config)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
