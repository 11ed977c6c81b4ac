"""R-FCN -> STMN weight transfer: everything shared is copied, the memory gets the 3x3 conv."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.models import RFCN
from stmn_tf.models import STMN
from stmn_tf.models import transfer_rfcn_to_stmn
from tests.models.synthetic import make_clip
from tests.models.synthetic import tiny_rfcn
from tests.models.synthetic import tiny_stmn


def _perturbed_rfcn():
    # Random non-zero biases and BN statistics, so that a missed copy shows.
    keras.utils.set_random_seed(3)
    rfcn = tiny_rfcn(2, post_processing={"score_threshold": 0.0})
    rng = np.random.default_rng(3)
    for w in rfcn.weights:
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        elif "kernel" not in w.path:
            w.assign(rng.normal(0, 0.1, w.shape))
    return rfcn


def bypassed_memory_detections(stmn, clip):
    """STMN with its memory replaced by ReLU(s * W(F_t)) of its W convolutions: after
    the weight transfer, exactly the static R-FCN's 3x3 conv (a test of the transfer)."""
    images = tf.convert_to_tensor(clip["images"])
    features = stmn.extract_features(images)  # [B, T, h, w, C]
    shape = tf.shape(features)
    flat = tf.reshape(features, tf.concat([[-1], shape[2:]], 0))
    head_input = tf.nn.relu(tf.concat(
        [cell.input_scale * cell.conv_w(flat) for cell in stmn.memory_cells()], -1))
    head_input = tf.reshape(head_input, tf.concat([shape[:2], tf.shape(head_input)[1:]], 0))
    return {key: value.numpy() for key, value in stmn.detect_from_head_input(
        features, head_input, tf.shape(images)[2:4]).items()}


@pytest.mark.parametrize("direction", ["bidirectional", "forward"])
def test_bypassed_memory_reproduces_rfcn(direction):
    rfcn = _perturbed_rfcn()
    stmn = tiny_stmn(
        2, memory={"direction": direction}, post_processing={"score_threshold": 0.0}
    )
    report = transfer_rfcn_to_stmn(rfcn, stmn)
    clip = make_clip()
    expected = rfcn.predict_step(clip)
    got = bypassed_memory_detections(stmn, clip)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-5, err_msg=key)
    # Every R-FCN variable was a source, the 3x3 conv's in slices.
    sources = {entry["source"].split("[")[0] for entry in report["copied"]}
    assert sources == {w.path for w in rfcn.weights}
    assert all("conv_u" in p or "conv_z_u" in p or "conv_r_u" in p for p in report["fresh"])
    # With the memory on, the STMN's detections differ (its U convs are fresh).
    recurrent = stmn.predict_step(clip)
    assert not np.allclose(recurrent["detection_scores"], expected["detection_scores"])


def test_halves_go_to_the_two_directions():
    rfcn = _perturbed_rfcn()
    stmn = tiny_stmn(2)
    transfer_rfcn_to_stmn(rfcn, stmn)
    kernel = rfcn.head_conv.kernel.numpy()
    forward, backward = stmn.memory_cells()
    for name in ("conv_w", "conv_z_w", "conv_r_w"):
        np.testing.assert_array_equal(getattr(forward, name).kernel.numpy(), kernel[..., :32])
        np.testing.assert_array_equal(getattr(backward, name).kernel.numpy(), kernel[..., 32:])


def test_freshfc_leaves_memory_and_head_fresh():
    rfcn = _perturbed_rfcn()
    stmn = tiny_stmn(2, memory={"cell": "convgru", "align": False})
    head_before = [w.numpy().copy() for w in stmn.rfcn_head.weights]
    report = transfer_rfcn_to_stmn(rfcn, stmn, "convgru_freshfc")
    for before, w in zip(head_before, stmn.rfcn_head.weights):
        np.testing.assert_array_equal(w.numpy(), before)
        assert w.path in report["fresh"]
    np.testing.assert_array_equal(
        stmn.features.expand_conv.kernel.numpy(), rfcn.features.expand_conv.kernel.numpy()
    )
    assert not any("head_conv" in e["source"] for e in report["copied"])


def test_mismatched_shapes_raise():
    rfcn = tiny_rfcn(2)
    stmn = tiny_stmn(3)  # more classes: head shapes differ
    with pytest.raises(ValueError, match="Shape mismatch"):
        transfer_rfcn_to_stmn(rfcn, stmn)
    with pytest.raises(ValueError, match="Unknown variant"):
        transfer_rfcn_to_stmn(rfcn, tiny_stmn(2), "lstm")


def test_transfer_from_saved_weights(tmp_path):
    from stmn_tf.models import transfer_rfcn_file_to_stmn

    rfcn = _perturbed_rfcn()
    path = str(tmp_path / "rfcn.weights.h5")
    rfcn.save_weights(path)
    stmn = tiny_stmn(2, post_processing={"score_threshold": 0.0})
    report = transfer_rfcn_file_to_stmn(path, stmn)
    assert len(report["copied"]) > len(rfcn.weights)
    clip = make_clip()
    np.testing.assert_allclose(
        bypassed_memory_detections(stmn, clip)["detection_scores"], rfcn.predict_step(clip)["detection_scores"],
        rtol=1e-4, atol=1e-5,
    )
