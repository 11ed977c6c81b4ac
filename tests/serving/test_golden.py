"""A checkpoint written before the detector was split into parts still loads, and its
export answers as the old code's did (the numbers recorded by `tests/serving/golden.py`)."""

import numpy as np
import pytest

from stmn_tf.configs import load_config
from stmn_tf.serving.export import export_saved_model
from stmn_tf.serving.export import restore_for_export
from tests.serving.conftest import CONFIG
from tests.serving.golden import GOLDEN_OVERRIDES
from tests.serving.golden import GOLDEN_DIR
from tests.serving.golden import OUTPUTS_FILE
from tests.serving.golden import golden_frames
from tests.serving.golden import run_export

ATOL = 1e-5


@pytest.mark.slow
def test_old_checkpoint_exports_the_recorded_outputs(tmp_path):
    # Recorded before MatchTrans had an affinity power: the authors' formula.
    config = load_config(CONFIG, GOLDEN_OVERRIDES)
    model, _ = restore_for_export(config, GOLDEN_DIR)  # every variable must be found
    path = export_saved_model(model, config.eval_data.image_size, str(tmp_path))
    actual = run_export(path, golden_frames())
    with np.load(OUTPUTS_FILE) as recorded:
        expected = dict(recorded)
    assert sorted(actual) == sorted(expected)
    assert expected["clip/num_detections"].tolist() == [20.0] * 4  # the recording has boxes
    for key in sorted(expected):
        if key.endswith(("num_detections", "detection_classes")):
            np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
        else:
            np.testing.assert_allclose(actual[key], expected[key], atol=ATOL, err_msg=key)
