"""Converts ILSVRC DET images of the 30 VID classes to one-frame videos.

    python -m stmn_tf.data.convert_det --root DIR/ILSVRC2015 --split train \
        --output /data/det/train [--num-shards N] [--skip-errors] [--workers N]

Reads `Annotations/DET/<split>/**.xml` and `Data/DET/<split>/<same path>.JPEG`, or only
the images listed in `--image-set FILE` (lines `path/without/extension [...]`, such as
`ImageSets/DET/train_*.txt` or FGFA's `DET_train_30classes.txt`). Objects of the other
170 DET synsets are dropped, and images left without objects are not written (counted
as "no VID object"). A DET object's track id is its position in the xml file.
"""

import functools
import os
import sys

from stmn_tf.data import convert_lib
from stmn_tf.data import convert_vid
from stmn_tf.data import vid_classes

DATASET_NAME = "ILSVRC_DET"
_SYNSET_PREFIX = "n"


def list_images(root, split, image_set=None):
    """Lists the images as one-frame `convert_lib.VideoTask`s, sorted by media id."""
    data_dir = os.path.join(root, "Data", "DET", split)
    annotation_dir = os.path.join(root, "Annotations", "DET", split)
    if image_set:
        names = set()
        with open(image_set) as f:
            for line in f:
                if line.strip():
                    names.add(line.split()[0].strip("/"))
    else:
        if not os.path.isdir(annotation_dir):
            raise convert_lib.ConversionError(annotation_dir, "missing annotation folder", "video")
        names = set()
        for folder, _, files in os.walk(annotation_dir):
            for f in files:
                if f.endswith(".xml"):
                    names.add(os.path.relpath(os.path.join(folder, f[:-4]), annotation_dir))
    tasks = []
    for name in sorted(names):
        frame = {"image": os.path.join(data_dir, name + ".JPEG"),
                 "annotation": os.path.join(annotation_dir, name + ".xml"),
                 "timestamp": 0, "source_id": name}
        tasks.append(convert_lib.VideoTask(media_id=name, frames=[frame]))
    return tasks


def build_image(task, skip_errors, classes=vid_classes.VID_CLASSES):
    class_map = vid_classes.synset_to_label(classes)
    frame = task.frames[0]
    # DET has 200 synsets: drop the others, but still refuse names that are no synset.
    try:
        result = convert_lib.parse_voc_xml(frame["annotation"], class_map, with_track_ids=False,
                                           drop_unknown=True)
    except convert_lib.ConversionError as e:
        if not skip_errors:
            raise
        return convert_lib.VideoResult(None, [(e.path, e.reason, "video")])
    import xml.etree.ElementTree as ElementTree
    for obj in ElementTree.parse(frame["annotation"]).getroot().findall("object"):
        name = (obj.findtext("name") or "").strip()
        if not (name.startswith(_SYNSET_PREFIX) and name[1:].isdigit()):
            error = convert_lib.ConversionError(frame["annotation"], f"unknown synset {name!r}")
            if not skip_errors:
                raise error
            return convert_lib.VideoResult(None, [(error.path, error.reason, "video")])
    if not result[3]:
        return convert_lib.VideoResult(None, [(frame["annotation"], "no VID object", "video")])
    reader = functools.partial(convert_vid.read_frame, class_map=class_map,
                               with_track_ids=False, drop_unknown=True)
    return convert_lib.build_video(task, reader, skip_errors, DATASET_NAME)


def convert_det(root, split, output_prefix, num_shards=None, skip_errors=False, workers=1,
                image_set=None, classes=vid_classes.VID_CLASSES, quiet=False):
    """Converts one DET split; returns `convert_lib.convert`'s statistics dict.

    Images without VID objects are counted under skipped_videos with the reason
    "no VID object" (they are not errors).
    """
    return convert_lib.convert_classes(list_images(root, split, image_set), build_image,
                                       output_prefix, classes, f"DET {split}",
                                       num_shards=num_shards, skip_errors=skip_errors,
                                       workers=workers, quiet=quiet)


def run(argv=None):
    parser = convert_lib.make_parser(__doc__.splitlines()[0])
    convert_lib.add_ilsvrc_arguments(parser, "DET")
    parser.add_argument("--image-set", default=None, help="only the images this list names")
    args = parser.parse_args(argv)
    return convert_lib.run_ilsvrc(args, convert_det, image_set=args.image_set)


def main(argv=None):
    return convert_lib.main_guard(run, argv)


if __name__ == "__main__":
    sys.exit(main())
