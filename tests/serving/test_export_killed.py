"""export.py killed with SIGKILL midway leaves no version directory; a re-run completes."""

import os
import subprocess
import sys

import keras
import pytest

from stmn_tf.configs import load_config
from stmn_tf.models.builders import build_model
from tests import killing
from tests.serving.conftest import REPO
from tests.serving.conftest import save_checkpoint

pytestmark = pytest.mark.slow

CONFIG = os.path.join(REPO, "configs", "synthetic_tiny_rfcn.yaml")

# export.py in a fresh process that stops for good once the SavedModel is fully
# written under its temporary name (at the portable export's custom-op check, just
# before the rename) and says so in a file: the test's SIGKILL lands there every time.
_PAUSING_EXPORT = """
import sys, time
from stmn_tf.serving import export
signal_path = sys.argv[1]
def pause(path):
    open(signal_path, "w").write(path)
    time.sleep(600)
export.custom_ops_in = pause
sys.argv = ["export.py", *sys.argv[2:]]
import export as cli
sys.exit(cli.main())
"""


def test_sigkill_during_export_leaves_no_version_and_a_rerun_completes(tmp_path):
    config = load_config(CONFIG)
    keras.utils.set_random_seed(3)
    model = build_model(config.model)
    model({"images": keras.ops.zeros([1, 1, 32, 32, 3])})
    checkpoint_dir = str(tmp_path / "model")
    save_checkpoint(model, checkpoint_dir)
    output = str(tmp_path / "export")
    arguments = ["--config", CONFIG, "--checkpoint", checkpoint_dir, "--output", output]
    signal_path = str(tmp_path / "paused")
    env = killing.kill_when_paused(_PAUSING_EXPORT, arguments, signal_path, 400,
                                   "export.py did not finish writing in time", cwd=REPO,
                                   pythonpath=REPO)
    with open(signal_path) as f:
        temporary = f.read()
    # The complete SavedModel sits under a hidden temporary name; no version directory
    # (the numbered folders that TF Serving loads) exists.
    assert os.path.exists(os.path.join(temporary, "saved_model.pb"))
    assert os.path.basename(temporary).startswith(".export-1-")
    assert not [name for name in os.listdir(output) if name.isdigit()]

    completed = subprocess.run([sys.executable, "export.py", *arguments], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert [name for name in os.listdir(output) if name.isdigit()] == ["1"]
    assert os.path.exists(os.path.join(output, "1", "saved_model.pb"))


def test_exported_signatures_answer_empty_and_one_frame_inputs(exported, tmp_path):
    """No detection (a score threshold above every score, baked into the export) and a
    one-frame clip: zero counts and all-zero padding from every signature."""
    import cv2
    import numpy as np
    import tensorflow as tf

    from stmn_tf.serving.export import export_saved_model

    model = exported.model
    previous = model.decoder.score_threshold
    model.decoder.score_threshold = 1.01
    try:
        path = export_saved_model(model, exported.config.eval_data.image_size, str(tmp_path / "e"))
    finally:
        model.decoder.score_threshold = previous
    loaded = tf.saved_model.load(path)
    frame = exported.frames[:1]  # [1, H, W, 3]
    clip = loaded.signatures["serving_default"](images=tf.constant(frame))
    encoded = [cv2.imencode(".png", frame[0][..., ::-1])[1].tobytes()]
    files = loaded.signatures["encoded_frames"](encoded_frames=tf.constant(encoded))
    stream = loaded.signatures["stream"]
    shapes = {spec.name: spec.shape for spec in stream.structured_input_signature[1].values()}
    state = {name: tf.zeros(shapes[name], tf.float32) for name in ("state_memory", "state_features")}
    online = stream(frame=tf.constant(frame[0]), **state)
    for outputs in (clip, files, online):
        assert int(np.sum(outputs["num_detections"].numpy())) == 0
        assert not np.any(outputs["detection_boxes"].numpy())
        assert not np.any(outputs["detection_scores"].numpy())
    assert clip["detection_boxes"].shape[0] == 1
