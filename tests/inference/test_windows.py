"""The test-time window schedule and the detector ensemble."""

import numpy as np
import pytest

from stmn_tf.inference.ensemble import ensemble_detections_xyxy
from tests.inference.window_schedule import sliding_windows
from tests.inference.window_schedule import subsequences
from tests.inference.window_schedule import video_windows
from tests.inference.window_schedule import windows_per_frame


def test_subsequences_interleave():
    assert subsequences(23, 10) == [[0, 10, 20], [1, 11, 21], [2, 12, 22], [3, 13], [4, 14],
                                    [5, 15], [6, 16], [7, 17], [8, 18], [9, 19]]
    assert subsequences(3, 10) == [[0], [1], [2]]
    assert subsequences(0, 10) == []


def test_sliding_windows_step_one_is_the_authors_schedule():
    sub = list(range(0, 150, 10))  # 15 frames
    windows = sliding_windows(sub, window_length=11)
    assert len(windows) == 15 - 11 + 1
    assert windows[0] == sub[:11] and windows[-1] == sub[4:]
    # The middle frame is in all 5 windows, the first only in one.
    counts = {f: sum(f in w for w in windows) for f in sub}
    assert counts[sub[0]] == 1 and counts[sub[7]] == 5


def test_non_overlapping_windows_end_at_the_end():
    sub = list(range(25))
    windows = sliding_windows(sub, window_length=11, step=11)
    assert windows == [sub[0:11], sub[11:22], sub[14:25]]


def test_short_subsequences_are_one_window():
    assert sliding_windows([3, 13, 23], window_length=11) == [[3, 13, 23]]
    assert sliding_windows([], window_length=11) == []
    assert sliding_windows(list(range(11)), window_length=11) == [list(range(11))]


@pytest.mark.parametrize("num_frames", [1, 5, 10, 11, 37, 110, 111, 250])
@pytest.mark.parametrize("step", [1, 4, 11])
def test_every_frame_is_covered(num_frames, step):
    windows = video_windows(num_frames, window_length=11, stride=10, step=step)
    covering = windows_per_frame(windows, num_frames)
    assert all(len(c) >= 1 for c in covering)
    for w in windows:
        assert 1 <= len(w) <= 11
        assert all(b - a == 10 for a, b in zip(w, w[1:]))  # one sub-sequence, consecutive
    # Each frame's windows are as many as the windows of its sub-sequence that hold it.
    for f in range(num_frames):
        sub = list(range(f % 10, num_frames, 10))
        expected = sum(f in w for w in sliding_windows(sub, 11, step))
        assert len(covering[f]) == expected
        for w, pos in covering[f]:
            assert windows[w][pos] == f


def test_video_shorter_than_the_window():
    assert video_windows(4, window_length=11, stride=1) == [[0, 1, 2, 3]]
    assert video_windows(4, window_length=11, stride=10) == [[0], [1], [2], [3]]


def test_invalid_schedules():
    with pytest.raises(ValueError, match="stride"):
        subsequences(10, 0)
    with pytest.raises(ValueError, match="window_length"):
        sliding_windows([1, 2], window_length=0)
    with pytest.raises(ValueError, match="step"):
        sliding_windows([1, 2], step=0)


def dets(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, float).reshape(-1, 4), "scores": np.asarray(scores, float),
            "labels": np.asarray(labels)}


def test_ensemble_is_the_per_frame_union():
    static = [dets([[0, 0, 10, 10]], [0.5], [1]), dets([], [], [])]
    stmn = [dets([[1, 0, 11, 10], [50, 50, 60, 60]], [0.7, 0.2], [1, 2]), dets([[0, 0, 5, 5]], [0.4], [3])]
    out = ensemble_detections_xyxy(static, stmn)
    assert len(out) == 2
    np.testing.assert_allclose(out[0]["scores"], [0.7, 0.5, 0.2])
    np.testing.assert_array_equal(out[0]["labels"], [1, 1, 2])
    np.testing.assert_array_equal(out[0]["sources"], [1, 0, 1])
    np.testing.assert_allclose(out[0]["boxes"][1], [0, 0, 10, 10])
    np.testing.assert_array_equal(out[1]["sources"], [1])


def test_ensemble_with_nms_is_per_class():
    static = [dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.6], [1, 2])]
    stmn = [dets([[1, 0, 11, 10]], [0.7], [1])]
    out = ensemble_detections_xyxy(static, stmn, nms_threshold=0.5)[0]
    # Class 1: the 0.5 box overlaps the 0.7 one (IoU 0.82) and goes; class 2 stays.
    np.testing.assert_allclose(out["scores"], [0.7, 0.6])
    np.testing.assert_array_equal(out["labels"], [1, 2])
    with pytest.raises(ValueError, match="same frames"):
        ensemble_detections_xyxy(static, stmn + stmn)
    with pytest.raises(ValueError, match="two"):
        ensemble_detections_xyxy(static)
