"""The serving signatures of an exported detector: preprocessing, clip, encoded frames, stream.

Everything a server needs is in the graph: frames come in as they are decoded
(`uint8` RGB, any size) or as JPEG/PNG bytes, are resized as the training pipeline
resizes them (`stmn_tf.data.pipeline`: shorter side to `short_side`, longer side at
most `long_side_max`, bilinear, aspect kept) and padded at the bottom and right to the
padded size, and the boxes come back normalised to the original frame.

Signatures (names and outputs as the TF Object Detection API has them; N =
`max_detections`, T the number of frames):

  `serving_default`: `images` uint8 `[T, H, W, 3]` (T >= 1) ->
      `detection_boxes` float32 `[T, N, 4]` normalised ymin, xmin, ymax, xmax;
      `detection_scores` float32 `[T, N]`; `detection_classes` float32 `[T, N]`,
      1..C (0 for padding rows); `num_detections` float32 `[T]`.
      STMN: the bidirectional memory over the clip; R-FCN: frame by frame.
  `encoded_frames`: `encoded_frames` string `[T]` JPEG/PNG/BMP/GIF bytes -> the same
      outputs (each frame is decoded to RGB, then as `serving_default`).
  `stream` (STMN only): `frame` uint8 `[H, W, 3]`, `state_memory` float32
      `[h, w, D]`, `state_features` float32 `[h, w, C]` -> `detection_boxes`
      `[N, 4]`, `detection_scores` `[N]`, `detection_classes` `[N]`,
      `num_detections` `[]`, and the new `state_memory`, `state_features`.
      h, w = the padded size / 16; D = the forward memory's channels; C = the
      features' channels (`stream_state_shapes`). All-zero state tensors start a
      video; feed each answer's state back with the next frame.

The stream's memory is forward only: `state_memory` is the forward memory after the
previous frame and `state_features` that frame's features `F_{t-1}` (for MatchTrans).
A bidirectional STMN's backward memory at frame t then sees frame t alone (its first
step), so the stream's answer for frame t equals the exported model's answer for the
last frame of the clip 1..t: the model run causally, as a forward-only model over the
clip. A model trained with `memory.direction: forward` streams exactly its clip
answers. The signature is the model's `step` (`TwoStageDetector.step`), the one
causal path, which `stmn_tf.inference.video.OnlineVideoDetector` runs too.
"""

import tensorflow as tf

from stmn_tf.data import pipeline

OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
STATE_KEYS = ("state_memory", "state_features")


def _check_shape(tensor, shape, name):
    """A run-time shape check named after the input.

    The loaded signatures (and TF Serving) check an input's dtype but not its shape
    against the signature: without this, a frame without its T axis fails deep in
    the graph with an unrelated message. The error reads "Shape of tensor images
    [96,80,3] is not compatible with expected shape [?,?,?,3]".
    """
    return tf.ensure_shape(tensor, shape, name=name)


def _check_clip(frames, name):
    """Run-time checks of a uint8 `[T, H, W, 3]` clip; the messages name the input."""
    shape = tf.shape(frames)
    return [
        tf.debugging.assert_positive(
            shape[0], message=f"{name}: the clip is empty; expected [T, H, W, 3] with T >= 1"
        ),
        tf.debugging.assert_positive(
            shape[1] * shape[2],
            message=f"{name}: frames must have a positive height and width",
        ),
    ]


class DetectorServingModule:
    """A built `RFCN` or `STMN` and its serving functions.

    Args:
      model: a built `RFCN` or `STMN` with its weights.
      image_size: `ImageSizeConfig` of the evaluation data (`short_side`,
        `long_side_max`, `padded_size`, `pad_multiple`), the training resize.

    The functions are `tf.function`s with fixed input signatures; `signatures()` maps
    the signature names of the module docstring to them.
    """

    def __init__(self, model, image_size):
        self.model = model
        self.short_side = int(image_size.short_side)
        self.long_side_max = int(image_size.long_side_max)
        self.padded_size = [int(s) for s in pipeline.padded_size(image_size)]
        self._image_size = image_size
        self.is_stmn = model.has_memory

    # -- preprocessing -------------------------------------------------------

    def preprocess_frame(self, frame):
        """uint8 `[H, W, 3]` -> (float32 `[Hp, Wp, 3]` in [0, 255], float32 `[2]` box scale).

        The training pipeline's resize and padding (`pipeline.resize_and_pad`); the box
        scale `[Hp / h, Wp / w]` (h, w the resized size) maps boxes normalised to the
        padded canvas to boxes normalised to the frame.
        """
        image, resized = pipeline.resize_and_pad(frame, self._image_size)
        scale = tf.cast(tf.stack(self.padded_size), tf.float32) / tf.cast(resized, tf.float32)
        return image, scale

    def preprocess(self, frames):
        """uint8 `[T, H, W, 3]` -> (float32 `[T, Hp, Wp, 3]`, float32 `[T, 2]` box scales)."""
        pad_h, pad_w = self.padded_size
        return tf.map_fn(
            self.preprocess_frame,
            frames,
            fn_output_signature=(
                tf.TensorSpec([pad_h, pad_w, 3], tf.float32),
                tf.TensorSpec([2], tf.float32),
            ),
        )

    @staticmethod
    def _to_frame_boxes(detections, scale):
        """Model outputs `[..., N, ...]` on the canvas -> the serving outputs.

        `scale`: `[..., 2]` per frame. Boxes normalised to the padded canvas become
        normalised to the frame (the frame is the canvas' top-left h x w corner).
        """
        # expand_dims rather than `[..., None, :]`: tf2onnx 1.17 turns that strided
        # slice into an ONNX Slice with a repeated axis, which onnxruntime rejects.
        scale = tf.expand_dims(tf.concat([scale, scale], axis=-1), -2)  # [..., 1, 4] y, x, y, x
        boxes = tf.clip_by_value(detections["detection_boxes"] * scale, 0.0, 1.0)
        return {
            "detection_boxes": boxes,
            "detection_scores": tf.cast(detections["detection_scores"], tf.float32),
            "detection_classes": tf.cast(detections["detection_classes"], tf.float32),
            "num_detections": tf.cast(detections["num_detections"], tf.float32),
        }

    # -- clip ----------------------------------------------------------------

    def detect_clip(self, frames):
        """uint8 `[T, H, W, 3]` -> the `serving_default` outputs (see the module docstring)."""
        frames = _check_shape(frames, [None, None, None, 3], "images")
        with tf.control_dependencies(_check_clip(frames, "images")):
            images, scale = self.preprocess(frames)  # [T, Hp, Wp, 3], [T, 2]
        detections = self.model.detect(images[None], training=False)  # [1, T, ...]
        detections = {key: value[0] for key, value in detections.items()}
        return self._to_frame_boxes(detections, scale)

    def memory_by_steps(self, features):
        """The clip's memory `[B, T, h, w, 2F]` from each direction's `step`, in a plain loop.

        What `model.head_features` computes (the memory layer's `call`), as a
        `tf.while_loop` over the layers' public `step` with the outputs written to a
        TensorArray in iteration order: the form tf2onnx maps to an ONNX Loop. The
        layer's own loop (`keras.ops.scan`, writing the backward direction at its
        frame's index) fails in tf2onnx 1.17 with "While loop couldn't find scan
        output index". The backward direction runs over the reversed clip and is
        reversed back. Each direction starts as the paper's first step: zero memory,
        `F_{t-1} = F_t`.

        Args:
          features: float32 `[B, T, h, w, C]`, `F_t`.
        """
        layer = self.model.memory_layer
        if self.model.memory_direction == "bidirectional":
            directions = [(layer.forward_layer, False), (layer.backward_layer, True)]
        else:
            directions = [(layer, False)]
        outputs = [self._run_direction(d, features, reverse) for d, reverse in directions]
        return tf.concat(outputs, axis=-1)  # forward channels first, as the layer

    @staticmethod
    def _run_direction(layer, features, reverse):
        frames = tf.reverse(features, [1]) if reverse else features  # [B, T, h, w, C]
        steps = tf.shape(frames)[1]
        first = frames[:, 0]
        shape = tf.shape(first)
        memory = tf.zeros(tf.concat([shape[:3], [layer.cell.filters]], 0), first.dtype)
        written = tf.TensorArray(first.dtype, size=steps)

        def body(t, memory, previous, written):
            current = tf.gather(frames, t, axis=1)  # [B, h, w, C]
            memory, _ = layer.step(current, [memory, previous])
            return t + 1, memory, current, written.write(t, memory)

        _, _, _, written = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), memory, first, written)
        )
        outputs = tf.transpose(written.stack(), [1, 0, 2, 3, 4])  # [B, T, h, w, F]
        return tf.reverse(outputs, [1]) if reverse else outputs

    def detect_clip_by_steps(self, frames):
        """`detect_clip` with the memory of `memory_by_steps` (the ONNX clip model).

        uint8 `[T, H, W, 3]` -> the `serving_default` outputs. A detector without
        memory has no recurrence: `detect_clip` itself.
        """
        if not self.is_stmn:
            return self.detect_clip(frames)
        frames = _check_shape(frames, [None, None, None, 3], "images")
        with tf.control_dependencies(_check_clip(frames, "images")):
            images, scale = self.preprocess(frames)  # [T, Hp, Wp, 3], [T, 2]
        images = images[None]  # [1, T, Hp, Wp, 3]
        features = self.model.extract_features(images)  # [1, T, h, w, C]
        detections = self.model.detect_from_head_input(
            features, self.memory_by_steps(features), tf.shape(images)[2:4]
        )
        detections = {key: value[0] for key, value in detections.items()}
        return self._to_frame_boxes(detections, scale)

    def decode_frames(self, encoded):
        """string `[T]` -> uint8 `[T, H, W, 3]` RGB (all frames of one size)."""
        encoded = _check_shape(encoded, [None], "encoded_frames")
        empty = tf.debugging.assert_positive(
            tf.size(encoded),
            message="encoded_frames: the clip is empty; expected [T] image bytes with T >= 1",
        )
        with tf.control_dependencies([empty]):
            encoded = tf.identity(encoded)
        return tf.map_fn(
            lambda data: tf.io.decode_image(data, channels=3, expand_animations=False),
            encoded,
            fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
        )

    def detect_encoded(self, encoded):
        return self.detect_clip(self.decode_frames(encoded))

    # -- stream --------------------------------------------------------------

    def stream_state_shapes(self):
        """`{"state_memory": [h, w, D], "state_features": [h, w, C]}` (ints)."""
        shapes = self.model.state_shapes(*self.padded_size)
        return {f"state_{key}": shape for key, shape in shapes.items()}

    def detect_stream(self, frame, state_memory, state_features):
        """One frame and the state after the previous one -> detections and the new state.

        Args:
          frame: uint8 `[H, W, 3]`.
          state_memory: float32 `[h, w, D]`, the forward memory after the previous
            frame (zeros before the first frame).
          state_features: float32 `[h, w, C]`, the previous frame's features `F_{t-1}`
            (zeros before the first frame: MatchTrans then keeps the memory as it is,
            which with zero memory is the paper's first step).

        Returns:
          dict: the four detection outputs of frame t without the T axis, and the new
          `state_memory` `[h, w, D]` and `state_features` `[h, w, C]`.
        """
        shapes = self.stream_state_shapes()
        frame = _check_shape(frame, [None, None, 3], "frame")
        state_memory = _check_shape(state_memory, shapes["state_memory"], "state_memory")
        state_features = _check_shape(state_features, shapes["state_features"], "state_features")
        with tf.control_dependencies(_check_clip(frame[None], "frame")):
            image, scale = self.preprocess_frame(frame)  # [Hp, Wp, 3], [2]
        state = {"memory": state_memory[None], "features": state_features[None]}
        detections, state = self.model.step(image[None], state)  # [1, ...]
        outputs = self._to_frame_boxes({key: value[0] for key, value in detections.items()}, scale)
        outputs["state_memory"] = state["memory"][0]
        outputs["state_features"] = state["features"][0]
        return outputs

    # -- signatures ----------------------------------------------------------

    def signatures(self):
        """`{name: concrete function}` for `tf.saved_model.save(..., signatures=)`."""
        clip = tf.function(
            self.detect_clip,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        )
        encoded = tf.function(
            self.detect_encoded,
            input_signature=[tf.TensorSpec([None], tf.string, name="encoded_frames")],
        )
        result = {
            "serving_default": clip.get_concrete_function(),
            "encoded_frames": encoded.get_concrete_function(),
        }
        if self.is_stmn:
            result["stream"] = self.stream_function().get_concrete_function()
        return result

    def stream_input_signature(self):
        """The `stream` inputs: `frame` uint8 `[H, W, 3]`, `state_memory` float32
        `[h, w, D]`, `state_features` float32 `[h, w, C]` (`tf.TensorSpec`s)."""
        shapes = self.stream_state_shapes()
        return [
            tf.TensorSpec([None, None, 3], tf.uint8, name="frame"),
            tf.TensorSpec(shapes["state_memory"], tf.float32, name="state_memory"),
            tf.TensorSpec(shapes["state_features"], tf.float32, name="state_features"),
        ]

    def stream_function(self, function=None):
        """`function` (default `detect_stream`) as a `tf.function` with the `stream`
        input signature; the SavedModel's, the TFLite and the ONNX exports' stream."""
        return tf.function(function or self.detect_stream,
                           input_signature=self.stream_input_signature())

