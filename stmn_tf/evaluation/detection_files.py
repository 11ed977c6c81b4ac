"""ImageNet VID devkit / FGFA detection files and image-set files, and the annotations.

Detection file: one detection a line, `frame_index class_index score xmin ymin xmax ymax`
(the devkit's `eval_vid_detection.m` and FGFA's `write_vid_results`): `frame_index` is
the 1-based index that the image-set file gives the frame, `class_index` the class in
1..C (the devkit's order, `stmn_tf.data.vid_classes`), the box in pixels with
inclusive corners as in the annotations.

Image-set file (`ImageSets/VID/val.txt` of ILSVRC2015): one frame a line,
`<snippet>/<frame:06d> <index>`. Also read: a leading `<split>/` on the name, as in
FGFA's frame lists (`val/ILSVRC2015_val_00000000/000000 1`), and FGFA's video lists,
`<snippet> <first index> <first frame> <number of frames>` a line, which stand for
that many consecutive frames.

Ground truth: `Annotations/VID/<split>/<snippet>/<frame>.xml`, read by the project's
converter (`stmn_tf.data.convert_lib.parse_voc_xml`), with track ids.
"""

import math
import os

import numpy as np

from stmn_tf.data import convert_lib


class DetectionFileError(ValueError):
    """A bad line of a detection or image-set file; the message names `path:line`."""


def _strip_split(name, split):
    name = name.strip("/")
    if split and name.startswith(split + "/"):
        name = name[len(split) + 1:]
    return name


def read_image_set(path, split=None):
    """Reads an image-set file.

    Args:
        path: str. The file.
        split: str or None. A leading `<split>/` on frame names is dropped.

    Returns:
        (names, indices): `names` list of `<snippet>/<frame>` in file order, `indices`
        `[F]` int64, the 1-based frame indices that detection files refer to.

    Raises:
        DetectionFileError: a malformed line, a repeated index or frame, or no frames.
    """
    names, indices = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{path}:{number}"
            try:
                values = [int(p) for p in parts[1:]]
            except ValueError:
                raise DetectionFileError(f"{where}: expected '<snippet>/<frame> <index>', got {line.strip()!r}")
            name = _strip_split(parts[0], split)
            if len(parts) == 2:
                frame = os.path.basename(name)
                if not frame.isdigit():
                    raise DetectionFileError(
                        f"{where}: {parts[0]!r} names no frame (expected '<snippet>/<frame:06d> <index>'); "
                        "a list of snippets is not an image-set file of frames")
                names.append(name)
                indices.append(values[0])
            elif len(parts) == 4:  # FGFA's video list: snippet, first index, first frame, length
                first_index, first_frame, length = values
                names.extend(f"{name}/{first_frame + k:06d}" for k in range(length))
                indices.extend(first_index + k for k in range(length))
            else:
                raise DetectionFileError(f"{where}: expected '<snippet>/<frame> <index>', got {line.strip()!r}")
    if not names:
        raise DetectionFileError(f"{path}: no frames")
    indices = np.asarray(indices, np.int64)
    unique, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        raise DetectionFileError(f"{path}: frame index {unique[counts > 1][0]} is given twice")
    if len(set(names)) != len(names):
        raise DetectionFileError(f"{path}: a frame is listed twice")
    return names, indices


def write_image_set(path, names):
    """Writes `<name> <index>` lines, indices 1..F in the given order (atomically)."""
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        f.writelines(f"{name} {i}\n" for i, name in enumerate(names, 1))
    os.replace(temporary, path)


def frame_names(groundtruths):
    """`<video_id>/<frame_index:06d>` of each ground-truth dict (VID's frame names)."""
    return [f"{g.get('video_id', 0)}/{int(g.get('frame_index', i)):06d}" for i, g in enumerate(groundtruths)]


def write_detections(path, detections, frame_indices):
    """Writes per-frame detections as a devkit detection file (atomically).

    Args:
        path: str. The file to write.
        detections: list (one per frame) of dicts: `"boxes"` `[D, 4]` pixel xmin, ymin,
            xmax, ymax; `"scores"` `[D]`; `"labels"` `[D]` in 1..C.
        frame_indices: `[F]` the frames' 1-based indices in the image-set file.

    Scores and coordinates are written in full (`repr` of the float64 value), so that
    the file scores exactly as the dicts do; FGFA writes 4 and 2 decimals.
    Returns the number of lines written.
    """
    if len(detections) != len(frame_indices):
        raise ValueError(f"{len(detections)} frames of detections but {len(frame_indices)} frame indices")
    temporary = path + ".tmp"
    lines = 0
    with open(temporary, "w") as f:
        for index, frame in zip(frame_indices, detections):
            boxes = np.asarray(frame["boxes"], np.float64).reshape(-1, 4)
            scores = np.asarray(frame["scores"], np.float64).reshape(-1)
            labels = np.asarray(frame["labels"], np.int64).reshape(-1)
            for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                f.write(f"{int(index)} {label} {score!r} {box[0]!r} {box[1]!r} {box[2]!r} {box[3]!r}\n")
                lines += 1
    os.replace(temporary, path)
    return lines


def read_detections(path, frame_indices, num_classes, skip_errors=False):
    """Reads a devkit detection file into per-frame detection dicts.

    Args:
        path: str. The detection file.
        frame_indices: `[F]` the image set's 1-based indices, in its order.
        num_classes: C; class indices must be in 1..C.
        skip_errors: skip bad lines (and count them) instead of raising.

    Returns:
        (detections, skipped): `detections` list (one per image-set frame, in its order)
        of dicts `"boxes"` `[D, 4]` pixel xyxy, `"scores"` `[D]`, `"labels"` `[D]`, in
        file order; `skipped` list of `"path:line: reason"` messages.

    Raises:
        DetectionFileError: naming `path:line` for a malformed line (not 7 fields,
            not numbers, not finite), an unknown frame index or class index.
    """
    position = {int(i): p for p, i in enumerate(np.asarray(frame_indices).tolist())}
    rows = [[] for _ in position]
    skipped = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            reason = None
            if len(parts) != 7:
                reason = f"expected 7 fields 'frame class score xmin ymin xmax ymax', got {len(parts)}"
            else:
                try:
                    frame, label = int(parts[0]), int(parts[1])
                    values = [float(p) for p in parts[2:]]
                except ValueError:
                    reason = f"not numbers: {line.strip()!r}"
                else:
                    if not all(math.isfinite(v) for v in values):
                        reason = f"score or box not finite: {line.strip()!r}"
                    elif frame not in position:
                        reason = f"unknown frame index {frame} (not in the image set)"
                    elif not 1 <= label <= num_classes:
                        reason = f"unknown class index {label} (expected 1..{num_classes})"
            if reason is not None:
                message = f"{path}:{number}: {reason}"
                if not skip_errors:
                    raise DetectionFileError(message)
                skipped.append(message)
                continue
            rows[position[frame]].append((label, *values))
    detections = []
    for frame_rows in rows:
        table = np.asarray(frame_rows, np.float64).reshape(-1, 6)
        detections.append({"boxes": table[:, 2:6], "scores": table[:, 1],
                           "labels": table[:, 0].astype(np.int64)})
    return detections, skipped


def read_groundtruths(root, split, names, class_map, progress=False):
    """Reads the VID annotations of the image set's frames.

    Args:
        root: the ILSVRC2015 folder.
        split: `val`, `train`, ... (the folder under `Annotations/VID`).
        names: `<snippet>/<frame>` of each frame.
        class_map: {synset: (label 1..C, name)} (`vid_classes.synset_to_label`).
        progress: show a tqdm progress bar (VID val has 176,126 files).

    Returns:
        List (one per frame) of dicts: `"boxes"` `[N, 4]` pixel xmin, ymin, xmax, ymax as
        in the xml, `"labels"` `[N]`, `"track_ids"` `[N]`, `"video_id"` (the snippet),
        `"frame_index"` (the frame's number).

    Raises:
        convert_lib.ConversionError: naming the xml file (missing, malformed, an unknown
            synset, a box outside the image).
    """
    iterator = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="annotations", unit="frame", leave=False)
    groundtruths = []
    for name in iterator:
        path = os.path.join(root, "Annotations", "VID", split, name + ".xml")
        _, _, yxyx, labels, _, track_ids, _ = convert_lib.parse_voc_xml(path, class_map, with_track_ids=True)
        snippet, frame = os.path.dirname(name), os.path.basename(name)
        groundtruths.append({
            "boxes": yxyx[:, [1, 0, 3, 2]].reshape(-1, 4),
            "labels": np.asarray(labels, np.int64),
            "track_ids": np.asarray(track_ids, np.int64),
            "video_id": snippet,
            "frame_index": int(frame),
        })
    return groundtruths


def write_evaluation_detections(path, groundtruths, methods, image_set=None, split=None):
    """Writes what `evaluate.py --write-detections PATH` writes.

    Args:
        path: str. The detection file; with `{method}` in it, one file per method
            (`stmn`, `stmn+seq_nms`, ...), else the last method's (the table's last
            column, the paper's final entry when it was scored).
        groundtruths: the evaluated frames' ground-truth dicts (`"video_id"`,
            `"frame_index"`), which name the frames `<video_id>/<frame_index:06d>`.
        methods: {method: per-frame detection dicts, same frames}.
        image_set: an image-set file that lists every evaluated frame (e.g. ILSVRC2015's
            `ImageSets/VID/val.txt`): its indices are used. None: the frames are numbered
            1..F in evaluation order and that list is written next to the detections
            as `<path without extension>_image_set.txt`.
        split: dropped from the image set's names as `read_image_set` does.

    Returns:
        (list of detection files written, the image-set file they refer to).
    """
    names = frame_names(groundtruths)
    if image_set is None:
        image_set_path = os.path.splitext(path.replace("{method}", "all"))[0] + "_image_set.txt"
        write_image_set(image_set_path, names)
        indices = np.arange(1, len(names) + 1)
    else:
        image_set_path = image_set
        listed = {}
        for name, index in zip(*read_image_set(image_set, split)):
            listed[name] = index
            head, _, rest = name.partition("/")
            if head in ("train", "val", "test") and rest:  # FGFA's `val/...` names
                listed.setdefault(rest, index)
        missing = [n for n in names if n not in listed]
        if missing:
            raise ValueError(f"{image_set} does not list {len(missing)} of the evaluated frames, "
                             f"e.g. {missing[0]!r}")
        indices = np.asarray([listed[n] for n in names], np.int64)
    chosen = methods if "{method}" in path else dict([list(methods.items())[-1]])
    written = []
    for method, detections in chosen.items():
        target = path.replace("{method}", method)
        write_detections(target, detections, indices)
        written.append(target)
    return written, image_set_path
