"""The on-disk format: one `tf.train.SequenceExample` per video.

A DET image is a video of one frame. Keys are those of the TF Object Detection API's
`seq_example_util.make_sequence_example`, plus `region/track_id`.

Context:
    clip/media_id         bytes   the video's path relative to its split folder
    clip/frames           int64   number of frames F stored in the record
    image/height, /width  int64   frame size in pixels (every frame of a video has it)
    image/format          bytes   "jpeg" (or "png" for users' PNG frames)
    example/dataset_name  bytes   e.g. "ILSVRC2015_VID", "ILSVRC2014_DET", "synthetic"
Feature lists (one entry per frame, in time order):
    image/encoded         bytes   the original image file's bytes, never re-encoded
    image/timestamp       int64   the frame's number in the original video
    image/source_id       bytes   the frame's path without extension, e.g. media_id/000012
    region/bbox/ymin, xmin, ymax, xmax   float   normalised to [0, 1] by the image size
    region/label/index    int64   1..C (0 is the background and never stored)
    region/label/string   bytes   the class name
    region/track_id       int64   the instance's identity within the video
    region/is_annotated   int64   1 when the frame was annotated (every VID frame is)

Box convention: annotation files give pixel coordinates that we read as positions on
the continuous image plane, 0 <= xmin <= xmax <= width, and normalise as x / width
with no +1. ILSVRC's xml follows the 0-based `[xmin, xmax]` pixel-index convention,
whose right edge is `xmax + 1`; we do not add that pixel, so that the written value
times the size gives back exactly the number in the xml (pixel-exact round trip) and
the evaluation, which takes ground truth from the same records, sees the devkit's
numbers. A box with `xmax == width` is accepted.
"""

import dataclasses

import numpy as np

# TensorFlow is imported where it is used, so that converter worker processes, which
# only read files, start in a fraction of a second.

MEDIA_ID = "clip/media_id"
NUM_FRAMES = "clip/frames"
HEIGHT = "image/height"
WIDTH = "image/width"
FORMAT = "image/format"
DATASET_NAME = "example/dataset_name"
ENCODED = "image/encoded"
TIMESTAMP = "image/timestamp"
SOURCE_ID = "image/source_id"
YMIN = "region/bbox/ymin"
XMIN = "region/bbox/xmin"
YMAX = "region/bbox/ymax"
XMAX = "region/bbox/xmax"
LABEL_INDEX = "region/label/index"
LABEL_STRING = "region/label/string"
TRACK_ID = "region/track_id"
IS_ANNOTATED = "region/is_annotated"

BOX_KEYS = (YMIN, XMIN, YMAX, XMAX)


@dataclasses.dataclass
class Frame:
    """One frame: its file bytes and its objects (pixel boxes, as in the xml).

    `boxes_yxyx` is a float array [N, 4] of pixel ymin, xmin, ymax, xmax.
    """

    encoded: bytes
    timestamp: int
    source_id: str
    boxes_yxyx: np.ndarray
    labels: list
    label_names: list
    track_ids: list
    is_annotated: bool = True


@dataclasses.dataclass
class Video:
    """A video as the converters and the synthetic generator build it."""

    media_id: str
    height: int
    width: int
    frames: list
    image_format: str = "jpeg"
    dataset_name: str = ""


def _bytes(values):
    import tensorflow as tf
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
    import tensorflow as tf
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values):
    import tensorflow as tf
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def video_to_sequence_example(video):
    """Builds the `tf.train.SequenceExample` of a `Video` (boxes normalised here)."""
    import tensorflow as tf
    context = {
        MEDIA_ID: _bytes([video.media_id.encode()]),
        NUM_FRAMES: _ints([len(video.frames)]),
        HEIGHT: _ints([video.height]),
        WIDTH: _ints([video.width]),
        FORMAT: _bytes([video.image_format.encode()]),
        DATASET_NAME: _bytes([video.dataset_name.encode()]),
    }
    lists = {key: [] for key in (ENCODED, TIMESTAMP, SOURCE_ID, *BOX_KEYS, LABEL_INDEX,
                                 LABEL_STRING, TRACK_ID, IS_ANNOTATED)}
    scale = np.array([video.height, video.width, video.height, video.width], np.float64)
    for frame in video.frames:
        boxes = np.asarray(frame.boxes_yxyx, np.float64).reshape(-1, 4) / scale
        lists[ENCODED].append(_bytes([frame.encoded]))
        lists[TIMESTAMP].append(_ints([frame.timestamp]))
        lists[SOURCE_ID].append(_bytes([frame.source_id.encode()]))
        for column, key in enumerate(BOX_KEYS):
            lists[key].append(_floats(boxes[:, column].tolist()))
        lists[LABEL_INDEX].append(_ints([int(v) for v in frame.labels]))
        lists[LABEL_STRING].append(_bytes([n.encode() for n in frame.label_names]))
        lists[TRACK_ID].append(_ints([int(v) for v in frame.track_ids]))
        lists[IS_ANNOTATED].append(_ints([int(frame.is_annotated)]))
    return tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(
            feature_list={k: tf.train.FeatureList(feature=v) for k, v in lists.items()}))


def serialize_video(video):
    return video_to_sequence_example(video).SerializeToString()


def video_from_serialized(serialized):
    """Parses a record back into a `Video` with pixel boxes (NumPy side, for tools/tests).

    Pixel boxes are the stored normalised values times the image size, not rounded.
    """
    import tensorflow as tf
    example = tf.train.SequenceExample.FromString(serialized)
    context = example.context.feature
    lists = example.feature_lists.feature_list
    height = context[HEIGHT].int64_list.value[0]
    width = context[WIDTH].int64_list.value[0]
    scale = np.array([height, width, height, width], np.float64)
    frames = []
    for i in range(len(lists[ENCODED].feature)):
        columns = [np.array(lists[k].feature[i].float_list.value, np.float64) for k in BOX_KEYS]
        boxes = np.stack(columns, axis=-1).reshape(-1, 4) * scale
        frames.append(Frame(
            encoded=lists[ENCODED].feature[i].bytes_list.value[0],
            timestamp=lists[TIMESTAMP].feature[i].int64_list.value[0],
            source_id=lists[SOURCE_ID].feature[i].bytes_list.value[0].decode(),
            boxes_yxyx=boxes,
            labels=list(lists[LABEL_INDEX].feature[i].int64_list.value),
            label_names=[s.decode() for s in lists[LABEL_STRING].feature[i].bytes_list.value],
            track_ids=list(lists[TRACK_ID].feature[i].int64_list.value),
            is_annotated=bool(lists[IS_ANNOTATED].feature[i].int64_list.value[0])))
    return Video(media_id=context[MEDIA_ID].bytes_list.value[0].decode(), height=height,
                 width=width, frames=frames,
                 image_format=context[FORMAT].bytes_list.value[0].decode(),
                 dataset_name=context[DATASET_NAME].bytes_list.value[0].decode())


def _feature_specs():
    import tensorflow as tf
    _CONTEXT_SPEC = {
        MEDIA_ID: tf.io.FixedLenFeature([], tf.string),
        NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64),
        HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        WIDTH: tf.io.FixedLenFeature([], tf.int64),
        FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="jpeg"),
        DATASET_NAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    _SEQUENCE_SPEC = {
        ENCODED: tf.io.FixedLenSequenceFeature([], tf.string),
        TIMESTAMP: tf.io.FixedLenSequenceFeature([], tf.int64),
        SOURCE_ID: tf.io.FixedLenSequenceFeature([], tf.string),
        YMIN: tf.io.RaggedFeature(tf.float32),
        XMIN: tf.io.RaggedFeature(tf.float32),
        YMAX: tf.io.RaggedFeature(tf.float32),
        XMAX: tf.io.RaggedFeature(tf.float32),
        LABEL_INDEX: tf.io.RaggedFeature(tf.int64),
        TRACK_ID: tf.io.RaggedFeature(tf.int64),
    }
    return _CONTEXT_SPEC, _SEQUENCE_SPEC


def parse_video(serialized):
    """Parses one serialized record (graph-safe) into a dict of tensors.

    Returns:
        media_id: string [].
        height, width, num_frames: int32 [].
        image_format, dataset_name: string [].
        encoded: string [F], the frames' file bytes.
        timestamp: int32 [F], the frames' numbers in the original video.
        source_id: string [F].
        boxes: float32 RaggedTensor [F, (N), 4], normalised ymin, xmin, ymax, xmax.
        labels: int32 RaggedTensor [F, (N)], 1..C.
        track_ids: int32 RaggedTensor [F, (N)].
    """
    import tensorflow as tf
    context_spec, sequence_spec = _feature_specs()
    context, lists = tf.io.parse_single_sequence_example(
        serialized, context_features=context_spec, sequence_features=sequence_spec)
    boxes = tf.stack([lists[k] for k in BOX_KEYS], axis=-1)  # [F, (N), 4]
    return {
        "media_id": context[MEDIA_ID],
        "height": tf.cast(context[HEIGHT], tf.int32),
        "width": tf.cast(context[WIDTH], tf.int32),
        "num_frames": tf.shape(lists[ENCODED])[0],
        "image_format": context[FORMAT],
        "dataset_name": context[DATASET_NAME],
        "encoded": lists[ENCODED],
        "timestamp": tf.cast(lists[TIMESTAMP], tf.int32),
        "source_id": lists[SOURCE_ID],
        "boxes": boxes,
        "labels": tf.cast(lists[LABEL_INDEX], tf.int32),
        "track_ids": tf.cast(lists[TRACK_ID], tf.int32),
    }


def write_tfrecord(path, videos):
    """Writes `Video`s to one TFRecord file (no sharding; converters use `shards`)."""
    import tensorflow as tf
    with tf.io.TFRecordWriter(path) as writer:
        for video in videos:
            writer.write(serialize_video(video))
