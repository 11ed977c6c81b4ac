"""Converts users' own videos: the simple stmn JSON format, or COCO-VID JSON.

    python -m stmn_tf.data.convert_custom --root DIR --annotations FILE.json \
        --output PREFIX [--format {auto,stmn,coco_vid}] [--num-shards N] [--skip-errors] [--workers N]

The stmn format (frame paths relative to --root; boxes in pixels, xmin, ymin, xmax,
ymax on the continuous image plane, 0 <= xmin <= xmax <= width; labels 1..C follow
the order of "classes"; "track_id" is the instance's identity within the video;
frames are listed in time order and every listed frame is kept, with or without
objects):

    {"classes": ["car", "person"],
     "videos": [{"name": "street_01",
                 "frames": [{"file": "street_01/000000.jpg",
                             "objects": [{"box": [12, 30, 80, 96], "class": "car", "track_id": 0}]},
                            {"file": "street_01/000001.jpg", "objects": []}]}]}

COCO-VID (the format of mmtracking / CocoVID tools): "categories" [{id, name}], "videos"
[{id, name}], "images" [{id, file_name, height, width, frame_id, video_id}],
"annotations" [{image_id, category_id, bbox: [x, y, w, h], instance_id}]; labels 1..C
follow ascending category id. JPEG and PNG frames are copied as they are.
"""

import functools
import json
import os
import sys

import numpy as np

from stmn_tf.data import convert_lib
from stmn_tf.data import schema

DATASET_NAME = "custom"


def _stmn_tasks(root, spec, path):
    classes = list(spec["classes"])
    tasks = []
    for video in spec["videos"]:
        frames = []
        for position, frame in enumerate(video["frames"]):
            objects = [(o["box"], o["class"], o.get("track_id", i))
                       for i, o in enumerate(frame.get("objects", []))]
            frames.append({"image": os.path.join(root, frame["file"]), "objects": objects,
                           "timestamp": int(frame.get("index", position)),
                           "source_id": os.path.splitext(frame["file"])[0], "annotation": path})
        tasks.append(convert_lib.VideoTask(media_id=str(video["name"]), frames=frames))
    return classes, tasks


def _coco_vid_tasks(root, spec, path):
    categories = sorted(spec["categories"], key=lambda c: c["id"])
    names = {c["id"]: c["name"] for c in categories}
    per_image = {}
    for a in spec.get("annotations", []):
        x, y, w, h = a["bbox"]
        per_image.setdefault(a["image_id"], []).append(
            ([x, y, x + w, y + h], names.get(a["category_id"], str(a["category_id"])),
             a.get("instance_id", a.get("id", 0))))
    images = {}
    for image in spec["images"]:
        images.setdefault(image["video_id"], []).append(image)
    tasks = []
    for video in sorted(spec["videos"], key=lambda v: v["id"]):
        frames = []
        for image in sorted(images.get(video["id"], []), key=lambda i: i.get("frame_id", 0)):
            frames.append({"image": os.path.join(root, image["file_name"]),
                           "objects": per_image.get(image["id"], []),
                           "timestamp": int(image.get("frame_id", len(frames))),
                           "source_id": os.path.splitext(image["file_name"])[0],
                           "annotation": path})
        tasks.append(convert_lib.VideoTask(media_id=str(video["name"]), frames=frames))
    return [c["name"] for c in categories], tasks


def load(root, annotations, format="auto"):
    """Reads the JSON -> (class names in label order, list of `convert_lib.VideoTask`)."""
    try:
        with open(annotations) as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise convert_lib.ConversionError(annotations, f"unreadable JSON ({e})", "video")
    if format == "auto":
        format = "coco_vid" if "images" in spec and "annotations" in spec else "stmn"
    try:
        if format == "coco_vid":
            return _coco_vid_tasks(root, spec, annotations)
        return _stmn_tasks(root, spec, annotations)
    except (KeyError, TypeError, ValueError) as e:
        raise convert_lib.ConversionError(annotations, f"malformed {format} JSON ({e!r})", "video")


def read_frame(task, frame, class_map):
    data, height, width, image_format = convert_lib.read_image(frame["image"])
    boxes, labels, names, track_ids = [], [], [], []
    for box, name, track_id in frame["objects"]:
        where = f"{frame['annotation']} ({frame['image']})"
        if name not in class_map:
            raise convert_lib.ConversionError(where, f"unknown class {name!r}")
        xmin, ymin, xmax, ymax = (float(v) for v in box)
        convert_lib.check_box(where, xmin, ymin, xmax, ymax, width, height)
        boxes.append((ymin, xmin, ymax, xmax))
        labels.append(class_map[name])
        names.append(name)
        track_ids.append(int(track_id))
    record = schema.Frame(encoded=data, timestamp=frame["timestamp"], source_id=frame["source_id"],
                          boxes_yxyx=np.array(boxes, np.float64).reshape(-1, 4), labels=labels,
                          label_names=names, track_ids=track_ids)
    return record, height, width, image_format


def build_video(task, skip_errors, classes):
    class_map = {name: i + 1 for i, name in enumerate(classes)}
    reader = functools.partial(read_frame, class_map=class_map)
    return convert_lib.build_video(task, reader, skip_errors, DATASET_NAME)


def convert_custom(root, annotations, output_prefix, format="auto", num_shards=None,
                   skip_errors=False, workers=1, quiet=False):
    """Converts the videos of one JSON file; returns the statistics dict and class names."""
    classes, tasks = load(root, annotations, format)
    stats = convert_lib.convert_classes(tasks, build_video, output_prefix, classes, "videos",
                                        num_shards=num_shards, skip_errors=skip_errors,
                                        workers=workers, quiet=quiet)
    stats["classes"] = list(classes)
    return stats


def run(argv=None):
    parser = convert_lib.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder the frame paths are relative to")
    parser.add_argument("--annotations", required=True, help="the JSON file")
    parser.add_argument("--format", default="auto", choices=["auto", "stmn", "coco_vid"])
    convert_lib.add_common_arguments(parser)
    args = parser.parse_args(argv)
    stats = convert_custom(args.root, args.annotations, args.output, args.format,
                           args.num_shards, args.skip_errors, args.workers, args.quiet)
    convert_lib.report(stats)
    print("classes (label 1..C): " + ", ".join(stats["classes"]))
    return 0


def main(argv=None):
    return convert_lib.main_guard(run, argv)


if __name__ == "__main__":
    sys.exit(main())
