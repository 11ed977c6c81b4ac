"""Converts ILSVRC2015 VID to TFRecords of `tf.train.SequenceExample`, one per snippet.

    python -m stmn_tf.data.convert_vid --root DIR/ILSVRC2015 --split train \
        --output /data/vid/train [--num-shards N] [--skip-errors] [--workers N]

Reads `Data/VID/<split>/<snippet>/<frame>.JPEG` and `Annotations/VID/<split>/<snippet>/
<frame>.xml`. Snippets are those listed in `ImageSets/VID/<split>.txt` and
`ImageSets/VID/<split>_*.txt` when present (lines name a snippet or a frame of one;
the union is taken), else every folder of annotation files under the split. Every
frame of a snippet is kept, also those without objects. Boxes: schema.py.
"""

import functools
import glob
import os
import sys

from stmn_tf.data import convert_lib
from stmn_tf.data import schema
from stmn_tf.data import vid_classes

DATASET_NAME = "ILSVRC2015_VID"


def _snippets_from_image_sets(root, split, data_dir):
    pattern_files = sorted(glob.glob(os.path.join(root, "ImageSets", "VID", f"{split}.txt")) +
                           glob.glob(os.path.join(root, "ImageSets", "VID", f"{split}_*.txt")))
    snippets = set()
    for list_file in pattern_files:
        with open(list_file) as f:
            for line in f:
                if not line.strip():
                    continue
                name = line.split()[0].strip("/")
                if name.startswith(split + "/"):
                    name = name[len(split) + 1:]
                # val.txt lists frames (`snippet/000000`), train_*.txt snippets.
                if not os.path.isdir(os.path.join(data_dir, name)) and os.path.basename(name).isdigit():
                    name = os.path.dirname(name)
                snippets.add(name)
    return sorted(snippets), pattern_files


def _leaf_folders(directory, extensions):
    found = set()
    for folder, _, files in os.walk(directory):
        if any(f.endswith(extensions) for f in files):
            found.add(os.path.relpath(folder, directory))
    return found


def list_videos(root, split):
    """Lists the split's snippets as `convert_lib.VideoTask`s (sorted by media id).

    Each frame dict has `image` (the JPEG path), `annotation` (the xml path) and
    `timestamp` (the frame's number in the snippet). A frame that has only one of
    the two files is listed, and fails when converted.
    """
    data_dir = os.path.join(root, "Data", "VID", split)
    annotation_dir = os.path.join(root, "Annotations", "VID", split)
    if not os.path.isdir(annotation_dir):
        raise convert_lib.ConversionError(annotation_dir, "missing annotation folder", "video")
    snippets, list_files = _snippets_from_image_sets(root, split, data_dir)
    if not list_files:
        snippets = sorted(_leaf_folders(annotation_dir, ".xml") | _leaf_folders(data_dir, ".JPEG"))
    tasks = []
    for snippet in snippets:
        stems = set()
        for directory, extension in ((data_dir, ".JPEG"), (annotation_dir, ".xml")):
            folder = os.path.join(directory, snippet)
            if os.path.isdir(folder):
                stems |= {f[:-len(extension)] for f in os.listdir(folder) if f.endswith(extension)}
        frames = []
        for position, stem in enumerate(sorted(stems)):
            frames.append({
                "image": os.path.join(data_dir, snippet, stem + ".JPEG"),
                "annotation": os.path.join(annotation_dir, snippet, stem + ".xml"),
                "timestamp": int(stem) if stem.isdigit() else position,
                "source_id": f"{snippet}/{stem}",
            })
        if not frames:
            frames.append({"image": os.path.join(data_dir, snippet), "annotation": None,
                           "timestamp": 0, "source_id": snippet, "missing": True})
        tasks.append(convert_lib.VideoTask(media_id=snippet, frames=frames))
    return tasks


def read_frame(task, frame, class_map, with_track_ids=True, drop_unknown=False):
    """Reads one frame's image and annotation -> (schema.Frame, height, width, format)."""
    if frame.get("missing"):
        raise convert_lib.ConversionError(frame["image"], "missing snippet (no frames)", "video")
    height, width, boxes, labels, names, track_ids, _ = convert_lib.parse_voc_xml(
        frame["annotation"], class_map, with_track_ids=with_track_ids, drop_unknown=drop_unknown)
    data, image_height, image_width, image_format = convert_lib.read_image(frame["image"])
    if (image_height, image_width) != (height, width):
        raise convert_lib.ConversionError(
            frame["image"], f"image is {image_width}x{image_height} but {frame['annotation']} "
                            f"says {width}x{height}")
    record = schema.Frame(encoded=data, timestamp=frame["timestamp"],
                          source_id=frame["source_id"], boxes_yxyx=boxes, labels=labels,
                          label_names=names, track_ids=track_ids)
    return record, height, width, image_format


def build_video(task, skip_errors, classes=vid_classes.VID_CLASSES):
    class_map = vid_classes.synset_to_label(classes)
    reader = functools.partial(read_frame, class_map=class_map)
    return convert_lib.build_video(task, reader, skip_errors, DATASET_NAME)


def convert_vid(root, split, output_prefix, num_shards=None, skip_errors=False, workers=1,
                classes=vid_classes.VID_CLASSES, quiet=False):
    """Converts one split; returns `convert_lib.convert`'s statistics dict."""
    return convert_lib.convert_classes(list_videos(root, split), build_video, output_prefix,
                                       classes, f"VID {split}", num_shards=num_shards,
                                       skip_errors=skip_errors, workers=workers, quiet=quiet)


def run(argv=None):
    parser = convert_lib.make_parser(__doc__.splitlines()[0])
    convert_lib.add_ilsvrc_arguments(parser, "VID")
    return convert_lib.run_ilsvrc(parser.parse_args(argv), convert_vid)


def main(argv=None):
    return convert_lib.main_guard(run, argv)


if __name__ == "__main__":
    sys.exit(main())
