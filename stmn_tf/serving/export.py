"""Exports a trained detector as a SavedModel in the layout TF Serving watches.

`export_saved_model(model, image_size, output_dir)` writes `output_dir/<version>/`
(`saved_model.pb`, `variables/`, `assets.extra/stmn_serving.json`) with the
signatures of `stmn_tf.serving.signatures`. The version directory appears only when it
is complete: the SavedModel is written to a temporary sibling directory (whose name is
not a number, so TF Serving ignores it) and renamed.

Portable by default: every MatchTrans runs through the pure-TF twin, so the SavedModel
holds only standard TensorFlow ops and loads in a stock `tensorflow_model_server` or
any TensorFlow without stmn_tf. `custom_op=True` traces the compiled `Stmn>MatchTrans`
op instead (faster), which a loader must register first with `tf.load_op_library` (a
server: an op built into its binary).
"""

import contextlib
import json
import os
import shutil
import tempfile

import tensorflow as tf

from stmn_tf.serving.signatures import DetectorServingModule

CUSTOM_OP_PREFIX = "Stmn>"
METADATA_FILE = "stmn_serving.json"


class ExportError(RuntimeError):
    """The export cannot be written (existing version, unportable graph, bad checkpoint)."""


def saveable_root(model, signatures):
    """The object to save: the model's tf.Variables in a list, and the functions.

    Not the Keras model, nor its Keras variables: either way each variable is
    written twice (the Keras variable and the tf.Variable inside it, which the
    functions read), the graph's restore op fills only the copies, and a TF1-style
    loader (tensorflow_model_server, `saved_model_cli run`) then fails with "Could not
    find variable ...". `tf.saved_model.load` would not notice. Keras' ExportArchive
    also saves a plain list of variables.
    """
    root = tf.__internal__.tracking.AutoTrackable()
    root.variables = [_tf_variable(variable) for variable in model.variables]
    for name, function in signatures.items():
        setattr(root, name, function)
    return root


def _tf_variable(variable):
    """The tf.Variable of a Keras variable (TensorFlow backend)."""
    if isinstance(variable, tf.Variable):
        return variable
    value = variable.value
    return value if isinstance(value, tf.Variable) else variable._value


def signature_ops(saved_model_dir):
    """The op types each signature can run, from `saved_model.pb` alone.

    Walks from each signature's output nodes through the graph's node inputs and into
    every function the nodes call (function-valued attributes, such as
    `StatefulPartitionedCall`'s `f` or a while loop's `cond` and `body`), recursively.

    Returns:
      `{signature name: set of op type names}`.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    meta_graph = proto.meta_graphs[0]
    graph = meta_graph.graph_def
    functions = {function.signature.name: function for function in graph.library.function}
    nodes = {node.name: node for node in graph.node}

    def called_functions(node):
        for value in node.attr.values():
            if value.HasField("func"):
                yield value.func.name
            for func in value.list.func:
                yield func.name

    def function_ops(name, seen):
        if name in seen or name not in functions:
            return set()
        seen.add(name)
        ops = set()
        for node in functions[name].node_def:
            ops.add(node.op)
            if node.op in functions:  # a function called as an op
                ops |= function_ops(node.op, seen)
            for called in called_functions(node):
                ops |= function_ops(called, seen)
        return ops

    result = {}
    for key, signature in meta_graph.signature_def.items():
        pending = [tensor.name.split(":")[0] for tensor in signature.outputs.values()]
        visited, ops, seen = set(), set(), set()
        while pending:
            name = pending.pop()
            if name in visited or name not in nodes:
                continue
            visited.add(name)
            node = nodes[name]
            ops.add(node.op)
            for called in called_functions(node):
                ops |= function_ops(called, seen)
            pending.extend(inp.lstrip("^").split(":")[0] for inp in node.input)
        result[key] = ops
    return result


def custom_ops_in(saved_model_dir):
    """`{signature: sorted Stmn> op types}` for the signatures that contain any."""
    found = {}
    for key, ops in signature_ops(saved_model_dir).items():
        custom = sorted(op for op in ops if op.startswith(CUSTOM_OP_PREFIX))
        if custom:
            found[key] = custom
    return found


def base_metadata(module, custom_op, checkpoint):
    """The fields of `stmn_serving.json` that every format shares (model, sizes, state)."""
    model = module.model
    metadata = {
        "model_type": "stmn" if module.is_stmn else "rfcn",
        "num_classes": int(model.num_classes),
        "max_detections": int(model.decoder.max_detections),
        "image_size": {
            "short_side": module.short_side,
            "long_side_max": module.long_side_max,
            "padded_size": module.padded_size,
        },
        "custom_op": bool(custom_op),
        "checkpoint": checkpoint or "",
        "signatures": ["serving_default", "encoded_frames"],
    }
    if module.is_stmn:
        metadata["signatures"].append("stream")
        metadata["memory_direction"] = model.memory_direction
        metadata["stream_state_shapes"] = module.stream_state_shapes()
    return metadata


def export_saved_model(
    model,
    image_size,
    output_dir,
    version=1,
    custom_op=False,
    max_detections=None,
    overwrite=False,
    checkpoint=None,
):
    """Writes `model` as `output_dir/<version>/`, atomically: the SavedModel's
    `saved_model.pb`, `variables/` and the metadata file.

    Args:
      custom_op: bool. Trace the compiled `Stmn>MatchTrans` op instead of the
        pure-TF twin. Defaults to False.
      model, image_size, output_dir, version, max_detections, overwrite, checkpoint:
        as `export_version`.

    Returns:
      str, the version directory.

    Raises:
      ExportError: if the version exists (and not `overwrite`), or if a portable
        export came out with a custom op in it.
    """
    check_version(output_dir, version, overwrite)
    if custom_op:
        from stmn_tf.ops.match_trans_op import load_library

        load_library()  # fails here, with how to build it, rather than mid-trace

    def write_files(module, temporary):
        signatures = module.signatures()
        tf.saved_model.save(saveable_root(model, signatures), temporary, signatures=signatures)
        if not custom_op:
            found = custom_ops_in(temporary)
            if found:
                raise ExportError(
                    f"the portable export contains custom ops {found}; a memory cell "
                    "ignored implementation='tf'"
                )
        return {"format": "saved_model"}

    return export_version(
        model, image_size, output_dir, write_files, version=version,
        max_detections=max_detections, overwrite=overwrite, checkpoint=checkpoint,
        match_trans="custom_op" if custom_op else "tf",
    )


def export_version(
    model,
    image_size,
    output_dir,
    write_files,
    version=1,
    max_detections=None,
    overwrite=False,
    checkpoint=None,
    match_trans="tf",
    nms=None,
):
    """What every export format shares: the trace settings, the serving module, the
    metadata file, and the version directory written atomically.

    Sets the model's MatchTrans implementation, `max_detections` and NMS for the trace
    (`tracing`), then in a temporary version directory (`write_version`) calls
    `write_files(module, directory)` with a `DetectorServingModule`: it writes the
    format's files and returns the fields it adds to `base_metadata`, which is then
    written as `assets.extra/stmn_serving.json`.

    Args:
      model: a built `RFCN` or `STMN` with its weights (its settings are restored
        afterwards).
      image_size: the evaluation data's `ImageSizeConfig` (the resize in the graph).
      output_dir: str. The base directory (the one TF Serving watches).
      write_files: callable `(module, directory) -> dict` of metadata fields.
      version: int >= 1. The version subdirectory. Defaults to 1.
      max_detections: optional int, N of the outputs. Defaults to the model's.
      overwrite: bool. Replace an existing version. Defaults to False.
      checkpoint: optional str, recorded in the metadata file.
      match_trans: `"tf"` (the pure-TF twin) or `"custom_op"`. Defaults to "tf".
      nms: optional decoder NMS implementation for the trace. Defaults to the model's.

    Returns:
      str, the version directory.
    """

    def write(temporary):
        module = DetectorServingModule(model, image_size)
        fields = write_files(module, temporary)
        metadata = base_metadata(module, match_trans == "custom_op", checkpoint)
        metadata.update(fields)
        write_metadata(temporary, metadata)

    with tracing(model, match_trans, max_detections, nms):
        return write_version(output_dir, version, overwrite, write)


def check_version(output_dir, version, overwrite):
    """Raises `ExportError` for a bad version or an existing one (unless `overwrite`)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"version must be an integer >= 1, got {version!r}")
    final = os.path.join(output_dir, str(version))
    if os.path.exists(final) and not overwrite:
        raise ExportError(f"{final} exists; pass overwrite=True (--overwrite) to replace it")


@contextlib.contextmanager
def tracing(model, match_trans="tf", max_detections=None, nms=None):
    """Sets the model's MatchTrans implementation, `max_detections` and NMS
    implementation for a trace, turns the memory's `feature_gradient` off (a trace
    for serving is forward only), and restores them afterwards."""
    previous_max = model.decoder.max_detections
    previous_nms = model.decoder.nms_implementation
    previous_impl = previous_gradient = None
    if model.has_memory and match_trans == "custom_op" and any(
            cell.offset_log_prior() is not None for cell in model.memory_cells()):
        raise ExportError("this STMN learned a MatchTrans offset prior (memory.offset_prior), "
                          "which the compiled op does not have: export it portable (without "
                          "--custom-op); the pure-TF MatchTrans computes it")
    if model.has_memory:
        previous_impl = model.set_match_trans_implementation(match_trans)
        # A serving trace is forward only: without the (gradient-only) feature
        # gradient, a model trained with it exports with the compiled op as well.
        previous_gradient = model.set_match_trans_feature_gradient(False)
    if max_detections is not None:
        model.decoder.max_detections = int(max_detections)
    if nms is not None:
        model.decoder.nms_implementation = nms
    try:
        yield model
    finally:
        model.decoder.max_detections = previous_max
        model.decoder.nms_implementation = previous_nms
        if previous_impl is not None:
            model.set_match_trans_implementation(previous_impl)
            model.set_match_trans_feature_gradient(previous_gradient)


def write_metadata(directory, metadata):
    """Writes `directory/assets.extra/stmn_serving.json`."""
    extra = os.path.join(directory, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=2)


def write_version(output_dir, version, overwrite, write):
    """Runs `write(temporary_dir)`, then renames the directory to `output_dir/<version>`.

    The version directory appears only complete: `write` fills a temporary sibling
    (its name is not a number, so TF Serving ignores it), removed if `write` fails.
    An existing version (with `overwrite`) is moved aside first, so that the final
    path is never a half-written directory. Returns the version directory.
    """
    check_version(output_dir, version, overwrite)
    final = os.path.join(output_dir, str(version))
    os.makedirs(output_dir, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".export-{version}-", dir=output_dir)
    try:
        write(temporary)
        if os.path.exists(final):
            trash = tempfile.mkdtemp(prefix=f".replaced-{version}-", dir=output_dir)
            os.rename(final, os.path.join(trash, "old"))
            os.rename(temporary, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(temporary, final)
    finally:
        if os.path.exists(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
    return final


def restore_for_export(config, checkpoint):
    """Builds `config.model` and restores it (`checkpointing.restore`): every
    variable of the model must come from the checkpoint, so a model that does not
    match it (another config) fails here, not in serving. Returns `(model, prefix)`."""
    from stmn_tf.training.checkpointing import CheckpointMismatchError
    from stmn_tf.training.checkpointing import restore_model

    try:
        return restore_model(config, checkpoint)
    except CheckpointMismatchError as e:
        raise ExportError(f"checkpoint {e}") from e
