"""The bidirectional spatial-temporal memory of STMN (paper Sec. 3.1, Fig. 2)."""

import keras

from stmn_tf.layers._gated_conv import GatedConvRNN
from stmn_tf.layers._gated_conv import project_inputs
from stmn_tf.layers.conv_gru import ConvGRU
from stmn_tf.layers.stmm import STMM

CELLS = {"stmm": STMM, "convgru": ConvGRU}

# The direction layers' arguments that the keyword form takes (std_multiplier: STMM only).
KEYWORD_ARGUMENTS = ("cell", "kernel_size", "k", "align", "std_multiplier", "input_scale",
                     "implementation", "kernel_initializer", "recurrent_initializer",
                     "bias_initializer", "affinity_power", "centre_features",
                     "feature_gradient", "offset_prior")


def direction_layers(filters, cell="stmm", std_multiplier=3.0, dtype=None, **arguments):
    """The forward and backward layers of the keyword form: `STMM` (or `ConvGRU`) of
    `filters` channels with `arguments` (kernel_size, k, align, ...; those of
    `stmn_tf.layers.STMM`), named "forward" and "backward"."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}")
    if cell == "stmm":
        arguments["std_multiplier"] = std_multiplier
    return tuple(CELLS[cell](filters, go_backwards=backwards, dtype=dtype, name=name, **arguments)
                 for backwards, name in ((False, "forward"), (True, "backward")))


@keras.saving.register_keras_serializable(package="stmn_tf")
class BidirectionalSTMM(keras.layers.Layer):
    """Two memories over a clip, one forward and one backward in time, concatenated.

    Built from its two direction layers, as `keras.layers.Bidirectional` is: `layer`
    runs forward in time, `backward_layer` (by default a copy of `layer` with
    `go_backwards=True`) backward. Both are copied from their configs under the names
    "forward" and "backward" (the variable paths `<name>/forward/stmm_cell/...`), so
    the layers passed in are not the ones that get weights.

    `outputs[:, t]` is `[M_fwd_t, M_bwd_t]`: the forward memory after reading frames
    1..t, then the backward memory after reading frames T..t, both at the index of
    frame t (paper Sec. 3.1). In STMN this replaces the static R-FCN's 3x3 conv with
    `2 * filters` outputs, and `stmn_tf.models.weight_transfer` initialises the two
    directions' W, W_z, W_r from that conv's two halves of output channels.

    The W, W_z and W_r convolutions of both directions and all frames run as one
    convolution before the two recurrences (their kernels are concatenated at call
    time; the cells' `Conv2D` layers own the weights), hence the two directions must
    share `kernel_size` and `input_scale`. T, H and W may be None.

    Args:
        layer: `stmn_tf.layers.STMM` or `ConvGRU` with `go_backwards=False`. The
            forward direction; its `filters` (the paper's 512) are each direction's.
            The keyword form `BidirectionalSTMM(filters, cell="stmm", k=2, ...)` (as
            `from_arguments`) is accepted too, and so are the configs it saved.
        backward_layer: optional layer of the same class, `filters`, `kernel_size`
            and `input_scale`, with `go_backwards=True`. Defaults to a copy of
            `layer` running backward.
        **kwargs: base layer arguments (`name`, `dtype`, ...). A `dtype` given here
            is also the two directions'.

    Call arguments:
        sequences: `[B, T, H, W, C]`, the features of a clip.

    Returns:
        `[B, T, H, W, 2 * filters]`: forward memory channels first, then backward.

    Example:

    ```python
    import keras
    from stmn_tf.layers import STMM, BidirectionalSTMM

    clips = keras.Input((None, None, None, 16))  # [B, T, H, W, C]
    memory = BidirectionalSTMM(STMM(8, k=2))(clips)  # [B, T, H, W, 16]
    ```
    """

    def __init__(self, layer=None, backward_layer=None, **kwargs):
        keywords = {name: kwargs.pop(name) for name in KEYWORD_ARGUMENTS if name in kwargs}
        filters = kwargs.pop("filters", None)
        super().__init__(**kwargs)
        dtype = self.dtype_policy if "dtype" in kwargs else None
        if not isinstance(layer, GatedConvRNN):
            # The keyword form, and the configs that BidirectionalSTMM saved before
            # it took its direction layers: both directions from the arguments.
            if layer is not None and filters is not None:
                raise ValueError(f"BidirectionalSTMM: give filters once, got layer={layer!r} "
                                 f"and filters={filters!r}")
            filters = layer if layer is not None else filters
            if isinstance(filters, bool) or not isinstance(filters, int):
                raise TypeError("BidirectionalSTMM: layer must be an STMM or ConvGRU layer "
                                f"(or the keyword form's filters, an int), got {layer!r}")
            if backward_layer is not None:
                raise ValueError("BidirectionalSTMM: backward_layer needs a layer, not "
                                 f"filters={filters!r}")
            layer, backward_layer = direction_layers(filters, dtype=dtype, **keywords)
        elif keywords or filters is not None:
            raise ValueError(f"BidirectionalSTMM: the arguments {sorted(keywords)} belong to "
                             "the direction layers; give them to `layer`")
        self.forward_layer = self._copy(layer, "layer", False, "forward", dtype)
        if backward_layer is None:
            backward_layer = layer
        self.backward_layer = self._copy(backward_layer, "backward_layer", True, "backward",
                                         dtype, check_direction=backward_layer is not layer)
        if type(self.backward_layer) is not type(self.forward_layer):
            raise ValueError(f"BidirectionalSTMM: backward_layer is a "
                             f"{type(self.backward_layer).__name__}, layer a "
                             f"{type(self.forward_layer).__name__}; the two must be the same")
        for name in ("filters", "kernel_size", "input_scale"):
            if getattr(self.backward_layer, name) != getattr(self.forward_layer, name):
                raise ValueError(
                    f"BidirectionalSTMM: backward_layer has {name}="
                    f"{getattr(self.backward_layer, name)!r}, layer {name}="
                    f"{getattr(self.forward_layer, name)!r}; the two must be equal")
        self.input_spec = keras.layers.InputSpec(ndim=5)

    @staticmethod
    def _copy(layer, argument, backwards, name, dtype, check_direction=True):
        """`layer` recreated from its config as the direction `name` (go_backwards
        `backwards`), after checking what the argument `argument` must be."""
        if not isinstance(layer, tuple(CELLS.values())):
            raise TypeError(f"BidirectionalSTMM: {argument} must be an STMM or ConvGRU "
                            f"layer, got {layer!r}")
        if check_direction and layer.go_backwards != backwards:
            raise ValueError(f"BidirectionalSTMM: {argument} must have go_backwards="
                             f"{backwards}, got {layer.go_backwards} ({layer.name})")
        if not layer.return_sequences or layer.return_state:
            raise ValueError(f"BidirectionalSTMM: {argument} must return sequences and no "
                             f"state, got return_sequences={layer.return_sequences}, "
                             f"return_state={layer.return_state} ({layer.name})")
        config = layer.get_config()
        config.update(go_backwards=backwards, name=name)
        if dtype is not None:
            config["dtype"] = dtype
        return type(layer).from_config(config)

    @classmethod
    def from_arguments(cls, filters, cell="stmm", kernel_size=3, k=2, align=True,
                       std_multiplier=3.0, input_scale=1.0, implementation="auto",
                       kernel_initializer="glorot_uniform",
                       recurrent_initializer="glorot_uniform", bias_initializer="zeros",
                       affinity_power=1.0, centre_features=False, feature_gradient=False,
                       offset_prior=False, **kwargs):
        """The keyword form: both directions `STMM` (`cell="stmm"`, Eqs. 1-4) or
        `ConvGRU` (`"convgru"`) of `filters` channels, with the arguments of
        `stmn_tf.layers.STMM` and its defaults (`std_multiplier`: STMM only);
        `kwargs`: base layer arguments."""
        arguments = locals()
        keywords = {name: arguments[name] for name in KEYWORD_ARGUMENTS}
        return cls(filters, **keywords, **kwargs)

    # The direction layers' arguments, readable on this layer (`memory.k`, `.cell`).
    @property
    def filters(self):
        return self.forward_layer.filters

    @property
    def cell(self):
        """"stmm" or "convgru": the kind of the direction layers."""
        return next(name for name, kind in CELLS.items() if isinstance(self.forward_layer, kind))

    def __getattr__(self, name):
        if name in KEYWORD_ARGUMENTS and "forward_layer" in self.__dict__:
            return getattr(self.forward_layer, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def build(self, sequences_shape):
        if len(sequences_shape) != 5:
            raise ValueError(
                "BidirectionalSTMM expects inputs of rank 5 [B, T, H, W, C], got "
                f"shape {tuple(sequences_shape)}"
            )
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
        config.update(layer=keras.saving.serialize_keras_object(self.forward_layer),
                      backward_layer=keras.saving.serialize_keras_object(self.backward_layer))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("layer", "backward_layer"):
            if isinstance(config.get(name), dict):
                config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)
