import json
import os

import numpy as np
import tensorflow as tf

from stmn_tf.data import schema
from stmn_tf.data import synthetic
from tests.data import helpers


def test_schema_round_trip_keeps_every_field():
    frames = [schema.Frame(b"jpeg-bytes-0", 5, "v/000005", np.array([[1.0, 2.0, 30.0, 40.0],
                                                                   [0.0, 0.0, 100.0, 200.0]]),
                           [3, 30], ["bus", "zebra"], [7, 8]),
              schema.Frame(b"jpeg-bytes-1", 6, "v/000006", np.zeros((0, 4)), [], [], [])]
    video = schema.Video("snip/v", 100, 200, frames, dataset_name="ILSVRC2015_VID")
    serialized = schema.serialize_video(video)
    parsed = schema.parse_video(tf.constant(serialized))
    assert parsed["media_id"].numpy() == b"snip/v"
    assert parsed["num_frames"].numpy() == 2
    assert parsed["timestamp"].numpy().tolist() == [5, 6]
    assert parsed["encoded"].numpy().tolist() == [b"jpeg-bytes-0", b"jpeg-bytes-1"]
    boxes = parsed["boxes"].to_list()
    np.testing.assert_allclose(np.array(boxes[0]) * [100, 200, 100, 200], frames[0].boxes_yxyx,
                               atol=1e-4)
    assert boxes[1] == []
    assert parsed["labels"].to_list() == [[3, 30], []]
    assert parsed["track_ids"].to_list() == [[7, 8], []]
    back = schema.video_from_serialized(serialized)
    assert back.frames[0].label_names == ["bus", "zebra"]
    np.testing.assert_array_equal(np.round(back.frames[0].boxes_yxyx), frames[0].boxes_yxyx)


def test_synthetic_is_deterministic_and_splits_differ():
    config = helpers.tiny_config()
    a, annotations_a = synthetic.generate_video(config, "train", 1)
    b, annotations_b = synthetic.generate_video(config, "train", 1)
    c, _ = synthetic.generate_video(config, "val", 1)
    np.testing.assert_array_equal(a, b)
    assert annotations_a == annotations_b
    assert a.shape[1:] == (64, 80, 3) and 6 <= a.shape[0] <= 9
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_synthetic_tracks_are_ambiguous_in_some_frames_and_trackable():
    config = helpers.tiny_config(min_frames=40, max_frames=40, height=128, width=128,
                                 min_object_size=28, max_object_size=48, max_speed=4.0)
    cue_fractions, steps = [], []
    for index in range(6):
        _, annotations = synthetic.generate_video(config, "train", index)
        tracks = {}
        for objects in annotations:
            for o in objects:
                tracks.setdefault(o["track_id"], []).append(o)
                xmin, ymin, xmax, ymax = o["box"]
                assert 0 <= xmin < xmax <= 128 and 0 <= ymin < ymax <= 128
        for track in tracks.values():
            assert len({o["label"] for o in track}) == 1
            cue_fractions.append(np.mean([o["cue_visible"] for o in track]))
            centres = np.array([[(o["box"][0] + o["box"][2]) / 2, (o["box"][1] + o["box"][3]) / 2]
                                for o in track])
            steps.extend(np.abs(np.diff(centres, axis=0)).max(axis=1))
    # The class shows in some frames of (nearly) every track, never in all of them.
    assert 0.1 < np.mean(cue_fractions) < 0.6
    assert max(cue_fractions) < 1.0
    # Sampled 1 in 2, a centre moves well within two 16-pixel cells.
    assert 2 * max(steps) <= 16


def test_det_split_is_still_frontal_and_clear():
    config = helpers.tiny_config(height=128, width=128, min_object_size=28, max_object_size=48,
                                 occlusion_probability=1.0, blur_probability=1.0)
    objects = 0
    for index in range(8):
        frames, annotations = synthetic.generate_video(config, "det", index)
        assert frames.shape == (1, 128, 128, 3)
        for o in annotations[0]:
            objects += 1
            assert o["cue_visible"] and not o["occluded"] and not o["blurred"]
    assert objects > 0
    # Its own seeds: not the first frames of the training videos.
    train, _ = synthetic.generate_video(config, "train", 0)
    assert not np.array_equal(synthetic.generate_video(config, "det", 0)[0][0], train[0])


def test_ensure_synthetic_dataset_generates_once_and_redoes_on_change(tmp_path):
    config = helpers.tiny_config(num_train_videos=2, num_val_videos=1, num_test_videos=1)
    patterns = synthetic.ensure_synthetic_dataset(str(tmp_path), config, splits=("train", "val"))
    files = sorted(tf.io.gfile.glob(patterns["train"]))
    assert len(files) == 2
    stamp = json.load(open(tmp_path / "train.json"))
    assert stamp["classes"] == ["hstripes", "vstripes", "checker", "dots"]
    mtime = os.path.getmtime(files[0])
    synthetic.ensure_synthetic_dataset(str(tmp_path), config, splits=("train",))
    assert os.path.getmtime(files[0]) == mtime
    changed = helpers.tiny_config(num_train_videos=2, num_val_videos=1, num_test_videos=1, seed=5)
    synthetic.ensure_synthetic_dataset(str(tmp_path), changed, splits=("train",))
    assert json.load(open(tmp_path / "train.json"))["config"]["seed"] == 5
    records = [r for f in files for r in tf.data.TFRecordDataset(f).as_numpy_iterator()]
    assert len(records) == 2
