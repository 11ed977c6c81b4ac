"""The tf.data input pipeline: training clips, DET as T = 1 clips, evaluation frames.

Training elements (after batching; B = per-replica batch size, T = num_frames, or 1
for DET batches, N = max_boxes, [Hp, Wp] = the padded size):
    images        float32 [B, T, Hp, Wp, 3]  RGB in [0, 255]; the resized image sits at
                  the top left, the rest is zero
    image_size    int32   [B, T, 2]  (height, width) of the resized image inside `images`
    original_size int32   [B, T, 2]  (height, width) of the frame in the record
    boxes         float32 [B, T, N, 4]  ymin, xmin, ymax, xmax normalised by image_size
                  (so also by original_size: the resize keeps the aspect ratio); flipped
                  with the clip; padding rows are zero
    labels        int32   [B, T, N]  1..C, 0 for padding
    track_ids     int32   [B, T, N]  the instances' identities, -1 for padding
    num_boxes     int32   [B, T]     boxes before padding (at most N)
    frame_index   int32   [B, T]     the frames' numbers in the video (image/timestamp)
    frame_valid   bool    [B, T]     False for the repeated last frame of a video
                  shorter than T frames
    flipped       bool    [B]        the clip was mirrored
    video_id      string  [B]        clip/media_id
    context_images float32 [B, 2N, Hp, Wp, 3]  only with burn_in_frames N > 0 (VID
                  batches): the N frames before the clip, then the N after it, at the
                  clip's stride (a video too short repeats its last frame), as
                  `images`; they carry no annotations (no loss is taken on them)
Pixel boxes in the padded tensor: boxes * image_size (y by height, x by width); in the
original frame: boxes * original_size.

Evaluation elements (one per frame, every frame of every video in file order; batched
along frames when global_batch_size > 0, which may mix videos):
    images [Hp, Wp, 3], image_size [2], original_size [2], boxes [N, 4], labels [N],
    track_ids [N], num_boxes [], frame_index [] (image/timestamp), frame_position []
    (0..F-1 within the record), num_frames [] (F), video_id [].
"""

import collections
import fractions
import logging

import tensorflow as tf

from stmn_tf.data import schema

AUTOTUNE = tf.data.AUTOTUNE
# Corrupt records and videos with a broken frame skipped by the Python reader, by file
# name (skip_corrupt=True).
READ_ERRORS = collections.Counter()


def list_files(patterns):
    """Sorted files matching comma-separated `patterns`; a pattern with no match fails."""
    files = []
    for pattern in [p.strip() for p in patterns.split(",") if p.strip()]:
        matches = tf.io.gfile.glob(pattern)
        if not matches:
            raise ValueError(f"no file matches {pattern!r}")
        files.extend(matches)
    if not files:
        raise ValueError("no input files given")
    return sorted(set(files))


class CorruptDataError(ValueError):
    """A record or a frame that cannot be read; the message names the file, and for a
    frame the record, video and frame."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_looks_complete(data):
    """True for bytes that start and end as a JPEG (SOI ... EOI) or a PNG (signature
    ... IEND) do: what a truncated or overwritten frame fails. A cheap check, without
    decoding; an image that passes and still does not decode fails at decode time,
    named by `explain_read_error`."""
    if data[:2] == b"\xff\xd8":
        return data.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    if data[:8] == _PNG_SIGNATURE:
        return b"IEND" in data[-12:]
    return False


def _bad_frame(record):
    """`(media_id, frame position)` of the first frame of a serialized video whose image
    is not complete (`image_looks_complete`), or None."""
    example = tf.train.SequenceExample.FromString(record)
    frames = example.feature_lists.feature_list[schema.ENCODED].feature
    for position, feature in enumerate(frames):
        if not image_looks_complete(feature.bytes_list.value[0]):
            media_id = example.context.feature[schema.MEDIA_ID].bytes_list.value[0].decode()
            return media_id, position
    return None


def _read_checked(filename, skip):
    """Yields the records of one file; a corrupt one raises with the file's name, or
    (skip) ends the file with a warning and a count, since a broken length field
    leaves no way to find the next record. With `skip`, a video with a truncated or
    overwritten frame (`image_looks_complete`) is skipped too, warned and counted."""
    filename = filename.decode() if isinstance(filename, bytes) else filename
    index = 0
    try:
        for record in tf.compat.v1.io.tf_record_iterator(filename):
            bad = _bad_frame(record) if skip else None
            if bad is None:
                yield record
            else:
                READ_ERRORS[filename] += 1
                logging.warning("skipping %s: record %d, video %r: frame %d is not a complete "
                                "image", filename, index, bad[0], bad[1])
            index += 1
    except tf.errors.OpError as e:
        message = f"{filename}: corrupt record {index} ({e.message})"
        if not skip:
            raise CorruptDataError(message) from None
        READ_ERRORS[filename] += 1
        logging.warning("skipping the rest of %s", message)


def find_corrupt(files):
    """The first unreadable record or frame of `files`, as a CorruptDataError, or None.

    A checked pass in Python over every record (its length and checksums) and every
    frame (decoded): slow, for naming what the native reader failed on.
    """
    for filename in files:
        index = 0
        try:
            for record in tf.compat.v1.io.tf_record_iterator(filename):
                try:
                    video = schema.parse_video(record)
                except tf.errors.OpError as e:
                    return CorruptDataError(
                        f"{filename}: record {index} is not a video SequenceExample ({e.message})")
                for frame, data in enumerate(video["encoded"].numpy()):
                    try:
                        tf.io.decode_image(data, channels=3, expand_animations=False)
                    except tf.errors.OpError as e:
                        return CorruptDataError(
                            f"{filename}: record {index}, video "
                            f"{video['media_id'].numpy().decode()!r}, frame {frame} (image/timestamp "
                            f"{int(video['timestamp'][frame])}): the image does not decode "
                            f"({e.message.strip()})")
                index += 1
        except tf.errors.OpError as e:
            return CorruptDataError(f"{filename}: corrupt record {index} ({e.message})")
    return None


def explain_read_error(config, error):
    """The error to raise for `error`, a native-reader failure of `config`'s pipeline:
    a CorruptDataError naming the file (and the video and frame of an image that does
    not decode), found by `find_corrupt`; `error` itself when every file reads."""
    patterns = ",".join(p for p in (config.input_path, config.det_input_path) if p)
    found = find_corrupt(list_files(patterns))
    return found if found is not None else error


def uses_python_reader(config):
    """True when `config` reads through the Python `_read_checked` (`checked_reader`, or
    `skip_corrupt`, which counts what it skips), False for the native TFRecordDataset."""
    return bool(config.checked_reader or config.skip_corrupt)


def iterate(dataset, config, numpy=False):
    """Yields the elements of `dataset` (built from `config`), raising a read error of
    the native reader as `explain_read_error`'s CorruptDataError, which names the file.

    Args:
        dataset: a `build_dataset(config)` dataset.
        config: its DataConfig.
        numpy: yield NumPy values (`as_numpy_iterator`) instead of tensors.
    """
    iterator = iter(dataset.as_numpy_iterator() if numpy else dataset)
    while True:
        try:
            element = next(iterator)
        except StopIteration:
            return
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise explain_read_error(config, e) from e
        yield element


def read_records(files, config, input_context=None, training=True):
    """Serialized records (string scalars) from `files`, sharded per input pipeline:
    `cycle_length` files read at once (training: shuffled, repeated), through the
    native reader or the Python one (`uses_python_reader`)."""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    shard_records = False
    if input_context and input_context.num_input_pipelines > 1:
        if len(files) >= input_context.num_input_pipelines:
            dataset = dataset.shard(input_context.num_input_pipelines,
                                    input_context.input_pipeline_id)
        else:
            shard_records = True
    if training:
        dataset = dataset.shuffle(len(files), seed=config.seed, reshuffle_each_iteration=True)
        dataset = dataset.repeat()
    skip = config.skip_corrupt

    def read(filename):
        if uses_python_reader(config):
            return tf.data.Dataset.from_generator(
                _read_checked, args=(filename, skip),
                output_signature=tf.TensorSpec([], tf.string))
        # Native: a corrupt record stops the iterator with an error that does not name
        # the file; the reader's callers (`explain_read_error`) find it.
        return tf.data.TFRecordDataset(filename)

    if training:
        dataset = dataset.interleave(read, cycle_length=config.cycle_length, block_length=1,
                                     num_parallel_calls=AUTOTUNE,
                                     deterministic=config.deterministic)
    else:  # one file after the other: videos come out in file order
        dataset = dataset.interleave(read, cycle_length=1, block_length=1)
    if shard_records:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return dataset


def padded_size(image_size_config):
    """[height, width] of the padded batch tensor."""
    if image_size_config.padded_size:
        return list(image_size_config.padded_size)
    m = image_size_config.pad_multiple
    side = -(-image_size_config.long_side_max // m) * m
    return [side, side]


def resized_size(height, width, image_size_config):
    """(height, width) after resizing: shorter side to short_side, longer at most
    long_side_max, never beyond the padded size; the aspect ratio is kept (each side
    rounded to the nearest pixel). int32 tensors."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    pad_h, pad_w = padded_size(image_size_config)
    scale = tf.minimum(image_size_config.short_side / tf.minimum(h, w),
                       image_size_config.long_side_max / tf.maximum(h, w))
    scale = tf.minimum(scale, tf.minimum(pad_h / h, pad_w / w))
    new_h = tf.minimum(tf.cast(tf.round(h * scale), tf.int32), pad_h)
    new_w = tf.minimum(tf.cast(tf.round(w * scale), tf.int32), pad_w)
    return tf.maximum(new_h, 1), tf.maximum(new_w, 1)


def clip_indices(num_frames, clip_length, stride, start_uniform):
    """Frame positions of a clip: T positions 1 in `stride`, the stride lowered so the
    clip fits the video, the start uniform over every position where it fits.

    Args:
        num_frames: int32 [] F.
        clip_length: int T.
        stride: int, the configured stride.
        start_uniform: float32 [] in [0, 1), the random draw for the start.

    Returns:
        indices int32 [T] in [0, F-1], and valid bool [T] (False where a video shorter
        than T frames repeats its last frame).
    """
    if clip_length == 1:
        effective = tf.constant(1, tf.int32)
    else:
        effective = tf.clip_by_value((num_frames - 1) // (clip_length - 1), 1, stride)
    span = (clip_length - 1) * effective + 1
    starts = tf.maximum(num_frames - span, 0) + 1
    start = tf.minimum(tf.cast(start_uniform * tf.cast(starts, tf.float32), tf.int32), starts - 1)
    positions = start + tf.range(clip_length) * effective
    return tf.minimum(positions, num_frames - 1), positions < num_frames


def _pad_annotations(video, indices, max_boxes):
    """Per-frame boxes, labels and track ids of frames `indices`, padded to max_boxes."""
    count = tf.shape(indices)[0]
    boxes = tf.gather(video["boxes"], indices)
    labels = tf.gather(video["labels"], indices)
    track_ids = tf.gather(video["track_ids"], indices)
    return {
        "boxes": boxes.to_tensor(0.0, shape=[None, max_boxes, 4]),
        "labels": labels.to_tensor(0, shape=[None, max_boxes]),
        "track_ids": track_ids.to_tensor(-1, shape=[None, max_boxes]),
        "num_boxes": tf.minimum(tf.cast(labels.row_lengths(), tf.int32), max_boxes),
        "frame_index": tf.gather(video["timestamp"], indices),
        "original_size": tf.tile(tf.stack([video["height"], video["width"]])[None], [count, 1]),
    }


def resize_and_pad(image, image_size_config, original_size=None, flipped=None):
    """The one resize of the project: training, evaluation, serving and video files.

    Resizes (bilinear, aspect kept, `resized_size`), optionally mirrors, and pads at
    the bottom and right to `padded_size`. The resized image is mirrored, not the
    padded canvas, so that x -> 1 - x holds for boxes normalised by the resized size.

    Args:
        image: uint8 or float RGB `[H, W, 3]`.
        image_size_config: `ImageSizeConfig`.
        original_size: optional int32 `[2]` (H, W) to size the resize by (the
            records' sizes); defaults to the image's shape.
        flipped: optional bool scalar tensor, mirror left-right.

    Returns:
        `(image float32 [Hp, Wp, 3] in [0, 255], image_size int32 [2])`, the second the
        (h, w) of the resized image at the top left of the canvas.
    """
    if original_size is None:
        original_size = tf.shape(image)[:2]
    pad_h, pad_w = padded_size(image_size_config)
    new_h, new_w = resized_size(original_size[0], original_size[1], image_size_config)
    image = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]), method="bilinear")
    if flipped is not None:
        image = tf.cond(flipped, lambda: tf.image.flip_left_right(image), lambda: image)
    return tf.image.pad_to_bounding_box(image, 0, 0, pad_h, pad_w), tf.stack([new_h, new_w])


def _decode_frames(encoded, original_size, flipped, image_size_config):
    """Decodes then `resize_and_pad`s frames (all of one size, the first's).

    encoded string [T]; original_size int32 [T, 2] -> (images float32 [T, Hp, Wp, 3],
    image_size int32 [T, 2]).
    """
    pad_h, pad_w = padded_size(image_size_config)

    def one(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return resize_and_pad(image, image_size_config, original_size[0], flipped)[0]

    images = tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec([pad_h, pad_w, 3], tf.float32))
    count = tf.shape(encoded)[0]
    new_size = tf.stack(resized_size(original_size[0, 0], original_size[0, 1], image_size_config))
    image_size = tf.tile(new_size[None], [count, 1])
    return images, image_size


def flip_boxes(boxes, num_boxes):
    """Mirrors normalised ymin, xmin, ymax, xmax boxes [..., N, 4]; padding stays zero."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    flipped = tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)
    valid = tf.range(tf.shape(boxes)[-2]) < num_boxes[..., None]
    return tf.where(valid[..., None], flipped, tf.zeros_like(boxes))


def _main_class(video, num_classes):
    """The most frequent label of a video, 0 for a video without objects."""
    labels = video["labels"].flat_values
    counts = tf.math.bincount(labels, minlength=num_classes + 1, maxlength=num_classes + 1)
    return tf.where(tf.size(labels) > 0, tf.cast(tf.argmax(counts[1:]), tf.int32) + 1, 0)


def balance_classes(videos, num_classes, seed):
    """Resamples parsed videos so that their main classes come out equally often.

    Counts of each main class (0: no objects) are kept online; a video of class c is
    kept with probability (count of the rarest class seen) / (count of c), so the
    rarest class is always kept and no class can stall the stream (unlike
    `rejection_resample` with a fixed target, which waits forever for a class that
    the files do not have). The draw is stateless, seeded by the video's position.
    """

    def step(state, video):
        counts, position = state
        main = _main_class(video, num_classes)
        counts = tf.tensor_scatter_nd_add(counts, [[main]], [1.0])
        seen = tf.where(counts > 0, counts, tf.fill(tf.shape(counts), float("inf")))
        keep_probability = tf.reduce_min(seen) / counts[main]
        draw = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64) + 7, position]))
        return (counts, position + 1), (draw < keep_probability, video)

    initial = (tf.zeros([num_classes + 1], tf.float32), tf.constant(0, tf.int64))
    return videos.scan(initial, step).filter(lambda keep, _: keep).map(lambda _, video: video)


def _clip_dataset(files, config, input_context, clip_length, burn_in=0):
    """Unbatched training clips of `clip_length` frames (see the module docstring),
    with `burn_in` context frames on each side (`context_images`) when > 0."""
    dataset = read_records(files, config, input_context, training=True)
    dataset = dataset.map(schema.parse_video, num_parallel_calls=AUTOTUNE,
                          deterministic=config.deterministic)
    if config.class_balance:
        dataset = balance_classes(dataset, config.num_classes, config.seed)
    # Stateless draws seeded by the element's position: the same clip for the same
    # position whatever the parallelism.
    dataset = dataset.enumerate()

    def sample(position, video):
        seed = tf.stack([tf.constant(config.seed, tf.int64), position])
        draws = tf.random.stateless_uniform([2], seed=seed)
        # One span of burn_in + T + burn_in frames at one stride; the annotations are
        # those of its middle T frames.
        indices, valid = clip_indices(video["num_frames"], clip_length + 2 * burn_in,
                                      config.frame_stride, draws[0])
        clip = _pad_annotations(video, indices[burn_in:burn_in + clip_length], config.max_boxes)
        clip["encoded"] = tf.gather(video["encoded"], indices)  # only these are decoded
        clip["frame_valid"] = valid[burn_in:burn_in + clip_length]
        clip["flipped"] = tf.logical_and(draws[1] < 0.5, config.random_flip)
        clip["video_id"] = video["media_id"]
        return clip

    dataset = dataset.map(sample, num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
    if config.shuffle_buffer_size > 1:
        dataset = dataset.shuffle(config.shuffle_buffer_size, seed=config.seed)

    def decode(clip):
        clip = dict(clip)
        images, image_size = _decode_frames(
            clip.pop("encoded"), clip["original_size"][:1], clip["flipped"], config.image_size)
        clip["images"] = images[burn_in:burn_in + clip_length]
        clip["image_size"] = tf.tile(image_size[:1], [clip_length, 1])
        if burn_in > 0:
            clip["context_images"] = tf.concat([images[:burn_in], images[burn_in + clip_length:]], 0)
        clip["boxes"] = tf.cond(clip["flipped"], lambda: flip_boxes(clip["boxes"], clip["num_boxes"]),
                                lambda: clip["boxes"])
        return clip

    return dataset.map(decode, num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)


def _mix_pattern(ratio):
    """A repeating pattern of 0 (VID batch) and 1 (DET batch) with ratio DET per VID."""
    fraction = fractions.Fraction(ratio).limit_denominator(16)
    vid, det = fraction.denominator, fraction.numerator
    pattern, placed = [], 0
    for i in range(vid):
        pattern.append(0)
        # Spread the DET batches evenly between the VID batches.
        while placed < det * (i + 1) // vid:
            pattern.append(1)
            placed += 1
    return pattern


def _frame_dataset(files, config, input_context):
    """Every frame of every video, in order (see the module docstring)."""
    dataset = read_records(files, config, input_context, training=False)
    dataset = dataset.map(schema.parse_video)

    def frames(video):
        count = video["num_frames"]
        positions = tf.range(count)
        per_frame = _pad_annotations(video, positions, config.max_boxes)
        per_frame["encoded"] = video["encoded"]
        per_frame["frame_position"] = positions
        per_frame["num_frames"] = tf.fill([count], count)
        per_frame["video_id"] = tf.fill([count], video["media_id"])
        return tf.data.Dataset.from_tensor_slices(per_frame)

    dataset = dataset.flat_map(frames)

    def decode(frame):
        frame = dict(frame)
        images, image_size = _decode_frames(frame.pop("encoded")[None], frame["original_size"][None],
                                            tf.constant(False), config.image_size)
        frame["images"], frame["image_size"] = images[0], image_size[0]
        return frame

    # Evaluation keeps the frames in order whatever `deterministic` says.
    return dataset.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)


def build_dataset(config, input_context=None):
    """The dataset of `config` (a DataConfig) for one input pipeline.

    With an `input_context` (from `strategy.distribute_datasets_from_function`) the
    files (or, with fewer files than pipelines, the records) are sharded per input
    pipeline and batches have the per-replica size. Element structures: module
    docstring.
    """
    global_batch = config.global_batch_size
    batch = input_context.get_per_replica_batch_size(global_batch) if input_context else global_batch
    if not config.is_training:
        dataset = _frame_dataset(list_files(config.input_path), config, input_context)
        if batch > 0:
            dataset = dataset.batch(batch)
        return dataset.prefetch(AUTOTUNE)

    if batch < 1:
        raise ValueError(f"global_batch_size must be >= 1 in training, got {global_batch}")
    if config.burn_in_frames < 0:
        raise ValueError(f"burn_in_frames must be >= 0, got {config.burn_in_frames}")
    vid = _clip_dataset(list_files(config.input_path), config, input_context, config.num_frames,
                        config.burn_in_frames)
    vid = vid.batch(batch, drop_remainder=True)
    if config.det_input_path and config.det_vid_ratio > 0:
        det = _clip_dataset(list_files(config.det_input_path), config, input_context, 1)
        det = det.batch(batch, drop_remainder=True)
        choice = tf.data.Dataset.from_tensor_slices(
            tf.constant(_mix_pattern(config.det_vid_ratio), tf.int64)).repeat()
        dataset = tf.data.Dataset.choose_from_datasets([vid, det], choice)
    else:
        dataset = vid
    options = tf.data.Options()
    options.deterministic = bool(config.deterministic)
    dataset = dataset.with_options(options)
    return dataset.prefetch(AUTOTUNE)


def make_dataset_fn(config):
    """`dataset_fn(input_context)` for `strategy.distribute_datasets_from_function`."""

    def dataset_fn(input_context=None):
        return build_dataset(config, input_context)

    return dataset_fn
