"""Exports a trained STMN's `stream` as a TFLite model with builtin ops only (no Flex).

`export_tflite(model, image_size, output_dir)` writes `output_dir/<version>/` atomically
(as `export_saved_model`):

  `stream.tflite`: one signature, `stream`, the SavedModel's: `frame` uint8
      `[H, W, 3]` (any size), `state_memory` float32 `[h, w, D]`, `state_features`
      float32 `[h, w, C]` -> `detection_boxes` `[N, 4]` normalised yxyx,
      `detection_scores` `[N]`, `detection_classes` `[N]` (1..C, 0 padding),
      `num_detections` `[]`, and the new `state_memory`, `state_features`. Forward
      memory only (see `stmn_tf.serving.signatures`); no clip model: the
      bidirectional memory needs the whole clip, and a phone streams.
  `assets.extra/stmn_serving.json`: the model's fields, and `files` with the
      signature's inputs and outputs (name, dtype, shape).

TFLite has no CombinedNonMaxSuppression builtin: the model is traced with
`nms_implementation = "per_class"` (`stmn_tf.ops.nms`, one NON_MAX_SUPPRESSION_V5 per
class, the same outputs). The converter runs with `TFLITE_BUILTINS` alone, so an op
that would need the Flex delegate fails the export instead of landing in the file.

Float32 only. Float16 weights (`Optimize.DEFAULT` with `supported_types=[float16]`)
convert but the stream's memory comes out NaN from the first frame on: the
interpreter's first NaN is MatchTrans's cosine division with the all-zero start state,
where the norm epsilon (1e-8, below float16's smallest subnormal) becomes 0 in float16
and 0 / 0 remains. So no quantised export is offered until that epsilon is float16-safe (int8 was
not tried).
"""

import os
import tempfile

import tensorflow as tf

from stmn_tf.serving.export import ExportError
from stmn_tf.serving.export import base_metadata
from stmn_tf.serving.export import saveable_root
from stmn_tf.serving.export import tracing
from stmn_tf.serving.export import write_metadata
from stmn_tf.serving.export import write_version
from stmn_tf.serving.signatures import DetectorServingModule

STREAM_FILE = "stream.tflite"


def _describe(tflite_model):
    """`{"inputs": [...], "outputs": [...]}` of the `stream` signature."""
    interpreter = tf.lite.Interpreter(model_content=tflite_model)
    runner = interpreter.get_signature_runner("stream")

    def io(details):
        return [
            {
                "name": name,
                "dtype": detail["dtype"].__name__,
                "shape": [None if s < 0 else int(s) for s in detail["shape_signature"]],
            }
            for name, detail in sorted(details.items())
        ]

    return {"inputs": io(runner.get_input_details()), "outputs": io(runner.get_output_details())}


def convert_stream(module):
    """The module's `stream` (per-class NMS) -> TFLite flatbuffer bytes, builtins only.

    The converter reads a temporary SavedModel holding only `stream`, so that the
    flatbuffer keeps the signature with its input and output names.
    """
    shapes = module.stream_state_shapes()
    stream = tf.function(
        module.detect_stream,
        input_signature=[
            tf.TensorSpec([None, None, 3], tf.uint8, name="frame"),
            tf.TensorSpec(shapes["state_memory"], tf.float32, name="state_memory"),
            tf.TensorSpec(shapes["state_features"], tf.float32, name="state_features"),
        ],
    ).get_concrete_function()
    with tempfile.TemporaryDirectory() as saved:
        signatures = {"stream": stream}
        tf.saved_model.save(saveable_root(module.model, signatures), saved, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["stream"])
        # Builtins only: conversion fails, rather than needing the Flex delegate.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            return converter.convert()
        except Exception as e:  # the converter raises ConverterError and others
            raise ExportError(f"TFLite conversion of stream (builtins only) failed: {e}") from e


def export_tflite(
    model,
    image_size,
    output_dir,
    version=1,
    max_detections=None,
    overwrite=False,
    checkpoint=None,
):
    """Writes `stream.tflite` as `output_dir/<version>/`.

    Args:
      model: a built `STMN` with its weights (traced with the pure-TF MatchTrans and
        the per-class NMS; its settings are restored afterwards).
      image_size: the evaluation data's `ImageSizeConfig` (the resize in the graph).
      output_dir: str. The base directory.
      version: int >= 1. Defaults to 1.
      max_detections: optional int, N of the outputs. Defaults to the model's.
      overwrite: bool. Replace an existing version. Defaults to False.
      checkpoint: optional str, recorded in the metadata file.

    Returns:
      str, the version directory.
    """
    if not model.has_memory:
        raise ExportError(
            f"the TFLite export is the STMN stream; got a {type(model).__name__} without memory"
        )

    def write(temporary):
        module = DetectorServingModule(model, image_size)
        tflite_model = convert_stream(module)
        with open(os.path.join(temporary, STREAM_FILE), "wb") as f:
            f.write(tflite_model)
        metadata = base_metadata(module, False, checkpoint)
        metadata.update(
            format="tflite",
            dtype="float32",
            signatures=["stream"],
            files={STREAM_FILE: _describe(tflite_model)},
        )
        write_metadata(temporary, metadata)

    with tracing(model, "tf", max_detections, nms="per_class"):
        return write_version(output_dir, version, overwrite, write)
