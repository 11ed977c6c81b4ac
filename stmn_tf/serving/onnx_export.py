"""Exports a trained detector as ONNX models (through tf2onnx), for onnxruntime.

`export_onnx(model, image_size, output_dir)` writes `output_dir/<version>/` atomically
(as `export_saved_model`):

  `model.onnx`: the clip, `images` uint8 `[T, H, W, 3]` (any T >= 1, any frame size) ->
      `detection_boxes` float32 `[T, N, 4]` normalised ymin, xmin, ymax, xmax,
      `detection_scores` `[T, N]`, `detection_classes` `[T, N]` (1..C, 0 padding),
      `num_detections` `[T]`: the SavedModel's `serving_default` (for STMN the
      bidirectional memory over the clip, as an ONNX Loop per direction).
  `stream.onnx` (STMN): `frame` uint8 `[H, W, 3]`, `state_memory` float32 `[h, w, D]`,
      `state_features` float32 `[h, w, C]` -> the four detection outputs of the frame
      and `next_state_memory`, `next_state_features` (ONNX names an output apart from
      the inputs: the SavedModel's `stream` calls them `state_memory`,
      `state_features`). Forward memory only, see `stmn_tf.serving.signatures`.
  `assets.extra/stmn_serving.json`: the model's fields, and `files`: each file with
      its inputs and outputs (name, dtype, shape; None for a free dimension).

Standard ONNX operators only (the default domain), opset 17 by default; MatchTrans is
the pure-TF twin. Needs the `export` extra (`tf2onnx`, `onnx`).
"""

import os

import tensorflow as tf
from tensorflow.python.eager import context

from stmn_tf.serving.export import ExportError
from stmn_tf.serving.export import export_version

CLIP_FILE = "model.onnx"
STREAM_FILE = "stream.onnx"
DEFAULT_OPSET = 17
STREAM_STATE_OUTPUTS = {"state_memory": "next_state_memory", "state_features": "next_state_features"}


def _stream_function(module):
    """`module.detect_stream` with its state outputs renamed (ONNX wants distinct names)."""

    def stream(frame, state_memory, state_features):
        outputs = module.detect_stream(frame, state_memory, state_features)
        for name, renamed in STREAM_STATE_OUTPUTS.items():
            outputs[renamed] = outputs.pop(name)
        return outputs

    return stream


def fix_loop_counters(model_proto):
    """Gives every ONNX Loop body's iteration-count input its scalar shape, in place.

    tf2onnx 1.17 leaves the shape of that input (always an int64 scalar in the ONNX
    spec) unset for the loops of `tf.map_fn`, and onnxruntime then refuses to run the
    Loop ("Loop subgraph input 0 has unknown shape"). Returns the number fixed.
    """
    import onnx

    fixed = 0
    graphs = [model_proto.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type != onnx.AttributeProto.GRAPH:
                    continue
                body = attribute.g
                if node.op_type == "Loop" and body.input:
                    counter = body.input[0].type.tensor_type
                    if not counter.HasField("shape"):
                        counter.shape.CopyFrom(onnx.TensorShapeProto())
                        fixed += 1
                graphs.append(body)
    return fixed


def _io(values):
    """ONNX graph inputs or outputs -> `[{"name", "dtype", "shape"}]`."""
    import onnx

    described = []
    for value in values:
        tensor = value.type.tensor_type
        shape = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        described.append({"name": value.name, "dtype": dtype, "shape": shape})
    return described


def describe(model_proto):
    """`{"inputs": [...], "outputs": [...]}` of an ONNX model (names, dtypes, shapes)."""
    return {"inputs": _io(model_proto.graph.input), "outputs": _io(model_proto.graph.output)}


def non_standard_ops(model_proto):
    """Sorted `domain:op` of the nodes (subgraphs included) outside the default domain."""
    import onnx

    found = set()
    graphs = [model_proto.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.domain not in ("", "ai.onnx"):
                found.add(f"{node.domain}:{node.op_type}")
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attribute.g)
    return sorted(found)


def convert(function, input_signature, path, opset=DEFAULT_OPSET):
    """tf2onnx's conversion of a tf.function, the Loop fix, a check, then `path`.

    Returns the ONNX `ModelProto`. Raises `ExportError` if an operator outside the
    standard ONNX domain remains.
    """
    import onnx
    import tf2onnx

    function = tf.function(function, input_signature=input_signature)
    # tf2onnx freezes the function through `convert_variables_to_constants_v2`, which
    # adds the frozen graph's functions to the eager context under generated names
    # (`while_cond_function_0`, ...); a second conversion in the same process then
    # fails with "Attempting to add a duplicate function". Remove what this one added.
    before = set(context.context().list_function_names())
    try:
        model_proto, _ = tf2onnx.convert.from_function(
            function, input_signature=input_signature, opset=opset
        )
    finally:
        for name in set(context.context().list_function_names()) - before:
            context.context().remove_function(name)
    fix_loop_counters(model_proto)
    unknown = non_standard_ops(model_proto)
    if unknown:
        raise ExportError(f"{os.path.basename(path)}: tf2onnx left non-standard ops {unknown}")
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, path)
    return model_proto


def export_onnx(model, image_size, output_dir, opset=DEFAULT_OPSET, **options):
    """Writes `model.onnx` (and `stream.onnx` for STMN) as `output_dir/<version>/`.

    Args:
      model: a built `RFCN` or `STMN` with its weights (traced with the pure-TF
        MatchTrans; its settings are restored afterwards).
      image_size: the evaluation data's `ImageSizeConfig` (the resize in the graph).
      output_dir: str. The base directory.
      opset: int >= 17. The ONNX opset. Defaults to 17.
      **options: `version`, `max_detections`, `overwrite`, `checkpoint`, as
        `stmn_tf.serving.export.export_version`.

    Returns:
      str, the version directory.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17:
        raise ExportError(f"opset must be an integer >= 17, got {opset!r}")

    def write_files(module, temporary):
        files = {}
        clip = convert(
            module.detect_clip_by_steps,
            [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
            os.path.join(temporary, CLIP_FILE),
            opset,
        )
        files[CLIP_FILE] = describe(clip)
        signatures = ["serving_default"]
        if module.is_stmn:
            stream = convert(
                _stream_function(module),
                module.stream_input_signature(),
                os.path.join(temporary, STREAM_FILE),
                opset,
            )
            files[STREAM_FILE] = describe(stream)
            signatures.append("stream")
        return {"format": "onnx", "opset": opset, "files": files, "signatures": signatures}

    return export_version(model, image_size, output_dir, write_files, **options)
