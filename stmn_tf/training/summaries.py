"""What the training loop reports: TensorBoard scalars and images, train_log.jsonl.

Only the chief writes (`enabled=False` on the other workers gives a no-op writer).
"""

import json
import os
import time

import tensorflow as tf

GROUNDTRUTH_COLOUR = (0.1, 0.9, 0.1)
DETECTION_COLOUR = (0.95, 0.15, 0.1)


class TrainingLog:
    """TensorBoard event files in `MODEL_DIR/train/` and `MODEL_DIR/train_log.jsonl`.

    Args:
        model_dir: str. The model directory.
        enabled: bool. False on the workers that are not the chief.
    """

    def __init__(self, model_dir, enabled=True):
        self.enabled = enabled
        self.jsonl_path = os.path.join(model_dir, "train_log.jsonl")
        if enabled:
            self.writer = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
        else:
            self.writer = tf.summary.create_noop_writer()

    def scalars(self, step, values):
        """Writes `values` ({name: float}) at `step` to TensorBoard and the JSON log."""
        if not self.enabled:
            return
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        record = {"step": int(step), "time": time.time(), **{k: float(v) for k, v in values.items()}}
        # One line per write and flushed, so that a killed run's log stays parseable.
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def images(self, step, name, images):
        if not self.enabled:
            return
        with self.writer.as_default(step=step):
            tf.summary.image(name, images, max_outputs=int(images.shape[0]))

    def flush(self):
        if self.enabled:
            self.writer.flush()


def detection_images(model, clip, max_frames=3, score_threshold=0.3):
    """Frames of one training clip with ground truth (green) and detections (red).

    Args:
        model: the detector (its `detect`).
        clip: dict of one replica's batch (`images` [B, T, H, W, 3] in [0, 255],
            `boxes` [B, T, N, 4] normalised yxyx, `num_boxes` [B, T]); its first clip
            is drawn.
        max_frames: frames of the clip to draw.
        score_threshold: detections below it are not drawn.

    Returns:
        float32 [F, H, W, 3] in [0, 1], F = min(T, max_frames).
    """
    images = tf.convert_to_tensor(clip["images"])[:1]  # [1, T, H, W, 3]
    detections = model.detect({"images": images}, training=False)
    frames = images[0, :max_frames] / 255.0  # [F, H, W, 3]
    count = tf.shape(frames)[0]
    boxes = clip["boxes"][0, :max_frames]  # [F, N, 4]
    valid = tf.range(tf.shape(boxes)[1])[None] < clip["num_boxes"][0, :max_frames, None]
    groundtruth = tf.where(valid[..., None], boxes, 0.0)
    detected = detections["detection_boxes"][0, :count]  # [F, D, 4]
    keep = detections["detection_scores"][0, :count] >= score_threshold
    detected = tf.where(keep[..., None], detected, 0.0)
    frames = tf.image.draw_bounding_boxes(frames, tf.cast(groundtruth, tf.float32),
                                          tf.constant([GROUNDTRUTH_COLOUR], tf.float32))
    frames = tf.image.draw_bounding_boxes(frames, tf.cast(detected, tf.float32),
                                          tf.constant([DETECTION_COLOUR], tf.float32))
    return tf.clip_by_value(frames, 0.0, 1.0)
