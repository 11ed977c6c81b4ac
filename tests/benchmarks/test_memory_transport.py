"""benchmarks/memory_transport.py: the clips, the measure, the sharpened MatchTrans, the JSON."""

import importlib.util
import json
import os

import numpy as np
import pytest

from stmn_tf import ops
from stmn_tf.layers import BidirectionalSTMM
from tests.ops.match_trans_reference import numpy_match_trans

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "memory_transport.py")
_spec = importlib.util.spec_from_file_location("memory_transport", _PATH)
mt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mt)

SPEC = mt.ClipSpec()


@pytest.mark.parametrize("speed", [0.0, 0.5, 1.5, 3.0])
def test_clips_move_each_object_by_speed_cells_per_frame(speed):
    clips = mt.make_clips(np.random.default_rng(0), 8, speed, SPEC)
    steps = np.diff(clips["centres"], axis=2)  # [B, N, T-1, 2]
    np.testing.assert_allclose(np.linalg.norm(steps, axis=-1), speed, atol=1e-9)
    # Straight lines: the same step in every frame of a clip.
    np.testing.assert_allclose(steps, np.broadcast_to(steps[:, :, :1], steps.shape), atol=1e-9)
    np.testing.assert_array_equal(clips["cells"], np.floor(clips["centres"] + 0.5))
    for b in range(8):
        assert len(set(clips["classes"][b])) == SPEC.objects  # distinct classes
        for t in range(SPEC.frames):
            expected = np.full((SPEC.size, SPEC.size), -1)
            for j in range(SPEC.objects):  # later objects in front
                y, x = clips["cells"][b, j, t]
                expected[y - 1 : y + 2, x - 1 : x + 2] = clips["classes"][b, j]
            np.testing.assert_array_equal(clips["labels"][b, t], expected)
            objectness = clips["features"][b, t, ..., SPEC.classes]
            inside = expected >= 0
            assert np.all(objectness[inside] > 0.5) and np.all(objectness[~inside] < 0.5)


def test_clips_show_each_cue_in_one_frame_at_its_object_only():
    spec = mt.ClipSpec(noise=0.0, objects=1)
    clips = mt.make_clips(np.random.default_rng(1), 16, 2.0, spec)
    np.testing.assert_array_equal(clips["cue"].sum(axis=-1), 1)
    cue_channels = clips["features"][..., : spec.classes]  # [B, T, H, W, classes]
    for b in range(16):
        label = clips["classes"][b, 0]
        cue_frame = int(np.argmax(clips["cue"][b, 0]))
        on_object = clips["labels"][b] >= 0  # [T, H, W]
        expected = np.zeros(cue_channels.shape[1:], np.float32)
        expected[cue_frame, on_object[cue_frame], label] = 1.0
        np.testing.assert_array_equal(cue_channels[b], expected)
        hidden = on_object.copy()
        hidden[cue_frame] = False
        np.testing.assert_array_equal(clips["hidden"][b], hidden)
        distance = np.where(on_object, np.abs(np.arange(spec.frames) - cue_frame)[:, None, None], -1)
        np.testing.assert_array_equal(clips["distance"][b], distance)
    # The texture moves with the object: its cells carry the same vectors every frame.
    texture = clips["features"][0, ..., spec.classes + 1 :]
    patches = [texture[t][clips["labels"][0, t] >= 0] for t in range(spec.frames)]
    for patch in patches[1:]:
        np.testing.assert_array_equal(patch, patches[0])


def test_clips_reject_what_does_not_fit():
    with pytest.raises(ValueError, match="travels 17.5 cells"):
        mt.make_clips(np.random.default_rng(0), 1, 3.5, SPEC)
    with pytest.raises(ValueError, match="speed must be >= 0"):
        mt.make_clips(np.random.default_rng(0), 1, -1.0, SPEC)
    with pytest.raises(ValueError, match="features must be 'relu' or 'signed'"):
        mt.make_clips(np.random.default_rng(0), 1, 1.0, mt.ClipSpec(features="tanh"))
    with pytest.raises(ValueError, match=r"objects must be in \[1, classes=4\]"):
        mt.make_clips(np.random.default_rng(0), 1, 1.0, mt.ClipSpec(objects=5))


def test_signed_and_relu_features():
    relu = mt.make_clips(np.random.default_rng(0), 2, 1.0, SPEC)["features"]
    signed = mt.make_clips(np.random.default_rng(0), 2, 1.0, mt.ClipSpec(features="signed"))
    assert relu.min() >= 0.0 and signed["features"].min() < -1.0


def test_hidden_accuracy_counts_hidden_object_cells_only():
    # 1 clip, 3 frames, 2x2 map: an object of class 2 in the left column, its cue in
    # frame 1; the right column is background.
    labels = np.full((1, 3, 2, 2), -1)
    labels[:, :, :, 0] = 2
    hidden = labels >= 0
    hidden[:, 1] = False
    predictions = np.full((1, 3, 2, 2), 3)
    predictions[0, 0, 0, 0] = 2  # right: counted
    predictions[0, 1, :, 0] = 2  # right, but in the cue frame: not counted
    predictions[0, 2, 1, 0] = 2  # right: counted
    predictions[0, :, :, 1] = -1  # "right" on the background: not counted
    assert mt.hidden_accuracy(predictions, labels, hidden) == (2, 4)


def test_authors_affinity_is_the_layers_coefficients(rng):
    features = np.maximum(rng.normal(size=(2, 5, 6, 7)), 0).astype("float32")
    prev = np.maximum(rng.normal(size=(2, 5, 6, 7)), 0).astype("float32")
    ours = mt.sharpened_coefficients(features, prev, k=2, affinity="authors").numpy()
    theirs = ops.match_trans_coefficients(features, prev, k=2, implementation="tf").numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def _numpy_coefficients(f, fp, k, affinity, power):
    """The op's NumPy reference on the inputs of `affinity`: "centred" takes each map's
    mean off first (power 1), "power" raises the affinities to `power`."""
    if affinity == "centred":
        f = f - f.mean(axis=(1, 2), keepdims=True)
        fp = fp - fp.mean(axis=(1, 2), keepdims=True)
        power = 1.0
    return numpy_match_trans(f, fp, np.zeros(f.shape[:3] + (1,)), k, power)[1]


def test_centred_coefficients_match_numpy(rng):
    features = np.maximum(rng.normal(size=(1, 4, 5, 6)), 0)
    prev = np.maximum(rng.normal(size=(1, 4, 5, 6)), 0)
    got = mt.sharpened_coefficients(features, prev, k=1, affinity="centred").numpy()
    expected = _numpy_coefficients(features, prev, 1, "centred", 1.0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="affinity must be"):
        mt.sharpened_coefficients(features, prev, affinity="power")


def test_power_statistics_read_the_layers_affinity_power(rng):
    # The "power" row of the peakedness table is the op's affinity_power, as used by
    # the stmn variant: the same coefficients as the NumPy reference.
    features = np.maximum(rng.normal(size=(1, 2, 5, 5, 6)), 0).astype("float32")
    clips = {"features": features, "cells": np.array([[[[2, 2], [2, 3]]]])}
    expected = _numpy_coefficients(features[:, 1], features[:, 0], 2, "power", 3.0)[0, 2, 3]
    stats = mt.coefficient_stats(clips, k=2, affinity="power", power=3.0)
    assert stats["max_weight"] == pytest.approx(expected.max(), rel=1e-5)
    # The object came from (2, 2): offset (dy, dx) = (0, -1), index (0+2)*5 + (-1+2).
    assert stats["true_weight"] == pytest.approx(expected[2 * 5 + 1], rel=1e-5)


def test_stmn_is_bidirectional_stmm_with_the_power():
    spec = mt.ClipSpec(size=8, frames=3)
    layer = mt.build_model("stmn", spec, 4, affinity_power=2.5).get_layer("memory")
    assert isinstance(layer, BidirectionalSTMM)
    assert layer.align and layer.cell == "stmm" and layer.affinity_power == 2.5
    assert mt.build_model("stmn", spec, 4).get_layer("memory").affinity_power == 4.0
    authors = mt.build_model("stmn_authors", spec, 4, affinity_power=2.5).get_layer("memory")
    assert authors.align and authors.affinity_power == 1.0


def test_prototype_with_the_authors_affinity_is_bidirectional_stmm(rng):
    clip = np.maximum(rng.normal(size=(2, 4, 6, 6, 5)), 0).astype("float32")
    reference = BidirectionalSTMM(3, k=2, implementation="tf")
    reference.build(clip.shape)
    prototype = mt.CentredBidirectionalSTMM(3, affinity="authors", k=2)
    prototype.build(clip.shape)
    for ours, theirs in ((prototype.forward_cell, reference.forward_layer.cell),
                         (prototype.backward_cell, reference.backward_layer.cell)):
        for name in ("conv_w", "conv_z_w", "conv_r_w", "conv_u", "conv_z_u", "conv_r_u"):
            getattr(ours, name).set_weights(getattr(theirs, name).get_weights())
    np.testing.assert_allclose(prototype(clip).numpy(), reference(clip).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_coefficient_stats_on_a_hand_built_match():
    # Every cell has its own one-hot feature; frame 1 is frame 0 moved one cell down,
    # so at the object's centre the only positive cosine is at the true displacement.
    h = w = 6
    frame0 = np.eye(h * w, dtype="float32").reshape(h, w, h * w)
    frame1 = np.roll(frame0, 1, axis=0)
    frame1[0] = 0.0  # what enters from the top matches nothing
    clips = {"features": np.stack([frame0, frame1])[None],  # [1, 2, H, W, C]
             "cells": np.array([[[[2, 3], [3, 3]]]])}  # [B, N, T, 2]
    stats = mt.coefficient_stats(clips, k=2)
    assert stats["entropy"] == pytest.approx(0.0, abs=1e-6)
    assert stats["max_weight"] == pytest.approx(1.0)
    assert stats["true_weight"] == pytest.approx(1.0)
    assert stats["argmax_on_true"] == 1.0 and stats["reachable"] == 1.0
    clips["cells"] = np.array([[[[0, 3], [3, 3]]]])  # claimed 3 cells: out of reach
    assert mt.coefficient_stats(clips, k=2)["reachable"] == 0.0


@pytest.mark.slow
def test_tiny_run_prints_the_documented_json(tmp_path, capsys):
    mt.main(["--speeds", "1", "--seeds", "1", "--steps", "2", "--eval-clips", "4",
             "--variants", "stmn", "stmn_no_matchtrans", "convgru",
             "--output-dir", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    payload = json.loads(last)
    assert list(payload)[:3] == ["speeds", "accuracy", "seeds"]
    assert payload["speeds"] == [1.0] and payload["seeds"] == 1
    assert sorted(payload["accuracy"]) == ["convgru", "stmn", "stmn_no_matchtrans"]
    for values in payload["accuracy"].values():
        assert len(values) == 1 and 0.0 <= values[0] <= 1.0
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["accuracy"] == payload["accuracy"]


def test_accuracy_by_distance_to_the_cue():
    # 1 clip, 4 frames, one object cell of class 1; its cue in frame 1; right in
    # frames 0 and 3.
    labels = np.full((1, 4, 1, 2), -1)
    labels[..., 0] = 1
    hidden = labels >= 0
    hidden[:, 1] = False
    distance = np.where(labels >= 0, np.abs(np.arange(4) - 1)[None, :, None, None], -1)
    predictions = np.array([1, 1, 0, 1])[None, :, None, None] * np.ones((1, 4, 1, 2), int)
    correct, counted = mt.accuracy_by_distance(predictions, labels, hidden, distance, 4)
    np.testing.assert_array_equal(counted, [0, 2, 1, 0])  # frames 0 and 2 are 1 away
    np.testing.assert_array_equal(correct, [0, 1, 1, 0])  # frame 0 (d = 1), frame 3 (d = 2)
    assert mt.hidden_accuracy(predictions, labels, hidden) == (2, 3)
