import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.data import convert_custom
from stmn_tf.data import convert_det
from stmn_tf.data import convert_lib
from stmn_tf.data import convert_vid
from stmn_tf.data import schema
from stmn_tf.data import synthetic
from tests import killing
from tests.data import helpers

AIRPLANE, ZEBRA = "n02691156", "n02391049"


def _records(prefix):
    files = sorted(tf.io.gfile.glob(prefix + "-*"))
    return files, [r for f in files for r in tf.data.TFRecordDataset(f).as_numpy_iterator()]


def test_converting_the_raw_layout_gives_the_directly_written_records(tmp_path):
    config = helpers.tiny_config()
    root = str(tmp_path / "ILSVRC2015")
    synthetic.write_ilsvrc_layout(root, config, "train")
    code = convert_vid.main(["--root", root, "--split", "train", "--output", str(tmp_path / "conv"),
                             "--num-shards", "2", "--classes", f"{root}/synthetic_classes.txt",
                             "--workers", "2", "--quiet"])
    assert code == 0
    synthetic.write_tfrecords(str(tmp_path / "direct"), config, "train", num_shards=2)
    files, converted = _records(str(tmp_path / "conv"))
    _, direct = _records(str(tmp_path / "direct"))
    assert [os.path.basename(f) for f in files] == ["conv-00000-of-00002", "conv-00001-of-00002"]
    assert len(converted) == 3
    # Same JPEG bytes (copied, not re-encoded), boxes, labels, track ids, frames.
    for a, b in zip(converted, direct):
        va, vb = schema.video_from_serialized(a), schema.video_from_serialized(b)
        assert va.media_id == vb.media_id
        assert [f.encoded for f in va.frames] == [f.encoded for f in vb.frames]
        for fa, fb in zip(va.frames, vb.frames):
            assert fa.labels == fb.labels and fa.track_ids == fb.track_ids
            np.testing.assert_array_equal(fa.boxes_yxyx, fb.boxes_yxyx)
    video = schema.video_from_serialized(converted[0])
    frames, annotations = synthetic.generate_video(config, "train", 0)
    assert video.media_id == synthetic.media_id("train", 0)
    assert len(video.frames) == len(frames)
    for frame, objects in zip(video.frames, annotations):
        expected = [(o["box"][1], o["box"][0], o["box"][3], o["box"][2]) for o in objects]
        np.testing.assert_array_equal(np.round(frame.boxes_yxyx), np.array(expected).reshape(-1, 4))
        assert frame.track_ids == [o["track_id"] for o in objects]


def test_frames_without_objects_are_kept_and_image_sets_select_snippets(tmp_path):
    root = str(tmp_path)
    helpers.write_vid_snippet(root, "val", "snip_a", [[(AIRPLANE, 1, 2, 10, 12, 0)], [], []])
    helpers.write_vid_snippet(root, "val", "snip_b", [[(ZEBRA, 0, 0, 48, 32, 3)]])
    os.makedirs(f"{root}/ImageSets/VID")
    with open(f"{root}/ImageSets/VID/val.txt", "w") as f:
        f.write("snip_a/000000 1\nsnip_a/000001 2\n")  # val.txt names frames
    stats = convert_vid.convert_vid(root, "val", str(tmp_path / "out"), num_shards=1, quiet=True)
    _, records = _records(str(tmp_path / "out"))
    assert stats["videos"] == 1 and stats["frames"] == 3
    video = schema.video_from_serialized(records[0])
    assert video.media_id == "snip_a"
    assert [len(f.labels) for f in video.frames] == [1, 0, 0]
    assert video.frames[0].labels == [1] and video.frames[0].label_names == ["airplane"]
    os.remove(f"{root}/ImageSets/VID/val.txt")  # without lists: every snippet
    stats = convert_vid.convert_vid(root, "val", str(tmp_path / "all"), num_shards=1, quiet=True)
    _, records = _records(str(tmp_path / "all"))
    zebra = schema.video_from_serialized(records[1])
    assert zebra.frames[0].labels == [30]
    # xmax == width is inside the image (continuous coordinates).
    np.testing.assert_allclose(zebra.frames[0].boxes_yxyx, [[0, 0, 32, 48]], atol=1e-4)


def _break(root, case):
    """Damages frame 1 of snippet `bad` the way `case` says; returns the file to name."""
    xml = f"{root}/Annotations/VID/train/bad/000001.xml"
    jpeg = f"{root}/Data/VID/train/bad/000001.JPEG"
    if case == "malformed XML":
        open(xml, "w").write("<annotation><size><width>48</width>")
        return xml
    if case == "missing JPEG":
        os.remove(jpeg)
        return jpeg
    if case == "outside the":
        open(xml, "w").write(helpers.voc_xml(48, 32, [(AIRPLANE, 5, 5, 49, 20, 0)]))
        return xml
    if case == "unknown synset":
        open(xml, "w").write(helpers.voc_xml(48, 32, [("n99999999", 5, 5, 20, 20, 0)]))
        return xml
    if case == "unreadable image":
        data = open(jpeg, "rb").read()
        open(jpeg, "wb").write(data[: len(data) // 2])
        return jpeg
    raise ValueError(case)


CASES = ["malformed XML", "missing JPEG", "outside the", "unknown synset", "unreadable image"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_stops_naming_the_file_or_is_skipped_and_counted(tmp_path, capsys, case):
    root = str(tmp_path / "root")
    three = [[(AIRPLANE, 1, 2, 10, 12, 0)]] * 3
    helpers.write_vid_snippet(root, "train", "bad", three)
    helpers.write_vid_snippet(root, "train", "good", three)
    path = _break(root, case)
    with pytest.raises(convert_lib.ConversionError, match=f"^{path}: .*{case}"):
        convert_vid.convert_vid(root, "train", str(tmp_path / "strict"), num_shards=1, quiet=True)
    assert os.listdir(tmp_path) == ["root"]  # nothing written, no temporary left
    # The command line says the same and fails.
    assert convert_vid.main(["--root", root, "--split", "train", "--output",
                             str(tmp_path / "cli"), "--quiet"]) == 1
    assert f"{path}: " in capsys.readouterr().err
    assert convert_vid.main(["--root", root, "--split", "train", "--output", str(tmp_path / "skip"),
                             "--num-shards", "1", "--skip-errors", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 frames and 0 videos" in out and case in out and path in out
    _, records = _records(str(tmp_path / "skip"))
    assert [len(schema.video_from_serialized(r).frames) for r in records] == [2, 3]


def test_interrupted_conversion_leaves_no_shard(tmp_path, monkeypatch):
    root = str(tmp_path / "root")
    for name in ("a", "b", "c"):
        helpers.write_vid_snippet(root, "train", name, [[(AIRPLANE, 1, 2, 10, 12, 0)]])
    calls = []
    real = schema.serialize_video

    def interrupt_on_third(video):
        calls.append(video.media_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(video)

    monkeypatch.setattr(schema, "serialize_video", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        convert_vid.convert_vid(root, "train", str(tmp_path / "out" / "vid"), num_shards=2, quiet=True)
    assert calls == ["a", "b", "c"]
    assert os.listdir(tmp_path / "out") == []


def test_det_keeps_vid_classes_only(tmp_path):
    root = str(tmp_path)
    images = {"ILSVRC2013_train/n1/img_a": [(AIRPLANE, 1, 1, 20, 20, 0), ("n01440764", 2, 2, 9, 9, 0),
                                             (ZEBRA, 5, 5, 40, 30, 0)],
              "ILSVRC2013_train/n1/img_b": [("n01440764", 2, 2, 9, 9, 0)]}
    for name, objects in images.items():
        helpers.write_jpeg(f"{root}/Data/DET/train/{name}.JPEG", 32, 48)
        os.makedirs(os.path.dirname(f"{root}/Annotations/DET/train/{name}"), exist_ok=True)
        open(f"{root}/Annotations/DET/train/{name}.xml", "w").write(
            helpers.voc_xml(48, 32, objects, with_track_ids=False))
    stats = convert_det.convert_det(root, "train", str(tmp_path / "det"), num_shards=1, quiet=True)
    assert stats["videos"] == 1 and stats["reasons"] == {"no VID object": 1}
    _, records = _records(str(tmp_path / "det"))
    video = schema.video_from_serialized(records[0])
    assert len(video.frames) == 1 and video.frames[0].labels == [1, 30]
    assert video.frames[0].track_ids == [0, 2]
    open(f"{root}/Annotations/DET/train/ILSVRC2013_train/n1/img_b.xml", "w").write(
        helpers.voc_xml(48, 32, [("cat", 2, 2, 9, 9, 0)], with_track_ids=False))
    with pytest.raises(convert_lib.ConversionError, match="img_b.xml: unknown synset 'cat'"):
        convert_det.convert_det(root, "train", str(tmp_path / "det2"), num_shards=1, quiet=True)


def test_custom_json_and_coco_vid(tmp_path):
    root = tmp_path
    image = np.zeros((30, 40, 3), np.uint8)
    os.makedirs(root / "clip")
    cv2.imwrite(str(root / "clip" / "0.png"), image)
    cv2.imwrite(str(root / "clip" / "1.png"), image)
    spec = {"classes": ["car", "person"],
            "videos": [{"name": "clip", "frames": [
                {"file": "clip/0.png", "objects": [{"box": [4, 3, 20, 25], "class": "person",
                                                    "track_id": 9}]},
                {"file": "clip/1.png", "objects": []}]}]}
    json.dump(spec, open(root / "ann.json", "w"))
    stats = convert_custom.convert_custom(str(root), str(root / "ann.json"), str(root / "own"),
                                          num_shards=1, quiet=True)
    assert stats["classes"] == ["car", "person"]
    _, records = _records(str(root / "own"))
    video = schema.video_from_serialized(records[0])
    assert video.image_format == "png" and (video.height, video.width) == (30, 40)
    assert video.frames[0].labels == [2] and video.frames[0].track_ids == [9]
    np.testing.assert_allclose(video.frames[0].boxes_yxyx, [[3, 4, 25, 20]], atol=1e-4)
    assert video.frames[0].encoded == open(root / "clip" / "0.png", "rb").read()
    coco = {"categories": [{"id": 3, "name": "person"}, {"id": 1, "name": "car"}],
            "videos": [{"id": 1, "name": "clip"}],
            "images": [{"id": 10, "file_name": "clip/1.png", "frame_id": 1, "video_id": 1},
                       {"id": 11, "file_name": "clip/0.png", "frame_id": 0, "video_id": 1}],
            "annotations": [{"id": 1, "image_id": 11, "category_id": 3, "bbox": [4, 3, 16, 22],
                             "instance_id": 9}]}
    json.dump(coco, open(root / "coco.json", "w"))
    convert_custom.convert_custom(str(root), str(root / "coco.json"), str(root / "coco"),
                                  num_shards=1, quiet=True)
    _, records = _records(str(root / "coco"))
    coco_video = schema.video_from_serialized(records[0])
    assert [f.timestamp for f in coco_video.frames] == [0, 1]
    assert coco_video.frames[0].labels == [2] and coco_video.frames[0].label_names == ["person"]
    np.testing.assert_allclose(coco_video.frames[0].boxes_yxyx, [[3, 4, 25, 20]], atol=1e-4)
    spec["videos"][0]["frames"][0]["objects"][0]["class"] = "bus"
    json.dump(spec, open(root / "ann.json", "w"))
    with pytest.raises(convert_lib.ConversionError, match=r"ann.json \(.*0.png\): unknown class 'bus'"):
        convert_custom.convert_custom(str(root), str(root / "ann.json"), str(root / "bad"), quiet=True)


# Runs convert_vid in a fresh process that stops for good after writing its second
# video (writers flushed, shards not yet renamed) and says so in a file: the test's
# SIGKILL lands at that point, every time.
_PAUSING_CONVERSION = """
import sys, time
from stmn_tf.data import convert_lib, convert_vid, schema
signal_path = sys.argv[1]
real = schema.serialize_video
written = []
def serialize_then_pause(video):
    if len(written) == 2:
        open(signal_path, "w").close()
        time.sleep(600)
    written.append(video.media_id)
    return real(video)
schema.serialize_video = serialize_then_pause
sys.exit(convert_vid.main(sys.argv[2:]))
"""


def test_sigkill_during_conversion_leaves_no_shard_and_a_rerun_completes(tmp_path):
    root = str(tmp_path / "root")
    for name in ("a", "b", "c", "d"):
        helpers.write_vid_snippet(root, "train", name, [[(AIRPLANE, 1, 2, 10, 12, 0)]] * 2)
    output = tmp_path / "out"
    arguments = ["--root", root, "--split", "train", "--output", str(output / "vid"),
                 "--num-shards", "2", "--quiet"]
    killing.kill_when_paused(_PAUSING_CONVERSION, arguments, str(tmp_path / "paused"), 120,
                             "the conversion did not reach its second video")
    left = sorted(os.listdir(output))
    # Only hidden temporary shards: no `vid-*` file that a reader's glob would take.
    assert left and all(name.startswith(".vid-") and ".tmp-" in name for name in left), left
    assert not tf.io.gfile.glob(str(output / "vid") + "-*")

    # A re-run completes, removes the killed run's temporaries, and writes the shards
    # of an uninterrupted conversion.
    assert convert_vid.main(arguments) == 0
    assert sorted(os.listdir(output)) == ["vid-00000-of-00002", "vid-00001-of-00002"]
    assert convert_vid.main([*arguments[:5], str(tmp_path / "reference" / "vid"), *arguments[6:]]) == 0
    _, records = _records(str(output / "vid"))
    _, reference = _records(str(tmp_path / "reference" / "vid"))
    assert len(records) == 4 and records == reference
