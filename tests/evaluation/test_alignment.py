"""MatchTrans' coefficient statistics on a model (stmn_tf/evaluation/alignment.py)
against NumPy references written here."""

import math

import numpy as np
import pytest

from stmn_tf.evaluation import alignment
from stmn_tf.inference.video import prepared_frame


def reference_entropy(weights):
    return -sum(w * math.log(w) for w in weights if w > 0)


def test_point_cells_follow_the_cell_centre_mapping():
    # 1080x1920 frame resized to 72x128 on a 128x128 canvas: 8x8 cells of 16 px.
    cells = alignment.point_cells([[0, 0], [1919, 1079], [960, 540], [15 * 15, 16 * 15 - 1]],
                                  (8, 8), (128, 128), (72, 128), (1080, 1920))
    # x 960 -> canvas 64 -> col 4; y 540 -> canvas 36 -> row 2; (225, 239) -> canvas
    # (15, 15.93) -> row 0, col 0.
    assert cells.tolist() == [[0, 0], [4, 7], [2, 4], [0, 0]]


def test_uniform_and_one_hot_coefficients():
    k, side = 1, 3
    stats = alignment.AlignmentStats(k)
    coefficients = np.full((4, 4, side * side), 1 / 9)
    # The object: cells (1, 1) and (1, 2) (x 16..48, y 16..32 at 16 px a cell).
    box, prev_box = [16, 16, 48, 32], [32, 0, 64, 16]  # moved one cell left and down
    # Its centre cell at t is (1, 2) (x 32, y 24); at t-1 (0, 3): offset (dy, dx) = (-1, 1).
    true = (-1 + k) * side + (1 + k)
    coefficients[1, 2] = np.eye(side * side)[true]
    coefficients[1, 1] = np.eye(side * side)[k * side + k] * 0.5 + 0.5 / 9
    stats.add(coefficients, [box], [prev_box], [7], [7], (64, 64), (64, 64), (64, 64))
    result = stats.result()
    assert result["frames"] == 1
    assert result["background"]["cells"] == 14 and result["object"]["cells"] == 2
    np.testing.assert_allclose(result["background"]["largest"], 1 / 9)
    np.testing.assert_allclose(result["background"]["entropy"], math.log(9))
    np.testing.assert_allclose(result["object"]["largest"], (1.0 + 0.5 + 0.5 / 9) / 2)
    np.testing.assert_allclose(result["object"]["entropy"],
                               reference_entropy(coefficients[1, 1]) / 2)
    np.testing.assert_allclose(result["object"]["zero_offset"], (0.0 + 0.5 + 0.5 / 9) / 2)
    track = result["track"]
    assert track["cells"] == 1 and track["in_window"] == 1.0
    assert track["true_offset"] == 1.0 and track["argmax_on_true"] == 1.0
    assert result["uniform_largest"] == pytest.approx(1 / 9)


def test_tracks_out_of_reach_and_unmatched_are_counted_apart():
    stats = alignment.AlignmentStats(1)
    coefficients = np.full((4, 4, 9), 1 / 9)
    # Track 1 moved 3 cells (beyond k = 1); track 2 is new at t; track 3 is gone.
    boxes, ids = [[0, 0, 16, 16], [48, 48, 64, 64]], [1, 2]
    prev_boxes, prev_ids = [[48, 0, 64, 16], [0, 48, 16, 64]], [1, 3]
    stats.add(coefficients, boxes, prev_boxes, ids, prev_ids, (64, 64), (64, 64), (64, 64))
    track = stats.result()["track"]
    assert track["cells"] == 1 and track["in_window"] == 0.0
    assert track["true_offset"] is None and track["argmax_on_true"] is None


def test_bad_coefficients_are_rejected():
    with pytest.raises(ValueError, match=r"\[hf, wf, 25\] for k = 2"):
        alignment.AlignmentStats(2).add(np.ones((4, 4, 9)), [], [], [], [], (64, 64),
                                        (64, 64), (64, 64))


class ShiftingModel:
    """`F_t`: a fixed random code per canvas cell, moved with a bright object; the
    memory cell's `k` and `affinity_power` as an STMN's."""

    class Cell:
        k, affinity_power, centre_features, align = 2, 4.0, False, True

        def __init__(self, prior):
            self.prior = prior

        def offset_log_prior(self):
            return self.prior

    def __init__(self, codes, object_code, prior=None):
        self.codes = codes  # [hf, wf, C]
        self.object_code = object_code  # [C]
        self.prior = prior  # the cells' learned offset prior (log-weights) or None

    def memory_cells(self):
        return [self.Cell(self.prior), self.Cell(self.prior)]

    def extract_features(self, images):
        import tensorflow as tf

        images = np.asarray(images)[0]  # [T, Hp, Wp, 3]
        features = []
        for image in images:
            # The object's cells carry its own code, so that its best match in the
            # previous frame is where it was.
            bright = image[8::16, 8::16, 0] > 100  # [hf, wf]
            f = np.where(bright[..., None], self.object_code, self.codes)
            features.append(f)
        return tf.constant(np.stack(features)[None], tf.float32)


def moving_object_video(rng):
    codes = rng.normal(size=(6, 6, 16)).astype(np.float32)
    object_code = rng.normal(size=16).astype(np.float32)
    videos = []
    for index in range(5):
        image = np.zeros((96, 96, 3), np.float32)
        x0 = 16 * index  # one cell right per frame
        image[32:48, x0:x0 + 16] = 200.0
        truth = {"boxes": np.array([[x0, 32, x0 + 16, 48]], np.float64),
                 "track_ids": np.array([4])}
        videos.append(("v", prepared_frame(image, (96, 96), (96, 96), index,
                                           groundtruth=truth)))
    return codes, object_code, videos


def test_a_learned_offset_prior_enters_the_coefficients_and_the_report(tmp_path):
    codes, object_code, videos = moving_object_video(np.random.default_rng(0))
    prior = np.full(25, -20.0, np.float32)
    prior[12] = 0.0  # all the weight on offset 0
    result = alignment.evaluate_alignment(ShiftingModel(codes, object_code, prior), videos,
                                          stride=1)
    assert result["track"]["argmax_on_true"] == 0.0
    assert result["track"]["zero_offset"] > 0.99
    for weights in result["offset_prior"].values():
        assert weights[12] > 0.99 and abs(sum(weights) - 1.0) < 1e-9
    table = "\n".join(alignment.format_table({"m": result}))
    assert "learned offset prior (forward)" in table and "1.000" in table
    path = tmp_path / "prior.png"
    assert alignment.plot_offset_priors({"m": result}, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result["offset_prior"] = None
    assert not alignment.plot_offset_priors({"m": result}, str(tmp_path / "none.png"))
    assert not (tmp_path / "none.png").exists()


def test_evaluate_alignment_finds_the_motion_of_a_distinct_object():
    codes, object_code, videos = moving_object_video(np.random.default_rng(0))
    result = alignment.evaluate_alignment(ShiftingModel(codes, object_code), videos, stride=1)
    assert result["videos"] == 1 and result["frames"] == 4 and result["k"] == 2
    track = result["track"]
    assert track["cells"] == 4 and track["in_window"] == 1.0
    # Offset (0, -1) wins at every step; the background codes match themselves.
    assert track["argmax_on_true"] == 1.0 and track["true_offset"] > 0.5
    assert result["background"]["zero_offset"] > 0.5
    assert result["background"]["largest"] > 2 * result["uniform_largest"]


def test_model_names_keep_directories_that_share_a_last_component_apart():
    from stmn_tf.evaluation.alignment import model_names

    assert model_names(["runs/a/", "runs/b"]) == ["a", "b"]
    assert model_names(["x/stmn_seed0", "y/stmn_seed0/", "z/other"]) == [
        "x/stmn_seed0", "y/stmn_seed0", "other"]
