"""detect.py on a real 1080p clip, a folder of frames and broken inputs."""

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import detect
from stmn_tf.configs import load_config
from stmn_tf.models.builders import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP = os.path.join(REPO, "..", "shared", "data", "street_1080p_8frames.mp4")
CONFIG = os.path.join(REPO, "configs", "synthetic_tiny_stmn.yaml")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny untrained STMN, saved as train.py saves them."""
    model = build_model(load_config(CONFIG).model)
    directory = tmp_path_factory.mktemp("stmn")
    tf.train.Checkpoint(model=model).save(str(directory / "ckpt"))
    return str(directory)


def run(checkpoint, source, out, *extra):
    return detect.main(["--config", CONFIG, "--checkpoint", checkpoint, "--input", str(source),
                        "--output-dir", str(out), "--no-progress", *extra])


def read_video(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    return frames


@pytest.mark.slow
def test_real_1080p_clip(checkpoint, tmp_path):
    result = run(checkpoint, CLIP, tmp_path, "--saliency", "--draw-score", "0.0")
    with open(tmp_path / "detections.json") as f:
        written = json.load(f)
    assert [f["frame_index"] for f in written["frames"]] == list(range(8))
    assert written["frame_size"] == [1080, 1920] and written["skipped_frames"] == []
    assert written["class_names"] == ["hstripes", "vstripes", "checker", "dots", "diagonal"]
    detections = [d for f in written["frames"] for d in f["detections"]]
    assert detections  # an untrained model still scores every RoI above 0.01
    for d in detections:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 <= 1920 and 0 <= y0 < y1 <= 1080
        assert d["class"] == written["class_names"][d["label"] - 1]
        assert isinstance(d["track_id"], int)  # seq_nms linking (the config's)
    frames = read_video(tmp_path / "annotated.mp4")
    assert len(frames) == 8 and frames[0].shape == (1080, 1920, 3)
    original = read_video(CLIP)
    assert np.abs(frames[0].astype(int) - original[0].astype(int)).mean() > 0.5  # boxes drawn
    strip = cv2.imread(str(tmp_path / "saliency.png"))
    # Frames 0, 2, 4, 6 (stride 2) resized to 72x128, each above its saliency map.
    assert strip.shape == (144, 4 * 128, 3)
    assert result["num_frames"] == 8


def write_folder(directory, count, corrupt=()):
    directory.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        path = directory / f"{i:06d}.jpg"
        if i in corrupt:
            path.write_bytes(b"this is not a JPEG" * 20)
        else:
            cv2.imwrite(str(path), rng.integers(0, 255, (96, 160, 3), dtype=np.uint8))
    return directory


@pytest.mark.slow
def test_folder_with_a_corrupt_frame_skips_and_counts_it(checkpoint, tmp_path, capsys):
    folder = write_folder(tmp_path / "frames", 5, corrupt=(2,))
    run(checkpoint, folder, tmp_path / "out", "--linking", "none")
    assert "1 corrupt frames skipped (2)" in capsys.readouterr().out
    with open(tmp_path / "out" / "detections.json") as f:
        written = json.load(f)
    assert written["skipped_frames"] == [2]
    assert [f["frame_index"] for f in written["frames"]] == [0, 1, 3, 4]
    assert all("track_id" not in d for f in written["frames"] for d in f["detections"])
    assert len(read_video(tmp_path / "out" / "annotated.mp4")) == 4


def test_missing_file_is_an_error(checkpoint, tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        run(checkpoint, tmp_path / "nope.mp4", tmp_path / "out")


def test_unreadable_file_is_an_error(checkpoint, tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"not a video" * 100)
    with pytest.raises(SystemExit, match="cannot open it as a video"):
        run(checkpoint, path, tmp_path / "out")


def test_zero_frame_video_is_an_error(checkpoint, tmp_path):
    path = tmp_path / "empty.avi"
    cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()
    with pytest.raises(SystemExit, match="no readable frames"):
        run(checkpoint, path, tmp_path / "out")
    folder = write_folder(tmp_path / "broken", 2, corrupt=(0, 1))
    with pytest.raises(SystemExit, match="no readable frames"):
        run(checkpoint, folder, tmp_path / "out")


def test_corrupt_frame_of_a_video_file_is_skipped_and_counted(tmp_path):
    from stmn_tf.inference.frames import VideoFileSource

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(1)
    for i in range(5):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    data[starts[2]:starts[3] - 8] = bytes(starts[3] - 8 - starts[2])  # wipe frame 2
    path.write_bytes(bytes(data))
    source = VideoFileSource(str(path))
    assert [f.index for f in source] == [0, 1, 3, 4]
    assert source.skipped == [2]
