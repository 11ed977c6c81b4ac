"""The exported SavedModel: layout, portability, signatures against the in-framework model."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.data import pipeline
from stmn_tf.serving.export import METADATA_FILE
from stmn_tf.serving.export import ExportError
from stmn_tf.serving.export import custom_ops_in
from stmn_tf.serving.export import export_saved_model
from stmn_tf.serving.export import signature_ops
from tests.serving.conftest import REPO

OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
PYTHON = sys.executable
ATOL = 1e-4


def numpy(outputs):
    return {key: np.asarray(value) for key, value in outputs.items()}


def reference(model, frames, image_size):
    """The in-framework model on the training pipeline's decoding of PNG frames.

    `pipeline._decode_frames` is the training and evaluation resize + padding; the
    boxes, normalised to the padded canvas by the model, are rescaled to the frame.
    """
    encoded = tf.stack([tf.io.encode_png(frame) for frame in frames])
    sizes = tf.tile(tf.constant([frames.shape[1:3]], tf.int32), [len(frames), 1])
    images, resized = pipeline._decode_frames(encoded, sizes, tf.constant(False), image_size)
    outputs = numpy(model.detect(images[None]))
    outputs = {key: value[0] for key, value in outputs.items()}  # drop B
    padded = np.asarray(pipeline.padded_size(image_size), np.float32)
    scale = np.tile(padded / np.asarray(resized, np.float32), [1, 2])[:, None, :]  # [T, 1, 4]
    outputs["detection_boxes"] = np.clip(outputs["detection_boxes"] * scale, 0.0, 1.0)
    return outputs


def assert_detections_close(actual, expected, atol=ATOL):
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(actual["detection_classes"], expected["detection_classes"])
    np.testing.assert_allclose(actual["detection_scores"], expected["detection_scores"], atol=atol)
    np.testing.assert_allclose(actual["detection_boxes"], expected["detection_boxes"], atol=atol)


# -- layout ----------------------------------------------------------------------


def test_layout_metadata_and_no_leftovers(exported):
    assert exported.path == os.path.join(exported.base, "1")
    assert sorted(os.listdir(exported.base)) == ["1"]  # the temporary directory is gone
    assert os.path.exists(os.path.join(exported.path, "saved_model.pb"))
    assert os.listdir(os.path.join(exported.path, "variables"))
    with open(os.path.join(exported.path, "assets.extra", METADATA_FILE)) as f:
        metadata = json.load(f)
    assert metadata["signatures"] == ["serving_default", "encoded_frames", "stream"]
    assert metadata["custom_op"] is False
    assert metadata["stream_state_shapes"] == {
        "state_memory": [8, 8, 32],  # padded 128 / 16, the forward memory's 32 channels
        "state_features": [8, 8, 64],
    }
    assert metadata["max_detections"] == 20


def test_refuses_to_overwrite_a_version(exported):
    mtime = os.path.getmtime(os.path.join(exported.path, "saved_model.pb"))
    with pytest.raises(ExportError, match=r"1 exists; pass overwrite=True"):
        export_saved_model(exported.model, exported.config.eval_data.image_size, exported.base)
    with pytest.raises(ExportError, match="version must be an integer >= 1"):
        export_saved_model(exported.model, exported.config.eval_data.image_size, exported.base, version=0)
    assert os.path.getmtime(os.path.join(exported.path, "saved_model.pb")) == mtime


def test_every_signature_has_standard_ops_only(exported):
    ops = signature_ops(exported.path)
    assert {"serving_default", "encoded_frames", "stream"} <= set(ops)
    for key in ("serving_default", "encoded_frames", "stream"):
        # The walk reaches into the functions: the model's convolutions and NMS.
        assert {"Conv2D", "CombinedNonMaxSuppression", "ResizeBilinear"} <= ops[key], key
        assert not [op for op in ops[key] if op.startswith("Stmn")], key
    assert "DecodeImage" in ops["encoded_frames"]
    assert custom_ops_in(exported.path) == {}


# -- a fresh process without stmn_tf ---------------------------------------------

# Runs with `python -I` from a directory outside the repository; the finder makes
# sure the editable install cannot provide stmn_tf either.
FRESH_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "stmn_tf" or name.startswith("stmn_tf."):
                raise ImportError("stmn_tf is not importable in this process")
            return None

    sys.meta_path.insert(0, Blocked())
    sys.path = [p for p in sys.path if p and p.rstrip("/") != {repo!r}]
    try:
        import stmn_tf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("stmn_tf imported although it should not be")

    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry

    loaded = tf.saved_model.load(sys.argv[1])
    frames = np.load(sys.argv[2])
    clip = loaded.signatures["serving_default"](images=tf.constant(frames))
    encoded = tf.stack([tf.io.encode_png(f) for f in frames])
    from_bytes = loaded.signatures["encoded_frames"](encoded_frames=encoded)
    result = {{"clip_" + k: v.numpy() for k, v in clip.items()}}
    result.update({{"encoded_" + k: v.numpy() for k, v in from_bytes.items()}})
    assert op_def_registry.get("Stmn>MatchTrans") is None, "the op library got loaded"
    assert not [m for m in sys.modules if m.split(".")[0] == "stmn_tf"]
    np.savez(sys.argv[3], **result)
    """
)


def run_fresh(script, *args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CUDA_VISIBLE_DEVICES"] = ""
    path = os.path.join(cwd, "script.py")
    with open(path, "w") as f:
        f.write(script)
    completed = subprocess.run(
        [PYTHON, "-I", path, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    return completed


def test_fresh_process_without_stmn_tf_matches_the_model(exported, tmp_path):
    frames_path = str(tmp_path / "frames.npy")
    np.save(frames_path, exported.frames)
    out = str(tmp_path / "out.npz")
    completed = run_fresh(
        FRESH_SCRIPT.format(repo=REPO), exported.path, frames_path, out, cwd=str(tmp_path)
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = np.load(out)
    clip = {key: result["clip_" + key] for key in OUTPUT_KEYS}
    encoded = {key: result["encoded_" + key] for key in OUTPUT_KEYS}

    assert clip["detection_boxes"].shape == (3, 20, 4)
    assert clip["detection_classes"].dtype == np.float32
    expected = reference(exported.model, exported.frames, exported.config.eval_data.image_size)
    assert_detections_close(clip, expected)
    # PNG is lossless: the bytes signature sees exactly the same frames.
    for key in OUTPUT_KEYS:
        np.testing.assert_array_equal(encoded[key], clip[key], err_msg=key)


# -- saved_model_cli ---------------------------------------------------------------


def saved_model_cli(*args):
    command = [os.path.join(os.path.dirname(PYTHON), "saved_model_cli"), *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_saved_model_cli_show_and_run(exported, loaded, tmp_path):
    shown = saved_model_cli("show", "--dir", exported.path, "--all")
    for text in (
        "signature_def['serving_default']",
        "signature_def['encoded_frames']",
        "signature_def['stream']",
        "inputs['images'] tensor_info:\n        dtype: DT_UINT8\n        shape: (-1, -1, -1, 3)",
        "inputs['encoded_frames'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)",
        "inputs['state_memory'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (8, 8, 32)",
        "outputs['detection_boxes'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 20, 4)",
    ):
        assert text in shown, text

    frames_path = str(tmp_path / "clip.npy")
    np.save(frames_path, exported.frames)
    outdir = str(tmp_path / "cli")
    saved_model_cli(
        "run", "--dir", exported.path, "--tag_set", "serve", "--signature_def", "serving_default",
        "--inputs", f"images={frames_path}", "--outdir", outdir,
    )
    expected = numpy(loaded.signatures["serving_default"](images=tf.constant(exported.frames)))
    for key in OUTPUT_KEYS:
        np.testing.assert_allclose(np.load(os.path.join(outdir, key + ".npy")), expected[key], atol=ATOL)


# -- signatures in this process ----------------------------------------------------


def zero_state(loaded):
    spec = loaded.signatures["stream"].structured_input_signature[1]
    return {key: tf.zeros(spec[key].shape, tf.float32) for key in ("state_memory", "state_features")}


def test_stream_equals_the_model_run_causally(exported, loaded):
    """Frame t of the stream == the exported model's last frame of the clip 1..t.

    The forward memory has read frames 1..t and the backward memory only frame t: a
    forward-only model over the clip.
    """
    stream = loaded.signatures["stream"]
    state = zero_state(loaded)
    image_size = exported.config.eval_data.image_size
    answers = []
    for t, frame in enumerate(exported.frames):
        outputs = numpy(stream(frame=tf.constant(frame), **state))
        state = {key: outputs[key] for key in ("state_memory", "state_features")}
        answers.append(outputs)
        expected = reference(exported.model, exported.frames[: t + 1], image_size)
        assert_detections_close(outputs, {key: value[t] for key, value in expected.items()})
        assert outputs["state_memory"].shape == (8, 8, 32)
        assert np.abs(outputs["state_memory"]).max() > 0
    # Not what the bidirectional clip answers at frame 0 (its backward memory has read
    # the later frames): the stream really is causal.
    clip = reference(exported.model, exported.frames, image_size)
    assert not np.allclose(answers[0]["detection_scores"], clip["detection_scores"][0], atol=ATOL)


def test_stream_state_carries_the_memory(exported, loaded):
    """Restarting with a zero state at frame 2 answers as frame 2 alone, not as the stream."""
    stream = loaded.signatures["stream"]
    frames = exported.frames
    state = zero_state(loaded)
    for frame in frames[:2]:
        outputs = numpy(stream(frame=tf.constant(frame), **state))
        state = {key: outputs[key] for key in ("state_memory", "state_features")}
    continued = numpy(stream(frame=tf.constant(frames[2]), **state))
    restarted = numpy(stream(frame=tf.constant(frames[2]), **zero_state(loaded)))
    alone = reference(exported.model, frames[2:], exported.config.eval_data.image_size)
    assert_detections_close(restarted, {key: value[0] for key, value in alone.items()})
    assert not np.allclose(continued["state_memory"], restarted["state_memory"])


def test_encoded_frames_equals_serving_default_on_jpeg(loaded, exported):
    """JPEG bytes answer as `serving_default` on the frames that TF decodes from them."""
    jpeg = tf.stack([tf.io.encode_jpeg(frame, quality=80) for frame in exported.frames])
    decoded = tf.stack([tf.io.decode_jpeg(data, channels=3) for data in jpeg])
    assert not np.array_equal(decoded.numpy(), exported.frames)  # lossy: a real check
    from_bytes = numpy(loaded.signatures["encoded_frames"](encoded_frames=jpeg))
    from_pixels = numpy(loaded.signatures["serving_default"](images=decoded))
    for key in OUTPUT_KEYS:
        np.testing.assert_array_equal(from_bytes[key], from_pixels[key], err_msg=key)


def test_any_number_of_frames_and_frame_size(loaded):
    frames = np.random.default_rng(3).integers(0, 256, (1, 200, 150, 3), np.uint8)
    outputs = numpy(loaded.signatures["serving_default"](images=tf.constant(frames)))
    assert outputs["detection_boxes"].shape == (1, 20, 4)
    assert outputs["num_detections"].shape == (1,)
    boxes = outputs["detection_boxes"][0, : int(outputs["num_detections"][0])]
    assert np.all((boxes >= 0) & (boxes <= 1))
    assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])


def test_clear_errors(loaded, exported):
    """The messages name the input and the expected dtype or shape.

    TF Serving, like the loaded signatures, checks dtypes but not shapes: the
    shape checks are in the graph.
    """
    clip = loaded.signatures["serving_default"]
    frames = exported.frames
    invalid = tf.errors.InvalidArgumentError
    with pytest.raises(invalid, match="expected to be a uint8 tensor but is a float tensor"):
        clip(images=tf.constant(frames, tf.float32))
    with pytest.raises(invalid, match=r"tensor images \[96,80,3\] is not compatible with expected shape \[\?,\?,\?,3\]"):
        clip(images=tf.constant(frames[0]))  # one frame without the T axis
    with pytest.raises(invalid, match=r"tensor images \[3,96,80,4\] is not compatible"):
        clip(images=tf.concat([frames, frames[..., :1]], -1))  # RGBA
    with pytest.raises(invalid, match="images: the clip is empty"):
        clip(images=tf.zeros([0, 96, 80, 3], tf.uint8))
    encoded = loaded.signatures["encoded_frames"]
    with pytest.raises(invalid, match="encoded_frames: the clip is empty"):
        encoded(encoded_frames=tf.zeros([0], tf.string))
    with pytest.raises(invalid, match="expected to be a string tensor"):
        encoded(encoded_frames=tf.constant(frames))
    with pytest.raises(invalid, match="Unknown image file format"):
        encoded(encoded_frames=tf.constant([b"not an image"]))
    state = zero_state(loaded)
    stream = loaded.signatures["stream"]
    with pytest.raises(invalid, match=r"tensor state_memory \[4,4,32\] is not compatible with expected shape \[8,8,32\]"):
        stream(frame=tf.constant(frames[0]), state_memory=tf.zeros([4, 4, 32]),
               state_features=state["state_features"])
    with pytest.raises(invalid, match=r"tensor frame \[3,96,80,3\] is not compatible"):
        stream(frame=tf.constant(frames), **state)
