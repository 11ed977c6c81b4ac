"""The golden export: a tiny STMN checkpoint and its SavedModel outputs, recorded once.

`python -m tests.serving.golden` (run from the repository root) wrote
`tests/data/golden_stmn/` with the code before the detector was split into parts:
the checkpoint `ckpt-1` (train.py's layout, `tf.train.Checkpoint(model=...)`) of the
tiny STMN of `configs/synthetic_tiny_stmn.yaml` (seed 7, the class kernel scaled by
100 as in `tests/serving/conftest.py`, for decisive scores) and `outputs.npz`, what its
export answers on `golden_frames()`: `serving_default` on the clip, and `stream` frame by
frame from the zero state. `tests/serving/test_golden.py` restores that old checkpoint
with the current code, exports it and compares, so a refactor that changes the
variable paths or the outputs fails there. Run this again only on purpose.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tests.serving.conftest import CONFIG
from tests.serving.conftest import REPO
from tests.serving.conftest import make_frames

# The recording's model: the config of its time (MatchTrans with the authors' affinity).
# The MatchTrans of the release that wrote the golden outputs (the authors' formula);
# the tiny config's own options since then would change the numbers.
GOLDEN_OVERRIDES = ("model.memory.affinity_power=1.0,model.memory.centre_features=false,"
                    "model.memory.feature_gradient=false,model.memory.offset_prior=false")

GOLDEN_DIR = os.path.join(REPO, "tests", "data", "golden_stmn")
OUTPUTS_FILE = os.path.join(GOLDEN_DIR, "outputs.npz")
KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def golden_frames():
    """uint8 `[4, 96, 80, 3]`: the serving tests' moving rectangles, one frame more."""
    return make_frames(frames=4, seed=3)


def run_export(path, frames):
    """The SavedModel at `path` on `frames`: `{"clip/<key>": ..., "stream/<key>": ...}`.

    Stream outputs are stacked over the frames (`[T, N, 4]` boxes and so on).
    """
    loaded = tf.saved_model.load(path)
    result = {}
    clip = loaded.signatures["serving_default"](images=tf.constant(frames))
    for key in KEYS:
        result[f"clip/{key}"] = clip[key].numpy()
    stream = loaded.signatures["stream"]
    shapes = {spec.name: spec.shape for spec in stream.structured_input_signature[1].values()}
    state = {name: tf.zeros(shapes[name], tf.float32) for name in ("state_memory", "state_features")}
    answers = []
    for frame in frames:
        out = stream(frame=tf.constant(frame), **state)
        state = {name: out[name] for name in state}
        answers.append({key: out[key].numpy() for key in KEYS})
    for key in KEYS:
        result[f"stream/{key}"] = np.stack([answer[key] for answer in answers])
    return result


def record():
    from stmn_tf.configs import load_config
    from stmn_tf.models.builders import build_model
    from stmn_tf.serving.export import export_saved_model

    # Recorded before MatchTrans had an affinity power: the authors' formula.
    config = load_config(CONFIG, GOLDEN_OVERRIDES)
    keras.utils.set_random_seed(7)
    model = build_model(config.model)
    kernel = model.rfcn_head.class_conv.kernel
    kernel.assign(kernel * 100.0)
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), GOLDEN_DIR, 1)
    manager.save()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_saved_model(model, config.eval_data.image_size, tmp)
        outputs = run_export(path, golden_frames())
    np.savez(OUTPUTS_FILE + ".tmp.npz", **outputs)
    os.replace(OUTPUTS_FILE + ".tmp.npz", OUTPUTS_FILE)
    for key, value in sorted(outputs.items()):
        print(key, value.shape, value.reshape(-1)[:6])


if __name__ == "__main__":
    record()
