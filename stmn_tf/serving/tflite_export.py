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
  `assets.extra/stmn_serving.json`: the model's fields, and `files`: each file with
      its `weights` dtype and the signature's inputs and outputs (name, dtype, shape).

TFLite has no CombinedNonMaxSuppression builtin: the model is traced with
`nms_implementation = "per_class"` (`stmn_tf.ops.nms`, one NON_MAX_SUPPRESSION_V5 per
class, the same outputs). The converter runs with `TFLITE_BUILTINS` alone, so an op
that would need the Flex delegate fails the export instead of landing in the file.

`quantize=["float16"]` (`--quantize float16`) also writes `stream_float16.tflite`: the
weights and constants stored as float16 (0.56x the file), computed in float32 by the
interpreter's CPU kernels (or in float16 by a GPU delegate). (The MatchTrans twin adds
its 1e-8 norm epsilon at a scale where float16 holds it; see
`stmn_tf.ops.match_trans_tf.NORM_SCALE`.) `"dynamic_int8"` writes
`stream_dynamic_int8.tflite`: TFLite's dynamic-range quantisation (`Optimize.DEFAULT`
alone), int8 weights (0.36x the file) with float activations, the kernels quantising
activations on the fly. The float32 `stream.tflite` is always written beside them, the
reference they are checked against. Full-integer int8 (activations calibrated on a
representative dataset) is not offered: it lost the synthetic test mAP (README).
"""

import os
import tempfile

import tensorflow as tf

from stmn_tf.serving.export import ExportError
from stmn_tf.serving.export import export_version
from stmn_tf.serving.export import saveable_root

STREAM_FILE = "stream.tflite"
QUANTIZATIONS = ("float16", "dynamic_int8")


def quantized_file(quantize):
    """The file name of a quantised stream: `stream_<quantize>.tflite`."""
    return f"stream_{quantize}.tflite"


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


def check_quantize(quantize):
    """`quantize` (a sequence of names of QUANTIZATIONS) as a tuple; `ExportError` if not."""
    if isinstance(quantize, str) or any(q not in QUANTIZATIONS for q in quantize or ()):
        raise ExportError(f"quantize must name some of {QUANTIZATIONS}, got {quantize!r}")
    return tuple(quantize or ())


def convert_stream(module, quantize=()):
    """The module's `stream` (per-class NMS) -> `{file name: TFLite flatbuffer bytes}`,
    builtins only: `stream.tflite` (float32) and `stream_<q>.tflite` for each `q` of
    `quantize` (names of QUANTIZATIONS).

    The converter reads a temporary SavedModel holding only `stream`, so that the
    flatbuffer keeps the signature with its input and output names; every file is
    converted from the same one.
    """
    stream = module.stream_function().get_concrete_function()
    files = {STREAM_FILE: None}
    for q in check_quantize(quantize):
        files[quantized_file(q)] = q
    with tempfile.TemporaryDirectory() as saved:
        signatures = {"stream": stream}
        tf.saved_model.save(saveable_root(module.model, signatures), saved, signatures=signatures)
        for name, weights in files.items():
            converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["stream"])
            # Builtins only: conversion fails, rather than needing the Flex delegate.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            if weights is not None:  # dynamic_int8: DEFAULT alone
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if weights == "float16":
                converter.target_spec.supported_types = [tf.float16]
            try:
                files[name] = converter.convert()
            except Exception as e:  # the converter raises ConverterError and others
                raise ExportError(f"TFLite conversion of stream to {name} (builtins only) "
                                  f"failed: {e}") from e
    return files


def export_tflite(model, image_size, output_dir, quantize=(), **options):
    """Writes `stream.tflite` (and `stream_<quantize>.tflite`) as `output_dir/<version>/`.

    Args:
      model: a built `STMN` with its weights (traced with the pure-TF MatchTrans and
        the per-class NMS; its settings are restored afterwards).
      image_size: the evaluation data's `ImageSizeConfig` (the resize in the graph).
      output_dir: str. The base directory.
      quantize: sequence of names of QUANTIZATIONS (`"float16"`, `"dynamic_int8"`):
        also write those streams. Defaults to none.
      **options: `version`, `max_detections`, `overwrite`, `checkpoint`, as
        `stmn_tf.serving.export.export_version`.

    Returns:
      str, the version directory.
    """
    if not model.has_memory:
        raise ExportError(
            f"the TFLite export is the STMN stream; got a {type(model).__name__} without memory"
        )
    quantize = check_quantize(quantize)

    weights = {STREAM_FILE: "float32", **{quantized_file(q): q for q in quantize}}

    def write_files(module, temporary):
        described = {}
        for name, tflite_model in convert_stream(module, quantize).items():
            with open(os.path.join(temporary, name), "wb") as f:
                f.write(tflite_model)
            described[name] = {"weights": weights[name], **_describe(tflite_model)}
        return {"format": "tflite", "signatures": ["stream"], "files": described}

    return export_version(model, image_size, output_dir, write_files, nms="per_class", **options)
