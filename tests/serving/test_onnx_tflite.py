"""The ONNX and TFLite exports, run in onnxruntime and the TFLite interpreter, against the SavedModel.

The tiny STMN of conftest.py (restored from its checkpoint, as train.py writes them) is
exported by `export.py --format onnx` and `--format tflite`; each runtime's answers must
equal the SavedModel's signatures (the portable export of the same checkpoint) within
1e-4. Slow: tf2onnx takes one to three minutes per model on a small CPU.
"""

import json
import os

import numpy as np
import pytest

import export as export_cli
from stmn_tf.serving.export import METADATA_FILE
from tests.serving.conftest import CONFIG
from tests.serving.conftest import make_frames

pytestmark = pytest.mark.slow

OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
STATE_KEYS = ("state_memory", "state_features")
ATOL = 1e-4


def run_cli(exported, base, *extra):
    code = export_cli.main([
        "--config", CONFIG, "--checkpoint", exported.checkpoint_dir, "--output", base, *extra,
    ])
    assert code == 0
    return os.path.join(base, "1")


def read_metadata(path):
    with open(os.path.join(path, "assets.extra", METADATA_FILE)) as f:
        return json.load(f)


def assert_close(actual, expected, keys, atol=ATOL):
    for key in keys:
        a, e = np.asarray(actual[key]), np.asarray(expected[key])
        assert a.shape == e.shape, key
        if key in ("detection_classes", "num_detections"):
            np.testing.assert_array_equal(a, e, err_msg=key)
        else:
            np.testing.assert_allclose(a, e, atol=atol, err_msg=key)


def saved_model_stream(loaded, frames, shapes):
    """The SavedModel's `stream` over `frames`, the state fed back: a list of dicts."""
    state = {key: np.zeros(shapes[key], np.float32) for key in STATE_KEYS}
    answers = []
    for frame in frames:
        outputs = {k: v.numpy() for k, v in loaded.signatures["stream"](frame=frame, **state).items()}
        answers.append(outputs)
        state = {key: outputs[key] for key in STATE_KEYS}
    return answers


@pytest.fixture(scope="module")
def onnx_export(exported, tmp_path_factory):
    return run_cli(exported, str(tmp_path_factory.mktemp("onnx")), "--format", "onnx")


@pytest.fixture(scope="module")
def tflite_export(exported, tmp_path_factory):
    return run_cli(exported, str(tmp_path_factory.mktemp("tflite")), "--format", "tflite")


# -- ONNX ------------------------------------------------------------------------


def test_onnx_layout_and_metadata(onnx_export):
    base = os.path.dirname(onnx_export)
    assert sorted(os.listdir(base)) == ["1"]  # no temporary directory left
    assert sorted(os.listdir(onnx_export)) == ["assets.extra", "model.onnx", "stream.onnx"]
    metadata = read_metadata(onnx_export)
    assert metadata["format"] == "onnx" and metadata["opset"] >= 17
    clip, stream = metadata["files"]["model.onnx"], metadata["files"]["stream.onnx"]
    assert clip["inputs"] == [{"name": "images", "dtype": "uint8", "shape": [None, None, None, 3]}]
    assert sorted(o["name"] for o in clip["outputs"]) == sorted(OUTPUT_KEYS)
    assert [i["name"] for i in stream["inputs"]] == ["frame", "state_memory", "state_features"]
    assert {i["name"]: i["shape"] for i in stream["inputs"]}["state_memory"] == [8, 8, 32]
    assert sorted(o["name"] for o in stream["outputs"]) == sorted(
        OUTPUT_KEYS + ("next_state_memory", "next_state_features")
    )


def test_onnx_standard_ops_only(onnx_export):
    import onnx

    from stmn_tf.serving.onnx_export import non_standard_ops

    for name in ("model.onnx", "stream.onnx"):
        model = onnx.load(os.path.join(onnx_export, name))
        assert non_standard_ops(model) == []
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17


@pytest.mark.parametrize("frames", [1, 3, 5])
def test_onnx_clip_equals_saved_model(onnx_export, loaded, frames):
    import onnxruntime

    session = onnxruntime.InferenceSession(
        os.path.join(onnx_export, "model.onnx"), providers=["CPUExecutionProvider"]
    )
    clip = make_frames(frames, seed=frames)
    names = [o.name for o in session.get_outputs()]
    actual = dict(zip(names, session.run(None, {"images": clip})))
    expected = {k: v.numpy() for k, v in loaded.signatures["serving_default"](images=clip).items()}
    assert expected["num_detections"].min() > 0  # the comparison compares something
    assert_close(actual, expected, OUTPUT_KEYS)


def test_onnx_stream_equals_saved_model(onnx_export, loaded, exported):
    import onnxruntime

    session = onnxruntime.InferenceSession(
        os.path.join(onnx_export, "stream.onnx"), providers=["CPUExecutionProvider"]
    )
    shapes = read_metadata(onnx_export)["stream_state_shapes"]
    expected = saved_model_stream(loaded, exported.frames, shapes)
    names = [o.name for o in session.get_outputs()]
    state = {key: np.zeros(shapes[key], np.float32) for key in STATE_KEYS}
    for frame, reference in zip(exported.frames, expected):
        actual = dict(zip(names, session.run(None, {"frame": frame, **state})))
        state = {"state_memory": actual["next_state_memory"],
                 "state_features": actual["next_state_features"]}
        assert_close({**actual, **state}, reference, OUTPUT_KEYS + STATE_KEYS)


# -- TFLite ----------------------------------------------------------------------


def tflite_stream(path, frames, shapes):
    import tensorflow as tf

    runner = tf.lite.Interpreter(model_path=path).get_signature_runner("stream")
    state = {key: np.zeros(shapes[key], np.float32) for key in STATE_KEYS}
    answers = []
    for frame in frames:
        outputs = runner(frame=frame, **state)
        answers.append(outputs)
        state = {key: outputs[key] for key in STATE_KEYS}
    return answers


def test_tflite_layout_and_metadata(tflite_export):
    assert sorted(os.listdir(os.path.dirname(tflite_export))) == ["1"]
    assert sorted(os.listdir(tflite_export)) == ["assets.extra", "stream.tflite"]
    metadata = read_metadata(tflite_export)
    assert metadata["format"] == "tflite" and metadata["dtype"] == "float32"
    described = metadata["files"]["stream.tflite"]
    assert {i["name"]: i["shape"] for i in described["inputs"]} == {
        "frame": [None, None, 3], "state_features": [8, 8, 64], "state_memory": [8, 8, 32],
    }
    assert sorted(o["name"] for o in described["outputs"]) == sorted(OUTPUT_KEYS + STATE_KEYS)


def test_tflite_stream_equals_saved_model(tflite_export, loaded, exported):
    shapes = read_metadata(tflite_export)["stream_state_shapes"]
    frames = make_frames(5, seed=3)
    expected = saved_model_stream(loaded, frames, shapes)
    actual = tflite_stream(os.path.join(tflite_export, "stream.tflite"), frames, shapes)
    assert sum(int(e["num_detections"]) for e in expected) > 0
    for a, e in zip(actual, expected):
        assert_close(a, e, OUTPUT_KEYS + STATE_KEYS)
