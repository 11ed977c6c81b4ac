"""What the converters share: file checks, PASCAL-VOC xml parsing, the sharded writer.

A converter lists its videos as `VideoTask`s, turns each into a `schema.Video` with a
plain-Python function (run in worker processes), and hands both to `convert`, which
writes `PREFIX-00000-of-0000N` shards. Every problem with the input raises
`ConversionError` whose message starts with the offending file's path.
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import functools
import glob
import math
import multiprocessing
import os
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np

from stmn_tf.data import schema
from stmn_tf.data import vid_classes

FRAMES_PER_SHARD = 10000  # about 1 GB of VID JPEGs per shard


class ConversionError(Exception):
    """A bad input file; the message is `"<path>: <reason>"`."""

    def __init__(self, path, reason, scope="frame"):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.scope = scope  # "frame" or "video": what --skip-errors drops

    def __reduce__(self):  # travels back from worker processes
        return ConversionError, (self.path, self.reason, self.scope)


@dataclasses.dataclass
class VideoTask:
    """One video to convert: its media id and its frames in time order.

    `frames` is a list of dicts with at least `image` (path) and `timestamp` (int);
    the converter decides what else it needs (e.g. `annotation`).
    """

    media_id: str
    frames: list
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class VideoResult:
    video: object  # schema.Video, or None when the whole video was skipped
    skipped: list  # [(path, reason, scope)]


def image_size(data, path):
    """(height, width) from a JPEG's SOF or a PNG's IHDR header, checking the file ends.

    Raises ConversionError("unreadable image ...") for anything else, for a JPEG
    without its end-of-image marker (a truncated download), and for a PNG without IEND.
    Reading the header only keeps conversion I/O-bound: VID has a million frames.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR" or b"IEND" not in data[-12:]:
            raise ConversionError(path, "unreadable image (truncated or corrupt PNG)")
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data[:2] != b"\xff\xd8":
        raise ConversionError(path, "unreadable image (not a JPEG or PNG file)")
    # Some cameras append bytes after the end-of-image marker, so look near the end.
    if b"\xff\xd9" not in data[-1024:]:
        raise ConversionError(path, "unreadable image (truncated JPEG: no end-of-image marker)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ConversionError(path, "unreadable image (corrupt JPEG marker stream)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                break
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            if height == 0 or width == 0:
                break
            return height, width
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            break
        i += 2 + length
    raise ConversionError(path, "unreadable image (corrupt JPEG: no frame header)")


def read_image(path):
    """Returns (bytes, height, width, format) of an image file, checked as above."""
    if not os.path.isfile(path):
        kind = "JPEG" if path.lower().endswith((".jpeg", ".jpg")) else "image"
        raise ConversionError(path, f"missing {kind}")
    with open(path, "rb") as f:
        data = f.read()
    height, width = image_size(data, path)
    return data, height, width, "png" if data[:4] == b"\x89PNG" else "jpeg"


def check_box(path, xmin, ymin, xmax, ymax, width, height):
    """Rejects boxes outside the image or inverted (schema.py: continuous coordinates)."""
    if not (0 <= xmin <= xmax <= width and 0 <= ymin <= ymax <= height):
        raise ConversionError(
            path, f"box (xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g}) "
                  f"outside the {width}x{height} image or inverted")


def _text(path, element, tag):
    node = element.find(tag)
    if node is None or node.text is None or not node.text.strip():
        raise ConversionError(path, f"malformed XML (missing <{tag}>)")
    return node.text.strip()


def _number(path, element, tag):
    text = _text(path, element, tag)
    try:
        return float(text)
    except ValueError:
        raise ConversionError(path, f"malformed XML (<{tag}> is {text!r}, not a number)")


def parse_voc_xml(path, class_map, with_track_ids, drop_unknown=False):
    """Reads an ILSVRC (PASCAL-VOC style) annotation file.

    Args:
        path: str. The xml file.
        class_map: dict. {synset: (label 1..C, name)}.
        with_track_ids: bool. VID files carry <trackid>; DET files do not, and the
            object's position in the file becomes its track id.
        drop_unknown: bool. Drop objects of synsets outside `class_map` (DET has 200
            classes) instead of raising "unknown synset".

    Returns:
        (height, width, boxes [N, 4] pixel ymin, xmin, ymax, xmax, labels, names,
        track_ids, dropped) where dropped counts objects of other synsets.
    """
    if not os.path.isfile(path):
        raise ConversionError(path, "missing annotation")
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as e:
        raise ConversionError(path, f"malformed XML ({e})")
    size = root.find("size")
    if size is None:
        raise ConversionError(path, "malformed XML (missing <size>)")
    width, height = int(_number(path, size, "width")), int(_number(path, size, "height"))
    if width <= 0 or height <= 0:
        raise ConversionError(path, f"malformed XML (image size {width}x{height})")
    boxes, labels, names, track_ids, dropped = [], [], [], [], 0
    for index, obj in enumerate(root.findall("object")):
        synset = _text(path, obj, "name")
        if synset not in class_map:
            if drop_unknown:
                dropped += 1
                continue
            raise ConversionError(path, f"unknown synset {synset!r}")
        box = obj.find("bndbox")
        if box is None:
            raise ConversionError(path, "malformed XML (object without <bndbox>)")
        xmin, ymin, xmax, ymax = (_number(path, box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        check_box(path, xmin, ymin, xmax, ymax, width, height)
        if with_track_ids:
            track_id = _number(path, obj, "trackid")
        else:
            track_id = index
        label, name = class_map[synset]
        boxes.append((ymin, xmin, ymax, xmax))
        labels.append(label)
        names.append(name)
        track_ids.append(int(track_id))
    boxes = np.array(boxes, np.float64).reshape(-1, 4)
    return height, width, boxes, labels, names, track_ids, dropped


def build_video(task, read_frame, skip_errors, dataset_name):
    """Builds a `schema.Video` from `read_frame(task, frame) -> schema.Frame, h, w, fmt`.

    Frame-level errors skip the frame when `skip_errors`; a frame whose size differs
    from the video's first good frame is such an error. Returns a `VideoResult`.
    """
    frames, skipped, size, image_format = [], [], None, None
    for frame in task.frames:
        try:
            record, height, width, fmt = read_frame(task, frame)
            if size is None:
                size, image_format = (height, width), fmt
            elif (height, width) != size or fmt != image_format:
                raise ConversionError(
                    frame["image"], f"frame is {width}x{height} {fmt}, the video's first "
                                    f"frame is {size[1]}x{size[0]} {image_format}")
        except ConversionError as e:
            if not skip_errors:
                raise
            skipped.append((e.path, e.reason, e.scope))
            continue
        frames.append(record)
    if not frames:
        reason = "no usable frames"
        if not skip_errors:
            raise ConversionError(task.media_id, reason, scope="video")
        return VideoResult(None, skipped + [(task.media_id, reason, "video")])
    video = schema.Video(media_id=task.media_id, height=size[0], width=size[1], frames=frames,
                         image_format=image_format, dataset_name=dataset_name)
    return VideoResult(video, skipped)


def shard_paths(prefix, num_shards):
    return [f"{prefix}-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]


def _temporary_path(path):
    # A hidden name: `PREFIX-*` globs never see a half-written shard.
    directory, base = os.path.split(path)
    return os.path.join(directory, f".{base}.tmp-{os.getpid()}")


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(paths):
    """Removes the temporary files of `paths` left by a conversion that was killed
    (SIGKILL leaves no chance to clean up): those whose writer process is gone.
    Returns the paths removed."""
    removed = []
    for path in paths:
        directory, base = os.path.split(path)
        for stale in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(base)}.tmp-*")):
            pid = stale.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
                os.remove(stale)
                removed.append(stale)
    return removed


def _run_task(args):
    build_fn, task, skip_errors = args
    try:
        return build_fn(task, skip_errors)
    except ConversionError as e:
        if not skip_errors:
            raise
        return VideoResult(None, [(e.path, e.reason, "video")])


def convert(tasks, build_fn, output_prefix, num_shards=None, skip_errors=False, workers=1,
            description="videos", quiet=False):
    """Converts `tasks` with `build_fn(task, skip_errors) -> VideoResult` into shards.

    Videos go round-robin to the shards in task order, so the output does not depend
    on `workers`. Each shard is written under a hidden temporary name and renamed
    only when every video is done; on any error or interrupt the temporary files are
    removed, so no half-written shard is left behind. A SIGKILL leaves only hidden
    temporary files, which the next conversion to the same shards removes.

    Returns a dict: shards (paths), videos, frames, boxes, skipped_frames,
    skipped_videos, reasons ({reason: count}), skipped_files ([(path, reason)]).
    """
    import tensorflow as tf  # only the main process writes
    from tqdm import tqdm

    if num_shards is None:
        total_frames = sum(len(t.frames) for t in tasks)
        num_shards = max(1, math.ceil(total_frames / FRAMES_PER_SHARD))
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    directory = os.path.dirname(os.path.abspath(output_prefix))
    os.makedirs(directory, exist_ok=True)
    paths = shard_paths(output_prefix, num_shards)
    remove_stale_temporaries(paths)
    temporary = [_temporary_path(p) for p in paths]
    stats = dict(shards=paths, videos=0, frames=0, boxes=0, skipped_frames=0,
                 skipped_videos=0, reasons=collections.Counter(), skipped_files=[])
    executor = None
    writers = []
    try:
        jobs = ((build_fn, task, skip_errors) for task in tasks)
        if workers > 1:
            # Not fork: a process that has run TensorFlow ops cannot be forked safely.
            # The workers only parse files and return plain Python objects.
            context = multiprocessing.get_context("spawn")
            executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
            results = executor.map(_run_task, jobs, chunksize=1)
        else:
            results = map(_run_task, jobs)
        writers = [tf.io.TFRecordWriter(p) for p in temporary]
        progress = tqdm(results, total=len(tasks), desc=description, unit="video",
                        disable=quiet, file=sys.stderr)
        for index, result in enumerate(progress):
            for path, reason, scope in result.skipped:
                stats["skipped_videos" if scope == "video" else "skipped_frames"] += 1
                stats["reasons"][reason.split(" (")[0]] += 1
                stats["skipped_files"].append((path, reason))
            if result.video is None:
                continue
            writers[index % num_shards].write(schema.serialize_video(result.video))
            stats["videos"] += 1
            stats["frames"] += len(result.video.frames)
            stats["boxes"] += sum(len(f.labels) for f in result.video.frames)
        for writer in writers:
            writer.close()
        for source, target in zip(temporary, paths):
            os.replace(source, target)
    except BaseException:
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            executor = None
        for writer in writers:
            writer.close()
        for path in temporary:
            if os.path.exists(path):
                os.remove(path)
        raise
    finally:
        if executor is not None:
            executor.shutdown()
    stats["reasons"] = dict(stats["reasons"])
    return stats


def add_common_arguments(parser):
    parser.add_argument("--output", required=True,
                        help="output prefix; writes PREFIX-00000-of-0000N")
    parser.add_argument("--num-shards", type=int, default=None,
                        help=f"number of shards (default: one per {FRAMES_PER_SHARD} frames)")
    parser.add_argument("--skip-errors", action="store_true",
                        help="skip bad frames/videos, count them and print why, instead of stopping")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="worker processes reading files (default: min(8, cores))")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_ilsvrc_arguments(parser, task):
    """Adds --root, --split and --classes of the ILSVRC2015 converters (`task`: VID or DET),
    then the common arguments."""
    parser.add_argument("--root", required=True, help="the ILSVRC2015 folder")
    parser.add_argument("--split", required=True, help=f"train or val (a folder under Data/{task})")
    parser.add_argument("--classes", default=None,
                        help="class list, 'synset name' a line (default: the 30 VID classes)")
    add_common_arguments(parser)


def convert_classes(tasks, build_fn, output_prefix, classes, description, num_shards=None,
                    skip_errors=False, workers=1, quiet=False):
    """`convert` with `build_fn(task, skip_errors, classes=...)` given the class list (a
    tuple, so that it travels to the worker processes)."""
    build = functools.partial(build_fn, classes=tuple(classes))
    return convert(tasks, build, output_prefix, num_shards=num_shards, skip_errors=skip_errors,
                   workers=workers, description=description, quiet=quiet)


def run_ilsvrc(args, convert_fn, **options):
    """Runs `convert_fn(root, split, output, ..., classes=, **options)` on the arguments of
    `add_ilsvrc_arguments` and prints the report; returns the exit code 0."""
    classes = vid_classes.read_class_file(args.classes) if args.classes else vid_classes.VID_CLASSES
    stats = convert_fn(args.root, args.split, args.output, num_shards=args.num_shards,
                       skip_errors=args.skip_errors, workers=args.workers, classes=classes,
                       quiet=args.quiet, **options)
    report(stats)
    return 0


def report(stats, stream=None):
    """Prints what was written and, with --skip-errors, how many were skipped and why."""
    stream = stream or sys.stdout
    print(f"wrote {stats['videos']} videos, {stats['frames']} frames, {stats['boxes']} boxes "
          f"to {len(stats['shards'])} shards ({stats['shards'][0]} ...)", file=stream)
    if stats["skipped_frames"] or stats["skipped_videos"]:
        print(f"skipped {stats['skipped_frames']} frames and {stats['skipped_videos']} videos:",
              file=stream)
        for reason, count in sorted(stats["reasons"].items(), key=lambda kv: -kv[1]):
            print(f"  {count:6d}  {reason}", file=stream)
        for path, reason in stats["skipped_files"][:20]:
            print(f"  {path}: {reason}", file=stream)
        if len(stats["skipped_files"]) > 20:
            print(f"  ... and {len(stats['skipped_files']) - 20} more", file=stream)


def main_guard(run, argv):
    """Runs a converter's `run(args)`; a ConversionError ends the program with its message."""
    try:
        return run(argv)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        print("(use --skip-errors to skip bad frames and videos)", file=sys.stderr)
        return 1


def make_parser(description):
    return argparse.ArgumentParser(description=description)
