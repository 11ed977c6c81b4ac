"""Scores a devkit / FGFA detection file with the ImageNet VID protocol.

    python -m stmn_tf.evaluation.score_vid --root DIR/ILSVRC2015 --split val \
        --detections FILE [--image-set FILE] [--output JSON] [--skip-errors] \
        [--classes FILE] [--coco]

Reads the detections (`frame_index class_index score xmin ymin xmax ymax` a line, see
`stmn_tf.evaluation.detection_files`), the image-set file (default
`ROOT/ImageSets/VID/<split>.txt`) and the annotations of its frames
(`ROOT/Annotations/VID/<split>/...xml`, with track ids), and prints per-class AP, mAP
and FGFA's slow / medium / fast split, the motion IoU computed from the annotations'
track ids (`stmn_tf.evaluation.vid_eval`). `--output` writes what
`vid_eval.evaluate` returns as JSON (`mAP`, `AP`, `mAP_slow`, `mAP_medium`, `mAP_fast`,
...; NaN as null). A bad detection line (malformed, unknown frame or class) is an error
naming the line; with `--skip-errors` it is skipped and counted.
"""

import argparse
import json
import math
import os
import sys

from stmn_tf.data import convert_lib
from stmn_tf.data import vid_classes
from stmn_tf.evaluation import detection_files
from stmn_tf.evaluation import vid_eval


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the ILSVRC2015 folder")
    parser.add_argument("--split", default="val", help="the folder under Annotations/VID")
    parser.add_argument("--detections", required=True, help="the detection file")
    parser.add_argument("--image-set", default=None,
                        help="image-set file (default: ROOT/ImageSets/VID/<split>.txt)")
    parser.add_argument("--output", default=None, help="write the metrics as JSON here")
    parser.add_argument("--skip-errors", action="store_true", help="skip bad detection lines")
    parser.add_argument("--classes", default=None,
                        help="class list, 'synset name' a line (default: the 30 VID classes)")
    parser.add_argument("--coco", action="store_true", help="also COCO AP (pycocotools)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _percent(value):
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def format_report(result, class_names):
    """Per-class AP and the overall rows, in percent ("-": no ground truth)."""
    width = max([len(n) for n in class_names] + [10])
    has_motion = "mAP_slow" in result
    header = f"{'class':<{width}}  {'AP':>6}" + ("".join(f"  {k:>6}" for k in ("slow", "medium", "fast"))
                                                if has_motion else "")
    lines = [header, "-" * len(header)]
    for c, name in enumerate(class_names, 1):
        row = f"{name:<{width}}  {_percent(result['AP'][c]):>6}"
        if has_motion:
            row += "".join(f"  {_percent(result[f'AP_{k}'][c]):>6}" for k in ("slow", "medium", "fast"))
        lines.append(row)
    lines.append("-" * len(header))
    row = f"{'mAP':<{width}}  {_percent(result['mAP']):>6}"
    if has_motion:
        row += "".join(f"  {_percent(result[f'mAP_{k}']):>6}" for k in ("slow", "medium", "fast"))
    lines.append(row)
    return "\n".join(lines)


def to_json(value):
    """Metrics -> JSON-ready: NaN -> None, NumPy scalars -> Python, int keys -> str."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def score(root, split, detections_path, image_set=None, classes=vid_classes.VID_CLASSES,
          skip_errors=False, coco=False, progress=False):
    """Scores a detection file. Returns (`vid_eval.evaluate`'s dict, skipped lines)."""
    image_set = image_set or os.path.join(root, "ImageSets", "VID", f"{split}.txt")
    names, indices = detection_files.read_image_set(image_set, split)
    groundtruths = detection_files.read_groundtruths(
        root, split, names, vid_classes.synset_to_label(classes), progress=progress)
    detections, skipped = detection_files.read_detections(
        detections_path, indices, len(classes), skip_errors=skip_errors)
    result = vid_eval.evaluate(groundtruths, detections, len(classes), motion=True, coco=coco)
    return result, skipped


def main(argv=None):
    args = parse_args(argv)
    try:
        classes = vid_classes.read_class_file(args.classes) if args.classes else vid_classes.VID_CLASSES
        result, skipped = score(args.root, args.split, args.detections, args.image_set, classes,
                                args.skip_errors, args.coco, progress=not args.no_progress)
    except (OSError, ValueError, convert_lib.ConversionError) as e:
        sys.exit(f"score_vid: {e}")
    if skipped:
        print(f"skipped {len(skipped)} bad detection lines, the first: {skipped[0]}")
    print(f"{result['num_detections']} detections, "
          f"{sum(result['num_groundtruths'].values())} ground truths")
    print(format_report(result, [name for _, name in classes]))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)) or ".", exist_ok=True)
        temporary = args.output + ".tmp"  # written whole or not at all
        with open(temporary, "w") as f:
            json.dump(to_json(result), f, indent=1, allow_nan=False)
        os.replace(temporary, args.output)
        print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
