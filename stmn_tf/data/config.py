"""Typed data configs (`official.modeling.hyperparams.Config` dataclasses).

`DataConfig` describes one input pipeline (training or evaluation); `SyntheticConfig`
the embedded synthetic data set. Both override from YAML / `--params-override` like
every other config. `build_dataset(config)` in pipeline.py maps one to a dataset.
"""

import dataclasses
from typing import List, Optional

from official.modeling import hyperparams


@dataclasses.dataclass
class SyntheticConfig(hyperparams.Config):
    """The synthetic VID-like data set (synthetic.py describes what it draws).

    Attributes:
        seed: base seed; split s uses seed * 1000 + {train: 1, val: 2, test: 3}.
        num_videos: videos per split, {train, val, test}.
        num_det_images: still images of the "det" split (ImageNet DET's stand-in:
            one frame each, every object facing the camera, no occlusion or blur).
        height, width: frame size in pixels.
        min_frames, max_frames: video length range (inclusive).
        num_classes: 1..8 classes (names: synthetic.PATTERNS[:num_classes]).
        max_objects: objects per video are 0..max_objects (0 with probability
            empty_video_probability).
        min_object_size, max_object_size: object size (longer side) in pixels.
        max_speed: object speed in pixels per frame. Between frames sampled 1 in s,
            an object moves at most max_speed * s (+ the background pan): keep it
            within 2 feature cells (32 px at stride 16, MatchTrans k = 2).
        min_speed: the slowest object's speed in pixels per frame (each object's
            speed is uniform in [min_speed, max_speed]); None for 0.3 * max_speed.
        background_speed: camera pan in pixels per frame.
        cue_threshold: the class pattern shows while cos(viewpoint) > this (0.5:
            a third of the time).
        min_turn_period, max_turn_period: an object turns once every this many
            frames (uniform in the range); the pattern is hidden for the 2/3 of a
            turn at cue_threshold 0.5, e.g. 5 to 11 frames for periods 8 to 16, so
            that a training clip of 7 frames 1 in 2 nearly always sees it once.
        occlusion_probability: per object, one heavy occlusion (60-85% of the box)
            lasting 3-6 consecutive frames.
        blur_probability: per video, 1-2 bursts of 2-4 frames of camera-shake blur.
        jpeg_quality: quality of the frames' JPEG files.
    """

    seed: int = 0
    num_train_videos: int = 160
    num_val_videos: int = 32
    num_test_videos: int = 32
    num_det_images: int = 1600
    height: int = 128
    width: int = 128
    min_frames: int = 20
    max_frames: int = 40
    num_classes: int = 5
    max_objects: int = 3
    empty_video_probability: float = 0.1
    min_object_size: int = 28
    max_object_size: int = 48
    max_speed: float = 4.0
    min_speed: Optional[float] = None
    background_speed: float = 1.5
    cue_threshold: float = 0.5
    min_turn_period: float = 8.0
    max_turn_period: float = 16.0
    occlusion_probability: float = 0.6
    blur_probability: float = 0.5
    jpeg_quality: int = 90
    num_shards: int = 2


@dataclasses.dataclass
class ImageSizeConfig(hyperparams.Config):
    """Resizing: shorter side to `short_side`, longer at most `long_side_max`, both
    keeping the aspect ratio; then padding to `padded_size` [height, width] (default
    [long_side_max, long_side_max] rounded up to `pad_multiple`). An image that would
    not fit the padded size is scaled down further to fit it."""

    short_side: int = 600
    long_side_max: int = 1000
    padded_size: Optional[List[int]] = None
    pad_multiple: int = 32


@dataclasses.dataclass
class DataConfig(hyperparams.Config):
    """One input pipeline.

    Attributes:
        input_path: VID-style records, a file pattern or several joined by commas.
        det_input_path: DET records (one-frame videos), '' for none.
        det_vid_ratio: DET batches per VID batch in training (1.0 = the authors'
            one DET batch with each VID batch); DET batches have T = 1.
        is_training: training clips (True) or every frame of each video in order.
        num_frames: T, frames per training clip (paper: 7).
        frame_stride: sample 1 frame in `frame_stride` (paper: 10); lowered for
            videos shorter than (T - 1) * stride + 1 frames.
        burn_in_frames: N, training only: each clip comes with N frames before and N
            after it (`context_images`, same stride) that the memory reads without
            loss or gradient to their features, so that at the T frames with loss
            each direction's memory has read N + 1 to N + T frames, as in test
            windows longer than T (`STMN.clip_head_features`; an R-FCN ignores
            them). 0 = the paper's clips of T frames.
        image_size: resizing and padding (ImageSizeConfig).
        random_flip: one horizontal flip per clip with probability 1/2 (training).
        class_balance: resample videos so their main classes are equally frequent.
        num_classes: C, for class balancing.
        max_boxes: boxes per frame after padding (extra ones are dropped).
        global_batch_size: clips per step over all replicas (training) or frames
            per batch (evaluation; 0 = unbatched frames).
        shuffle_buffer_size: clips in the shuffle buffer (after sampling, before decoding).
        cycle_length: files read at once.
        deterministic: the same elements in the same order on every run (seeded,
            ordered parallelism; a little slower).
        seed: seed of every random choice.
        skip_corrupt: skip corrupt records (counted in `pipeline.READ_ERRORS`, read
            through the Python reader) instead of failing with the file's name.
        checked_reader: read every record through a small Python reader (under the
            GIL: the input's ceiling on a machine of many GPUs; its position is not
            checkpointed). False (the default) reads with the native TFRecordDataset;
            a corrupt record or image then fails with the file's name, found by a
            checked pass after the failure (`pipeline.explain_read_error`).
        synthetic: the synthetic data set's parameters (used by the configs that
            call synthetic.ensure_synthetic_dataset).
    """

    input_path: str = ""
    det_input_path: str = ""
    det_vid_ratio: float = 0.0
    is_training: bool = True
    num_frames: int = 7
    frame_stride: int = 10
    burn_in_frames: int = 0
    image_size: ImageSizeConfig = dataclasses.field(default_factory=ImageSizeConfig)
    random_flip: bool = True
    class_balance: bool = False
    num_classes: int = 30
    max_boxes: int = 32
    global_batch_size: int = 1
    shuffle_buffer_size: int = 64
    cycle_length: int = 8
    deterministic: bool = False
    seed: int = 0
    skip_corrupt: bool = False
    checked_reader: bool = False
    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)


def synthetic_data_config(directory, split="train", **overrides):
    """A DataConfig reading the synthetic set in `directory` with sizes that suit it.

    The synthetic frames are 128x128: no resizing, and stride 2 keeps objects
    within MatchTrans' window between sampled frames.
    """
    synthetic = SyntheticConfig()
    config = DataConfig(
        input_path=f"{directory}/{split}-*-of-*",
        is_training=(split == "train"),
        num_frames=7,
        frame_stride=2,
        image_size=ImageSizeConfig(short_side=synthetic.height, long_side_max=synthetic.width,
                                   padded_size=[synthetic.height, synthetic.width]),
        num_classes=synthetic.num_classes,
        max_boxes=8,
        global_batch_size=4,
        deterministic=True,
        synthetic=synthetic)
    config.override(overrides, is_strict=True)
    return config
