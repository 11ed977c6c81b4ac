"""The Spatial-Temporal Memory Network detector (Xiao & Lee, ECCV 2018)."""

import keras
import tensorflow as tf

from stmn_tf.layers.bidirectional_stmm import BidirectionalSTMM
from stmn_tf.layers.conv_gru import ConvGRU
from stmn_tf.layers.stmm import STMM
from stmn_tf.models.detector import FEATURE_STRIDE
from stmn_tf.models.detector import TwoStageDetector

DIRECTIONS = ("bidirectional", "forward")


@keras.saving.register_keras_serializable(package="stmn_tf")
class STMN(TwoStageDetector):
    """R-FCN whose 3x3 conv after `F_t` is a spatial-temporal memory (paper Sec. 3, Fig. 2).

    Backbone -> `F_t` -> memory (`BidirectionalSTMM`: forward and backward STMMs of
    `memory_filters` channels each, concatenated, in place of R-FCN's 3x3 conv of
    `2 * memory_filters` outputs) -> the R-FCN head (1x1 conv 1024->512, PS-RoI
    pooling). The RPN sits on `F_t` and does not see the memory, as the paper's
    proposals do not. `stmn_tf.models.detector_transfer.transfer_rfcn_to_stmn`
    initialises it from a trained `RFCN` (paper Sec. 3.2).

    Args:
      num_classes: int. Foreground classes C.
      memory_filters: int. Channels of each direction's memory. Defaults to 512.
      memory_cell: str. `"stmm"` (the paper's) or `"convgru"` (the ablations'
        ConvGRU with sigmoid and tanh). Defaults to `"stmm"`.
      memory_k: int. MatchTrans radius. Defaults to 2.
      memory_align: bool. MatchTrans alignment (False: "STMN No-MatchTrans").
        Defaults to True.
      memory_direction: str. `"bidirectional"` (the paper's) or `"forward"` (online
        use: one forward memory of `2 * memory_filters` channels, so the layers after
        it keep their shapes). Defaults to `"bidirectional"`.
      memory_input_scale: float. `s` of the STMM. Defaults to 1.0.
      memory_std_multiplier: float. K of BN*. Defaults to 3.0.
      match_trans_implementation: str. `"auto"`, `"custom_op"` or `"tf"`.
      memory_affinity_power: float > 0. MatchTrans' affinity power
        (`stmn_tf.layers.MatchTrans`). Defaults to 1.0, the authors' formula.
      **kwargs: the arguments of `RFCN` except `head_channels`.

    Call arguments:
      inputs: dict with `images` `[B, T, H, W, 3]` RGB in [0, 255] (and optionally
        `proposals`), or the images tensor. T may vary between calls.

    Returns:
      the `predict_step` dict, as `RFCN`.

    Example:
    >>> model = STMN(num_classes=2, memory_filters=8, **TINY_KWARGS)  # tests/models/synthetic.py
    >>> tuple(model.saliency(np.zeros((1, 3, 64, 64, 3), "float32")).shape)
    (1, 3, 4, 4)
    """

    def __init__(
        self,
        num_classes,
        memory_filters=512,
        memory_cell="stmm",
        memory_k=2,
        memory_align=True,
        memory_direction="bidirectional",
        memory_input_scale=1.0,
        memory_std_multiplier=3.0,
        match_trans_implementation="auto",
        memory_affinity_power=1.0,
        **kwargs,
    ):
        if memory_direction not in DIRECTIONS:
            raise ValueError(f"memory_direction must be one of {DIRECTIONS}, got {memory_direction!r}")
        self.memory_filters = memory_filters
        self.memory_cell = memory_cell
        self.memory_k = memory_k
        self.memory_align = memory_align
        self.memory_direction = memory_direction
        self.memory_input_scale = memory_input_scale
        self.memory_std_multiplier = memory_std_multiplier
        self.match_trans_implementation = match_trans_implementation
        self.memory_affinity_power = memory_affinity_power
        super().__init__(num_classes, **kwargs)

    def _build_head_features(self):
        common = dict(
            k=self.memory_k,
            align=self.memory_align,
            input_scale=self.memory_input_scale,
            implementation=self.match_trans_implementation,
            affinity_power=self.memory_affinity_power,
        )
        if self.memory_cell == "stmm":
            common["std_multiplier"] = self.memory_std_multiplier
        if self.memory_direction == "bidirectional":
            self.memory_layer = BidirectionalSTMM(
                self.memory_filters, cell=self.memory_cell, name="memory", **common
            )
        else:
            layer = STMM if self.memory_cell == "stmm" else ConvGRU
            self.memory_layer = layer(2 * self.memory_filters, name="memory", **common)

    def memory_cells(self):
        """The memory's cells, forward first (each has `conv_w`, `conv_z_w`, ... attributes)."""
        if self.memory_direction == "bidirectional":
            return [self.memory_layer.forward_layer.cell, self.memory_layer.backward_layer.cell]
        return [self.memory_layer.cell]

    def head_features(self, features, training=False):
        """`[B, T, h, w, C]` `F_t` -> the memory `[B, T, h, w, 2 * memory_filters]`."""
        return self.memory_layer(features)

    # -- online (see TwoStageDetector.step) ------------------------------------

    has_memory = True

    def state_shapes(self, image_height, image_width):
        """`{"memory": [h, w, D], "features": [h, w, C]}`: the forward memory after
        the previous frame and that frame's features `F_{t-1}` (for MatchTrans)."""
        h = -(-int(image_height) // FEATURE_STRIDE)
        w = -(-int(image_width) // FEATURE_STRIDE)
        forward = self.memory_cells()[0]
        return {"memory": [h, w, int(forward.filters)], "features": [h, w, int(self.feature_channels)]}

    def head_features_step(self, features, state):
        """One frame's memory, causally: `([B, h, w, 2 * memory_filters], next state)`.

        The forward memory is carried in `state`; a bidirectional memory's backward
        direction reads the current frame alone (`BidirectionalSTMM.step`). So frame
        t's answer is the model's answer at the last frame of the clip 1..t, and a
        forward-only STMN (`memory_direction="forward"`) gives exactly its clip
        answers. All-zero state starts a video (the paper's first step).
        """
        output, (memory, prev_features) = self.memory_layer.step(
            features, [state["memory"], state["features"]]
        )
        return output, {"memory": memory, "features": prev_features}

    def set_match_trans_implementation(self, implementation):
        """Sets every memory cell's MatchTrans implementation; returns the old ones.

        The cells read it when a function is traced, so this decides which ops a
        traced graph (an export) contains. Pass the returned list back to restore.
        """
        cells = self.memory_cells()
        previous = [cell.implementation for cell in cells]
        values = implementation if isinstance(implementation, list) else [implementation] * len(cells)
        for cell, value in zip(cells, values):
            cell.implementation = value
        return previous

    def memory(self, inputs):
        """The per-frame memory of a clip.

        Args:
          inputs: dict with `images` `[B, T, H, W, 3]` (or the tensor).

        Returns:
          `[B, T, h, w, 2 * memory_filters]`: forward memory channels first.
        """
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        return self.head_features(self.extract_features(images))

    def saliency(self, inputs):
        """The memory's saliency maps (paper Fig. 4): L2 norm over channels, `[B, T, h, w]`."""
        return tf.norm(self.memory(inputs), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            memory_filters=self.memory_filters,
            memory_cell=self.memory_cell,
            memory_k=self.memory_k,
            memory_align=self.memory_align,
            memory_direction=self.memory_direction,
            memory_input_scale=self.memory_input_scale,
            memory_std_multiplier=self.memory_std_multiplier,
            match_trans_implementation=self.match_trans_implementation,
            memory_affinity_power=self.memory_affinity_power,
        )
        return config
