"""The streamed window runner and the online mode (stmn_tf/inference/video.py)."""

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.inference.video import OnlineVideoDetector
from stmn_tf.inference.video import WindowedVideoDetector
from stmn_tf.inference.video import prepared_frame
from tests.inference.window_schedule import video_windows
from tests.inference.window_schedule import windows_per_frame
from stmn_tf.models.stmn import STMN
from stmn_tf.ops.box_ops import canvas_yxyx_to_frame_xyxy
from tests.models.synthetic import tiny_rfcn
from tests.models.synthetic import tiny_stmn

SIZE = 100  # padded = resized = original: pixel = 100 * normalised


class FakeDetector:
    """Encodes a frame as its id; each window position yields one detection whose
    score encodes (window's first frame, frame) and whose box encodes the frame."""

    def __init__(self):
        self.calls = []  # the frame ids each model call saw, [B, T]

    def encode(self, images):
        return images[:, 0, 0, 0].copy()  # the id written into pixel (0, 0)

    def detect(self, windows, padded_size):
        ids = np.asarray(windows, np.int64)  # [B, T]
        self.calls.append(ids.tolist())
        b, t = ids.shape
        boxes = np.zeros((b, t, 1, 4), np.float32)
        boxes[..., 0, 2] = boxes[..., 0, 3] = (ids + 1) / 1000.0
        scores = (ids[:, :1] * 1000 + ids + 1)[..., None] / 1e6  # first frame, frame
        return {"detection_boxes": boxes, "detection_scores": scores,
                "detection_classes": np.ones((b, t, 1), np.int32),
                "num_detections": np.ones((b, t), np.int32)}


def fake_frames(n):
    frames = []
    for i in range(n):
        image = np.zeros((2, 2, 3), np.float32)
        image[0, 0, 0] = i
        frames.append(prepared_frame(image, (2, 2), (2, 2), 100 + i))
    return frames


@pytest.mark.parametrize("num_frames,window,stride,step,batch", [
    (23, 3, 2, 1, 1), (23, 4, 3, 2, 3), (5, 11, 10, 1, 2), (40, 11, 10, 1, 4), (1, 3, 2, 1, 1),
    (17, 5, 1, 3, 2)])
def test_every_frame_collects_every_covering_window(num_frames, window, stride, step, batch):
    fake = FakeDetector()
    runner = WindowedVideoDetector(fake, window, stride, step, batch_windows=batch, merge_iou=None)
    out = list(runner.run(fake_frames(num_frames)))

    expected = video_windows(num_frames, window, stride, step)
    assert sorted(runner.windows_run) == sorted(expected)
    seen = sorted(w for call in fake.calls for w in call)  # what the model was given
    assert seen == sorted(expected)
    assert all(len(call) <= batch for call in fake.calls)
    assert [o["position"] for o in out] == list(range(num_frames))
    assert [o["frame_index"] for o in out] == [100 + i for i in range(num_frames)]
    covering = windows_per_frame(expected, num_frames)
    for frame, o in enumerate(out):
        starts = sorted(expected[w][0] for w, _ in covering[frame])
        got = np.round(o["scores"] * 1e6).astype(np.int64)
        assert sorted((got // 1000).tolist()) == starts
        assert set((got % 1000 - 1).tolist()) == {frame}
        assert o["num_windows"] == len(starts)
        np.testing.assert_allclose(o["boxes"][:, 2], 2 * (frame + 1) / 1000.0)


@pytest.mark.parametrize("num_frames,window,stride,step", [
    (23, 3, 2, 1), (23, 4, 3, 2), (5, 11, 10, 1), (40, 7, 2, 1), (17, 5, 1, 3)])
def test_center_merge_keeps_the_window_where_the_frame_is_most_central(num_frames, window,
                                                                        stride, step):
    fake = FakeDetector()
    runner = WindowedVideoDetector(fake, window, stride, step, merge_iou=None, merge="center")
    out = list(runner.run(fake_frames(num_frames)))
    expected = video_windows(num_frames, window, stride, step)
    covering = windows_per_frame(expected, num_frames)
    for frame, o in enumerate(out):
        # Reference: the covering window with the smallest |t - (T - 1) / 2|, the
        # earliest-starting one among ties.
        candidates = sorted((abs(expected[w].index(frame) - (len(expected[w]) - 1) / 2),
                             expected[w][0]) for w, _ in covering[frame])
        got = np.round(o["scores"] * 1e6).astype(np.int64)
        assert got.tolist() == [candidates[0][1] * 1000 + frame + 1]
        assert o["num_windows"] == len(candidates)


def test_unknown_merge_is_an_error():
    with pytest.raises(ValueError, match="merge must be one of"):
        WindowedVideoDetector(FakeDetector(), 3, 2, merge="mean")


def test_buffer_is_bounded_and_frames_come_back_while_streaming():
    fake = FakeDetector()
    window, stride = 4, 3
    runner = WindowedVideoDetector(fake, window, stride, batch_windows=1, merge_iou=None)
    frames = fake_frames(200)
    returned_during_stream = 0
    for i, frame in enumerate(frames):
        for o in runner.push(frame):
            returned_during_stream += 1
            assert o["position"] >= i - window * stride  # nothing held longer than needed
        assert len(runner._encoded) <= window * stride
        assert len(runner._collected) <= window * stride + 1
    assert runner.max_buffered <= window * stride
    assert returned_during_stream >= 200 - window * stride - 1
    assert len(runner.finish()) == 200 - returned_during_stream


def test_runner_resets_between_videos():
    fake = FakeDetector()
    runner = WindowedVideoDetector(fake, 3, 2, merge_iou=None)
    first = list(runner.run(fake_frames(7)))
    second = list(runner.run(fake_frames(7)))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["scores"], b["scores"])


def test_frame_size_change_inside_a_video_is_an_error():
    runner = WindowedVideoDetector(FakeDetector(), 3, 2)
    runner.push(prepared_frame(np.zeros((2, 2, 3), np.float32), (2, 2), (2, 2), 0))
    with pytest.raises(ValueError, match="input size"):
        runner.push(prepared_frame(np.zeros((4, 2, 3), np.float32), (4, 2), (4, 2), 1))


def test_box_conversion_to_original_pixels():
    # 1080x1920 resized to 72x128 at the top left of a 128x128 canvas.
    boxes = np.array([[0.25, 0.5, 0.5, 1.0], [0.5, 0.0, 0.75, 0.5]])
    xyxy = canvas_yxyx_to_frame_xyxy(boxes, (128, 128), (72, 128), (1080, 1920))
    np.testing.assert_allclose(xyxy, [[960, 480, 1920, 960], [0, 960, 960, 1080]])  # clipped


# ------------------------------------------------------------------ with real models


def clip_frames(images):
    return [prepared_frame(im, im.shape[:2], im.shape[:2], i) for i, im in enumerate(images)]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).uniform(0, 255, (7, 64, 64, 3)).astype("float32")


@pytest.fixture(scope="module")
def forward_stmn():
    return tiny_stmn(3, memory={"direction": "forward"})


@pytest.fixture(scope="module")
def bidirectional_stmn():
    return tiny_stmn(3)


def reference(outputs, t):
    n = int(outputs["num_detections"][0, t])
    boxes = outputs["detection_boxes"][0, t, :n].numpy()
    scores = outputs["detection_scores"][0, t, :n].numpy()
    order = np.lexsort((np.arange(n), -scores))
    return canvas_yxyx_to_frame_xyxy(boxes, (64, 64), (64, 64), (64, 64))[order], scores[order]


def canonical(boxes):
    """Rows in a fixed order (near-equal scores can swap between two runs)."""
    rounded = np.round(boxes, 1)
    return boxes[np.lexsort(rounded.T[::-1])]


def test_windows_equal_model_detect_on_each_window(bidirectional_stmn, images):
    # One video of 7 frames, T = 3, stride 2: windows [0,2,4] [2,4,6] [1,3,5]. Frame 1
    # is only in [1,3,5]: its detections are model.detect on those frames, position 0.
    # One window per call: BN* takes its statistics over the whole input tensor, so
    # windows batched together are normalised together (see video.py).
    runner = WindowedVideoDetector(bidirectional_stmn, 3, 2, batch_windows=1, merge_iou=None)
    out = list(runner.run(clip_frames(images)))
    assert runner.model_calls == 3
    expected = bidirectional_stmn.detect({"images": images[None, [1, 3, 5]]})
    for position, frame in ((0, 1), (1, 3), (2, 5)):
        boxes, scores = reference(expected, position)
        np.testing.assert_allclose(out[frame]["scores"], scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(canonical(out[frame]["boxes"]), canonical(boxes), atol=1e-3)
    # Frame 4 is in two windows: the union of both.
    first = bidirectional_stmn.detect({"images": images[None, [0, 2, 4]]})
    second = bidirectional_stmn.detect({"images": images[None, [2, 4, 6]]})
    union = np.sort(np.concatenate([reference(first, 2)[1], reference(second, 1)[1]]))[::-1]
    np.testing.assert_allclose(out[4]["scores"], union, rtol=1e-5, atol=1e-6)


def test_online_equals_forward_only_model_over_the_clip(forward_stmn, images):
    out = list(OnlineVideoDetector(forward_stmn, stride=1).run(clip_frames(images)))
    expected = forward_stmn.detect({"images": images[None]})
    for t in range(len(images)):
        boxes, scores = reference(expected, t)
        assert len(out[t]["scores"]) == len(scores)
        np.testing.assert_allclose(out[t]["scores"], scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(canonical(out[t]["boxes"]), canonical(boxes), atol=1e-2)


def test_online_strided_memories_follow_their_sub_sequences(forward_stmn, images):
    out = list(OnlineVideoDetector(forward_stmn, stride=2).run(clip_frames(images)))
    expected = forward_stmn.detect({"images": images[None, 1::2]})  # frames 1, 3, 5
    for position, frame in enumerate((1, 3, 5)):
        np.testing.assert_allclose(out[frame]["scores"], reference(expected, position)[1],
                                   rtol=1e-4, atol=1e-6)


def test_online_bidirectional_is_the_last_frame_of_a_growing_clip(bidirectional_stmn, images):
    out = list(OnlineVideoDetector(bidirectional_stmn).run(clip_frames(images[:4])))
    for t in (0, 3):
        expected = bidirectional_stmn.detect({"images": images[None, :t + 1]})
        np.testing.assert_allclose(out[t]["scores"], reference(expected, t)[1], rtol=1e-4, atol=1e-6)


def test_static_rfcn_runs_per_frame(images):
    from stmn_tf.models.rfcn import RFCN

    model = tiny_rfcn(3)
    runner = WindowedVideoDetector(model, 11, 10, batch_windows=3)
    out = list(runner.run(clip_frames(images[:4])))
    assert sorted(runner.windows_run) == [[0], [1], [2], [3]]
    assert runner.model_calls == 2
    expected = model.detect({"images": images[None, :4]})
    np.testing.assert_allclose(out[2]["scores"], reference(expected, 2)[1], rtol=1e-5, atol=1e-6)
