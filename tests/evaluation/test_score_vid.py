"""Detection / image-set files, score_vid on the ILSVRC layout, and the round trip
evaluate.py --write-detections -> score_vid."""

import json
import os

import numpy as np
import pytest

from stmn_tf.data import synthetic
from stmn_tf.data.config import SyntheticConfig
from stmn_tf.evaluation import detection_files
from stmn_tf.evaluation import score_vid
from stmn_tf.evaluation import vid_eval

DATA = SyntheticConfig(num_test_videos=3, min_frames=6, max_frames=8, num_shards=1)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


# ---------------------------------------------------------------- file formats

def test_image_set_formats(tmp_path):
    names, indices = detection_files.read_image_set(write(
        tmp_path / "val.txt", "a/000000 1\na/000001 2\n\nval/b/000007 5\n"), "val")
    assert names == ["a/000000", "a/000001", "b/000007"] and indices.tolist() == [1, 2, 5]
    # FGFA's video list: snippet, first index, first frame, number of frames.
    names, indices = detection_files.read_image_set(write(
        tmp_path / "videos.txt", "val/a 1 0 3\nval/b 4 10 2\n"), "val")
    assert names == ["a/000000", "a/000001", "a/000002", "b/000010", "b/000011"]
    assert indices.tolist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("text,match", [
    ("a/000000 1\na/000001 x\n", r"bad\.txt:2: expected"),
    ("a/000000 1 2\n", r"bad\.txt:1: expected"),
    ("a 1\n", r"bad\.txt:1: 'a' names no frame"),
    ("a/000000 1\na/000001 1\n", "frame index 1 is given twice"),
    ("a/000000 1\na/000000 2\n", "listed twice"),
    ("\n", "no frames"),
])
def test_image_set_errors(tmp_path, text, match):
    with pytest.raises(detection_files.DetectionFileError, match=match):
        detection_files.read_image_set(write(tmp_path / "bad.txt", text))


def test_detections_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for n in (3, 0, 2):
        xy = rng.uniform(0, 100, (n, 2))
        frames.append({"boxes": np.concatenate([xy, xy + rng.uniform(1, 50, (n, 2))], 1),
                       "scores": rng.uniform(size=n).astype(np.float32), "labels": rng.integers(1, 4, n)})
    path = str(tmp_path / "dets.txt")
    assert detection_files.write_detections(path, frames, [10, 20, 30]) == 5
    first = open(path).readline().split()
    assert first[:2] == ["10", str(frames[0]["labels"][0])] and len(first) == 7
    back, skipped = detection_files.read_detections(path, np.asarray([10, 20, 30]), 3)
    assert skipped == []
    for a, b in zip(frames, back):
        np.testing.assert_array_equal(a["boxes"], b["boxes"])  # every digit kept
        np.testing.assert_array_equal(np.float64(a["scores"]), b["scores"])
        np.testing.assert_array_equal(a["labels"], b["labels"])


@pytest.mark.parametrize("line,match", [
    ("1 1 0.5 0 0 10", "expected 7 fields"),
    ("1 one 0.5 0 0 10 10", "not numbers"),
    ("1 1 nan 0 0 10 10", "score or box not finite"),
    ("9 1 0.5 0 0 10 10", "unknown frame index 9"),
    ("1 4 0.5 0 0 10 10", r"unknown class index 4 \(expected 1..3\)"),
    ("1 0 0.5 0 0 10 10", "unknown class index 0"),
])
def test_detection_errors_name_the_line(tmp_path, line, match):
    path = write(tmp_path / "d.txt", f"1 1 0.9 0 0 10 10\n{line}\n2 2 0.5 5 5 20 20\n")
    with pytest.raises(detection_files.DetectionFileError, match=rf"d\.txt:2: {match}"):
        detection_files.read_detections(path, np.asarray([1, 2]), 3)
    dets, skipped = detection_files.read_detections(path, np.asarray([1, 2]), 3, skip_errors=True)
    assert len(skipped) == 1 and "d.txt:2" in skipped[0]
    assert [len(d["scores"]) for d in dets] == [1, 1]


# ---------------------------------------------------------------- score_vid

@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ilsvrc"))
    names = synthetic.write_ilsvrc_layout(root, DATA, split="test")
    frames = []  # (snippet, frame, objects) in order
    for index, name in enumerate(names):
        _, annotations = synthetic.generate_video(DATA, "test", index)
        frames += [(name, t, objects) for t, objects in enumerate(annotations)]
    image_set = os.path.join(root, "frames.txt")
    detection_files.write_image_set(image_set, [f"{n}/{t:06d}" for n, t, _ in frames])
    return root, frames, image_set


def synthetic_case(frames, seed=0):
    """Ground truth as the xml files have it, and noisy detections of it."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for name, t, objects in frames:
        boxes = np.asarray([o["box"] for o in objects], np.float64).reshape(-1, 4)
        labels = np.asarray([o["label"] for o in objects], np.int64)
        gts.append({"boxes": boxes, "labels": labels, "track_ids": np.asarray([o["track_id"] for o in objects]),
                    "video_id": name, "frame_index": t})
        keep = rng.uniform(size=len(labels)) < 0.8
        noisy = boxes[keep] + rng.normal(0, 2, (keep.sum(), 4))
        extra = rng.uniform(0, 100, (2, 2))
        dets.append({"boxes": np.concatenate([noisy, np.concatenate([extra, extra + 20], 1)]),
                     "scores": np.round(rng.uniform(size=keep.sum() + 2), 2),
                     "labels": np.concatenate([labels[keep], rng.integers(1, DATA.num_classes + 1, 2)])})
    return gts, dets


def test_score_vid_matches_vid_eval(layout, tmp_path, capsys):
    root, frames, image_set = layout
    gts, dets = synthetic_case(frames)
    path = str(tmp_path / "dets.txt")
    detection_files.write_detections(path, dets, np.arange(1, len(dets) + 1))
    output = str(tmp_path / "out" / "result.json")
    classes = os.path.join(root, "synthetic_classes.txt")
    result = score_vid.main(["--root", root, "--split", "test", "--detections", path, "--image-set",
                             image_set, "--classes", classes, "--output", output, "--no-progress"])
    expected = vid_eval.evaluate(gts, dets, DATA.num_classes, coco=False)
    for key in ("mAP", "mAP_slow", "mAP_medium", "mAP_fast"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12, nan_ok=True)
    with open(output) as f:
        written = json.load(f)
    assert {"mAP", "AP", "mAP_slow", "mAP_medium", "mAP_fast"} <= set(written)
    assert written["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    printed = capsys.readouterr().out
    assert "mAP" in printed and "slow" in printed

    # A bad line: an error that names it, or skipped and counted.
    with open(path, "a") as f:
        f.write(f"{len(dets) + 5} 1 0.5 0 0 10 10\n")
    with pytest.raises(SystemExit, match=rf"dets\.txt:{sum(len(d['scores']) for d in dets) + 1}: unknown frame"):
        score_vid.main(["--root", root, "--split", "test", "--detections", path, "--image-set", image_set,
                        "--classes", classes, "--no-progress"])
    again = score_vid.main(["--root", root, "--split", "test", "--detections", path, "--image-set", image_set,
                            "--classes", classes, "--no-progress", "--skip-errors"])
    assert "skipped 1 bad detection lines" in capsys.readouterr().out
    assert again["mAP"] == result["mAP"]


def test_score_vid_missing_annotation_names_the_file(layout, tmp_path):
    root, frames, _ = layout
    image_set = write(tmp_path / "frames.txt", f"{frames[0][0]}/000999 1\n")
    dets = write(tmp_path / "d.txt", "")
    with pytest.raises(SystemExit, match=r"000999\.xml: missing annotation"):
        score_vid.main(["--root", root, "--split", "test", "--detections", dets, "--image-set", image_set,
                        "--classes", os.path.join(root, "synthetic_classes.txt"), "--no-progress"])


def test_default_image_set_of_snippets_is_refused(layout, tmp_path):
    # write_ilsvrc_layout's ImageSets/VID/test.txt lists snippets, not frames.
    root, _, _ = layout
    dets = write(tmp_path / "d.txt", "")
    with pytest.raises(SystemExit, match="names no frame"):
        score_vid.main(["--root", root, "--split", "test", "--detections", dets, "--no-progress",
                        "--classes", os.path.join(root, "synthetic_classes.txt")])


def test_write_evaluation_detections(layout, tmp_path):
    root, frames, image_set = layout
    gts, dets = synthetic_case(frames)
    methods = {"stmn": dets, "stmn+seq_nms": dets[::-1]}
    written, listed = detection_files.write_evaluation_detections(str(tmp_path / "d_{method}.txt"), gts, methods)
    assert written == [str(tmp_path / "d_stmn.txt"), str(tmp_path / "d_stmn+seq_nms.txt")]
    assert listed == str(tmp_path / "d_all_image_set.txt")
    assert detection_files.read_image_set(listed)[0] == detection_files.frame_names(gts)
    # Without {method}: the last method only; with an image set: its indices, FGFA's
    # `val/` names too.
    fgfa = write(tmp_path / "fgfa.txt", "".join(f"val/{n}/{t:06d} {100 + i}\n"
                                                for i, (n, t, _) in enumerate(frames)))
    written, listed = detection_files.write_evaluation_detections(str(tmp_path / "d.txt"), gts, methods, fgfa)
    assert written == [str(tmp_path / "d.txt")] and listed == fgfa
    with open(written[0]) as f:
        lines = [line.split() for line in f]
    # The last method's frame 0 holds dets[-1] (two false positives at least).
    assert lines[0][0] == "100" and len(lines) == sum(len(d["scores"]) for d in dets)
    assert float(lines[0][2]) == dets[-1]["scores"][0]
    with pytest.raises(ValueError, match="does not list 1 of the evaluated frames"):
        detection_files.write_evaluation_detections(
            str(tmp_path / "e.txt"), gts, methods, write(tmp_path / "short.txt", "".join(
                f"{n}/{t:06d} {i + 1}\n" for i, (n, t, _) in enumerate(frames[:-1]))))


# ---------------------------------------------------------------- evaluate.py round trip

@pytest.mark.slow
def test_evaluate_write_detections_then_score_vid(layout, tmp_path):
    import tensorflow as tf

    import evaluate
    from stmn_tf.configs import load_config
    from stmn_tf.data import convert_vid
    from stmn_tf.models.builders import build_model

    root, _, _ = layout
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    config = os.path.join(repo, "configs", "synthetic_tiny_stmn.yaml")
    classes = os.path.join(root, "synthetic_classes.txt")
    assert convert_vid.main(["--root", root, "--split", "test", "--output", str(tmp_path / "test"),
                             "--num-shards", "1", "--classes", classes, "--quiet"]) == 0
    model = build_model(load_config(config).model)
    checkpoint = tf.train.Checkpoint(model=model).save(str(tmp_path / "stmn" / "ckpt"))
    dets = str(tmp_path / "dets_{method}.txt")
    output = str(tmp_path / "eval.json")
    evaluate.main(["--config", config, "--checkpoint", checkpoint, "--data", str(tmp_path / "test-*"),
                   "--window", "3", "--output", output, "--write-detections", dets, "--no-progress"])
    with open(output) as f:
        methods = json.load(f)["methods"]
    image_set = str(tmp_path / "dets_all_image_set.txt")
    for method, expected in methods.items():
        scored = score_vid.main(["--root", root, "--split", "test", "--detections",
                                 dets.replace("{method}", method), "--image-set", image_set,
                                 "--classes", classes, "--no-progress"])
        assert expected["num_detections"] == scored["num_detections"] > 0
        for key in ("mAP", "mAP_slow", "mAP_medium", "mAP_fast"):
            value = scored[key]
            assert (expected[key] is None) == np.isnan(value)
            if expected[key] is not None:
                assert value == pytest.approx(expected[key], abs=1e-12)
        for c, ap in expected["AP"].items():
            assert (ap is None) == np.isnan(scored["AP"][int(c)])
            if ap is not None:
                assert scored["AP"][int(c)] == pytest.approx(ap, abs=1e-12)
