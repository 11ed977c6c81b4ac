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
    D / 2 channels each, concatenated, in place of R-FCN's 3x3 conv of
    D outputs) -> the R-FCN head (1x1 conv 1024->512, PS-RoI
    pooling). The RPN sits on `F_t` and does not see the memory, as the paper's
    proposals do not. `stmn_tf.models.detector_transfer.transfer_rfcn_to_stmn`
    initialises it from a trained `RFCN` (paper Sec. 3.2).

    Args:
      memory: the memory over `[B, T, h, w, C]` that returns `[B, T, h, w, D]`: a
        `BidirectionalSTMM` (the paper's: forward and backward memories of D / 2
        channels each, concatenated, built as `keras.layers.Bidirectional` is from
        its two direction layers), or a forward-only `STMM` / `ConvGRU` of D channels
        (online use; the layers after it keep their shapes). Its cells hold the cell
        type, MatchTrans (`align`, `k`), BN*'s K and the input scale `s`.
      **kwargs: the parts `backbone`, `features`, `rpn_head`, `proposal_generator`,
        `anchor_labeler`, `roi_sampler`, `rfcn_head`, `decoder` (see
        `TwoStageDetector`), and `keras.Model` arguments.

    Call arguments:
      inputs: dict with `images` `[B, T, H, W, 3]` RGB in [0, 255] (and optionally
        `proposals`), or the images tensor. T may vary between calls.

    Returns:
      the `predict_step` dict, as `RFCN`.

    Example:
    >>> model = build_stmn(tiny_model_config("stmn", num_classes=2))  # models.builders
    >>> tuple(model.saliency(np.zeros((1, 3, 64, 64, 3), "float32")).shape)
    (1, 3, 4, 4)
    """

    HEAD_PART = ("memory", "memory_layer")

    def __init__(self, memory, **kwargs):
        if not isinstance(memory, (BidirectionalSTMM, STMM, ConvGRU)):
            raise ValueError(
                f"memory must be a BidirectionalSTMM, STMM or ConvGRU layer, got "
                f"{type(memory).__name__}"
            )
        # kwargs: the parts, by name, and the keras.Model arguments (TwoStageDetector's).
        super().__init__(**kwargs)
        self.memory_layer = memory
        self.build_by_running()

    @property
    def memory_direction(self):
        """`"bidirectional"` or `"forward"` (see `DIRECTIONS`)."""
        return "bidirectional" if isinstance(self.memory_layer, BidirectionalSTMM) else "forward"

    @property
    def memory_channels(self):
        """D: the memory's output channels (both directions together)."""
        return sum(int(cell.filters) for cell in self.memory_cells())

    def memory_cells(self):
        """The memory's cells, forward first (each has `conv_w`, `conv_z_w`, ... attributes)."""
        if self.memory_direction == "bidirectional":
            return [self.memory_layer.forward_layer.cell, self.memory_layer.backward_layer.cell]
        return [self.memory_layer.cell]

    def head_features(self, features, training=False):
        """`[B, T, h, w, C]` `F_t` -> the memory `[B, T, h, w, memory_channels]`."""
        return self.memory_layer(features)

    def clip_head_features(self, features, inputs, training=False):
        """The memory of a training clip, after a burn-in on its context frames.

        With `inputs["context_images"]` `[B, 2N, H, W, 3]` (the N frames before the
        clip, then the N after it: `DataConfig.burn_in_frames`), the memory runs over
        before + clip + after, so that at the clip's frames it has already read N
        frames more in each direction, as in a test window longer than the clip. The
        context frames' features are taken without gradient and get no loss; the
        memory's own weights are differentiated through every step it runs. A
        forward-only memory reads the N frames before only. The memory starts at zero
        at the first frame it reads, as always (paper Sec. 3.2).

        Args:
          features: `[B, T, h, w, C]`, `F_t` of the clip's frames.
          inputs: the `compute_losses` dict.
          training: bool.

        Returns:
          `[B, T, h, w, memory_channels]`, the memory at the clip's frames.
        """
        context = inputs.get("context_images")
        if context is None or context.shape[1] == 0:
            return self.head_features(features, training=training)
        burn_in = context.shape[1] // 2  # static: the pipeline's N
        parts = [tf.stop_gradient(self.extract_features(context[:, :burn_in])), features]
        if self.memory_direction == "bidirectional":
            parts.append(tf.stop_gradient(self.extract_features(context[:, burn_in:])))
        memory = self.head_features(tf.concat(parts, axis=1), training=training)
        return memory[:, burn_in:burn_in + tf.shape(features)[1]]

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
        """One frame's memory, causally: `([B, h, w, memory_channels], next state)`.

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
        return self._set_on_cells("implementation", implementation)

    def set_match_trans_feature_gradient(self, feature_gradient):
        """Sets every memory cell's `feature_gradient`; returns the old values.

        The option changes gradients only, never the forward values, so a trace
        for inference (an export) may turn it off, which lets a model trained with
        it run the compiled op (that passes no gradient to the features). Pass the
        returned list back to restore.
        """
        if not isinstance(feature_gradient, list):
            feature_gradient = bool(feature_gradient)
        return self._set_on_cells("feature_gradient", feature_gradient)

    def _set_on_cells(self, name, value):
        """Sets attribute `name` of every memory cell to `value` (one value, or a
        list with one per cell, forward first); returns the old values as a list."""
        cells = self.memory_cells()
        previous = [getattr(cell, name) for cell in cells]
        values = value if isinstance(value, list) else [value] * len(cells)
        for cell, v in zip(cells, values):
            setattr(cell, name, v)
        return previous

    def memory(self, inputs):
        """The per-frame memory of a clip.

        Args:
          inputs: dict with `images` `[B, T, H, W, 3]` (or the tensor).

        Returns:
          `[B, T, h, w, memory_channels]`: forward memory channels first.
        """
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        return self.head_features(self.extract_features(images))

    def saliency(self, inputs):
        """The memory's saliency maps (paper Fig. 4): L2 norm over channels, `[B, T, h, w]`."""
        return tf.norm(self.memory(inputs), axis=-1)
